//! A fake TAP, split rings written by hand, and a [`Net`] activated on them.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueState};
use vm_memory::{Address, Bytes, GuestAddress};

use super::super::{Net, NetMetrics, TapError, TapIo, VNET_HDR_LEN};
use crate::devices::virtio::interrupt::Interrupt;
use crate::devices::virtio::test_utils::{guest_memory, Desc};
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

/// A split ring at fixed addresses, driven like a guest driver would.
pub struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
}

impl Ring {
    fn new(base: u64) -> Self {
        Ring {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    pub fn queue(&self, event_idx: bool) -> Queue {
        let state = QueueState {
            max_size: SIZE,
            next_avail: 0,
            next_used: 0,
            event_idx_enabled: event_idx,
            size: SIZE,
            ready: true,
            desc_table: self.desc,
            avail_ring: self.avail,
            used_ring: self.used,
        };
        Queue::try_from(state).unwrap()
    }

    /// Writes `descs` as a chain and makes it available; returns the head index.
    pub fn add_chain(&mut self, mem: &GuestMemory, descs: &[Desc]) -> u16 {
        let head = self.next_desc;
        for (i, d) in descs.iter().enumerate() {
            let index = (head + i as u16) % SIZE;
            let has_next = i + 1 < descs.len();
            let flags = u16::from(d.writable) * 2 + u16::from(has_next);
            let next = (index + 1) % SIZE;
            let base = GuestAddress(self.desc + 16 * u64::from(index));
            mem.write_obj(d.addr.to_le(), base).unwrap();
            mem.write_obj(d.len.to_le(), base.unchecked_add(8)).unwrap();
            mem.write_obj(flags.to_le(), base.unchecked_add(12))
                .unwrap();
            mem.write_obj(next.to_le(), base.unchecked_add(14)).unwrap();
        }
        self.next_desc = (head + descs.len() as u16) % SIZE;
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % SIZE);
        mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
        head
    }

    /// `avail_event`: the driver notifies when its avail index passes it (EVENT_IDX).
    pub fn avail_event(&self, mem: &GuestMemory) -> u16 {
        let addr = self.used + 4 + 8 * u64::from(SIZE);
        u16::from_le(mem.read_obj(GuestAddress(addr)).unwrap())
    }

    /// Sets `used_event`: the device interrupts when its used index passes it (EVENT_IDX).
    pub fn set_used_event(&self, mem: &GuestMemory, idx: u16) {
        let addr = self.avail + 4 + 2 * u64::from(SIZE);
        mem.write_obj(idx.to_le(), GuestAddress(addr)).unwrap();
    }

    /// The used ring's flags (bit 0: VRING_USED_F_NO_NOTIFY).
    pub fn used_flags(&self, mem: &GuestMemory) -> u16 {
        u16::from_le(mem.read_obj(GuestAddress(self.used)).unwrap())
    }

    pub fn used_idx(&self, mem: &GuestMemory) -> u16 {
        u16::from_le(mem.read_obj(GuestAddress(self.used + 2)).unwrap())
    }

    /// `(head, len)` of used entry `n`.
    pub fn used_elem(&self, mem: &GuestMemory, n: u16) -> (u32, u32) {
        let addr = self.used + 4 + 8 * u64::from(n % SIZE);
        let id: u32 = mem.read_obj(GuestAddress(addr)).unwrap();
        let len: u32 = mem.read_obj(GuestAddress(addr + 4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
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
