//! Backing files for fuzzed drives.

use std::path::Path;
use vmm::config::{CacheType, DriveConfig};
use vmm_sys_util::tempfile::TempFile;

/// The byte a fresh fuzz disk holds at `offset`.
pub fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// A temporary disk of `len` bytes filled with [`pattern`], in /dev/shm when there is one
/// (no real disk I/O, cheap flushes). Removed when dropped.
pub fn disk_file(len: u64) -> TempFile {
    let shm = Path::new("/dev/shm");
    let file = if shm.is_dir() {
        TempFile::new_in(shm)
    } else {
        TempFile::new()
    };
    let file = file.expect("cannot create a temporary disk");
    let bytes: Vec<u8> = (0..len).map(pattern).collect();
    std::fs::write(file.as_path(), bytes).expect("cannot fill the temporary disk");
    file
}

/// A drive backed by `file`.
pub fn drive(file: &TempFile, read_only: bool, cache_type: CacheType) -> DriveConfig {
    DriveConfig {
        drive_id: "fuzz".into(),
        path_on_host: file.as_path().to_path_buf(),
        is_root_device: true,
        is_read_only: read_only,
        partuuid: None,
        cache_type,
        io_engine: None,
        rate_limiter: None,
    }
}
