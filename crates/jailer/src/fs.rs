//! The jail's files: `<chroot-base>/<exec-name>/<id>/root` with a private copy of the monitor,
//! the folders it writes to and the device nodes it opens, owned by the monitor's user.

use crate::undo::Undo;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, Gid, Uid};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("cannot create {0}: {1}")]
    Create(PathBuf, io::Error),
    #[error("cannot copy {0} to {1}: {2}")]
    Copy(PathBuf, PathBuf, io::Error),
    #[error("cannot create device node {0}: {1}")]
    Mknod(PathBuf, nix::Error),
    #[error("cannot give {0} to the monitor's user: {1}")]
    Chown(PathBuf, nix::Error),
}

/// A character device the monitor opens, made in the jail with the host's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its path inside the jail, e.g. `dev/kvm`.
    pub path: &'static str,
    /// `makedev(major, minor)`.
    pub rdev: u64,
}

/// The devices the monitor may open: KVM, TAPs (each opens /dev/net/tun) and, where the
/// host has one, /dev/userfaultfd. KVM and TUN keep their fixed numbers when the host has no
/// node, so opening them in the jail still loads the module; userfaultfd's minor number is
/// given out at boot, so it is only made when the host has it.
pub fn devices() -> Vec<Device> {
    let host = |path: &str| fs::metadata(path).ok().map(|m| m.rdev());
    let fixed = |path: &'static str, major, minor| Device {
        path,
        rdev: host(&format!("/{path}")).unwrap_or(makedev(major, minor)),
    };
    let mut devs = vec![fixed("dev/kvm", 10, 232), fixed("dev/net/tun", 10, 200)];
    if let Some(rdev) = host("/dev/userfaultfd") {
        devs.push(Device {
            path: "dev/userfaultfd",
            rdev,
        });
    }
    devs
}

/// What goes into the jail.
#[derive(Debug)]
pub struct JailFiles<'a> {
    /// `<chroot-base>/<exec-name>/<id>/root`.
    pub root: &'a Path,
    /// The monitor binary on the host.
    pub exec_src: &'a Path,
    /// Its name in the jail root.
    pub exec_name: &'a str,
    pub uid: Uid,
    pub gid: Gid,
}

impl JailFiles<'_> {
    /// Makes the jail; `undo` learns to remove everything made here.
    pub fn build(&self, undo: &mut Undo) -> Result<(), FsError> {
        make_dirs(self.root, undo)?;
        self.own_root(undo)?;
        for dir in ["dev", "dev/net", "run"] {
            self.private_dir(&self.root.join(dir), undo)?;
        }
        self.copy_monitor(undo)?;
        for dev in devices() {
            self.make_device(&dev, undo)?;
        }
        Ok(())
    }

    /// The monitor creates its API socket and other files in its root: it gets it (0700),
    /// and an existing root gets its old owner and mode back on failure.
    fn own_root(&self, undo: &mut Undo) -> Result<(), FsError> {
        let before = fs::metadata(self.root).map_err(|e| FsError::Create(self.root.into(), e))?;
        self.give(self.root, 0o700)?;
        let root = self.root.to_path_buf();
        undo.push(
            format!("restore the owner of {}", root.display()),
            move || {
                std::os::unix::fs::chown(&root, Some(before.uid()), Some(before.gid()))?;
                fs::set_permissions(&root, Permissions::from_mode(before.mode() & 0o7777))
            },
        );
        Ok(())
    }

    fn private_dir(&self, dir: &Path, undo: &mut Undo) -> Result<(), FsError> {
        match fs::create_dir(dir) {
            Ok(()) => undo.created_dir(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(FsError::Create(dir.into(), e)),
        }
        self.give(dir, 0o700)
    }

    /// A copy, not a link: jailed monitors then share no pages of their binary. It stays
    /// root's (0555), so the monitor cannot rewrite it.
    fn copy_monitor(&self, undo: &mut Undo) -> Result<(), FsError> {
        let dst = self.root.join(self.exec_name);
        let copy_err = |e| FsError::Copy(self.exec_src.into(), dst.clone(), e);
        let mut src = File::open(self.exec_src).map_err(copy_err)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o555)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&dst)
            .map_err(copy_err)?;
        undo.created_file(&dst);
        io::copy(&mut src, &mut out).map_err(copy_err)?;
        out.sync_all().map_err(copy_err)
    }

    fn make_device(&self, dev: &Device, undo: &mut Undo) -> Result<(), FsError> {
        let path = self.root.join(dev.path);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::S_IRUSR | Mode::S_IWUSR,
            dev.rdev,
        )
        .map_err(|e| FsError::Mknod(path.clone(), e))?;
        undo.created_file(&path);
        chown(&path, Some(self.uid), Some(self.gid)).map_err(|e| FsError::Chown(path, e))
    }

    fn give(&self, path: &Path, mode: u32) -> Result<(), FsError> {
        chown(path, Some(self.uid), Some(self.gid)).map_err(|e| FsError::Chown(path.into(), e))?;
        fs::set_permissions(path, Permissions::from_mode(mode))
            .map_err(|e| FsError::Create(path.into(), e))
    }
}

/// `mkdir -p`, remembering each folder it made.
fn make_dirs(path: &Path, undo: &mut Undo) -> Result<(), FsError> {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    for dir in missing.into_iter().rev() {
        fs::create_dir(dir).map_err(|e| FsError::Create(dir.into(), e))?;
        undo.created_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_and_tun_are_always_made() {
        let devs = devices();
        assert_eq!(devs[0].path, "dev/kvm");
        assert_eq!(devs[1].path, "dev/net/tun");
        assert_eq!(nix::sys::stat::major(devs[1].rdev), 10);
    }

    #[test]
    fn make_dirs_is_undone() {
        let base = std::env::temp_dir().join(format!("ember-jailer-fs-{}", std::process::id()));
        let mut undo = Undo::default();
        make_dirs(&base.join("a/b"), &mut undo).unwrap();
        assert!(base.join("a/b").is_dir());
        undo.run();
        assert!(!base.exists());
    }
}
