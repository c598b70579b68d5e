//! Register reads and writes of the virtio-mmio window, device status transitions and
//! feature negotiation.

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FAILED as FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::queue_config::{set_half, QueueConfig};
use super::{MmioError, MmioTransport};
use crate::devices::virtio::VIRTIO_F_VERSION_1;

pub const MAGIC_VALUE: u32 = 0x7472_6976;
pub const VERSION: u32 = 2;
pub const VENDOR_ID: u32 = 0;

pub const REG_MAGIC: u64 = 0x00;
pub const REG_VERSION: u64 = 0x04;
pub const REG_DEVICE_ID: u64 = 0x08;
pub const REG_VENDOR_ID: u64 = 0x0c;
pub const REG_DEVICE_FEATURES: u64 = 0x10;
pub const REG_DEVICE_FEATURES_SEL: u64 = 0x14;
pub const REG_DRIVER_FEATURES: u64 = 0x20;
pub const REG_DRIVER_FEATURES_SEL: u64 = 0x24;
pub const REG_QUEUE_SEL: u64 = 0x30;
pub const REG_QUEUE_NUM_MAX: u64 = 0x34;
pub const REG_QUEUE_NUM: u64 = 0x38;
pub const REG_QUEUE_READY: u64 = 0x44;
pub const REG_QUEUE_NOTIFY: u64 = super::MMIO_NOTIFY_OFFSET;
pub const REG_INTERRUPT_STATUS: u64 = 0x60;
pub const REG_INTERRUPT_ACK: u64 = 0x64;
pub const REG_STATUS: u64 = 0x70;
pub const REG_QUEUE_DESC_LOW: u64 = 0x80;
pub const REG_QUEUE_DESC_HIGH: u64 = 0x84;
pub const REG_QUEUE_DRIVER_LOW: u64 = 0x90;
pub const REG_QUEUE_DRIVER_HIGH: u64 = 0x94;
pub const REG_QUEUE_DEVICE_LOW: u64 = 0xa0;
pub const REG_QUEUE_DEVICE_HIGH: u64 = 0xa4;
pub const REG_CONFIG_GENERATION: u64 = 0xfc;
pub const CONFIG_SPACE: u64 = 0x100;

impl MmioTransport {
    pub(super) fn read_register(&self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => self.device_features_page(),
            REG_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size)),
            REG_QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready)),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => {
                log::warn!("virtio-mmio: read of unknown or write-only register {offset:#x}");
                0
            }
        }
    }

    pub(super) fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES => self.write_driver_features(value),
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NOTIFY => self.write_queue_notify(value),
            REG_INTERRUPT_ACK => self.interrupt.ack(value),
            REG_STATUS => self.write_status(value),
            _ => self.write_queue_register(offset, value),
        }
    }

    pub(super) fn write_config(&mut self, offset: u64, data: &[u8]) {
        if self.status & FAILED != 0 || self.status & DRIVER == 0 {
            log::warn!(
                "virtio-mmio: config write in status {:#x} ignored",
                self.status
            );
            return;
        }
        self.device.write_config(offset, data);
    }

    /// Every feature the device offers, including the transport's VIRTIO_F_VERSION_1.
    fn offered_features(&self) -> u64 {
        self.device.avail_features() | VIRTIO_F_VERSION_1
    }

    fn device_features_page(&self) -> u32 {
        match self.device_features_sel {
            0 => self.offered_features() as u32,
            1 => (self.offered_features() >> 32) as u32,
            _ => 0,
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & !NEEDS_RESET != ACKNOWLEDGE | DRIVER {
            log::warn!(
                "virtio-mmio: driver features written in status {:#x}",
                self.status
            );
            return;
        }
        match self.driver_features_sel {
            0 => set_half(&mut self.acked_features, value, false),
            1 => set_half(&mut self.acked_features, value, true),
            page if value != 0 => {
                log::warn!("virtio-mmio: driver accepted features {value:#x} on page {page}");
                self.acked_unknown_page = true;
            }
            _ => {}
        }
    }

    /// FEATURES_OK is granted only for VERSION_1 plus a subset of the offered features.
    fn features_acceptable(&self) -> bool {
        let unoffered = self.acked_features & !self.offered_features();
        let ok = self.acked_features & VIRTIO_F_VERSION_1 != 0
            && unoffered == 0
            && !self.acked_unknown_page;
        if !ok {
            log::warn!(
                "virtio-mmio: refusing features {:#x} (offered {:#x})",
                self.acked_features,
                self.offered_features()
            );
        }
        ok
    }

    fn selected_queue(&self) -> Option<&QueueConfig> {
        self.queues.get(usize::try_from(self.queue_sel).ok()?)
    }

    fn write_queue_notify(&mut self, value: u32) {
        match usize::try_from(value)
            .ok()
            .filter(|&i| i < self.queue_evts.len())
        {
            Some(index) => self.kick_queue(index),
            None => log::warn!("virtio-mmio: notify of nonexistent queue {value}"),
        }
    }

    /// Queue registers may only change after FEATURES_OK and before DRIVER_OK.
    fn write_queue_register(&mut self, offset: u64, value: u32) {
        let configurable = self.status & (FEATURES_OK | DRIVER_OK | FAILED | NEEDS_RESET);
        if configurable != FEATURES_OK {
            log::warn!(
                "virtio-mmio: write {value:#x} to {offset:#x} in status {:#x} ignored",
                self.status
            );
            return;
        }
        let sel = self.queue_sel;
        let Some(queue) = usize::try_from(sel)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
        else {
            log::warn!("virtio-mmio: write to {offset:#x} for nonexistent queue {sel}");
            return;
        };
        match offset {
            REG_QUEUE_NUM => queue.size = value,
            REG_QUEUE_READY => queue.ready = value == 1,
            REG_QUEUE_DESC_LOW => set_half(&mut queue.desc_table, value, false),
            REG_QUEUE_DESC_HIGH => set_half(&mut queue.desc_table, value, true),
            REG_QUEUE_DRIVER_LOW => set_half(&mut queue.avail_ring, value, false),
            REG_QUEUE_DRIVER_HIGH => set_half(&mut queue.avail_ring, value, true),
            REG_QUEUE_DEVICE_LOW => set_half(&mut queue.used_ring, value, false),
            REG_QUEUE_DEVICE_HIGH => set_half(&mut queue.used_ring, value, true),
            _ => log::warn!("virtio-mmio: write {value:#x} to unknown register {offset:#x}"),
        }
    }

    /// Status writes: 0 resets; otherwise the driver may only add the next bit of
    /// ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK, or FAILED at any time.
    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let current = self.status & !NEEDS_RESET;
        let new = value & !NEEDS_RESET;
        if new == current {
            return;
        }
        if new & FAILED != 0 {
            log::warn!("virtio-mmio: driver marked the device FAILED");
            self.status |= FAILED;
            return;
        }
        match (current, new ^ current) {
            (0, ACKNOWLEDGE) | (ACKNOWLEDGE, DRIVER) => self.status |= new,
            (s, FEATURES_OK) if s == ACKNOWLEDGE | DRIVER => {
                if self.features_acceptable() {
                    self.status |= FEATURES_OK;
                }
            }
            (s, DRIVER_OK) if s == ACKNOWLEDGE | DRIVER | FEATURES_OK => self.driver_ok(),
            _ => log::warn!(
                "virtio-mmio: invalid status transition {:#x} -> {value:#x} ignored",
                self.status
            ),
        }
    }

    /// The driver set DRIVER_OK: validate the queues and start the device, or ask the
    /// driver for a reset.
    fn driver_ok(&mut self) {
        self.status |= DRIVER_OK;
        if self.status & NEEDS_RESET != 0 {
            return;
        }
        if let Err(e) = self.activate() {
            log::warn!("virtio-mmio: cannot activate the device, it needs a reset: {e}");
            self.status |= NEEDS_RESET;
            self.config_generation = self.config_generation.wrapping_add(1);
            self.interrupt.signal_config_change();
        }
    }

    /// Whether the driver accepted VIRTIO_RING_F_EVENT_IDX.
    pub(super) fn event_idx(&self) -> bool {
        self.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0
    }

    fn activate(&mut self) -> Result<(), MmioError> {
        let event_idx = self.event_idx();
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(index, q)| q.build_queue(index, &self.mem, event_idx))
            .collect::<Result<Vec<_>, _>>()?;
        self.device.set_acked_features(self.acked_features);
        self.device
            .activate(self.mem.clone(), queues, self.interrupt.clone())?;
        self.activated = true;
        Ok(())
    }

    /// Device reset: the backend stops and drops its queues, every register returns to its
    /// power-on value.
    pub(super) fn reset(&mut self) {
        self.device.reset();
        self.activated = false;
        self.queues.iter_mut().for_each(QueueConfig::reset);
        for evt in &self.queue_evts {
            // Drop notifications that were pending for the old queues.
            let _ = evt.read();
        }
        self.interrupt.clear();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.acked_unknown_page = false;
        self.queue_sel = 0;
    }
}
