//! Opening the host files a client names (kernel, initrd, disk images, metrics, config).
//!
//! A client can name any path: a FIFO nobody writes to, `/dev/zero`, a directory, a symlink
//! loop. Opening must never block the thread that does it (the VMM thread serves the API),
//! and a file must be of a kind its use can take before anything reads it. So every open
//! here is non-blocking (`O_NONBLOCK`: a FIFO opens at once instead of waiting for its other
//! end) and is followed by an `fstat` of the open file (not of the path, which could change
//! in between) that checks the kind. A regular file or block device is then switched back
//! to blocking mode: `O_NONBLOCK` means nothing to them on a local file system, but a 9p
//! mount (as in the KVM lab) answers their reads with `EAGAIN`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The kinds of file Ember can be handed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl FileKind {
    fn of(file_type: std::fs::FileType) -> FileKind {
        if file_type.is_dir() {
            FileKind::Directory
        } else if file_type.is_fifo() {
            FileKind::Fifo
        } else if file_type.is_char_device() {
            FileKind::CharDevice
        } else if file_type.is_block_device() {
            FileKind::BlockDevice
        } else if file_type.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Regular
        }
    }

    fn describe(self) -> &'static str {
        match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a named pipe (FIFO)",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
        }
    }
}

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
    /// Read-write with appends (a metrics file). Read access too, so that a FIFO opens
    /// without a reader on the other end, as Firecracker's metrics FIFOs do.
    Append,
}

/// Why a named file cannot be used. `Display` is the OS error's text or the kind found, so
/// that callers put the file's role and path in front.
#[derive(Debug, thiserror::Error)]
pub enum HostFileError {
    #[error("{0}")]
    Open(io::Error),
    #[error("{0}")]
    Stat(io::Error),
    #[error("it is {found}, not {wanted}", found = .found.describe(), wanted = describe_all(.wanted))]
    WrongKind {
        found: FileKind,
        wanted: &'static [FileKind],
    },
    #[error("{0}")]
    Read(io::Error),
    #[error("it is larger than {0} bytes")]
    TooLarge(u64),
    #[error("it is not UTF-8 text")]
    NotText,
}

impl HostFileError {
    /// The OS error behind it, if there is one.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            HostFileError::Open(err) | HostFileError::Stat(err) | HostFileError::Read(err) => {
                Some(err)
            }
            HostFileError::WrongKind { .. } | HostFileError::TooLarge(_) => None,
            HostFileError::NotText => None,
        }
    }
}

fn describe_all(kinds: &[FileKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.describe()).collect();
    names.join(" or ")
}

/// Opens `path` without blocking and checks that it is one of `allowed`.
pub fn open(
    path: &Path,
    access: Access,
    allowed: &'static [FileKind],
) -> Result<(File, FileKind), HostFileError> {
    let mut options = OpenOptions::new();
    options.read(true).custom_flags(libc::O_NONBLOCK);
    match access {
        Access::Read => {}
        Access::ReadWrite => {
            options.write(true);
        }
        Access::Append => {
            options.append(true);
        }
    }
    let file = options.open(path).map_err(HostFileError::Open)?;
    let kind = FileKind::of(file.metadata().map_err(HostFileError::Stat)?.file_type());
    if !allowed.contains(&kind) {
        return Err(HostFileError::WrongKind {
            found: kind,
            wanted: allowed,
        });
    }
    if matches!(kind, FileKind::Regular | FileKind::BlockDevice) {
        set_blocking(&file, access).map_err(HostFileError::Stat)?;
    }
    Ok((file, kind))
}

/// Opens a regular file for reading (a kernel, an initrd, a config file).
pub fn open_regular(path: &Path) -> Result<File, HostFileError> {
    open(path, Access::Read, &[FileKind::Regular]).map(|(file, _)| file)
}

/// Reads a text file of at most `limit` bytes (a config or seccomp file): a regular file, or
/// a pipe such as `--config-file <(...)` gives.
///
/// A FIFO is opened without waiting for a writer, then read in blocking mode: with a writer
/// the read waits for its text, as the shell's process substitution needs; without one it
/// ends at once with nothing read.
pub fn read_text(path: &Path, limit: u64) -> Result<String, HostFileError> {
    const TEXT_KINDS: &[FileKind] = &[FileKind::Regular, FileKind::Fifo];
    let (file, kind) = open(path, Access::Read, TEXT_KINDS)?;
    if kind == FileKind::Fifo {
        set_blocking(&file, Access::Read).map_err(HostFileError::Read)?;
    }
    let mut bytes = Vec::new();
    (&file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(HostFileError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(HostFileError::TooLarge(limit));
    }
    String::from_utf8(bytes).map_err(|_| HostFileError::NotText)
}

/// Clears `O_NONBLOCK` of a file opened by [`open`] with `access`. F_SETFL sets only the
/// status flags (`O_APPEND`, `O_NONBLOCK`, ...), so the new ones follow from `access`
/// alone; no F_GETFL (one fcntl command fewer in the VMM thread's seccomp filter).
fn set_blocking(file: &File, access: Access) -> io::Result<()> {
    let flags = match access {
        Access::Append => libc::O_APPEND,
        Access::Read | Access::ReadWrite => 0,
    };
    // SAFETY: F_SETFL on a descriptor the caller owns; no memory is passed.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn fifo(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("fifo");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        path
    }

    #[test]
    fn a_fifo_is_refused_at_once_for_reading() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = fifo(dir.as_path());
        let started = Instant::now();
        let err = open_regular(&path).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            err.to_string(),
            "it is a named pipe (FIFO), not a regular file"
        );
    }

    #[test]
    fn regular_files_are_left_in_blocking_mode() {
        let file = vmm_sys_util::tempfile::TempFile::new().unwrap();
        for access in [Access::Read, Access::ReadWrite, Access::Append] {
            let (opened, _) = open(file.as_path(), access, &[FileKind::Regular]).unwrap();
            // SAFETY: F_GETFL on a descriptor owned here; no memory is passed.
            let flags = unsafe { libc::fcntl(opened.as_raw_fd(), libc::F_GETFL) };
            assert_eq!(flags & libc::O_NONBLOCK, 0, "{access:?}");
            assert_eq!(flags & libc::O_APPEND != 0, access == Access::Append);
        }
    }

    #[test]
    fn a_fifo_opens_at_once_for_appending() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = fifo(dir.as_path());
        let (_file, kind) = open(&path, Access::Append, &[FileKind::Regular, FileKind::Fifo])
            .expect("a FIFO without a reader opens read-write");
        assert_eq!(kind, FileKind::Fifo);
    }

    #[test]
    fn devices_directories_and_missing_files_are_refused() {
        let err = open_regular(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is a character device, not a regular file"
        );
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let err = open_regular(dir.as_path()).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        let err = open_regular(&dir.as_path().join("missing")).unwrap_err();
        assert_eq!(err.os_error().unwrap().raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn text_is_read_up_to_its_limit() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("config.json");
        std::fs::write(&path, "{}").unwrap();
        assert_eq!(read_text(&path, 2).unwrap(), "{}");
        assert!(matches!(
            read_text(&path, 1),
            Err(HostFileError::TooLarge(1))
        ));
        let err = read_text(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(matches!(err, HostFileError::WrongKind { .. }), "{err}");
    }

    #[test]
    fn a_fifo_without_a_writer_reads_as_empty_at_once() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = fifo(dir.as_path());
        assert_eq!(read_text(&path, 100).unwrap(), "");
    }

    #[test]
    fn a_fifo_with_a_writer_is_read_to_its_end() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = fifo(dir.as_path());
        // Read-write, so that it opens without a reader; like the shell's end of `<(...)`,
        // it is open before the reader comes, and writes later.
        let mut fifo = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            io::Write::write_all(&mut fifo, b"{\"a\": 1}").unwrap();
        });
        let text = read_text(&path, 100).unwrap();
        writer.join().unwrap();
        assert_eq!(text, "{\"a\": 1}");
    }

    #[test]
    fn a_symlink_loop_gives_the_os_error() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let (a, b) = (dir.as_path().join("a"), dir.as_path().join("b"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let err = open_regular(&a).unwrap_err();
        assert_eq!(err.os_error().unwrap().raw_os_error(), Some(libc::ELOOP));
    }
}
