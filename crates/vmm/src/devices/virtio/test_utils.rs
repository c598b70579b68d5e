//! A minimal virtio-mmio driver for unit tests: it talks to a transport only through
//! `BusDevice` register accesses and lays out split rings in guest memory by hand.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use virtio_queue::{Queue, QueueState};
use vm_memory::{Address, Bytes, GuestAddress};

use super::device::VirtioDevice;
use super::mmio::MmioTransport;
use crate::devices::bus::{lock, SharedBusDevice};
use crate::vstate::memory::GuestMemory;

pub const MEM_SIZE: u64 = 1 << 20;
pub const DESC_TABLE: u64 = 0x1000;
pub const AVAIL_RING: u64 = 0x3000;
pub const USED_RING: u64 = 0x4000;
pub const QUEUE_SIZE: u16 = 256;

pub const STATUS_ACK: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// One descriptor of a chain to build.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

pub fn readable(addr: u64, len: u32) -> Desc {
    Desc {
        addr,
        len,
        writable: false,
    }
}

pub fn writable(addr: u64, len: u32) -> Desc {
    Desc {
        addr,
        len,
        writable: true,
    }
}

pub fn guest_memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

pub struct TestDriver {
    pub mem: GuestMemory,
    pub transport: Arc<Mutex<MmioTransport>>,
    bus_device: SharedBusDevice,
    event_manager: EventManager<Subscriber>,
    avail_idx: u16,
    next_desc: u16,
}

impl TestDriver {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        Self::with_memory(guest_memory(), device)
    }

    /// A driver whose guest RAM is `mem` (it must cover the default rings, below 0x5000).
    pub fn with_memory(mem: GuestMemory, device: Box<dyn VirtioDevice>) -> Self {
        let transport = Arc::new(Mutex::new(MmioTransport::new(mem.clone(), device).unwrap()));
        // The same object goes on the bus and into the event manager.
        let bus_device: SharedBusDevice = transport.clone();
        let subscriber: Subscriber = transport.clone();
        let mut event_manager = EventManager::<Subscriber>::new().unwrap();
        event_manager.add_subscriber(subscriber);
        TestDriver {
            mem,
            transport,
            bus_device,
            event_manager,
            avail_idx: 0,
            next_desc: 0,
        }
    }

    /// Takes over the rings where `previous` left them (its next free descriptor and
    /// available index), as the guest's driver does after its VM was restored.
    pub fn continue_from(&mut self, previous: &TestDriver) {
        self.avail_idx = previous.avail_idx;
        self.next_desc = previous.next_desc;
    }

    pub fn read(&self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        lock(&self.bus_device).read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    pub fn write(&self, offset: u64, value: u32) {
        lock(&self.bus_device).write(offset, &value.to_le_bytes());
    }

    pub fn read_bytes(&self, offset: u64, data: &mut [u8]) {
        lock(&self.bus_device).read(offset, data);
    }

    pub fn write_bytes(&self, offset: u64, data: &[u8]) {
        lock(&self.bus_device).write(offset, data);
    }

    pub fn status(&self) -> u32 {
        self.read(0x70)
    }

    pub fn add_status(&self, bit: u32) {
        self.write(0x70, self.status() | bit);
    }

    pub fn device_features(&self) -> u64 {
        self.write(0x14, 0);
        let low = self.read(0x10);
        self.write(0x14, 1);
        u64::from(self.read(0x10)) << 32 | u64::from(low)
    }

    pub fn write_driver_features(&self, features: u64) {
        self.write(0x24, 0);
        self.write(0x20, features as u32);
        self.write(0x24, 1);
        self.write(0x20, (features >> 32) as u32);
    }

    /// Reset, ACKNOWLEDGE, DRIVER, accept `features`, FEATURES_OK. Returns whether the
    /// device kept FEATURES_OK.
    pub fn negotiate(&self, features: u64) -> bool {
        self.write(0x70, 0);
        assert_eq!(self.status(), 0);
        self.add_status(STATUS_ACK);
        self.add_status(STATUS_DRIVER);
        self.write_driver_features(features);
        self.add_status(STATUS_FEATURES_OK);
        self.status() & STATUS_FEATURES_OK != 0
    }

    pub fn setup_queue(&self, index: u32, size: u32, desc: u64, avail: u64, used: u64) {
        self.write(0x30, index);
        self.write(0x38, size);
        for (reg, addr) in [(0x80, desc), (0x90, avail), (0xa0, used)] {
            self.write(reg, addr as u32);
            self.write(reg + 4, (addr >> 32) as u32);
        }
        self.write(0x44, 1);
    }

    /// The whole handshake with every offered feature and queue 0 at the default rings.
    pub fn init(&mut self) {
        assert!(self.negotiate(self.device_features()));
        self.setup_queue(0, u32::from(QUEUE_SIZE), DESC_TABLE, AVAIL_RING, USED_RING);
        self.add_status(STATUS_DRIVER_OK);
        assert!(self.transport.lock().unwrap().is_activated());
        self.avail_idx = 0;
        self.next_desc = 0;
    }

    /// Writes descriptor `index`; `next` sets VIRTQ_DESC_F_NEXT.
    pub fn write_desc(&self, index: u16, desc: Desc, next: Option<u16>) {
        let mut flags = if desc.writable { F_WRITE } else { 0 };
        flags |= if next.is_some() { F_NEXT } else { 0 };
        let raw = (desc.addr, desc.len, flags, next.unwrap_or(0));
        self.write_raw_desc(DESC_TABLE, index, raw);
    }

    /// Writes `(addr, len, flags, next)` as entry `index` of the table at `table`.
    pub fn write_raw_desc(&self, table: u64, index: u16, raw: (u64, u32, u16, u16)) {
        let base = table + 16 * u64::from(index);
        let (addr, len, flags, next) = raw;
        self.mem
            .write_obj(addr.to_le(), GuestAddress(base))
            .unwrap();
        self.mem
            .write_obj(len.to_le(), GuestAddress(base + 8))
            .unwrap();
        self.mem
            .write_obj(flags.to_le(), GuestAddress(base + 12))
            .unwrap();
        self.mem
            .write_obj(next.to_le(), GuestAddress(base + 14))
            .unwrap();
    }

    /// Writes `descs` as a chain and makes its head available; returns the head index.
    pub fn add_chain(&mut self, descs: &[Desc]) -> u16 {
        let head = self.next_desc;
        for (i, desc) in descs.iter().enumerate() {
            let index = (head + i as u16) % QUEUE_SIZE;
            let next = (i + 1 < descs.len()).then_some((index + 1) % QUEUE_SIZE);
            self.write_desc(index, *desc, next);
        }
        self.next_desc = (head + descs.len() as u16) % QUEUE_SIZE;
        self.push_avail(head);
        head
    }

    /// Puts `head` (any value, even a bogus one) in the available ring.
    pub fn push_avail(&mut self, head: u16) {
        let slot = AVAIL_RING + 4 + 2 * u64::from(self.avail_idx % QUEUE_SIZE);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }

    pub fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx.to_le(), GuestAddress(AVAIL_RING + 2))
            .unwrap();
    }

    /// QueueNotify through the bus (as if no ioeventfd were registered), then runs the
    /// event loop.
    pub fn notify(&mut self, queue: u32) {
        self.write(0x50, queue);
        self.run_events();
    }

    /// Dispatches events until none is pending.
    pub fn run_events(&mut self) {
        for _ in 0..1000 {
            if self.event_manager.run_with_timeout(0).unwrap() == 0 {
                return;
            }
        }
        panic!("the event loop never went idle");
    }

    /// Waits up to `ms` milliseconds for an event (a timer), then dispatches until idle.
    /// Returns whether one came.
    pub fn wait_events(&mut self, ms: i32) -> bool {
        let came = self.event_manager.run_with_timeout(ms).unwrap() > 0;
        self.run_events();
        came
    }

    pub fn used_idx(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(USED_RING + 2)).unwrap())
    }

    /// `(id, len)` of used ring entry `n`.
    pub fn used_elem(&self, n: u16) -> (u32, u32) {
        let addr = USED_RING + 4 + 8 * u64::from(n % QUEUE_SIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(addr)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(addr + 4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
    }

    /// Whether the irqfd fired since the last call.
    pub fn irq_fired(&self) -> bool {
        self.transport
            .lock()
            .unwrap()
            .interrupt_event()
            .read()
            .is_ok()
    }

    /// Writes pseudo-random values of every size 1..=8 to every offset 0..0x200 (and a few
    /// outside the window), reading each back and running the event loop, twice.
    pub fn fuzz_registers(&mut self, seed: u64) {
        let mut state = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
        for _ in 0..2 {
            for offset in 0..0x200u64 {
                for size in 1..=8usize {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    self.write_bytes(offset, &state.to_le_bytes()[..size]);
                    let mut out = [0u8; 8];
                    self.read_bytes(offset, &mut out[..size]);
                }
            }
            self.write_bytes(0x1000, &[1, 2, 3, 4]);
            self.write_bytes(u64::MAX, &[1, 2, 3, 4]);
            self.read_bytes(0x100, &mut []);
            self.run_events();
        }
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
    /// Descriptors at `base`, the available ring a page up, the used ring two pages up.
    pub fn new(base: u64) -> Self {
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
            max_size: QUEUE_SIZE,
            next_avail: 0,
            next_used: 0,
            event_idx_enabled: event_idx,
            size: QUEUE_SIZE,
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
            let index = (head + i as u16) % QUEUE_SIZE;
            let has_next = i + 1 < descs.len();
            let flags = u16::from(d.writable) * 2 + u16::from(has_next);
            let next = (index + 1) % QUEUE_SIZE;
            let base = GuestAddress(self.desc + 16 * u64::from(index));
            mem.write_obj(d.addr.to_le(), base).unwrap();
            mem.write_obj(d.len.to_le(), base.unchecked_add(8)).unwrap();
            mem.write_obj(flags.to_le(), base.unchecked_add(12))
                .unwrap();
            mem.write_obj(next.to_le(), base.unchecked_add(14)).unwrap();
        }
        self.next_desc = (head + descs.len() as u16) % QUEUE_SIZE;
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QUEUE_SIZE);
        mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
        head
    }

    /// `avail_event`: the driver notifies when its avail index passes it (EVENT_IDX).
    pub fn avail_event(&self, mem: &GuestMemory) -> u16 {
        let addr = self.used + 4 + 8 * u64::from(QUEUE_SIZE);
        u16::from_le(mem.read_obj(GuestAddress(addr)).unwrap())
    }

    /// Sets `used_event`: the device interrupts when its used index passes it (EVENT_IDX).
    pub fn set_used_event(&self, mem: &GuestMemory, idx: u16) {
        let addr = self.avail + 4 + 2 * u64::from(QUEUE_SIZE);
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
        let addr = self.used + 4 + 8 * u64::from(n % QUEUE_SIZE);
        let id: u32 = mem.read_obj(GuestAddress(addr)).unwrap();
        let len: u32 = mem.read_obj(GuestAddress(addr + 4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
    }
}
