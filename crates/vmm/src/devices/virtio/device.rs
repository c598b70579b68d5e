//! The interface between the virtio-mmio transport and a device backend (block, net, ...).

use std::sync::Arc;

use event_manager::{EventOps, Events};
use virtio_queue::Queue;

use super::interrupt::Interrupt;
use crate::vstate::memory::GuestMemory;

/// Why a backend refused to start when the driver set DRIVER_OK.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the device expects {expected} queues, the transport gave {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("the device is already active")]
    AlreadyActive,
    #[error("the backend failed to start: {0}")]
    Backend(String),
}

/// A virtio device backend driven by a transport.
///
/// The transport owns the register window, feature negotiation, queue configuration and the
/// queue eventfds; the backend owns the device-specific behaviour. Every method is called with
/// the transport's lock held, so a backend never sees two calls at once.
pub trait VirtioDevice: Send {
    /// The virtio device id (`virtio_ids::VIRTIO_ID_*`).
    fn device_type(&self) -> u32;

    /// The maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Device feature bits offered to the driver (VIRTIO_F_VERSION_1 is added by the transport).
    fn avail_features(&self) -> u64;

    /// The features the driver accepted, called before `activate`.
    fn set_acked_features(&mut self, features: u64);

    /// Reads device config space; `offset` is relative to the config space start. Reads
    /// outside the config space leave `data` untouched (the transport zero-fills it).
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes device config space; out-of-bounds or read-only writes are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Starts the device with validated queues (one per `queue_max_sizes` entry).
    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError>;

    /// Returns to the pre-activation state, dropping queues and guest memory.
    fn reset(&mut self);

    /// The guest notified queue `index`; only called while active. Returns true when work is
    /// left over (a processing budget ran out) and the transport should call again later.
    fn process_queue(&mut self, index: usize) -> bool;

    /// Registers backend-owned fds (a TAP, a timer) with the event loop. Called once from the
    /// transport's `MutEventSubscriber::init`; must not register the queue eventfds.
    fn init_events(&mut self, _ops: &mut EventOps) {}

    /// An event on one of the fds registered in `init_events`.
    fn process_event(&mut self, _events: Events, _ops: &mut EventOps) {}

    /// The concrete device, for updates only it understands (a drive's new backing file).
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

/// Copies `config[offset..offset + data.len()]` into `data` if that range is inside `config`;
/// otherwise logs and leaves `data` alone.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    match config_range(config.len(), offset, data.len()) {
        Some(range) => data.copy_from_slice(&config[range]),
        None => log::warn!(
            "virtio: config read {offset:#x}+{} outside the {}-byte config space",
            data.len(),
            config.len()
        ),
    }
}

/// The byte range `offset..offset + len` if it lies inside a config space of `size` bytes.
pub fn config_range(size: usize, offset: u64, len: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    (end <= size).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounds_checked() {
        let config = [1u8, 2, 3, 4];
        let mut data = [0u8; 2];
        read_config_bytes(&config, 2, &mut data);
        assert_eq!(data, [3, 4]);
        let mut data = [9u8; 2];
        read_config_bytes(&config, 3, &mut data);
        assert_eq!(data, [9, 9]);
        read_config_bytes(&config, u64::MAX, &mut data);
        assert_eq!(data, [9, 9]);
        assert_eq!(config_range(4, 0, 0), Some(0..0));
    }
}
