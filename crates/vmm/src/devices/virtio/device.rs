//! The interface between the virtio-mmio transport and a device backend (block, net, ...).

use std::any::Any;
use std::sync::Arc;

use event_manager::{EventOps, Events};
use virtio_queue::Queue;

pub use super::core::{config_range, read_config_bytes, ActivateError, VirtioCore};
use super::interrupt::Interrupt;
use crate::vstate::memory::GuestMemory;

/// A virtio device backend driven by a transport.
///
/// The transport owns the register window, feature negotiation, queue configuration and the
/// queue eventfds; the backend owns the device-specific behaviour. What every device shares
/// (type, queue sizes, features, config space, active queues) is its [`VirtioCore`]: the
/// provided methods work on it and call the device's hooks, so a device implements only
/// `core`, `core_mut`, `process_queue` and the hooks it needs. Every method is called with
/// the transport's lock held, so a backend never sees two calls at once.
pub trait VirtioDevice: AsAny + Send {
    fn core(&self) -> &VirtioCore;

    fn core_mut(&mut self) -> &mut VirtioCore;

    /// The guest notified queue `index`; only called while active. Returns true when work is
    /// left over (a processing budget ran out) and the transport should call again later.
    fn process_queue(&mut self, index: usize) -> bool;

    /// Hook: the driver's features were recorded in the core (e.g. set TAP offloads).
    fn features_acked(&mut self) {}

    /// Hook: the core now holds the queues.
    fn activated(&mut self) {}

    /// Hook: the core dropped its queues and features; reset device-specific state.
    fn reset_device(&mut self) {}

    /// Writes device config space; the default ignores writes (read-only config).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::warn!(
            "{}: write of {} bytes to read-only config at {offset:#x} ignored",
            self.core().name(),
            data.len()
        );
    }

    /// Registers backend-owned fds (a TAP, a timer) with the event loop. Called from the
    /// transport's `MutEventSubscriber::init` and on resume; must not register the queue
    /// eventfds.
    fn init_events(&mut self, _ops: &mut EventOps) {}

    /// Unregisters what `init_events` registered (on pause).
    fn remove_events(&mut self, _ops: &mut EventOps) {}

    /// An event on one of the fds registered in `init_events`.
    fn process_event(&mut self, _events: Events, _ops: &mut EventOps) {}

    /// Counters for metrics lines (JSON object), if the device keeps any.
    fn metrics_json(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// The virtio device id (`virtio_ids::VIRTIO_ID_*`).
    fn device_type(&self) -> u32 {
        self.core().device_type()
    }

    /// The maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16] {
        self.core().queue_max_sizes()
    }

    /// Device feature bits offered to the driver (VIRTIO_F_VERSION_1 is added by the transport).
    fn avail_features(&self) -> u64 {
        self.core().avail_features()
    }

    /// The features the driver accepted (those offered), called before `activate`.
    fn set_acked_features(&mut self, features: u64) {
        self.core_mut().ack_features(features);
        self.features_acked();
    }

    /// Reads device config space; `offset` is relative to the config space start. Reads
    /// outside the config space leave `data` untouched (the transport zero-fills it).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.core().read_config(offset, data);
    }

    /// Starts the device with validated queues (one per `queue_max_sizes` entry).
    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        self.core_mut().activate(mem, queues, interrupt)?;
        self.activated();
        Ok(())
    }

    /// Returns to the pre-activation state, dropping queues and guest memory.
    fn reset(&mut self) {
        self.core_mut().reset();
        self.reset_device();
    }
}

/// The concrete device behind a `dyn VirtioDevice`, for the device manager's typed lookups
/// (`with_device::<Block>`). Implemented for every type.
pub trait AsAny {
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
