//! Wiring one virtio device behind a virtio-mmio window: the window and IRQ line, the queue
//! ioeventfds and the irqfd in KVM, the MMIO bus, the event loop, and the
//! `virtio_mmio.device=` argument that tells the guest where it is.

use super::{DeviceManagerError, Wiring};
use crate::arch::x86_64::layout::{IRQ_MAX, VIRTIO_IRQ_BASE, VIRTIO_MMIO_START};
use crate::devices::virtio::{
    mmio_cmdline_arg, MmioTransport, VirtioDevice, MMIO_NOTIFY_OFFSET, MMIO_WINDOW_SIZE,
};
use event_manager::{SubscriberId, SubscriberOps};
use std::sync::{Arc, Mutex};

/// Hands out virtio-mmio windows and IRQ lines in order.
#[derive(Default)]
pub struct MmioSlots {
    next: u32,
}

impl MmioSlots {
    /// The next free `(window base, irq)`, or None when the IOAPIC has no line left.
    pub fn allocate(&mut self) -> Option<(u64, u32)> {
        let irq = VIRTIO_IRQ_BASE + self.next;
        if irq > IRQ_MAX {
            return None;
        }
        let base = VIRTIO_MMIO_START + u64::from(self.next) * MMIO_WINDOW_SIZE;
        self.next += 1;
        Some((base, irq))
    }
}

/// Attaches `device`; returns its transport, its event-loop subscriber and its command-line
/// argument.
pub(super) fn attach(
    slots: &mut MmioSlots,
    wiring: &mut Wiring,
    device: Box<dyn VirtioDevice>,
    name: &str,
) -> Result<(Arc<Mutex<MmioTransport>>, SubscriberId, String), DeviceManagerError> {
    let (base, irq) = slots
        .allocate()
        .ok_or_else(|| DeviceManagerError::NoIrqLeft(name.to_string()))?;
    let transport = MmioTransport::new(wiring.vm.memory().clone(), device)
        .map_err(|e| DeviceManagerError::Transport(name.to_string(), e))?;
    for (index, event) in transport.queue_events().iter().enumerate() {
        wiring
            .vm
            .register_mmio_ioevent(event, base + MMIO_NOTIFY_OFFSET, index as u32)?;
    }
    wiring.vm.register_irqfd(transport.interrupt_event(), irq)?;
    let transport = Arc::new(Mutex::new(transport));
    wiring
        .mmio_bus
        .insert(base, MMIO_WINDOW_SIZE, transport.clone())?;
    let subscriber = wiring.event_manager.add_subscriber(transport.clone());
    Ok((transport, subscriber, mmio_cmdline_arg(base, irq)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_with_the_ioapic_lines() {
        let mut slots = MmioSlots::default();
        let first = slots.allocate().unwrap();
        assert_eq!(first, (VIRTIO_MMIO_START, VIRTIO_IRQ_BASE));
        assert_eq!(
            slots.allocate().unwrap(),
            (VIRTIO_MMIO_START + MMIO_WINDOW_SIZE, VIRTIO_IRQ_BASE + 1)
        );
        let rest = std::iter::from_fn(|| slots.allocate()).count();
        assert_eq!(rest as u32 + 2, IRQ_MAX - VIRTIO_IRQ_BASE + 1);
    }
}
