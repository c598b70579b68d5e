//! `virtio_block`: a hostile driver's descriptor tables, rings and buffers against the
//! virtio-block device, driven only through the virtio-mmio registers.
//!
//! The input sets up a disk and a queue, then runs a program of descriptor writes, request
//! chains (direct or through an indirect table), raw memory writes, available-ring entries
//! and notifications. After every notification it checks the used ring: the used index
//! advanced by at most the number of entries made available and by at most the queue size,
//! the interrupt was raised if anything was used, and every new used element names a
//! descriptor index below the queue size. Those checks are skipped (for the rest of the run)
//! once a device-writable buffer overlaps the rings or an indirect table, since then the
//! device's own data writes may legitimately change what the checks read.
//!
//! Header: `u8` flags (bit 0 read-only drive, bit 1 writeback cache, bit 2 guest RAM in two
//! adjacent regions split at 0x80000), `u8` disk sectors,
//! `u16` extra disk bytes (mod 1024), `u8` log2 queue size (mod 9), `u64` mask over the
//! offered features. Then up to [`MAX_OPS`] ops, each an opcode byte (mod 6):
//!
//! | op | operands | effect |
//! |---|---|---|
//! | 0 desc | `u16` index, addr, `u32` len, `u16` flags, `u16` next | raw descriptor table entry |
//! | 1 blob | `u32` data-area offset, bytes | raw guest memory write (never the used ring) |
//! | 2 chain | `u32` type, `u64` sector, `u8` data count, per data `u32` len + `u8` writable, `u8` status kind, `u8` indirect | a request chain, queued |
//! | 3 avail | `u16` head | a raw head, queued |
//! | 4 notify | `u8` queue, `u16` extra idx jump | publish queued heads, QueueNotify, check |
//! | 5 reset | | device reset and a fresh handshake (rings cleared) |
//!
//! An addr is a `u8` kind (0: raw `u64`, otherwise a `u32` offset into the data area).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};
use vmm::config::CacheType;
use vmm::devices::virtio::test_utils::{
    TestDriver, AVAIL_RING, DESC_TABLE, MEM_SIZE, STATUS_DRIVER_OK, USED_RING,
};
use vmm::devices::virtio::Block;
use vmm::vstate::memory::GuestMemory;

use crate::block_model::{Layout, Model, Outcome};
use crate::disk;
use crate::input::{Reader, Writer};

pub const MAX_OPS: usize = 96;
/// Request headers, data and status bytes the harness lays out live above this.
const DATA_AREA: u64 = 0x10000;
const DATA_LEN: u64 = MEM_SIZE - DATA_AREA;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const INT_USED_RING: u32 = 1;
/// Indirect entries the overlap scan reads before it gives up and stops checking.
const SCAN_BUDGET: u64 = 4096;

pub fn run(data: &[u8]) {
    run_with_stats(data);
}

/// What a run did, for checking that the seeds reach the device's success paths.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests the device took from the queue, and those that failed.
    pub requests: u64,
    pub failed: u64,
    /// Used ring entries seen by the checks.
    pub used: u64,
    pub tainted: bool,
    /// The run stayed well-formed: every chain was checked against the model.
    pub modelled: bool,
}

pub fn run_with_stats(data: &[u8]) -> Stats {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let sectors = u64::from(r.u8());
    let extra = u64::from(r.u16() % 1024);
    let size = 1u16 << (r.u8() % 9);
    let feature_mask = r.u64();

    let file = disk::disk_file(sectors * 512 + extra);
    let cache = if flags & 2 != 0 {
        CacheType::Writeback
    } else {
        CacheType::Unsafe
    };
    let read_only = flags & 1 != 0;
    let block = Block::new(&disk::drive(&file, read_only, cache)).expect("open the disk");
    let metrics = block.metrics();
    let driver = if flags & 4 != 0 {
        // Two adjacent regions: buffers crossing 0x80000 span both.
        let half = (MEM_SIZE / 2) as usize;
        let ranges = [(GuestAddress(0), half), (GuestAddress(half as u64), half)];
        let mem = GuestMemory::from_ranges(&ranges).expect("map guest memory");
        TestDriver::with_memory(mem, Box::new(block))
    } else {
        TestDriver::new(Box::new(block))
    };
    let mut h = Harness::new(driver, size, feature_mask);
    h.model = Some(Model::new(sectors * 512 + extra, read_only));
    h.handshake();

    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        match r.u8() % 6 {
            0 => {
                let index = r.u16() % size;
                let raw = (read_addr(&mut r), r.u32(), r.u16(), r.u16());
                h.driver.write_raw_desc(DESC_TABLE, index, raw);
                h.model = None;
            }
            1 => {
                let offset = u64::from(r.u32());
                let bytes = r.bytes(4096);
                h.poke(offset, bytes);
                h.model = None;
            }
            2 => {
                let chain = read_chain(&mut r);
                h.add_chain(&chain);
            }
            3 => {
                h.pending.push((r.u16(), None));
                h.model = None;
            }
            4 => {
                let queue = u32::from(r.u8());
                let jump = r.u16();
                h.publish_and_notify(queue, jump);
            }
            _ => h.handshake(),
        }
    }
    if !h.pending.is_empty() {
        h.publish_and_notify(0, 0);
    }
    h.reset_stops_the_device();
    if let Some(model) = &h.model {
        let disk = std::fs::read(file.as_path()).expect("read the disk back");
        assert!(
            disk == model.disk,
            "the disk does not hold what the guest wrote"
        );
    }
    Stats {
        requests: metrics.requests.load(Ordering::Relaxed),
        failed: metrics.failed_requests.load(Ordering::Relaxed),
        used: h.used,
        tainted: h.tainted,
        modelled: h.model.is_some(),
    }
}

fn read_addr(r: &mut Reader) -> u64 {
    match r.u8() {
        0 => r.u64(),
        _ => DATA_AREA + u64::from(r.u32()) % DATA_LEN,
    }
}

/// A request chain to lay out.
#[derive(Debug)]
pub struct Chain {
    pub request_type: u32,
    pub sector: u64,
    /// `(len, device-writable)` of each data buffer.
    pub data: Vec<(u32, bool)>,
    /// 0: a 1-byte device-writable status; 1: a device-readable one; 2: none.
    pub status: u8,
    /// Put the chain in an indirect table referenced by one ring descriptor.
    pub indirect: bool,
}

fn read_chain(r: &mut Reader) -> Chain {
    let request_type = r.u32();
    let sector = r.u64();
    let count = r.u8() % 8;
    let data = (0..count).map(|_| (r.u32(), r.bool())).collect();
    Chain {
        request_type,
        sector,
        data,
        status: r.u8() % 3,
        indirect: r.bool(),
    }
}

pub fn write_chain(w: &mut Writer, chain: &Chain) {
    w.u8(2).u32(chain.request_type).u64(chain.sector);
    w.u8(chain.data.len() as u8);
    for &(len, writable) in &chain.data {
        w.u32(len).bool(writable);
    }
    w.u8(chain.status).bool(chain.indirect);
}

struct Harness {
    driver: TestDriver,
    size: u16,
    feature_mask: u64,
    /// Next free descriptor table entry for chains.
    next_desc: u16,
    /// Bump allocator over the data area.
    next_data: u64,
    /// Heads queued by chain/avail ops (with the layout of harness-built chains),
    /// published at the next notify.
    pending: Vec<(u16, Option<Layout>)>,
    /// The expected disk contents, while every input op is well-formed (raw descriptors,
    /// memory pokes, raw heads, idx jumps and odd notifications end modelling).
    model: Option<Model>,
    /// Table entries used by the pending chains.
    pending_descs: usize,
    /// The avail ring index the driver has published.
    avail_idx: u16,
    /// Entries made available in total (including idx jumps), and entries used in total.
    published: u64,
    used: u64,
    /// The device may have written into the rings or an indirect table: stop checking.
    tainted: bool,
}

impl Harness {
    fn new(driver: TestDriver, size: u16, feature_mask: u64) -> Self {
        Harness {
            driver,
            size,
            feature_mask,
            next_desc: 0,
            next_data: DATA_AREA,
            pending: Vec::new(),
            model: None,
            pending_descs: 0,
            avail_idx: 0,
            published: 0,
            used: 0,
            tainted: false,
        }
    }

    /// Reset, feature negotiation, queue 0 of `size` entries at the default rings, DRIVER_OK;
    /// clears the rings and the harness's ring bookkeeping.
    fn handshake(&mut self) {
        let ring_bytes = vec![0u8; (DATA_AREA - DESC_TABLE) as usize];
        self.driver
            .mem
            .write_slice(&ring_bytes, GuestAddress(DESC_TABLE))
            .expect("rings are in memory");
        let features = self.driver.device_features() & self.feature_mask | vmm_version_1();
        // Features are a subset of the offered ones plus VERSION_1: always accepted.
        assert!(
            self.driver.negotiate(features),
            "features {features:#x} refused"
        );
        let (desc, avail, used) = (DESC_TABLE, AVAIL_RING, USED_RING);
        self.driver
            .setup_queue(0, u32::from(self.size), desc, avail, used);
        self.driver.add_status(STATUS_DRIVER_OK);
        assert!(self.transport().lock().unwrap().is_activated());
        self.next_desc = 0;
        self.pending.clear();
        self.pending_descs = 0;
        self.avail_idx = 0;
        self.published = 0;
        self.used = 0;
        self.tainted = false;
    }

    fn transport(&self) -> Arc<Mutex<vmm::devices::virtio::MmioTransport>> {
        self.driver.transport.clone()
    }

    fn used_ring_len(&self) -> u64 {
        6 + 8 * u64::from(self.size)
    }

    /// Writes `bytes` at `offset` (mod memory size) unless that touches the used ring.
    fn poke(&mut self, offset: u64, bytes: &[u8]) {
        let addr = offset % MEM_SIZE;
        let end = addr + bytes.len() as u64;
        let used_end = USED_RING + self.used_ring_len();
        if end > MEM_SIZE || (addr < used_end && end > USED_RING) {
            return;
        }
        self.driver
            .mem
            .write_slice(bytes, GuestAddress(addr))
            .expect("checked to be in memory");
    }

    /// `len` bytes of the data area (at most 64 KiB are reserved; longer buffers overlap).
    fn alloc(&mut self, len: u64) -> u64 {
        let reserve = len.min(0x1_0000);
        if len > reserve || self.next_data + reserve > MEM_SIZE {
            // Buffers may now overlap: the model cannot follow.
            self.model = None;
        }
        if self.next_data + reserve > MEM_SIZE {
            self.next_data = DATA_AREA;
        }
        let addr = self.next_data;
        self.next_data = (addr + reserve + 7) & !7;
        addr
    }

    /// Lays out `chain` and queues its head.
    fn add_chain(&mut self, chain: &Chain) {
        let mut descs = Vec::new();
        let header = self.alloc(16);
        let mem = &self.driver.mem;
        mem.write_obj(chain.request_type.to_le(), GuestAddress(header))
            .unwrap();
        mem.write_obj(0u32, GuestAddress(header + 4)).unwrap();
        mem.write_obj(chain.sector.to_le(), GuestAddress(header + 8))
            .unwrap();
        descs.push((header, 16, 0));
        let mut layout = Layout {
            head: self.next_desc,
            request_type: chain.request_type,
            sector: chain.sector,
            data: Vec::new(),
            status: None,
        };
        for &(len, writable) in &chain.data {
            let addr = self.alloc(u64::from(len));
            descs.push((addr, len, if writable { F_WRITE } else { 0 }));
            layout.data.push((addr, len, writable));
        }
        if chain.status < 2 {
            let addr = self.alloc(1);
            let flags = if chain.status == 0 { F_WRITE } else { 0 };
            descs.push((addr, 1, flags));
            layout.status = (chain.status == 0).then_some(addr);
        } else if let Some(&(addr, _, true)) = layout.data.last().filter(|d| d.1 > 0) {
            // Without a status descriptor the last data buffer is taken for it: the device
            // expects the layout Linux uses (request.rs), header, data, status.
            layout.data.pop();
            layout.status = Some(addr);
        }
        let head = self.next_desc;
        if chain.indirect {
            let table = self.alloc(16 * descs.len() as u64);
            for (i, &(addr, len, flags)) in descs.iter().enumerate() {
                let last = i + 1 == descs.len();
                let flags = if last { flags } else { flags | F_NEXT };
                let raw = (addr, len, flags, (i + 1) as u16);
                self.driver.write_raw_desc(table, i as u16, raw);
            }
            let len = 16 * descs.len() as u32;
            let raw = (table, len, F_INDIRECT, 0);
            self.driver.write_raw_desc(DESC_TABLE, head, raw);
            self.next_desc = (head + 1) % self.size;
        } else {
            let mut index = head;
            for (i, &(addr, len, flags)) in descs.iter().enumerate() {
                let next = (index + 1) % self.size;
                let last = i + 1 == descs.len();
                let flags = if last { flags } else { flags | F_NEXT };
                self.driver
                    .write_raw_desc(DESC_TABLE, index, (addr, len, flags, next));
                index = next;
            }
            self.next_desc = index;
        }
        // The descriptors of chains waiting for the same notification must not wrap onto
        // each other in the table.
        let in_table = if chain.indirect { 1 } else { descs.len() };
        self.pending_descs += in_table;
        if self.pending_descs > usize::from(self.size) {
            self.model = None;
        }
        self.pending.push((head, Some(layout)));
    }

    /// Publishes the queued heads (and `jump` more entries the ring already holds),
    /// notifies `queue`, runs the device and checks the used ring.
    fn publish_and_notify(&mut self, queue: u32, jump: u16) {
        self.tainted |= self.device_may_write_rings();
        if queue != 0 || jump != 0 {
            self.model = None;
        }
        let mem = self.driver.mem.clone();
        let pending = std::mem::take(&mut self.pending);
        self.pending_descs = 0;
        let expected = self.expect(&pending);
        for &(head, _) in &pending {
            let slot = AVAIL_RING + 4 + 2 * u64::from(self.avail_idx % self.size);
            mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.published += 1;
        }
        self.avail_idx = self.avail_idx.wrapping_add(jump);
        self.published += u64::from(jump);
        mem.write_obj(self.avail_idx.to_le(), GuestAddress(AVAIL_RING + 2))
            .unwrap();

        let used_before = self.driver.used_idx();
        self.driver.notify(queue);
        let used_after = self.driver.used_idx();
        if self.tainted {
            return;
        }
        let delta = used_after.wrapping_sub(used_before);
        assert!(
            delta <= self.size,
            "used idx moved by {delta} in one notification, queue size {}",
            self.size
        );
        self.used += u64::from(delta);
        assert!(
            self.used <= self.published,
            "{} used entries but only {} made available",
            self.used,
            self.published
        );
        for n in 0..delta {
            let pos = used_before.wrapping_add(n) % self.size;
            let addr = USED_RING + 4 + 8 * u64::from(pos);
            let id = u32::from_le(mem.read_obj(GuestAddress(addr)).unwrap());
            assert!(
                id < u32::from(self.size),
                "used element {pos} names descriptor {id}, queue size {}",
                self.size
            );
        }
        let status = self.driver.read(0x60);
        if delta > 0 {
            assert!(
                status & INT_USED_RING != 0,
                "{delta} buffers used without an interrupt"
            );
        }
        self.driver.write(0x64, status);
        if let Some(expected) = expected {
            self.check_outcomes(used_before, &expected);
        }
    }

    /// What the model says each pending chain must do, in order; `None` when not modelling.
    fn expect(&mut self, pending: &[(u16, Option<Layout>)]) -> Option<Vec<(Layout, Outcome)>> {
        let mem = self.driver.mem.clone();
        let model = self.model.as_mut()?;
        let read_guest = |addr: u64, len: u32| {
            let mut bytes = vec![0u8; len as usize];
            mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
            bytes
        };
        let mut expected = Vec::new();
        for (_, layout) in pending {
            let layout = layout.clone()?;
            let outcome = model.apply(&layout, read_guest);
            expected.push((layout, outcome));
        }
        Some(expected)
    }

    /// Compares the used ring, status bytes and buffers with the model.
    fn check_outcomes(&self, used_before: u16, expected: &[(Layout, Outcome)]) {
        let mem = &self.driver.mem;
        let delta = self.driver.used_idx().wrapping_sub(used_before);
        assert_eq!(
            usize::from(delta),
            expected.len(),
            "every chain is used once"
        );
        for (n, (layout, outcome)) in expected.iter().enumerate() {
            let pos = used_before.wrapping_add(n as u16) % self.size;
            let addr = USED_RING + 4 + 8 * u64::from(pos);
            let id = u32::from_le(mem.read_obj(GuestAddress(addr)).unwrap());
            let len = u32::from_le(mem.read_obj(GuestAddress(addr + 4)).unwrap());
            let what = format!("chain {n} {layout:?}, expected {outcome:?}");
            assert_eq!(id, u32::from(layout.head), "used id of {what}");
            assert_eq!(len, outcome.used_len, "used len of {what}");
            if let (Some(addr), Some(status)) = (layout.status, outcome.status) {
                let got: u8 = mem.read_obj(GuestAddress(addr)).unwrap();
                assert_eq!(got, status, "status of {what}");
            }
            for (buf, want) in layout.data.iter().zip(outcome.data.iter().flatten()) {
                let mut got = vec![0u8; want.len()];
                mem.read_slice(&mut got, GuestAddress(buf.0)).unwrap();
                assert!(got == *want, "data of {what}");
            }
        }
    }

    /// Whether a device-writable buffer named by the descriptor table (directly or in an
    /// indirect table) overlaps the rings or an indirect table.
    fn device_may_write_rings(&self) -> bool {
        let mem = &self.driver.mem;
        let size = u64::from(self.size);
        let mut protected = vec![
            (DESC_TABLE, 16 * size),
            (AVAIL_RING, 6 + 2 * size),
            (USED_RING, self.used_ring_len()),
        ];
        let mut writable = Vec::new();
        let mut budget = SCAN_BUDGET;
        for index in 0..size {
            let (addr, len, flags) = read_desc(mem, DESC_TABLE + 16 * index);
            if flags & F_INDIRECT != 0 {
                let entries = u64::from(len / 16);
                if entries > budget {
                    return true;
                }
                budget -= entries;
                protected.push((addr, u64::from(len)));
                for i in 0..entries {
                    let Some(at) = addr.checked_add(16 * i) else {
                        break;
                    };
                    let (a, l, f) = read_desc(mem, at);
                    if f & F_WRITE != 0 {
                        writable.push((a, u64::from(l)));
                    }
                }
            } else if flags & F_WRITE != 0 {
                writable.push((addr, u64::from(len)));
            }
        }
        writable
            .iter()
            .any(|w| protected.iter().any(|p| overlaps(*w, *p)))
    }

    /// After a reset the device must ignore notifications.
    fn reset_stops_the_device(&mut self) {
        self.driver.write(0x70, 0);
        assert!(!self.transport().lock().unwrap().is_activated());
        let before = self.driver.used_idx();
        let mem = &self.driver.mem;
        let idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(idx.to_le(), GuestAddress(AVAIL_RING + 2))
            .unwrap();
        self.driver.notify(0);
        assert_eq!(
            self.driver.used_idx(),
            before,
            "a reset device used buffers"
        );
    }
}

fn vmm_version_1() -> u64 {
    vmm::devices::virtio::VIRTIO_F_VERSION_1
}

/// `(addr, len, flags)` of the descriptor at `at`; zeros outside memory.
fn read_desc(mem: &GuestMemory, at: u64) -> (u64, u32, u16) {
    let mut raw = [0u8; 16];
    if mem.read_slice(&mut raw, GuestAddress(at)).is_err() {
        return (0, 0, 0);
    }
    let addr = u64::from_le_bytes(raw[0..8].try_into().unwrap());
    let len = u32::from_le_bytes(raw[8..12].try_into().unwrap());
    let flags = u16::from_le_bytes(raw[12..14].try_into().unwrap());
    (addr, len, flags)
}

/// Whether `[a, a+alen)` and `[b, b+blen)` intersect (lengths saturate at the top).
fn overlaps((a, alen): (u64, u64), (b, blen): (u64, u64)) -> bool {
    alen > 0 && blen > 0 && a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// Hand-made inputs: well-formed reads, writes, flushes and GET_IDs, direct and indirect,
/// and a few classic mistakes (bad head index, idx jump past the queue size, bad status).
pub fn seeds() -> crate::Seeds {
    const IN: u32 = 0;
    const OUT: u32 = 1;
    const FLUSH: u32 = 4;
    const GET_ID: u32 = 8;
    let header = |w: &mut Writer, flags: u8, log2: u8| {
        w.u8(flags).u8(16).u16(0).u8(log2).u64(u64::MAX);
    };
    let chain = |request_type, sector, data: &[(u32, bool)], indirect| Chain {
        request_type,
        sector,
        data: data.to_vec(),
        status: 0,
        indirect,
    };
    let notify = |w: &mut Writer| {
        w.u8(4).u8(0).u16(0);
    };
    let mut seeds = Vec::new();

    let mut w = Writer::new();
    header(&mut w, 0, 8);
    write_chain(&mut w, &chain(IN, 0, &[(512, true)], false));
    write_chain(&mut w, &chain(OUT, 1, &[(1024, false)], false));
    write_chain(&mut w, &chain(FLUSH, 0, &[], false));
    write_chain(&mut w, &chain(GET_ID, 0, &[(20, true)], false));
    notify(&mut w);
    seeds.push(("read-write-flush-getid", w.finish()));

    let mut w = Writer::new();
    header(&mut w, 2, 4);
    write_chain(&mut w, &chain(IN, 2, &[(512, true), (1536, true)], true));
    write_chain(&mut w, &chain(OUT, 15, &[(512, false)], true));
    write_chain(&mut w, &chain(FLUSH, 0, &[], true));
    notify(&mut w);
    seeds.push(("indirect-writeback", w.finish()));

    let mut w = Writer::new();
    header(&mut w, 4, 8);
    // Flushes with large (ignored) buffers fill the data area up to 0x7fea8, so the read's
    // buffer at 0x7feb8 straddles the regions at 0x80000.
    for _ in 0..6 {
        write_chain(&mut w, &chain(FLUSH, 0, &[(0x10000, false)], false));
    }
    write_chain(&mut w, &chain(FLUSH, 0, &[(0xfe00, false)], false));
    write_chain(&mut w, &chain(IN, 1, &[(0x1000, true)], false));
    write_chain(&mut w, &chain(OUT, 0, &[(0x1000, false)], false));
    notify(&mut w);
    seeds.push(("buffers-across-memory-regions", w.finish()));

    let mut w = Writer::new();
    header(&mut w, 1, 2);
    write_chain(&mut w, &chain(OUT, 0, &[(512, false)], false));
    write_chain(&mut w, &chain(IN, 16, &[(512, true)], false));
    notify(&mut w);
    w.u8(3).u16(7);
    notify(&mut w);
    w.u8(4).u8(0).u16(9);
    seeds.push(("read-only-out-of-range-bad-head", w.finish()));

    let mut w = Writer::new();
    header(&mut w, 0, 3);
    // A raw chain: header descriptor at index 5 pointing into the data area, then a status
    // that is device-readable.
    w.u8(0).u16(5).u8(1).u32(0x100).u32(16).u16(F_NEXT).u16(6);
    w.u8(1)
        .u32(0x100)
        .bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    w.u8(0)
        .u16(6)
        .u8(1)
        .u32(0x200)
        .u32(512)
        .u16(F_WRITE | F_NEXT)
        .u16(7);
    w.u8(0).u16(7).u8(1).u32(0x400).u32(1).u16(0).u16(0);
    w.u8(3).u16(5);
    notify(&mut w);
    w.u8(5);
    write_chain(&mut w, &chain(IN, 3, &[(4096, true)], false));
    notify(&mut w);
    seeds.push(("raw-descriptors-then-reset", w.finish()));

    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_reach_the_device() {
        let seeds = seeds();
        let stats = |name: &str| run_with_stats(&seeds.iter().find(|s| s.0 == name).unwrap().1);
        let ok = Stats {
            requests: 4,
            failed: 0,
            used: 4,
            tainted: false,
            modelled: true,
        };
        assert_eq!(stats("read-write-flush-getid"), ok);
        let indirect = Stats {
            requests: 3,
            used: 3,
            ..ok
        };
        assert_eq!(stats("indirect-writeback"), indirect);
        let across = Stats {
            requests: 9,
            used: 9,
            ..ok
        };
        assert_eq!(stats("buffers-across-memory-regions"), across);
        // Read-only: the write fails, the read past the end fails, head 7 of a 4-entry
        // queue is never used, and the idx jump past the queue size is refused.
        let read_only = Stats {
            requests: 3,
            failed: 3,
            used: 2,
            tainted: false,
            modelled: false,
        };
        assert_eq!(stats("read-only-out-of-range-bad-head"), read_only);
        let raw = Stats {
            requests: 2,
            failed: 1,
            used: 1,
            tainted: false,
            modelled: false,
        };
        assert_eq!(stats("raw-descriptors-then-reset"), raw);
    }
}
