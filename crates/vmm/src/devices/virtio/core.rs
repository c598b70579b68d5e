//! What every virtio device has, whatever it does: its type, queue sizes, the features it
//! offers and the driver accepted, its config space, and once the driver is ready its
//! queues, guest memory and interrupt. The guest-facing rules live here, once: the driver
//! can only accept features that were offered, and config space accesses are bounds-checked.

use std::sync::Arc;

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

/// A device's queues, the memory they live in and its interrupt, from activation to reset.
pub struct ActiveQueues {
    pub mem: GuestMemory,
    pub queues: Vec<Queue>,
    pub interrupt: Arc<Interrupt>,
}

/// The state every virtio device shares; a device embeds one and hands it out through
/// [`super::VirtioDevice::core`].
pub struct VirtioCore {
    name: String,
    device_type: u32,
    queue_max_sizes: Vec<u16>,
    avail_features: u64,
    acked_features: u64,
    config: Vec<u8>,
    active: Option<ActiveQueues>,
}

impl VirtioCore {
    /// `name` labels log lines ("virtio-net eth0").
    pub fn new(
        name: String,
        device_type: u32,
        queue_max_sizes: &[u16],
        avail_features: u64,
        config: Vec<u8>,
    ) -> Self {
        VirtioCore {
            name,
            device_type,
            queue_max_sizes: queue_max_sizes.to_vec(),
            avail_features,
            acked_features: 0,
            config,
            active: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    pub fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max_sizes
    }

    pub fn avail_features(&self) -> u64 {
        self.avail_features
    }

    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// True when the driver accepted feature `bit`.
    pub fn has_feature(&self, bit: u32) -> bool {
        bit < 64 && self.acked_features & (1 << bit) != 0
    }

    /// Records the driver's features; bits the device did not offer are dropped.
    pub fn ack_features(&mut self, features: u64) {
        let refused = features & !self.avail_features;
        if refused != 0 {
            log::warn!(
                "{}: driver accepted unoffered features {refused:#x}, ignored",
                self.name
            );
        }
        self.acked_features = features & self.avail_features;
    }

    /// Reads config space at `offset`; a read outside it leaves `data` untouched.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    /// The config space, for the device to update (a drive's new capacity).
    pub fn config_mut(&mut self) -> &mut [u8] {
        &mut self.config
    }

    pub fn config(&self) -> &[u8] {
        &self.config
    }

    /// Takes the queues the transport validated; one per entry of the queue sizes.
    pub fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let expected = self.queue_max_sizes.len();
        if queues.len() != expected {
            let got = queues.len();
            return Err(ActivateError::QueueCount { expected, got });
        }
        self.active = Some(ActiveQueues {
            mem,
            queues,
            interrupt,
        });
        Ok(())
    }

    /// The queues while the device runs.
    pub fn active_mut(&mut self) -> Option<&mut ActiveQueues> {
        self.active.as_mut()
    }

    pub fn active(&self) -> Option<&ActiveQueues> {
        self.active.as_ref()
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Back to the state before the driver came: no queues, no features.
    pub fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::create_guest_memory;
    use virtio_queue::QueueT;

    fn core() -> VirtioCore {
        VirtioCore::new("test".into(), 2, &[8, 8], 0b1010, vec![1, 2, 3, 4])
    }

    #[test]
    fn only_offered_features_can_be_accepted() {
        let mut core = core();
        core.ack_features(0b1111);
        assert_eq!(core.acked_features(), 0b1010);
        assert!(core.has_feature(3) && !core.has_feature(0) && !core.has_feature(200));
        core.reset();
        assert_eq!(core.acked_features(), 0);
    }

    #[test]
    fn config_reads_stay_inside_the_config_space() {
        let core = core();
        let mut data = [9u8; 2];
        core.read_config(2, &mut data);
        assert_eq!(data, [3, 4]);
        let mut data = [9u8; 2];
        core.read_config(3, &mut data);
        assert_eq!(data, [9, 9]);
        core.read_config(u64::MAX, &mut data);
        assert_eq!(data, [9, 9]);
    }

    #[test]
    fn activation_needs_every_queue_once() {
        let mut core = core();
        let mem = create_guest_memory(1).unwrap();
        let interrupt = Arc::new(Interrupt::new().unwrap());
        let one = vec![Queue::new(8).unwrap()];
        let err = core.activate(mem.clone(), one, interrupt.clone());
        assert!(matches!(
            err,
            Err(ActivateError::QueueCount {
                expected: 2,
                got: 1
            })
        ));
        let two = vec![Queue::new(8).unwrap(), Queue::new(8).unwrap()];
        core.activate(mem.clone(), two, interrupt.clone()).unwrap();
        assert!(core.is_active());
        let again = vec![Queue::new(8).unwrap(), Queue::new(8).unwrap()];
        assert!(matches!(
            core.activate(mem, again, interrupt),
            Err(ActivateError::AlreadyActive)
        ));
        core.reset();
        assert!(!core.is_active());
    }

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
