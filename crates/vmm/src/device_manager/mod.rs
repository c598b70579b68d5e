//! The owner of every device of a VM, legacy and virtio, keyed by kind and id.
//!
//! The builder fills it (`attach_legacy`, one `attach_virtio` per device); it hands out
//! MMIO windows and IRQ lines, wires each device to KVM, the buses and the event loop, and
//! collects the kernel command-line arguments that announce the devices. Afterwards the
//! running VM reaches a device through it by kind and id with its concrete type
//! (`with_device::<Block>`), and it walks every device for metrics, pause and resume.
//!
//! A new virtio device is: its folder under `devices/virtio/` (implementing
//! [`VirtioDevice`]), its config resource, and one `attach_virtio` call in the builder.

mod legacy;
mod mmio;
mod persist;

pub use legacy::LegacyOptions;
pub use mmio::MmioSlots;
pub use persist::{DevicesState, VirtioDeviceState};

use crate::devices::bus::BusError;
use crate::devices::legacy::{ResetRequest, SerialConsole, I8042};
use crate::devices::virtio::{MmioError, MmioTransport, VirtioDevice};
use crate::devices::{Bus, Pausable};
use crate::event_loop::VmmEventManager;
use crate::vstate::vm::{Vm, VmError};
use event_manager::{SubscriberId, SubscriberOps};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex, MutexGuard};

/// The kinds of virtio device, as metrics lines and lookups name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DeviceKind {
    Block,
    Net,
    Vsock,
    Rng,
}

impl DeviceKind {
    /// The section of a metrics line that holds this kind's counters.
    pub fn metrics_section(self) -> &'static str {
        match self {
            DeviceKind::Block => "block",
            DeviceKind::Net => "net",
            DeviceKind::Vsock => "vsock",
            DeviceKind::Rng => "entropy",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceManagerError {
    #[error("cannot attach {0}: every IRQ line is in use")]
    NoIrqLeft(String),
    #[error("{kind:?} device {id:?} is attached twice")]
    Duplicate { kind: DeviceKind, id: String },
    #[error("{0}: {1}")]
    Transport(String, #[source] MmioError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("cannot place a device: {0}")]
    Bus(#[from] BusError),
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("no {kind:?} device {id:?}")]
    NotFound { kind: DeviceKind, id: String },
    #[error("the event loop lost the subscriber of {0}")]
    EventOps(String),
    #[error("the saved devices do not match this VM's: {0}")]
    StateMismatch(String),
    #[error("cannot restore device {id:?}: {source}")]
    RestoreVirtio {
        id: String,
        #[source]
        source: crate::devices::virtio::MmioStateError,
    },
    #[error("cannot restore the serial console: {0}")]
    RestoreSerial(#[from] crate::devices::legacy::SerialStateError),
    #[error("cannot restore the i8042: {0}")]
    RestoreI8042(#[from] crate::devices::legacy::i8042::I8042Error),
}

/// What attaching a device touches: the VM (irqfds, ioeventfds), the buses the vCPUs
/// dispatch on, and the event loop.
pub struct Wiring<'a> {
    pub vm: &'a Vm,
    pub pio_bus: &'a mut Bus,
    pub mmio_bus: &'a mut Bus,
    pub event_manager: &'a mut VmmEventManager,
}

/// One attached virtio device.
struct VirtioEntry {
    kind: DeviceKind,
    id: String,
    transport: Arc<Mutex<MmioTransport>>,
    subscriber: SubscriberId,
}

/// The legacy devices the VMM thread talks to after boot.
struct Legacy {
    serial: Arc<Mutex<SerialConsole<std::io::Stdout>>>,
    i8042: Arc<Mutex<I8042>>,
    console_input: SubscriberId,
    console: Arc<Mutex<crate::event_loop::ConsoleInput>>,
}

/// Every device of one VM.
#[derive(Default)]
pub struct DeviceManager {
    slots: MmioSlots,
    cmdline_args: Vec<String>,
    virtio: Vec<VirtioEntry>,
    legacy: Option<Legacy>,
}

pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DeviceManager {
    pub fn new() -> Self {
        DeviceManager::default()
    }

    /// The kernel command-line arguments that announce the devices, in probe order.
    pub fn cmdline_args(&self) -> &[String] {
        &self.cmdline_args
    }

    /// Adds a command-line argument a device needs (e.g. `root=` for the root drive).
    pub fn push_cmdline_arg(&mut self, arg: String) {
        self.cmdline_args.push(arg);
    }

    /// Puts `device` behind a new virtio-mmio window on its own IRQ line.
    pub fn attach_virtio(
        &mut self,
        wiring: &mut Wiring,
        kind: DeviceKind,
        id: &str,
        device: Box<dyn VirtioDevice>,
    ) -> Result<(), DeviceManagerError> {
        if self.virtio.iter().any(|e| e.kind == kind && e.id == id) {
            let id = id.to_string();
            return Err(DeviceManagerError::Duplicate { kind, id });
        }
        let name = format!("{kind:?} device {id:?}");
        let (transport, subscriber, arg) = mmio::attach(&mut self.slots, wiring, device, &name)?;
        self.cmdline_args.push(arg);
        self.virtio.push(VirtioEntry {
            kind,
            id: id.to_string(),
            transport,
            subscriber,
        });
        Ok(())
    }

    fn entry(&self, kind: DeviceKind, id: &str) -> Result<&VirtioEntry, DeviceManagerError> {
        self.virtio
            .iter()
            .find(|e| e.kind == kind && e.id == id)
            .ok_or_else(|| DeviceManagerError::NotFound {
                kind,
                id: id.to_string(),
            })
    }

    /// Runs `f` on the `kind` device `id`, as its concrete type `T`.
    pub fn with_device<T: VirtioDevice + 'static, R>(
        &self,
        kind: DeviceKind,
        id: &str,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R, DeviceManagerError> {
        let entry = self.entry(kind, id)?;
        let mut transport = lock(&entry.transport);
        let device = transport.device_mut().as_any_mut().downcast_mut::<T>();
        let device = device.ok_or_else(|| DeviceManagerError::NotFound {
            kind,
            id: id.to_string(),
        })?;
        Ok(f(device))
    }

    /// Tells the driver of device `id` that its config space changed.
    pub fn notify_config_change(
        &self,
        kind: DeviceKind,
        id: &str,
    ) -> Result<(), DeviceManagerError> {
        lock(&self.entry(kind, id)?.transport).notify_config_change();
        Ok(())
    }

    /// Every virtio device's counters, by kind then id, for a metrics line.
    pub fn metrics(&self) -> Map<String, Value> {
        let mut sections = Map::new();
        let kinds = [
            DeviceKind::Block,
            DeviceKind::Net,
            DeviceKind::Vsock,
            DeviceKind::Rng,
        ];
        for kind in kinds {
            sections.insert(kind.metrics_section().into(), Value::Object(Map::new()));
        }
        for entry in &self.virtio {
            let counters = lock(&entry.transport).device_mut().metrics_json();
            if let Some(Value::Object(section)) = sections.get_mut(entry.kind.metrics_section()) {
                section.insert(entry.id.clone(), counters);
            }
        }
        sections
    }

    /// Stops every device: the event loop no longer watches their fds, so none reads or
    /// writes guest memory or raises an interrupt; what arrives meanwhile waits in its fd.
    /// Call with the vCPUs stopped (nothing else reaches the devices).
    pub fn pause(&self, event_manager: &mut VmmEventManager) -> Result<(), DeviceManagerError> {
        self.each_pausable(event_manager, |device, ops| device.pause(ops))
    }

    /// Undoes [`DeviceManager::pause`]; work that waited is picked up at once.
    pub fn resume(&self, event_manager: &mut VmmEventManager) -> Result<(), DeviceManagerError> {
        self.each_pausable(event_manager, |device, ops| device.resume(ops))
    }

    fn each_pausable(
        &self,
        event_manager: &mut VmmEventManager,
        mut f: impl FnMut(&mut dyn Pausable, &mut event_manager::EventOps),
    ) -> Result<(), DeviceManagerError> {
        let lost = |name: &str| DeviceManagerError::EventOps(name.to_string());
        for entry in &self.virtio {
            let mut ops = event_manager
                .event_ops(entry.subscriber)
                .map_err(|_| lost(&entry.id))?;
            f(&mut *lock(&entry.transport), &mut ops);
        }
        if let Some(legacy) = &self.legacy {
            let mut ops = event_manager
                .event_ops(legacy.console_input)
                .map_err(|_| lost("the console"))?;
            f(&mut *lock(&legacy.console), &mut ops);
        }
        Ok(())
    }

    /// The serial console, if attached.
    pub fn serial(&self) -> Option<&Arc<Mutex<SerialConsole<std::io::Stdout>>>> {
        self.legacy.as_ref().map(|legacy| &legacy.serial)
    }

    /// The i8042, if attached.
    pub fn i8042(&self) -> Option<&Arc<Mutex<I8042>>> {
        self.legacy.as_ref().map(|legacy| &legacy.i8042)
    }

    /// Attaches the serial console, the i8042 and (if asked) the boot timer; returns the
    /// guest's reset request, which the vCPUs and the stop watcher share.
    pub fn attach_legacy(
        &mut self,
        wiring: &mut Wiring,
        options: &LegacyOptions,
    ) -> Result<ResetRequest, DeviceManagerError> {
        let devices = legacy::attach(wiring, options)?;
        let console = Arc::new(Mutex::new(crate::event_loop::ConsoleInput::new(
            libc::STDIN_FILENO,
            devices.serial.clone(),
        )));
        let console_input = wiring.event_manager.add_subscriber(console.clone());
        self.legacy = Some(Legacy {
            serial: devices.serial,
            i8042: devices.i8042,
            console_input,
            console,
        });
        Ok(devices.reset_request)
    }
}
