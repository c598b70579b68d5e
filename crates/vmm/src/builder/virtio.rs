//! Wiring virtio devices: a virtio-mmio window and IRQ each, ioeventfds and an irqfd in KVM,
//! a place on the MMIO bus and in the event loop, and a `virtio_mmio.device=` argument.

use super::BuildError;
use crate::arch::x86_64::layout::{IRQ_MAX, VIRTIO_IRQ_BASE, VIRTIO_MMIO_START};
use crate::config::{DriveConfig, NetworkInterfaceConfig};
use crate::devices::virtio::{
    mmio_cmdline_arg, Block, MmioTransport, Net, VirtioDevice, MMIO_NOTIFY_OFFSET, MMIO_WINDOW_SIZE,
};
use crate::devices::Bus;
use crate::event_loop::VmmEventManager;
use crate::microvm::AttachedDrive;
use crate::vstate::vm::Vm;
use event_manager::SubscriberOps;
use std::sync::{Arc, Mutex};

/// Hands out virtio-mmio windows and IRQ lines in order.
#[derive(Default)]
pub struct VirtioSlots {
    next: u32,
}

impl VirtioSlots {
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

/// What the rest of the build needs from the attached virtio devices.
pub struct AttachedVirtio<'a> {
    pub vm: &'a Vm,
    pub mmio_bus: &'a mut Bus,
    pub event_manager: &'a mut VmmEventManager,
    pub slots: VirtioSlots,
    /// `virtio_mmio.device=` arguments, in probe order.
    pub cmdline_args: Vec<String>,
}

impl AttachedVirtio<'_> {
    /// Puts `device` behind a new virtio-mmio window.
    pub fn attach(
        &mut self,
        device: Box<dyn VirtioDevice>,
        name: &str,
    ) -> Result<Arc<Mutex<MmioTransport>>, BuildError> {
        let (base, irq) = self
            .slots
            .allocate()
            .ok_or_else(|| BuildError::TooManyDevices(name.to_string()))?;
        let transport = MmioTransport::new(self.vm.memory().clone(), device)
            .map_err(|e| BuildError::Virtio(format!("{name}: {e}")))?;
        for (index, event) in transport.queue_events().iter().enumerate() {
            self.vm
                .register_mmio_ioevent(event, base + MMIO_NOTIFY_OFFSET, index as u32)?;
        }
        self.vm.register_irqfd(transport.interrupt_event(), irq)?;
        let transport = Arc::new(Mutex::new(transport));
        self.mmio_bus
            .insert(base, MMIO_WINDOW_SIZE, transport.clone())?;
        self.event_manager.add_subscriber(transport.clone());
        self.cmdline_args.push(mmio_cmdline_arg(base, irq));
        Ok(transport)
    }
}

/// The `root=` argument for the root drive (it is attached first, so it is `/dev/vda`).
pub fn root_cmdline_arg(drive: &DriveConfig) -> String {
    let mode = if drive.is_read_only { "ro" } else { "rw" };
    match &drive.partuuid {
        Some(partuuid) => format!("root=PARTUUID={partuuid} {mode}"),
        None => format!("root=/dev/vda {mode}"),
    }
}

/// Attaches every drive, the root drive first; returns the `root=` argument if there is one.
pub fn attach_drives(
    attached: &mut AttachedVirtio,
    drives: &[DriveConfig],
) -> Result<Vec<AttachedDrive>, BuildError> {
    let mut ordered: Vec<&DriveConfig> = drives.iter().filter(|d| d.is_root_device).collect();
    ordered.extend(drives.iter().filter(|d| !d.is_root_device));
    let mut transports = Vec::with_capacity(ordered.len());
    for drive in ordered {
        let block = Block::new(drive).map_err(|e| BuildError::Virtio(e.to_string()))?;
        let metrics = block.metrics();
        let transport = attached.attach(Box::new(block), &format!("drive {:?}", drive.drive_id))?;
        transports.push(AttachedDrive {
            id: drive.drive_id.clone(),
            transport,
            metrics,
        });
    }
    if let Some(root) = drives.iter().find(|d| d.is_root_device) {
        attached.cmdline_args.push(root_cmdline_arg(root));
    }
    Ok(transports)
}

/// A network interface by its iface_id.
pub type AttachedNet = (String, Arc<crate::devices::virtio::net::NetMetrics>);

/// Attaches every network interface, in configuration order (`eth0`, `eth1`, ...).
pub fn attach_network_interfaces(
    attached: &mut AttachedVirtio,
    ifaces: &[NetworkInterfaceConfig],
) -> Result<Vec<AttachedNet>, BuildError> {
    let mut transports = Vec::with_capacity(ifaces.len());
    for iface in ifaces {
        let net = Net::new(iface).map_err(|e| BuildError::Virtio(e.to_string()))?;
        let name = format!("network interface {:?}", iface.iface_id);
        let metrics = net.metrics();
        attached.attach(Box::new(net), &name)?;
        transports.push((iface.iface_id.clone(), metrics));
    }
    Ok(transports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_with_the_ioapic_lines() {
        let mut slots = VirtioSlots::default();
        let first = slots.allocate().unwrap();
        assert_eq!(first, (VIRTIO_MMIO_START, VIRTIO_IRQ_BASE));
        assert_eq!(
            slots.allocate().unwrap(),
            (VIRTIO_MMIO_START + MMIO_WINDOW_SIZE, VIRTIO_IRQ_BASE + 1)
        );
        let rest = std::iter::from_fn(|| slots.allocate()).count();
        assert_eq!(rest as u32 + 2, IRQ_MAX - VIRTIO_IRQ_BASE + 1);
    }

    #[test]
    fn root_argument_follows_drive_settings() {
        let mut drive: DriveConfig = serde_json::from_str(
            r#"{"drive_id":"rootfs","path_on_host":"/r","is_root_device":true,"is_read_only":true}"#,
        )
        .unwrap();
        assert_eq!(root_cmdline_arg(&drive), "root=/dev/vda ro");
        drive.partuuid = Some("1234-01".into());
        drive.is_read_only = false;
        assert_eq!(root_cmdline_arg(&drive), "root=PARTUUID=1234-01 rw");
    }
}
