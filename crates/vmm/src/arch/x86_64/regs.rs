//! The boot vCPU's entry state for the two boot protocols Ember supports.
//!
//! * Linux 64-bit boot protocol: long mode, identity-mapped first GiB, `rsi` = zero page.
//! * PVH: 32-bit protected mode without paging, `rbx` = `hvm_start_info`.

use super::gdt::{gdt_entry, kvm_segment_from_gdt};
use super::layout::*;
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// How the kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// 64-bit Linux boot protocol at `entry`, boot params in the zero page.
    Linux64,
    /// PVH entry point from the ELF note, start info at `PVH_INFO_START`.
    Pvh,
}

/// Where and how the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPoint {
    pub address: GuestAddress,
    pub protocol: BootProtocol,
}

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write the boot GDT/IDT to guest memory: {0}")]
    Gdt(vm_memory::GuestMemoryError),
    #[error("cannot write the boot page tables to guest memory: {0}")]
    PageTables(vm_memory::GuestMemoryError),
}

/// General purpose registers at entry.
pub fn boot_regs(entry: EntryPoint) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry.address.0,
        ..Default::default()
    };
    match entry.protocol {
        BootProtocol::Linux64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
        BootProtocol::Pvh => regs.rbx = PVH_INFO_START,
    }
    regs
}

/// x87/SSE state at entry: the values a real CPU has after FNINIT and reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Writes the GDT/IDT (and page tables for long mode) and fills the special registers.
pub fn setup_sregs<M: GuestMemoryBackend>(
    mem: &M,
    protocol: BootProtocol,
    sregs: &mut kvm_sregs,
) -> Result<(), RegsError> {
    let gdt = match protocol {
        // null, 64-bit code, data, TSS
        BootProtocol::Linux64 => [
            gdt_entry(0, 0, 0),
            gdt_entry(0xa09b, 0, 0xfffff),
            gdt_entry(0xc093, 0, 0xfffff),
            gdt_entry(0x808b, 0, 0xfffff),
        ],
        // null, 32-bit flat code, flat data, TSS
        BootProtocol::Pvh => [
            gdt_entry(0, 0, 0),
            gdt_entry(0xc09b, 0, 0xffff_ffff),
            gdt_entry(0xc093, 0, 0xffff_ffff),
            gdt_entry(0x008b, 0, 0x67),
        ],
    };
    write_gdt_idt(mem, &gdt)?;
    let code = kvm_segment_from_gdt(gdt[1], 1);
    let data = kvm_segment_from_gdt(gdt[2], 2);
    let tss = kvm_segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = tss;
    match protocol {
        BootProtocol::Linux64 => {
            setup_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        BootProtocol::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    Ok(())
}

fn write_gdt_idt<M: GuestMemoryBackend>(mem: &M, gdt: &[u64]) -> Result<(), RegsError> {
    for (index, entry) in gdt.iter().enumerate() {
        let addr = GuestAddress(BOOT_GDT_START + index as u64 * 8);
        mem.write_obj(*entry, addr).map_err(RegsError::Gdt)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(RegsError::Gdt)
}

/// Identity-maps the first GiB with 2 MiB pages: enough for the kernel to build its own.
fn setup_page_tables<M: GuestMemoryBackend>(mem: &M) -> Result<(), RegsError> {
    let write = |value: u64, addr: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(RegsError::PageTables)
    };
    write(PDPTE_START | 0x03, PML4_START)?;
    write(PDE_START | 0x03, PDPTE_START)?;
    for index in 0..512u64 {
        // present | writable | page size (2 MiB)
        write((index << 21) | 0x83, PDE_START + index * 8)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::GuestMemory;

    fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn long_mode_entry_maps_first_gib() {
        let mem = memory();
        let mut sregs = kvm_sregs::default();
        setup_sregs(&mem, BootProtocol::Linux64, &mut sregs).unwrap();
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.efer & EFER_LMA, 0);
        assert_eq!(sregs.cs.l, 1);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let last: u64 = mem.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(last, (511 << 21) | 0x83);
        let regs = boot_regs(EntryPoint {
            address: GuestAddress(0x100_0000),
            protocol: BootProtocol::Linux64,
        });
        assert_eq!((regs.rip, regs.rsi), (0x100_0000, ZERO_PAGE_START));
    }

    #[test]
    fn pvh_entry_is_flat_protected_mode() {
        let mem = memory();
        let mut sregs = kvm_sregs::default();
        setup_sregs(&mem, BootProtocol::Pvh, &mut sregs).unwrap();
        assert_eq!(sregs.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!(
            (sregs.cs.db, sregs.cs.l, sregs.cs.limit),
            (1, 0, 0xffff_ffff)
        );
        let regs = boot_regs(EntryPoint {
            address: GuestAddress(0x1000),
            protocol: BootProtocol::Pvh,
        });
        assert_eq!(regs.rbx, PVH_INFO_START);
    }
}
