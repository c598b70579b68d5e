//! The interrupt side of a virtio-mmio device: the InterruptStatus register bits and the
//! eventfd the builder registers with KVM as an irqfd on the device's GSI.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// InterruptStatus bit 0: the device used a buffer in at least one queue.
pub const INT_USED_RING: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
/// InterruptStatus bit 1: the device configuration (or status) changed.
pub const INT_CONFIG: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

#[derive(Debug, thiserror::Error)]
pub enum InterruptError {
    #[error("cannot create the interrupt eventfd: {0}")]
    EventFd(#[source] io::Error),
}

/// Interrupt status shared by a transport (which reads and acknowledges it) and its device
/// backend (which raises it).
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    event: EventFd,
}

impl Interrupt {
    pub fn new() -> Result<Self, InterruptError> {
        let event = EventFd::new(EFD_NONBLOCK).map_err(InterruptError::EventFd)?;
        Ok(Interrupt {
            status: AtomicU32::new(0),
            event,
        })
    }

    /// The eventfd to register with KVM as an irqfd.
    pub fn event(&self) -> &EventFd {
        &self.event
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the given status bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears every status bit (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// Sets the status a saved device had and, if an interrupt was pending, raises it again
    /// (the restored VM's interrupt controller starts without it).
    pub fn restore_status(&self, status: u32) {
        self.status.store(status, Ordering::SeqCst);
        if status != 0 {
            if let Err(e) = self.event.write(1) {
                log::error!("virtio: cannot raise the interrupt eventfd: {e}");
            }
        }
    }

    /// Tells the driver there are new entries in a used ring.
    pub fn signal_used_queue(&self) {
        self.signal(INT_USED_RING);
    }

    /// Tells the driver the configuration or device status changed.
    pub fn signal_config_change(&self) {
        self.signal(INT_CONFIG);
    }

    fn signal(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.event.write(1) {
            log::error!("virtio: cannot raise the interrupt eventfd: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_sets_status_and_fires_eventfd() {
        let irq = Interrupt::new().unwrap();
        assert!(irq.event().read().is_err());
        irq.signal_used_queue();
        irq.signal_config_change();
        assert_eq!(irq.status(), INT_USED_RING | INT_CONFIG);
        assert_eq!(irq.event().read().unwrap(), 2);
        irq.ack(INT_USED_RING);
        assert_eq!(irq.status(), INT_CONFIG);
        irq.clear();
        assert_eq!(irq.status(), 0);
    }
}
