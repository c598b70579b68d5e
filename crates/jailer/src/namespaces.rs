//! The network namespace the monitor joins, and the mount namespace whose root is the jail.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{chdir, chroot, pivot_root};
use std::os::fd::OwnedFd;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("cannot join the network namespace: {0}")]
    Netns(nix::Error),
    #[error("cannot make the jail's mount namespace: {1} failed: {0}")]
    Mount(nix::Error, &'static str),
}

/// Joins the network namespace whose handle is `netns` (checked to be one when validating).
pub fn join_netns(netns: &OwnedFd) -> Result<(), NsError> {
    setns(netns, CloneFlags::CLONE_NEWNET).map_err(NsError::Netns)
}

/// Moves this process into a new mount namespace whose root is `root`; the host's file
/// systems are detached from it, so no path leads out.
pub fn enter_jail(root: &Path) -> Result<(), NsError> {
    let step = |what| move |e| NsError::Mount(e, what);
    unshare(CloneFlags::CLONE_NEWNS).map_err(step("unshare(CLONE_NEWNS)"))?;
    // Nothing done here may propagate back to the host's mounts (pivot_root insists).
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_PRIVATE | MsFlags::MS_REC, none)
        .map_err(step("making / private"))?;
    // pivot_root needs the new root to be a mount point; recursive, so files the operator
    // bind-mounted into the jail stay visible.
    mount(
        Some(root),
        root,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(step("bind-mounting the jail root"))?;
    chdir(root).map_err(step("chdir to the jail root"))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
    // the jail as the only tree, without an old_root folder to make and remove.
    pivot_root(".", ".").map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detaching the old root"))?;
    chroot(".").map_err(step("chroot"))?;
    chdir("/").map_err(step("chdir /"))
}
