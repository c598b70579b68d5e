//! The virtio-mmio transport (virtio 1.x, register layout version 2).
//!
//! One [`MmioTransport`] wraps one device backend. vCPU threads reach it through the
//! [`BusDevice`] impl (register accesses); the VMM thread's event manager drives it through
//! [`MutEventSubscriber`] (queue notifications and backend fds). The same
//! `Arc<Mutex<MmioTransport>>` goes on the bus and into the event manager.
//!
//! Wiring one device (what the builder does):
//!
//! ```ignore
//! let block = Block::new(&drive_config)?;
//! let transport = Arc::new(Mutex::new(MmioTransport::new(mem.clone(), Box::new(block))?));
//! {
//!     let t = transport.lock().unwrap();
//!     let notify = IoEventAddress::Mmio(base + MMIO_NOTIFY_OFFSET);
//!     for (index, evt) in t.queue_events().iter().enumerate() {
//!         vm_fd.register_ioevent(evt, &notify, index as u32)?; // datamatch: 4-byte write
//!     }
//!     vm_fd.register_irqfd(t.interrupt_event(), gsi)?;
//! }
//! mmio_bus.insert(base, MMIO_WINDOW_SIZE, transport.clone())?; // Arc<Mutex<dyn BusDevice>>
//! event_manager.add_subscriber(transport); // Arc<Mutex<dyn MutEventSubscriber + Send>>
//! cmdline.push_str(&format!(" {}", mmio_cmdline_arg(base, gsi)));
//! ```

mod persist;
mod queue_config;
mod registers;
#[cfg(test)]
mod tests;

use std::os::fd::AsRawFd;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{ActivateError, VirtioDevice};
use super::interrupt::{Interrupt, InterruptError};
use crate::devices::bus::BusDevice;
use crate::devices::Pausable;
use crate::vstate::memory::GuestMemory;
pub use persist::{MmioState, MmioStateError, QueueState};
use queue_config::{QueueConfig, QueueConfigError};

/// Size of one device's register window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Offset of QueueNotify; the builder registers each queue eventfd as a KVM ioeventfd at
/// `window_base + MMIO_NOTIFY_OFFSET` with datamatch = the queue index (u32).
pub const MMIO_NOTIFY_OFFSET: u64 = 0x50;

/// The kernel command line fragment announcing a device window at `base` on `irq`,
/// e.g. `virtio_mmio.device=4K@0xd0000000:5`.
pub fn mmio_cmdline_arg(base: u64, irq: u32) -> String {
    format!(
        "virtio_mmio.device={}K@{base:#x}:{irq}",
        MMIO_WINDOW_SIZE >> 10
    )
}

#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("cannot create the eventfd of queue {index}: {source}")]
    QueueEventFd {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Interrupt(#[from] InterruptError),
    #[error("the device has no queues")]
    NoQueues,
    #[error(transparent)]
    QueueConfig(#[from] QueueConfigError),
    #[error(transparent)]
    Activate(#[from] ActivateError),
}

/// A virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
    queue_evts: Vec<EventFd>,
    queues: Vec<QueueConfig>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    /// The driver wrote a nonzero value to a feature page the device does not have.
    acked_unknown_page: bool,
    queue_sel: u32,
    config_generation: u32,
    activated: bool,
    /// The VM is paused: the event loop does not watch this device's fds.
    paused: bool,
    /// A config change came while paused; the driver hears of it on resume.
    config_change_pending: bool,
}

impl MmioTransport {
    /// Wraps `device`; `mem` is the guest RAM the queues and buffers must lie in.
    pub fn new(mem: GuestMemory, device: Box<dyn VirtioDevice>) -> Result<Self, MmioError> {
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.is_empty() {
            return Err(MmioError::NoQueues);
        }
        let queue_evts = (0..sizes.len())
            .map(|index| {
                EventFd::new(EFD_NONBLOCK)
                    .map_err(|source| MmioError::QueueEventFd { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            mem,
            interrupt: Arc::new(Interrupt::new()?),
            queue_evts,
            queues: sizes.into_iter().map(QueueConfig::new).collect(),
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            acked_unknown_page: false,
            queue_sel: 0,
            config_generation: 0,
            activated: false,
            paused: false,
            config_change_pending: false,
        })
    }

    /// One eventfd per queue, index = queue index: register each as a KVM ioeventfd at
    /// `window_base + MMIO_NOTIFY_OFFSET` with datamatch = index as u32.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The eventfd to register as a KVM irqfd on the device's GSI.
    pub fn interrupt_event(&self) -> &EventFd {
        self.interrupt.event()
    }

    /// The virtio device id of the backend.
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// Whether the backend is running (DRIVER_OK accepted, no reset since).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The Status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The backend, for updates after boot.
    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// Tells the driver the device's config space changed (a new generation, then an
    /// interrupt), so it re-reads it, e.g. a drive's capacity.
    /// While the VM is paused the interrupt waits for the resume.
    pub fn notify_config_change(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.paused {
            self.config_change_pending = true;
        } else {
            self.interrupt.signal_config_change();
        }
    }

    /// Whether the VM's pause has taken this device out of the event loop.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// A queue eventfd fired: drain it and, if the device runs, let it process the queue.
    fn on_queue_event(&mut self, index: usize) {
        // A read error means the counter was already 0 (spurious wakeup); nothing to do.
        let _ = self.queue_evts[index].read();
        if !self.activated {
            log::debug!("virtio-mmio: notification on queue {index} before activation ignored");
            return;
        }
        if self.device.process_queue(index) {
            // Budget exhausted: come back after the other event sources had their turn.
            self.kick_queue(index);
        }
    }

    /// Writes queue `index`'s eventfd, as KVM does for an ioeventfd.
    fn kick_queue(&self, index: usize) {
        if let Err(e) = self.queue_evts[index].write(1) {
            log::error!("virtio-mmio: cannot write the eventfd of queue {index}: {e}");
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(config_offset) = offset.checked_sub(registers::CONFIG_SPACE) {
            self.device.read_config(config_offset, data);
            return;
        }
        let Ok(bytes) = <&mut [u8; 4]>::try_from(data) else {
            log::warn!("virtio-mmio: ignoring non-32-bit read at {offset:#x}");
            return;
        };
        *bytes = self.read_register(offset).to_le_bytes();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(config_offset) = offset.checked_sub(registers::CONFIG_SPACE) {
            self.write_config(config_offset, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::warn!("virtio-mmio: ignoring non-32-bit write at {offset:#x}");
            return;
        };
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

impl Pausable for MmioTransport {
    fn pause(&mut self, ops: &mut EventOps) {
        if self.paused {
            return;
        }
        for evt in &self.queue_evts {
            if let Err(e) = ops.remove(Events::new(evt, EventSet::IN)) {
                log::error!("virtio-mmio: cannot stop watching a queue eventfd: {e}");
            }
        }
        self.device.remove_events(ops);
        self.paused = true;
    }

    fn resume(&mut self, ops: &mut EventOps) {
        if !self.paused {
            return;
        }
        self.paused = false;
        // Notifications that came meanwhile are still counted in the eventfds, and a
        // readable TAP is reported again when it is watched again.
        self.init(ops);
        if std::mem::take(&mut self.config_change_pending) {
            self.interrupt.signal_config_change();
        }
    }
}

impl MutEventSubscriber for MmioTransport {
    fn init(&mut self, ops: &mut EventOps) {
        for (index, evt) in self.queue_evts.iter().enumerate() {
            // Queue indices come from a Vec sized by u16 queue counts: they fit in u32.
            let events = Events::with_data(evt, index as u32, EventSet::IN);
            if let Err(e) = ops.add(events) {
                log::error!("virtio-mmio: cannot watch the eventfd of queue {index}: {e}");
            }
        }
        self.device.init_events(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        match self.queue_evts.iter().position(|e| e.as_raw_fd() == fd) {
            Some(index) => self.on_queue_event(index),
            None => self.device.process_event(events, ops),
        }
    }
}
