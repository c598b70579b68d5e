//! A host TAP device opened by name through `/dev/net/tun`, in the mode virtio-net needs:
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, non-blocking, with a 12-byte `virtio_net_hdr_v1`
//! in front of every frame in both directions.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::VNET_HDR_LEN;

const TUN_PATH: &str = "/dev/net/tun";

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("tap device {0:?} does not exist (create it with `ip tuntap add dev {0} mode tap`)")]
    NotFound(String),
    #[error("tap device name {0:?} is empty, too long or contains a NUL")]
    BadName(String),
    #[error("cannot open {TUN_PATH} for tap device {name:?}: {source}")]
    OpenTun {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot attach to tap device {name:?} (TUNSETIFF; is it a tap, busy, or not yours?): {source}")]
    SetIff {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("tap device {name:?}: cannot set the vnet header size (TUNSETVNETHDRSZ): {source}")]
    SetVnetHdrSize {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("tap device {name:?}: cannot set offloads {flags:#x} (TUNSETOFFLOAD): {source}")]
    SetOffload {
        name: String,
        flags: u32,
        #[source]
        source: io::Error,
    },
}

/// What the device needs from its backend: a non-blocking fd where one `readv` returns one
/// frame and one `writev` sends one frame, both with the vnet header in front, plus the
/// offload switch. Implemented by [`Tap`]; tests use a datagram socket pair.
pub trait TapIo: AsRawFd + Send {
    /// The name used in log and error messages.
    fn name(&self) -> &str;

    /// Tells the kernel which offloads (`TUN_F_*`) the guest can receive.
    fn set_offload(&self, flags: u32) -> Result<(), TapError>;
}

/// An open TAP device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags (the union's first member).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tap {
    /// Opens the existing TAP device `name` and sets its vnet header size. Offloads start
    /// off; see [`TapIo::set_offload`].
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let req = ifreq(name)?;
        if !interface_exists(name) {
            return Err(TapError::NotFound(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|source| TapError::OpenTun {
                name: name.to_string(),
                source,
            })?;
        // SAFETY: `file` is an open /dev/net/tun fd and `req` a live, properly laid out
        // ifreq of the size the kernel copies in; the kernel keeps no reference to it.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &req) };
        if ret < 0 {
            let source = io::Error::last_os_error();
            return Err(TapError::SetIff {
                name: name.to_string(),
                source,
            });
        }
        let tap = Tap {
            file,
            name: name.to_string(),
        };
        tap.set_vnet_hdr_size()?;
        tap.set_offload(0)?;
        Ok(tap)
    }

    fn set_vnet_hdr_size(&self) -> Result<(), TapError> {
        let size = VNET_HDR_LEN as libc::c_int;
        // SAFETY: `self.file` is an attached tap fd; TUNSETVNETHDRSZ reads one c_int from
        // the pointer, which is valid for the duration of the call.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
        if ret < 0 {
            let source = io::Error::last_os_error();
            let name = self.name.clone();
            return Err(TapError::SetVnetHdrSize { name, source });
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl TapIo for Tap {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: `self.file` is an attached tap fd; TUNSETOFFLOAD takes the flags by value.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if ret < 0 {
            let source = io::Error::last_os_error();
            let name = self.name.clone();
            return Err(TapError::SetOffload {
                name,
                flags,
                source,
            });
        }
        Ok(())
    }
}

fn ifreq(name: &str) -> Result<IfReqFlags, TapError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(TapError::BadName(name.to_string()));
    }
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    Ok(req)
}

/// Whether a network interface called `name` exists in this network namespace. TUNSETIFF
/// would silently create a missing one, which hides typos in the configuration.
fn interface_exists(name: &str) -> bool {
    let Ok(cname) = CString::new(name) else {
        return false;
    };
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(cname.as_ptr()) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_syscall() {
        for bad in ["", "a-name-that-is-far-too-long", "nul\0"] {
            assert!(
                matches!(Tap::open(bad), Err(TapError::BadName(_))),
                "{bad:?}"
            );
        }
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
    }

    #[test]
    fn a_missing_tap_is_named_in_the_error() {
        let err = Tap::open("ember-no-such0").unwrap_err();
        assert!(matches!(err, TapError::NotFound(_)));
        assert!(err.to_string().contains("\"ember-no-such0\""), "{err}");
    }
}
