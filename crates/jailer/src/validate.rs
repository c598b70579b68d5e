//! Every input checked before anything changes: the first bad one stops the jailer with one
//! line, and the host is as it was.

use crate::args::{Args, ResourceLimit};
use crate::cgroup::{CgroupError, CgroupPlan};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{Gid, Uid};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("--id '{0}' must be 1 to 64 characters from A-Z, a-z, 0-9 and '-'")]
    Id(String),
    #[error("--exec-file {0}: {1}")]
    ExecFile(PathBuf, String),
    #[error("--{0} {1} is not a usable id (4294967295 means \"unchanged\" to the kernel)")]
    Ident(&'static str, u32),
    #[error("--{0} {1} must be an absolute path")]
    NotAbsolute(&'static str, PathBuf),
    #[error("--chroot-base-dir {0} is on a file system mounted nodev: the monitor could not open /dev/kvm in the jail")]
    NoDev(PathBuf),
    #[error("the jail {0} is already set up (it holds {1}): another microVM has this id, or its old jail was not removed")]
    JailInUse(PathBuf, String),
    #[error("--netns {0}: {1}")]
    Netns(PathBuf, String),
    #[error("the monitor's {0} is set by the jailer; leave it out of the arguments after --")]
    MonitorArg(String),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

/// A checked request: everything the jailer needs, nothing done yet.
#[derive(Debug)]
pub struct Jail {
    pub id: String,
    /// The monitor binary on the host (canonical).
    pub exec_src: PathBuf,
    /// Its file name: the jail folder's parent and the binary's name in the jail.
    pub exec_name: String,
    /// `<chroot-base>/<exec-name>/<id>/root`.
    pub root: PathBuf,
    pub uid: Uid,
    pub gid: Gid,
    /// The network namespace to join, already opened.
    pub netns: Option<OwnedFd>,
    pub daemonize: bool,
    pub new_pid_ns: bool,
    pub cgroups: CgroupPlan,
    pub limits: Vec<ResourceLimit>,
    pub monitor_args: Vec<OsString>,
}

/// Flags the jailer passes to the monitor itself.
pub const JAILER_SETS: [&str; 4] = [
    "--id",
    "--start-time-us",
    "--start-time-cpu-us",
    "--parent-cpu-time-us",
];

/// Checks `args` in the order of the flags' importance; reads, never writes.
pub fn validate(args: Args) -> Result<Jail, ValidateError> {
    check_id(&args.id)?;
    let (exec_src, exec_name) = check_exec_file(&args.exec_file)?;
    for (flag, id) in [("uid", args.uid), ("gid", args.gid)] {
        if id == u32::MAX {
            return Err(ValidateError::Ident(flag, id));
        }
    }
    let base = absolute("chroot-base-dir", args.chroot_base_dir)?;
    let root = base.join(&exec_name).join(&args.id).join("root");
    check_jail(&root, &exec_name)?;
    let netns = args.netns.map(check_netns).transpose()?;
    check_monitor_args(&args.monitor_args)?;
    let version = if args.cgroup_version == "2" { 2 } else { 1 };
    let parent = args
        .parent_cgroup
        .unwrap_or_else(|| PathBuf::from(&exec_name));
    let cgroups = CgroupPlan::new(version, &args.cgroup, &parent, &args.id)?;
    Ok(Jail {
        id: args.id,
        exec_src,
        exec_name,
        root,
        uid: Uid::from_raw(args.uid),
        gid: Gid::from_raw(args.gid),
        netns,
        daemonize: args.daemonize,
        new_pid_ns: args.new_pid_ns,
        cgroups,
        limits: args.resource_limit,
        monitor_args: args.monitor_args,
    })
}

fn check_id(id: &str) -> Result<(), ValidateError> {
    let ok =
        (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ValidateError::Id(id.to_string()))
    }
}

/// An existing regular file someone may execute; its canonical path and its name.
fn check_exec_file(path: &Path) -> Result<(PathBuf, String), ValidateError> {
    let bad = |why: String| ValidateError::ExecFile(path.to_path_buf(), why);
    let real = fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
    let meta = fs::metadata(&real).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(bad("not executable".into()));
    }
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string);
    match name {
        Some(n) if !matches!(n.as_str(), "dev" | "run") && !n.ends_with(".pid") => Ok((real, n)),
        _ => Err(bad("its file name cannot name a file in the jail".into())),
    }
}

fn absolute(flag: &'static str, path: PathBuf) -> Result<PathBuf, ValidateError> {
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(ValidateError::NotAbsolute(flag, path))
    }
}

/// A root the operator made (holding the kernel and disks) is fine; one the jailer already
/// set up is another microVM's, or a leftover.
fn check_jail(root: &Path, exec_name: &str) -> Result<(), ValidateError> {
    for held in ["dev", exec_name] {
        if root.join(held).symlink_metadata().is_ok() {
            return Err(ValidateError::JailInUse(root.into(), held.to_string()));
        }
    }
    let existing = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let flags = statvfs(existing)
        .map(|s| s.flags())
        .unwrap_or(FsFlags::empty());
    if flags.contains(FsFlags::ST_NODEV) {
        return Err(ValidateError::NoDev(existing.into()));
    }
    Ok(())
}

/// An absolute path to a network namespace handle (e.g. /var/run/netns/NAME), opened now
/// so the namespace joined is the one checked.
fn check_netns(path: PathBuf) -> Result<OwnedFd, ValidateError> {
    let path = absolute("netns", path)?;
    let bad = |why: String| ValidateError::Netns(path.clone(), why);
    let file = File::open(&path).map_err(|e: io::Error| bad(e.to_string()))?;
    let fs_type = fstatfs(&file)
        .map_err(|e| bad(e.to_string()))?
        .filesystem_type();
    if fs_type != NSFS_MAGIC {
        return Err(bad("not a namespace handle".into()));
    }
    Ok(file.into())
}

fn check_monitor_args(args: &[OsString]) -> Result<(), ValidateError> {
    for arg in args.iter().filter_map(|a| a.to_str()) {
        let flag = arg.split('=').next().unwrap_or_default();
        if JAILER_SETS.contains(&flag) {
            return Err(ValidateError::MonitorArg(flag.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_and_plain() {
        for good in ["a", "551e7604-e35c-42b3-b825-416853441234", &"x".repeat(64)] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in ["", "a_b", "a/b", "..", "é", &"x".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exec_file_must_be_an_executable_regular_file() {
        assert!(check_exec_file(Path::new("/")).is_err());
        assert!(check_exec_file(Path::new("/etc/passwd")).is_err());
        assert!(check_exec_file(Path::new("/no/such/file")).is_err());
        let (real, name) = check_exec_file(Path::new("/bin/sh")).unwrap();
        assert!(real.is_absolute() && !name.is_empty());
    }

    #[test]
    fn the_jailer_owns_the_id_and_start_time_flags() {
        let args: Vec<OsString> = vec!["--config-file".into(), "--id=x".into()];
        assert!(matches!(
            check_monitor_args(&args),
            Err(ValidateError::MonitorArg(f)) if f == "--id"
        ));
        assert!(check_monitor_args(&["--no-api".into()]).is_ok());
    }

    #[test]
    fn netns_must_be_a_namespace() {
        assert!(check_netns("/proc/self/ns/net".into()).is_ok());
        assert!(check_netns("/etc/hostname".into()).is_err());
        assert!(check_netns("relative".into()).is_err());
    }
}
