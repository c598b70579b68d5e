//! A real TAP, created in a private network namespace so the host's interfaces are never
//! touched. Needs CAP_NET_ADMIN and CAP_SYS_ADMIN (root); skipped with a message otherwise.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use super::harness::*;
use crate::devices::virtio::net::tap::{Tap, TapError, TapIo};
use crate::devices::virtio::net::{Net, TX_INDEX};
use crate::devices::virtio::test_utils::readable;
use crate::devices::virtio::VirtioDevice;

/// Runs `test` on a thread of its own in a fresh network namespace (the namespace is
/// per-thread and dies with it, taking the TAP along). False when not permitted.
fn in_private_netns(test: impl FnOnce() + Send + 'static) -> bool {
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "skipped: unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            return false;
        }
        test();
        true
    });
    thread.join().unwrap()
}

/// `struct ifreq` with the name and flags only.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifreq(name: &str, flags: libc::c_int) -> IfReq {
    let mut req = IfReq {
        name: [0; 16],
        flags: flags as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    req
}

/// Creates a persistent TAP `name` (as `ip tuntap add` does) and closes it.
fn create_tap(name: &str, flags: libc::c_int) {
    let tun: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap();
    let req = ifreq(name, flags);
    // SAFETY: valid tun fd and a live ifreq for the duration of the call.
    let ret = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &req) };
    assert_eq!(ret, 0, "TUNSETIFF {name}");
    // SAFETY: valid tun fd; TUNSETPERSIST takes its argument by value.
    let ret = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1) };
    assert_eq!(ret, 0, "TUNSETPERSIST {name}");
}

/// Sets IFF_UP on `name` in the current namespace.
fn link_up(name: &str) {
    // SAFETY: plain socket creation; the fd is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(sock >= 0);
    let req = ifreq(name, libc::IFF_UP);
    // SAFETY: valid socket fd and a live ifreq for the duration of the call.
    let ret = unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) };
    // SAFETY: `sock` is ours and closed once.
    unsafe { libc::close(sock) };
    assert_eq!(ret, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn opens_an_existing_tap_and_sets_offloads() {
    in_private_netns(|| {
        create_tap("ember-t0", libc::IFF_TAP | libc::IFF_NO_PI);
        let tap = Tap::open("ember-t0").unwrap();
        let all = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_UFO;
        tap.set_offload(all).unwrap();
        tap.set_offload(0).unwrap();
        // A second user of a single-queue TAP is refused, with the name and OS error.
        let err = Tap::open("ember-t0").unwrap_err();
        assert!(matches!(err, TapError::SetIff { .. }), "{err}");
        assert!(err.to_string().contains("\"ember-t0\""), "{err}");
        assert!(err.to_string().contains("os error"), "{err}");
    });
}

#[test]
fn a_tun_device_is_not_a_tap() {
    in_private_netns(|| {
        create_tap("ember-tun0", libc::IFF_TUN | libc::IFF_NO_PI);
        let err = Tap::open("ember-tun0").unwrap_err();
        assert!(matches!(err, TapError::SetIff { .. }), "{err}");
    });
}

#[test]
fn frames_go_out_of_a_real_tap() {
    in_private_netns(|| {
        create_tap("ember-t1", libc::IFF_TAP | libc::IFF_NO_PI);
        let tap = Tap::open("ember-t1").unwrap();
        let mut s = setup_on(Box::new(tap));
        // An Ethernet broadcast frame; the kernel takes it and drops it.
        let mut bytes = frame(60, 0);
        bytes[12..18].fill(0xff);
        s.write(BUFFERS, &bytes);
        // Link down: the TAP refuses the write (EIO).
        s.tx.add_chain(&s.mem, &[readable(BUFFERS, bytes.len() as u32)]);
        s.net.process_queue(TX_INDEX);
        assert_eq!(get(&s.metrics.tx_dropped_tap_error), 1);
        link_up("ember-t1");
        s.tx.add_chain(&s.mem, &[readable(BUFFERS, bytes.len() as u32)]);
        s.net.process_queue(TX_INDEX);
        assert_eq!(get(&s.metrics.tx_packets), 1);
        assert_eq!(s.tx.used_idx(&s.mem), 2);
    });
}

/// Like [`setup`] on a given backend.
fn setup_on(tap: Box<dyn TapIo>) -> Setup {
    let mut s = setup(None);
    let mut net = Net::with_tap("eth0", MAC, tap).unwrap();
    net.set_acked_features(net.avail_features());
    let queues = vec![s.rx.queue(true), s.tx.queue(true)];
    net.activate(s.mem.clone(), queues, s.interrupt.clone())
        .unwrap();
    s.metrics = net.metrics();
    s.net = net;
    s
}
