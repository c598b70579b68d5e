//! Guest memory in a snapshot: written whole to the memory file, region after region, and
//! mapped back privately (copy-on-write), so that a restore reads nothing up front: the
//! guest faults pages in as it touches them, and clones of one snapshot share its page cache.

use crate::vstate::memory::GuestMemory;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use vm_memory::mmap::{MmapRegion, MmapRegionBuilder};
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap, WriteVolatile,
};

/// Where one region of guest RAM is in the memory file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRange {
    pub guest_address: u64,
    pub size: u64,
    pub file_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotMemoryError {
    #[error("cannot write guest memory to {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the memory file {path}: {source}")]
    Open {
        path: String,
        source: crate::host_file::HostFileError,
    },
    #[error("the memory file {path} is {found} bytes; the snapshot's memory is {expected}")]
    Size {
        path: String,
        found: u64,
        expected: u64,
    },
    #[error("the snapshot's memory layout is invalid: {0}")]
    Layout(String),
    #[error("cannot map the memory file {path}: {source}")]
    Map {
        path: String,
        source: vm_memory::mmap::MmapRegionError,
    },
}

/// The regions of `memory`, laid out one after the other in the file.
pub fn layout(memory: &GuestMemory) -> Vec<MemoryRange> {
    let mut offset = 0;
    memory
        .iter()
        .map(|region| {
            let range = MemoryRange {
                guest_address: region.start_addr().0,
                size: region.len(),
                file_offset: offset,
            };
            offset += region.len();
            range
        })
        .collect()
}

/// Writes all of guest memory to a new file at `path`; returns its layout.
pub fn write_memory(
    memory: &GuestMemory,
    path: &Path,
) -> Result<Vec<MemoryRange>, SnapshotMemoryError> {
    let write_error = |source| SnapshotMemoryError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::create(path).map_err(write_error)?;
    let ranges = layout(memory);
    for range in &ranges {
        let slice = memory
            .get_slice(GuestAddress(range.guest_address), range.size as usize)
            .map_err(|e| write_error(std::io::Error::other(e.to_string())))?;
        file.write_all_volatile(&slice)
            .map_err(|e| write_error(std::io::Error::other(e.to_string())))?;
    }
    file.sync_data().map_err(write_error)?;
    Ok(ranges)
}

/// Maps the memory file at `path` privately as guest memory laid out as `ranges`.
pub fn map_memory_file(
    path: &Path,
    ranges: &[MemoryRange],
) -> Result<GuestMemory, SnapshotMemoryError> {
    let name = || path.display().to_string();
    let file =
        crate::host_file::open_regular(path).map_err(|source| SnapshotMemoryError::Open {
            path: name(),
            source,
        })?;
    let expected: u64 = ranges.iter().map(|r| r.size).sum();
    let found = file.metadata().map(|m| m.len()).unwrap_or(0);
    if found != expected {
        return Err(SnapshotMemoryError::Size {
            path: name(),
            found,
            expected,
        });
    }
    let file = Arc::new(file);
    let mut regions = Vec::with_capacity(ranges.len());
    for range in ranges {
        let size = usize::try_from(range.size)
            .map_err(|_| SnapshotMemoryError::Layout(format!("{range:?}")))?;
        let offset = FileOffset::from_arc(file.clone(), range.file_offset);
        let mapping: MmapRegion<()> = MmapRegionBuilder::new(size)
            .with_file_offset(offset)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|source| SnapshotMemoryError::Map {
                path: name(),
                source,
            })?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(range.guest_address))
            .ok_or_else(|| SnapshotMemoryError::Layout(format!("{range:?}")))?;
        regions.push(region);
    }
    GuestMemory::from_regions(regions).map_err(|e| SnapshotMemoryError::Layout(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::create_guest_memory;
    use vm_memory::Bytes;

    #[test]
    fn memory_round_trips_through_a_private_mapping() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("mem");
        let memory = create_guest_memory(4).unwrap();
        memory
            .write_obj(0xdead_beef_u32, GuestAddress(0x1234))
            .unwrap();
        let ranges = write_memory(&memory, &path).unwrap();
        let restored = map_memory_file(&path, &ranges).unwrap();
        assert_eq!(
            restored.read_obj::<u32>(GuestAddress(0x1234)).unwrap(),
            0xdead_beef
        );
        // Copy-on-write: the guest's writes never reach the file.
        restored.write_obj(1u32, GuestAddress(0x1234)).unwrap();
        let again = map_memory_file(&path, &ranges).unwrap();
        assert_eq!(
            again.read_obj::<u32>(GuestAddress(0x1234)).unwrap(),
            0xdead_beef
        );
    }

    #[test]
    fn a_memory_file_of_the_wrong_size_is_refused() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("mem");
        let memory = create_guest_memory(2).unwrap();
        let mut ranges = write_memory(&memory, &path).unwrap();
        ranges[0].size += 4096;
        let err = map_memory_file(&path, &ranges).unwrap_err();
        assert!(matches!(err, SnapshotMemoryError::Size { .. }), "{err}");
    }
}
