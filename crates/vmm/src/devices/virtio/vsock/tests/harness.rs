//! An active [`Vsock`] on hand-written rings, with helpers that act as the guest driver.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

use super::super::packet::{Header, Op, HDR_LEN, TYPE_STREAM};
use super::super::{Vsock, EVENT_INDEX, RX_INDEX, TX_INDEX};
use crate::config::VsockConfig;
use crate::devices::virtio::interrupt::Interrupt;
use crate::devices::virtio::test_utils::{guest_memory, readable, writable, Ring};
use crate::devices::virtio::VirtioDevice;
use crate::vstate::memory::GuestMemory;

pub const GUEST_CID: u64 = 3;
/// Where TX packets are written (one at a time: the device takes them at once).
const TX_BUF: u64 = 0x10000;
/// RX buffers: `RX_SLOTS` of `RX_SLOT` bytes from here.
const RX_BASE: u64 = 0x30000;
const RX_SLOT: u64 = 0x1100;
const RX_SLOTS: u64 = 128;
/// Room for a header and 4 KiB, as Linux's RX buffers.
pub const RX_BUF_LEN: u32 = HDR_LEN as u32 + 4096;

pub struct Setup {
    pub vsock: Vsock,
    pub mem: GuestMemory,
    pub rx: Ring,
    pub tx: Ring,
    pub ev: Ring,
    pub interrupt: Arc<Interrupt>,
    /// Holds the sockets; removed when the test ends.
    _dir: TempDir,
    pub uds: PathBuf,
    rx_seen: u16,
    rx_given: u16,
    rx_next_slot: u64,
    rx_heads: HashMap<u16, u64>,
}

pub fn setup() -> Setup {
    let dir = TempDir::new().unwrap();
    let uds = dir.as_path().join("v.sock");
    let config = VsockConfig {
        vsock_id: None,
        guest_cid: GUEST_CID,
        uds_path: uds.clone(),
    };
    let mut vsock = Vsock::new(&config).unwrap();
    let mem = guest_memory();
    let (rx, tx, ev) = (Ring::new(0x1000), Ring::new(0x4000), Ring::new(0x7000));
    let interrupt = Arc::new(Interrupt::new().unwrap());
    vsock.set_acked_features(vsock.avail_features());
    let queues = vec![rx.queue(false), tx.queue(false), ev.queue(false)];
    vsock
        .activate(mem.clone(), queues, interrupt.clone())
        .unwrap();
    Setup {
        vsock,
        mem,
        rx,
        tx,
        ev,
        interrupt,
        _dir: dir,
        uds,
        rx_seen: 0,
        rx_given: 0,
        rx_next_slot: 0,
        rx_heads: HashMap::new(),
    }
}

/// A stream packet from the guest's port `src` to host port `dst`.
pub fn guest_hdr(op: Op, src: u32, dst: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: 2,
        src_port: src,
        dst_port: dst,
        kind: TYPE_STREAM,
        op: op.to_u16(),
        buf_alloc: 256 << 10,
        ..Header::default()
    }
}

impl Setup {
    /// The guest sends `hdr` (its `len` set to the data's) and `data`.
    pub fn send(&mut self, hdr: Header, data: &[u8]) {
        let mut hdr = hdr;
        hdr.len = data.len() as u32;
        self.send_raw(&hdr.to_bytes(), data);
    }

    /// The guest sends arbitrary bytes as one chain: `head` then `data`.
    pub fn send_raw(&mut self, head: &[u8], data: &[u8]) {
        self.mem.write_slice(head, GuestAddress(TX_BUF)).unwrap();
        let data_at = TX_BUF + head.len() as u64;
        self.mem.write_slice(data, GuestAddress(data_at)).unwrap();
        let mut descs = vec![readable(TX_BUF, head.len() as u32)];
        if !data.is_empty() {
            descs.push(readable(data_at, data.len() as u32));
        }
        self.tx.add_chain(&self.mem, &descs);
        self.vsock.process_queue(TX_INDEX);
    }

    /// The guest tops its posted RX buffers up to `n` and notifies.
    pub fn give_rx(&mut self, n: usize) {
        let used = self.rx.used_idx(&self.mem);
        let outstanding = self.rx_given.wrapping_sub(used) as usize;
        for _ in outstanding..n {
            self.rx_given = self.rx_given.wrapping_add(1);
            let addr = RX_BASE + (self.rx_next_slot % RX_SLOTS) * RX_SLOT;
            self.rx_next_slot += 1;
            let head = self.rx.add_chain(&self.mem, &[writable(addr, RX_BUF_LEN)]);
            self.rx_heads.insert(head, addr);
        }
        self.vsock.process_queue(RX_INDEX);
    }

    /// Lets the device look at its host sockets, as the event loop would.
    pub fn poll_host(&mut self) {
        for _ in 0..4 {
            self.vsock.on_host_events();
        }
    }

    /// The packets the device put in RX buffers since the last call.
    pub fn take_rx(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut packets = Vec::new();
        while self.rx_seen != self.rx.used_idx(&self.mem) {
            let (head, len) = self.rx.used_elem(&self.mem, self.rx_seen);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let addr = self.rx_heads[&(head as u16)];
            let mut bytes = vec![0u8; len as usize];
            self.mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
            if bytes.len() < HDR_LEN {
                packets.push((Header::default(), bytes));
                continue;
            }
            let hdr = Header::from_bytes(bytes[..HDR_LEN].try_into().unwrap());
            packets.push((hdr, bytes[HDR_LEN..].to_vec()));
        }
        packets
    }

    /// Whether the device raised an interrupt since the last call.
    pub fn interrupted(&self) -> bool {
        self.interrupt.event().read().is_ok()
    }

    /// Posts buffers, polls the host side and returns what arrived.
    pub fn exchange(&mut self) -> Vec<(Header, Vec<u8>)> {
        self.give_rx(16);
        self.poll_host();
        self.take_rx()
    }

    /// The guest posts an event buffer.
    pub fn give_event_buffer(&mut self, addr: u64) {
        self.ev.add_chain(&self.mem, &[writable(addr, 8)]);
        self.vsock.process_queue(EVENT_INDEX);
    }
}

/// The ops of `packets`, for short assertions.
pub fn ops(packets: &[(Header, Vec<u8>)]) -> Vec<Option<Op>> {
    packets.iter().map(|(h, _)| h.op()).collect()
}

/// Header tweaks for tests.
pub trait HeaderExt {
    fn with_flags(self, flags: u32) -> Header;
    fn with_credit(self, buf_alloc: u32, fwd_cnt: u32) -> Header;
}

impl HeaderExt for Header {
    fn with_flags(mut self, flags: u32) -> Header {
        self.flags = flags;
        self
    }

    fn with_credit(mut self, buf_alloc: u32, fwd_cnt: u32) -> Header {
        self.buf_alloc = buf_alloc;
        self.fwd_cnt = fwd_cnt;
        self
    }
}
