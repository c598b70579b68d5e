//! Boot information handed to the kernel: the zero page (Linux boot protocol) or the
//! `hvm_start_info` (PVH), each with the memory map, command line and initrd.

use super::layout::*;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{GuestAddress, GuestMemoryBackend};

const E820_RAM: u32 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Where the initrd was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdRegion {
    pub address: GuestAddress,
    pub size: u64,
}

/// What the boot information describes.
pub struct BootInfo<'a> {
    pub mem_size: u64,
    pub cmdline_size: usize,
    pub initrd: Option<InitrdRegion>,
    /// The bzImage's setup header, when the kernel came with one.
    pub setup_header: Option<&'a setup_header>,
}

#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    #[error("the memory map has more than {0} entries")]
    TooManyE820Entries(usize),
    #[error("cannot write the boot parameters to guest memory: {0}")]
    Write(linux_loader::configurator::Error),
}

/// RAM as the guest's memory map shows it: low memory below the EBDA, then from 1 MiB.
fn e820_ram(mem_size: u64) -> Vec<(u64, u64)> {
    let mut map = vec![(0, EBDA_START)];
    for (start, size) in ram_ranges(mem_size) {
        let end = start + size;
        let start = start.max(HIMEM_START);
        if end > start {
            map.push((start, end - start));
        }
    }
    map
}

/// Writes the Linux boot protocol zero page.
pub fn write_zero_page<M: GuestMemoryBackend>(
    mem: &M,
    info: &BootInfo,
) -> Result<(), BootParamsError> {
    let mut params = boot_params::default();
    if let Some(header) = info.setup_header {
        params.hdr = *header;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = info.cmdline_size as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    if let Some(initrd) = info.initrd {
        params.hdr.ramdisk_image = initrd.address.0 as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    let map = e820_ram(info.mem_size);
    if map.len() > params.e820_table.len() {
        return Err(BootParamsError::TooManyE820Entries(map.len()));
    }
    for (slot, (addr, size)) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: E820_RAM,
        };
    }
    params.e820_entries = map.len() as u8;
    let boot = BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams(&boot, mem).map_err(BootParamsError::Write)
}

/// Writes the PVH start info, its memory map and the initrd module entry.
pub fn write_pvh_start_info<M: GuestMemoryBackend>(
    mem: &M,
    info: &BootInfo,
) -> Result<(), BootParamsError> {
    let memmap: Vec<hvm_memmap_table_entry> = e820_ram(info.mem_size)
        .into_iter()
        .map(|(addr, size)| hvm_memmap_table_entry {
            addr,
            size,
            type_: E820_RAM,
            reserved: 0,
        })
        .collect();
    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut boot = BootParams::new::<hvm_start_info>(&start_info, GuestAddress(PVH_INFO_START));
    if let Some(initrd) = info.initrd {
        start_info.nr_modules = 1;
        start_info.modlist_paddr = PVH_MODLIST_START;
        boot = BootParams::new::<hvm_start_info>(&start_info, GuestAddress(PVH_INFO_START));
        let module = hvm_modlist_entry {
            paddr: initrd.address.0,
            size: initrd.size,
            ..Default::default()
        };
        boot.set_modules(&[module], GuestAddress(PVH_MODLIST_START));
    }
    boot.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
    PvhBootConfigurator::write_bootparams(&boot, mem).map_err(BootParamsError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::GuestMemory;
    use vm_memory::Bytes;

    #[test]
    fn e820_leaves_out_ebda_bios_area_and_mmio_gap() {
        assert_eq!(
            e820_ram(128 << 20),
            vec![(0, EBDA_START), (HIMEM_START, (128 << 20) - HIMEM_START)]
        );
        let big = e820_ram(5 << 30);
        assert_eq!(big[1], (HIMEM_START, MMIO_GAP_START - HIMEM_START));
        assert_eq!(big[2], (MMIO_GAP_END, (5 << 30) - MMIO_GAP_START));
    }

    #[test]
    fn zero_page_holds_cmdline_initrd_and_map() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let initrd = InitrdRegion {
            address: GuestAddress(0x80_0000),
            size: 0x1234,
        };
        let info = BootInfo {
            mem_size: 16 << 20,
            cmdline_size: 42,
            initrd: Some(initrd),
            setup_header: None,
        };
        write_zero_page(&mem, &info).unwrap();
        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ params.hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ params.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ params.hdr.ramdisk_image }, 0x80_0000);
        assert_eq!({ params.hdr.ramdisk_size }, 0x1234);
        assert_eq!(params.e820_entries, 2);
    }

    #[test]
    fn pvh_start_info_points_at_map_and_module() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let initrd = InitrdRegion {
            address: GuestAddress(0x80_0000),
            size: 99,
        };
        let info = BootInfo {
            mem_size: 16 << 20,
            cmdline_size: 1,
            initrd: Some(initrd),
            setup_header: None,
        };
        write_pvh_start_info(&mem, &info).unwrap();
        let start: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(
            (start.magic, start.nr_modules, start.memmap_entries),
            (XEN_HVM_START_MAGIC, 1, 2)
        );
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        assert_eq!((module.paddr, module.size), (0x80_0000, 99));
    }
}
