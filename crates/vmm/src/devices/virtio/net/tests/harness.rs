//! A fake TAP, split rings written by hand, and a [`Net`] activated on them.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Bytes, GuestAddress};

use super::super::{Net, NetMetrics, TapError, TapIo, VNET_HDR_LEN};
use crate::devices::virtio::interrupt::Interrupt;
use crate::devices::virtio::test_utils::guest_memory;
pub use crate::devices::virtio::test_utils::Ring;
use crate::devices::virtio::VirtioDevice;
use crate::vstate::memory::GuestMemory;

pub const MAC: [u8; 6] = [0x06, 0, 0xac, 0x10, 0, 2];
pub const SIZE: u16 = 256;
/// Where test buffers go: above both rings.
pub const BUFFERS: u64 = 0x10000;

/// One end of a datagram socket pair, with the offloads it was given.
pub struct FakeTap {
    sock: UnixDatagram,
    offload: Arc<AtomicU32>,
}

impl AsRawFd for FakeTap {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl TapIo for FakeTap {
    fn name(&self) -> &str {
        "fake-tap"
    }

    fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        self.offload.store(flags, Ordering::SeqCst);
        Ok(())
    }
}

/// An active device on a fake TAP, and the other end of the TAP.
pub struct Setup {
    pub net: Net,
    pub peer: UnixDatagram,
    pub mem: GuestMemory,
    pub rx: Ring,
    pub tx: Ring,
    pub interrupt: Arc<Interrupt>,
    pub metrics: Arc<NetMetrics>,
    pub offload: Arc<AtomicU32>,
}

/// A fake TAP, its peer, and the offloads it was last given.
pub fn fake_tap() -> (FakeTap, UnixDatagram, Arc<AtomicU32>) {
    let (sock, peer) = UnixDatagram::pair().unwrap();
    sock.set_nonblocking(true).unwrap();
    peer.set_nonblocking(true).unwrap();
    let offload = Arc::new(AtomicU32::new(u32::MAX));
    let tap = FakeTap {
        sock,
        offload: offload.clone(),
    };
    (tap, peer, offload)
}

/// A device that negotiated `features` (all offered ones when None).
pub fn setup(features: Option<u64>) -> Setup {
    let (tap, peer, offload) = fake_tap();
    let mut net = Net::with_tap("eth0", MAC, Box::new(tap)).unwrap();
    let metrics = net.metrics();
    let mem = guest_memory();
    let (rx, tx) = (Ring::new(0x1000), Ring::new(0x4000));
    let interrupt = Arc::new(Interrupt::new().unwrap());
    let features = features.unwrap_or(net.avail_features());
    net.set_acked_features(features);
    let event_idx = features & 1 << VIRTIO_RING_F_EVENT_IDX != 0;
    let queues = vec![rx.queue(event_idx), tx.queue(event_idx)];
    net.activate(mem.clone(), queues, interrupt.clone())
        .unwrap();
    Setup {
        net,
        peer,
        mem,
        rx,
        tx,
        interrupt,
        metrics,
        offload,
    }
}

/// `len` bytes of a recognisable frame: a header of zeros, then a counting pattern.
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut bytes = vec![0u8; VNET_HDR_LEN];
    bytes.extend((0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    bytes
}

/// Reads a counter.
pub fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Setup {
    /// Number of interrupts raised since the last call.
    pub fn interrupts(&self) -> u64 {
        self.interrupt.event().read().unwrap_or(0)
    }

    /// The datagrams the device wrote to the TAP.
    pub fn sent_frames(&self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 1 << 17];
        while let Ok(n) = self.peer.recv(&mut buf) {
            frames.push(buf[..n].to_vec());
        }
        frames
    }

    /// Guest memory at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        self.mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        bytes
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }
}
