//! Backing files for fuzzed drives.

use std::path::Path;
use std::sync::OnceLock;
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
    std::fs::write(file.as_path(), pattern_bytes(len)).expect("cannot fill the temporary disk");
    file
}

/// The first `len` bytes of a fresh disk ([`pattern`]); computed once, up to 256 KiB.
pub fn pattern_bytes(len: u64) -> Vec<u8> {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    let all = PATTERN.get_or_init(|| (0..256 * 1024).map(pattern).collect());
    match all.get(..len as usize) {
        Some(bytes) => bytes.to_vec(),
        None => (0..len).map(pattern).collect(),
    }
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
