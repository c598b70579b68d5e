//! `vsock_packets`: a hostile guest's TX packets and RX buffers, and hostile host clients,
//! against the virtio-vsock device, activated on rings laid out by hand, with real Unix
//! sockets in a temporary folder.
//!
//! Input: up to [`MAX_OPS`] ops, each an opcode byte (mod 7):
//!
//! | op | operands | effect |
//! |---|---|---|
//! | 0 packet | `u8` CID kind, `u8` src port, `u8` dst port, `u16` type, `u16` op, `u32` flags, `u32` buf_alloc, `u32` fwd_cnt, `u8` length lie, bytes | a TX packet |
//! | 1 rx | `u8` count, `u16` length | RX buffers posted, RX notified |
//! | 2 client | `u8` port | a host client connects and sends `CONNECT <port>` |
//! | 3 client bytes | `u8` client, bytes | a host client writes raw bytes |
//! | 4 client close | `u8` client, `bool` read first | a host client reads what waits, or goes |
//! | 5 listen | `u8` port | a host listener at `<uds_path>_<port>` |
//! | 6 host | `bool` transport reset | the host side polled (and the transport reset) |
//!
//! Ports are small numbers (mod 4 for the host, mod 8 for the guest) so that connections
//! do form. CID kinds: 0 right, 1 a spoofed source, 2 a foreign destination.
//!
//! Checks after every op: the device's bounds (connections, handshakes, owed RSTs, bytes
//! held for host sockets) and the rings (never more used entries than made available).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};
use vmm::config::VsockConfig;
use vmm::devices::virtio::interrupt::Interrupt;
use vmm::devices::virtio::test_utils::{guest_memory, readable, writable, Ring};
use vmm::devices::virtio::vsock::connection::CONN_BUF;
use vmm::devices::virtio::vsock::muxer::{MAX_CONNECTIONS, MAX_HANDSHAKES, MAX_PENDING_RESETS};
use vmm::devices::virtio::vsock::packet::{Header, HDR_LEN};
use vmm::devices::virtio::vsock::{Vsock, RX_INDEX, TX_INDEX};
use vmm::devices::virtio::VirtioDevice;
use vmm::vstate::memory::GuestMemory;

use crate::input::{Reader, Writer};

pub const MAX_OPS: usize = 64;
const GUEST_CID: u64 = 3;
const TX_BUF: u64 = 0x10000;
const RX_BASE: u64 = 0x30000;
const RX_SLOT: u64 = 0x1100;
const RX_SLOTS: u16 = 128;
const HOST_PORT_BASE: u32 = 5000;

struct Harness {
    vsock: Vsock,
    mem: GuestMemory,
    rx: Ring,
    tx: Ring,
    rx_given: u16,
    tx_given: u16,
    uds: PathBuf,
    clients: Vec<UnixStream>,
    listeners: Vec<UnixListener>,
}

/// A folder for the sockets of one run, removed at its end.
struct Folder(PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn folder() -> Folder {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("ember-fuzz-vsock-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).expect("a temporary folder");
    Folder(path)
}

impl Harness {
    fn new(dir: &Path) -> Harness {
        let uds = dir.join("v.sock");
        let config = VsockConfig {
            vsock_id: None,
            guest_cid: GUEST_CID,
            uds_path: uds.clone(),
        };
        let mut vsock = Vsock::new(&config).expect("the device binds its socket");
        let mem = guest_memory();
        let (rx, tx, ev) = (Ring::new(0x1000), Ring::new(0x4000), Ring::new(0x7000));
        let interrupt = Arc::new(Interrupt::new().expect("an eventfd"));
        vsock.set_acked_features(vsock.avail_features());
        let queues = vec![rx.queue(false), tx.queue(false), ev.queue(false)];
        vsock
            .activate(mem.clone(), queues, interrupt)
            .expect("three queues");
        Harness {
            vsock,
            mem,
            rx,
            tx,
            rx_given: 0,
            tx_given: 0,
            uds,
            clients: Vec::new(),
            listeners: Vec::new(),
        }
    }

    fn packet(&mut self, r: &mut Reader) {
        let cid_kind = r.u8() % 3;
        let mut hdr = Header {
            src_cid: if cid_kind == 1 { 7 } else { GUEST_CID },
            dst_cid: if cid_kind == 2 { 9 } else { 2 },
            src_port: u32::from(r.u8() % 8),
            dst_port: HOST_PORT_BASE + u32::from(r.u8() % 4),
            kind: r.u16() % 3,
            op: r.u16() % 9,
            flags: r.u32(),
            buf_alloc: r.u32(),
            fwd_cnt: r.u32(),
            ..Header::default()
        };
        let lie = r.u8();
        let data = r.bytes(70 << 10);
        hdr.len = match lie % 4 {
            0 => data.len() as u32,
            1 => (data.len() as u32).wrapping_add(u32::from(lie)),
            2 => u32::MAX - u32::from(lie),
            _ => (data.len() as u32).saturating_sub(u32::from(lie)),
        };
        let head = hdr.to_bytes();
        self.mem.write_slice(&head, GuestAddress(TX_BUF)).unwrap();
        let data_at = TX_BUF + HDR_LEN as u64;
        self.mem.write_slice(data, GuestAddress(data_at)).unwrap();
        let mut descs = vec![readable(TX_BUF, HDR_LEN as u32)];
        if !data.is_empty() {
            descs.push(readable(data_at, data.len() as u32));
        }
        self.tx.add_chain(&self.mem, &descs);
        self.tx_given = self.tx_given.wrapping_add(1);
        self.vsock.process_queue(TX_INDEX);
    }

    fn give_rx(&mut self, r: &mut Reader) {
        let count = r.u8() % 32;
        let len = u32::from(r.u16()) % (RX_SLOT as u32 + 64);
        for _ in 0..count {
            let outstanding = self.rx_given.wrapping_sub(self.rx.used_idx(&self.mem));
            if outstanding >= RX_SLOTS {
                break;
            }
            let addr = RX_BASE + u64::from(self.rx_given % RX_SLOTS) * RX_SLOT;
            self.rx.add_chain(&self.mem, &[writable(addr, len)]);
            self.rx_given = self.rx_given.wrapping_add(1);
        }
        self.vsock.process_queue(RX_INDEX);
    }

    fn client(&mut self, r: &mut Reader) {
        let port = HOST_PORT_BASE + u32::from(r.u8() % 4);
        if self.clients.len() >= 16 {
            return;
        }
        if let Ok(mut client) = UnixStream::connect(&self.uds) {
            let _ = client.set_nonblocking(true);
            let _ = client.write_all(format!("CONNECT {port}\n").as_bytes());
            self.clients.push(client);
        }
    }

    fn client_bytes(&mut self, r: &mut Reader) {
        let index = usize::from(r.u8());
        let bytes = r.bytes(4096);
        if let Some(client) = self.pick(index) {
            let _ = client.write(bytes);
        }
    }

    fn client_close(&mut self, r: &mut Reader) {
        let index = usize::from(r.u8());
        let read_first = r.bool();
        if self.clients.is_empty() {
            return;
        }
        let index = index % self.clients.len();
        if read_first {
            let mut buf = [0u8; 4096];
            let _ = self.clients[index].read(&mut buf);
        } else {
            self.clients.swap_remove(index);
        }
    }

    fn pick(&mut self, index: usize) -> Option<&mut UnixStream> {
        let len = self.clients.len();
        (len > 0).then(|| &mut self.clients[index % len])
    }

    fn listen(&mut self, r: &mut Reader) {
        let port = HOST_PORT_BASE + u32::from(r.u8() % 4);
        let mut path = self.uds.as_os_str().to_owned();
        path.push(format!("_{port}"));
        if let Ok(listener) = UnixListener::bind(path) {
            self.listeners.push(listener);
        }
    }

    fn check(&self) {
        let muxer = self.vsock.muxer();
        assert!(muxer.connection_count() <= MAX_CONNECTIONS);
        assert!(muxer.handshake_count() <= MAX_HANDSHAKES);
        assert!(muxer.pending_resets() <= MAX_PENDING_RESETS);
        assert!(muxer.buffered_bytes() <= muxer.connection_count() * CONN_BUF as usize);
        let rx_used = self.rx.used_idx(&self.mem).wrapping_sub(0);
        assert!(
            self.rx_given.wrapping_sub(rx_used) <= RX_SLOTS,
            "RX used past avail"
        );
        assert_eq!(
            self.tx.used_idx(&self.mem),
            self.tx_given,
            "a TX chain kept"
        );
    }
}

pub fn run(data: &[u8]) {
    let dir = folder();
    let mut h = Harness::new(&dir.0);
    let mut r = Reader::new(data);
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        match r.u8() % 7 {
            0 => h.packet(&mut r),
            1 => h.give_rx(&mut r),
            2 => h.client(&mut r),
            3 => h.client_bytes(&mut r),
            4 => h.client_close(&mut r),
            5 => h.listen(&mut r),
            _ => {
                if r.bool() {
                    h.vsock.send_transport_reset();
                }
                h.vsock.on_host_events();
            }
        }
        h.check();
    }
}

/// A packet op with the right CIDs.
fn packet(w: &mut Writer, src: u8, dst: u8, op: u16, flags: u32, data: &[u8]) {
    w.u8(0).u8(0).u8(src).u8(dst).u16(1).u16(op).u32(flags);
    w.u32(CONN_BUF).u32(0).u8(0).bytes(data);
}

pub fn seeds() -> crate::Seeds {
    let mut seeds = Vec::new();
    // A guest connection to a host listener: request, data, shutdown.
    let mut w = Writer::new();
    w.u8(5).u8(0);
    w.u8(1).u8(16).u16(HDR_LEN as u16 + 4096);
    packet(&mut w, 1, 0, 1, 0, b"");
    packet(&mut w, 1, 0, 5, 0, b"hello");
    w.u8(6).bool(false);
    packet(&mut w, 1, 0, 4, 3, b"");
    w.u8(1).u8(16).u16(HDR_LEN as u16 + 4096);
    seeds.push(("guest-connect-send-close", w.finish()));
    // A host client asks for a guest port; the guest answers and both send.
    let mut w = Writer::new();
    w.u8(1).u8(16).u16(HDR_LEN as u16 + 4096);
    w.u8(2).u8(1);
    w.u8(3).u8(0).bytes(b"early bytes");
    w.u8(6).bool(false);
    w.u8(1).u8(16).u16(HDR_LEN as u16 + 4096);
    seeds.push(("host-connect", w.finish()));
    // Lies: lengths past the chain, spoofed CIDs, a RST storm, then a transport reset.
    let mut w = Writer::new();
    w.u8(0)
        .u8(1)
        .u8(0)
        .u8(0)
        .u16(1)
        .u16(1)
        .u32(0)
        .u32(0)
        .u32(0)
        .u8(2)
        .bytes(b"x");
    w.u8(0)
        .u8(0)
        .u8(2)
        .u8(1)
        .u16(1)
        .u16(5)
        .u32(0)
        .u32(0)
        .u32(0)
        .u8(1)
        .bytes(b"short");
    for port in 0..8 {
        packet(&mut w, port, port, 5, 0, b"?");
    }
    w.u8(6).bool(true);
    w.u8(1).u8(31).u16(20);
    seeds.push(("lies-and-storms", w.finish()));
    seeds
}
