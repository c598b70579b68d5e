//! What the monitor keeps of the jailer's powers: nothing. Resource limits, no capabilities
//! in any set, the monitor's uid/gid with no supplementary groups, no inherited descriptors.

use crate::args::ResourceLimit;
use caps::CapSet;
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("cannot set the {0} limit to {1}: {2}")]
    Limit(&'static str, u64, nix::Error),
    #[error("cannot drop capabilities: {0}")]
    Caps(caps::errors::CapsError),
    #[error("cannot switch to uid {0} gid {1}: {2}")]
    Ids(u32, u32, nix::Error),
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    #[error("cannot close inherited file descriptors: {0}")]
    CloseFds(std::io::Error),
}

/// Without `--resource-limit no-file=`, the monitor may open this many descriptors.
const DEFAULT_OPEN_FILES: u64 = 2048;

/// Sets the limits (soft and hard) while the jailer may still raise a hard limit.
pub fn set_limits(limits: &[ResourceLimit]) -> Result<(), PrivError> {
    let mut open_files = DEFAULT_OPEN_FILES;
    for limit in limits {
        match *limit {
            ResourceLimit::FileSize(n) => set("fsize", Resource::RLIMIT_FSIZE, n)?,
            ResourceLimit::OpenFiles(n) => open_files = n,
        }
    }
    set("no-file", Resource::RLIMIT_NOFILE, open_files)
}

fn set(name: &'static str, resource: Resource, value: u64) -> Result<(), PrivError> {
    setrlimit(resource, value, value).map_err(|e| PrivError::Limit(name, value, e))
}

/// Becomes `uid`/`gid` for good, holding no capability: none effective, permitted,
/// inheritable or ambient, and an empty bounding set, so not even exec'ing a file as uid 0
/// could give one back; no_new_privs keeps it so across exec.
pub fn drop_to(uid: Uid, gid: Gid) -> Result<(), PrivError> {
    let ids_err = |e| PrivError::Ids(uid.as_raw(), gid.as_raw(), e);
    // Emptying the bounding set needs CAP_SETPCAP, which goes with the uid switch below.
    caps::clear(None, CapSet::Bounding).map_err(PrivError::Caps)?;
    caps::clear(None, CapSet::Ambient).map_err(PrivError::Caps)?;
    setgroups(&[]).map_err(ids_err)?;
    setresgid(gid, gid, gid).map_err(ids_err)?;
    setresuid(uid, uid, uid).map_err(ids_err)?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(PrivError::Caps)?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(PrivError::NoNewPrivs)
}

/// Closes every descriptor but stdin, stdout and stderr: nothing the jailer's caller left
/// open reaches the jail.
pub fn close_stray_fds() -> Result<(), PrivError> {
    // SAFETY: close_range only closes descriptors; this runs first thing in main, before
    // anything in this process holds a descriptor above 2.
    let ret = unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    if ret == 0 {
        Ok(())
    } else {
        Err(PrivError::CloseFds(std::io::Error::last_os_error()))
    }
}
