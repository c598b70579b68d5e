//! Where things live in guest physical memory.
//!
//! Low memory holds the boot structures; the kernel loads at 1 MiB; RAM skips the 32-bit
//! MMIO gap below 4 GiB where the boot timer, virtio-mmio windows, IOAPIC and LAPIC sit.

/// GDT and IDT for the entry state.
pub const BOOT_GDT_START: u64 = 0x500;
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, then its module list and memory map.
pub const PVH_INFO_START: u64 = 0x6000;
pub const PVH_MODLIST_START: u64 = 0x6040;
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// The Linux boot protocol's zero page (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables for the 64-bit entry (PML4, PDPT, PD).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Start of the extended BIOS data area; the MP table goes here.
pub const EBDA_START: u64 = 0x9fc00;
/// Kernels load at 1 MiB and above.
pub const HIMEM_START: u64 = 0x10_0000;

/// The 32-bit MMIO gap: no RAM between these addresses.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Firecracker's boot timer register: a guest write of 123 here marks "init reached".
pub const BOOT_TIMER_START: u64 = MMIO_GAP_START;
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
/// Virtio-mmio windows, 4 KiB each, from here on.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM needs three pages for the TSS just below the identity map page.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// IRQ lines: serial on 4 (as on a PC), keyboard on 1, virtio devices from 5 up.
pub const SERIAL_IRQ: u32 = 4;
pub const KEYBOARD_IRQ: u32 = 1;
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// The IOAPIC has 24 pins.
pub const IRQ_MAX: u32 = 23;

/// The RAM ranges `(start, size)` for a guest of `mem_size` bytes.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        return vec![(0, mem_size)];
    }
    vec![
        (0, MMIO_GAP_START),
        (MMIO_GAP_END, mem_size - MMIO_GAP_START),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guests_have_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
        assert_eq!(ram_ranges(MMIO_GAP_START), vec![(0, MMIO_GAP_START)]);
    }

    #[test]
    fn large_guests_skip_the_mmio_gap() {
        let ranges = ram_ranges(4 << 30);
        assert_eq!(
            ranges,
            vec![
                (0, MMIO_GAP_START),
                (MMIO_GAP_END, (4 << 30) - MMIO_GAP_START)
            ]
        );
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        assert_eq!(total, 4 << 30);
    }
}
