//! Snapshots: a paused VM's state in a versioned, checksummed state file, and its guest
//! memory in a memory file that a restore maps privately.

pub mod cpu;
pub mod file;
pub mod memory;
mod vm;

pub use file::{
    decode_state, encode_state, frame_payload, read_state, write_state, StateFileError,
    FORMAT_VERSION,
};
pub use memory::{layout, map_memory_file, write_memory, MemoryRange, SnapshotMemoryError};
pub use vm::{create_snapshot, load_snapshot, SnapshotError, VmSnapshot};
