//! `vsock` (and the body of `PUT /vsock`): a virtio-vsock device whose host side is
//! Firecracker's: a Unix socket at `uds_path` for host-initiated connections and
//! `<uds_path>_<port>` sockets for guest-initiated ones.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The CIDs no guest may take: 0 (hypervisor), 1 (local), 2 (host).
pub const FIRST_GUEST_CID: u64 = 3;
/// `VMADDR_CID_ANY` (-1 as a u32) is a wildcard, not an address; anything above is not a
/// 32-bit CID at all.
pub const LAST_GUEST_CID: u64 = u32::MAX as u64 - 1;
/// `sun_path` is 108 bytes with its NUL; `_<port>` needs up to 11 more.
pub const MAX_UDS_PATH_LEN: usize = 107 - 11;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VsockConfigError {
    #[error("guest_cid {0} is invalid: a guest CID is {FIRST_GUEST_CID} to {LAST_GUEST_CID} (0, 1 and 2 are reserved)")]
    BadCid(u64),
    #[error("uds_path is empty")]
    EmptyPath,
    #[error("uds_path {0:?} is longer than {MAX_UDS_PATH_LEN} bytes (a Unix socket path and its _<port> suffix must fit in 108)")]
    PathTooLong(PathBuf),
    #[error("uds_path {0:?}: its folder does not exist")]
    MissingFolder(PathBuf),
    #[error("uds_path {0:?} is already taken: remove the file or pick another path")]
    PathTaken(PathBuf),
    #[error("a vsock device is already configured (Ember has at most one)")]
    AlreadyConfigured,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// Deprecated in Firecracker and ignored there too; kept so old clients still work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
    /// A u64 here so that an out-of-range CID is refused by name, not as a JSON type error.
    pub guest_cid: u64,
    pub uds_path: PathBuf,
}

impl VsockConfig {
    /// Checks what needs no file system.
    pub fn validate(&self) -> Result<(), VsockConfigError> {
        if !(FIRST_GUEST_CID..=LAST_GUEST_CID).contains(&self.guest_cid) {
            return Err(VsockConfigError::BadCid(self.guest_cid));
        }
        if self.uds_path.as_os_str().is_empty() {
            return Err(VsockConfigError::EmptyPath);
        }
        if self.uds_path.as_os_str().len() > MAX_UDS_PATH_LEN {
            return Err(VsockConfigError::PathTooLong(self.uds_path.clone()));
        }
        Ok(())
    }

    /// Checks that the socket can be made: its folder exists and nothing is at the path.
    /// (Firecracker refuses a taken path too; removing a stale socket is the caller's job.)
    pub fn check_host_path(&self) -> Result<(), VsockConfigError> {
        self.validate()?;
        let path = &self.uds_path;
        let folder = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !folder.is_dir() {
            return Err(VsockConfigError::MissingFolder(path.clone()));
        }
        if path.symlink_metadata().is_ok() {
            return Err(VsockConfigError::PathTaken(path.clone()));
        }
        Ok(())
    }
}
