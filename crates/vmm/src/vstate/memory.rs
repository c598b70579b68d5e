//! Guest memory: anonymous mappings laid out around the x86 MMIO gap.

use crate::arch::x86_64::layout::ram_ranges;
use vm_memory::GuestAddress;

/// Guest RAM as the VMM sees it. Cloning is cheap (the regions are reference counted).
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot map {mib} MiB of guest memory: {source}")]
    Map {
        mib: usize,
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Maps `mem_size_mib` of guest RAM (lazily backed: untouched pages cost nothing).
pub fn create_guest_memory(mem_size_mib: usize) -> Result<GuestMemory, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges((mem_size_mib as u64) << 20)
        .into_iter()
        .map(|(start, size)| (GuestAddress(start), size as usize))
        .collect();
    GuestMemory::from_ranges(&ranges).map_err(|source| MemoryError::Map {
        mib: mem_size_mib,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    #[test]
    fn memory_has_the_requested_size() {
        let mem = create_guest_memory(64).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(
            mem.iter()
                .map(vm_memory::GuestMemoryRegion::len)
                .sum::<u64>(),
            64 << 20
        );
    }
}
