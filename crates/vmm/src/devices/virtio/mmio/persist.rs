//! Saving a virtio-mmio device (registers, queues and how far the device got in them, the
//! config space) and putting it back onto a freshly built one of the same kind.

use serde::{Deserialize, Serialize};
use virtio_queue::QueueT;

use super::queue_config::{QueueConfig, QueueConfigError};
use super::MmioTransport;
use crate::devices::virtio::device::ActivateError;

/// One queue: what the driver wrote, and the device's next available and used indices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// What the driver wrote into the queue's registers.
    #[serde(flatten)]
    pub config: QueueConfig,
    pub next_avail: u16,
    pub next_used: u16,
}

/// A virtio-mmio device as the guest's driver left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioState {
    pub device_type: u32,
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub acked_features: u64,
    pub acked_unknown_page: bool,
    pub queue_sel: u32,
    pub config_generation: u32,
    pub interrupt_status: u32,
    pub activated: bool,
    pub queues: Vec<QueueState>,
    pub config_space: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum MmioStateError {
    #[error("the saved device is of type {saved}, this one of type {actual}")]
    DeviceType { saved: u32, actual: u32 },
    #[error("the saved device has {saved} queues, this one {actual}")]
    QueueCount { saved: usize, actual: usize },
    #[error("the saved config space is {saved} bytes, this one {actual}")]
    ConfigLength { saved: usize, actual: usize },
    #[error("queue {index}: saved maximum size {saved}, this device's is {actual}")]
    QueueMaxSize {
        index: usize,
        saved: u16,
        actual: u16,
    },
    #[error(transparent)]
    Queue(#[from] QueueConfigError),
    #[error(transparent)]
    Activate(#[from] ActivateError),
    #[error("the device can only be restored before the guest touched it")]
    NotFresh,
}

impl MmioTransport {
    /// The device's state; call with the VM paused.
    pub fn save(&self) -> MmioState {
        let progress = self.device.core().active().map(|active| {
            let indices = |q: &virtio_queue::Queue| (q.next_avail(), q.next_used());
            active.queues.iter().map(indices).collect::<Vec<_>>()
        });
        let queues = self.queues.iter().enumerate().map(|(index, q)| {
            let (next_avail, next_used) = progress
                .as_ref()
                .and_then(|p| p.get(index).copied())
                .unwrap_or((0, 0));
            QueueState {
                config: *q,
                next_avail,
                next_used,
            }
        });
        MmioState {
            device_type: self.device.device_type(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            acked_features: self.acked_features,
            acked_unknown_page: self.acked_unknown_page,
            queue_sel: self.queue_sel,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt.status(),
            activated: self.activated,
            queues: queues.collect(),
            config_space: self.device.core().config().to_vec(),
        }
    }

    /// Puts `state` onto this freshly built device (same kind, same configuration): the
    /// registers, the config space, and, if the device was running, its queues where it
    /// left them. A pending interrupt is raised again.
    pub fn restore(&mut self, state: &MmioState) -> Result<(), MmioStateError> {
        self.check_restorable(state)?;
        for (config, saved) in self.queues.iter_mut().zip(&state.queues) {
            // The maximum size is the device's, checked equal above.
            *config = saved.config;
        }
        self.status = state.status;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.acked_features = state.acked_features;
        self.acked_unknown_page = state.acked_unknown_page;
        self.queue_sel = state.queue_sel;
        self.config_generation = state.config_generation;
        self.device
            .core_mut()
            .config_mut()
            .copy_from_slice(&state.config_space);
        if state.activated {
            self.activate_at(&state.queues)?;
        }
        self.interrupt.restore_status(state.interrupt_status);
        Ok(())
    }

    fn check_restorable(&self, state: &MmioState) -> Result<(), MmioStateError> {
        let actual = self.device.device_type();
        if state.device_type != actual {
            let saved = state.device_type;
            return Err(MmioStateError::DeviceType { saved, actual });
        }
        let (saved, actual) = (state.queues.len(), self.queues.len());
        if saved != actual {
            return Err(MmioStateError::QueueCount { saved, actual });
        }
        for (index, (queue, saved)) in self.queues.iter().zip(&state.queues).enumerate() {
            if queue.max_size != saved.config.max_size {
                let (saved, actual) = (saved.config.max_size, queue.max_size);
                return Err(MmioStateError::QueueMaxSize {
                    index,
                    saved,
                    actual,
                });
            }
        }
        let (saved, actual) = (state.config_space.len(), self.device.core().config().len());
        if saved != actual {
            return Err(MmioStateError::ConfigLength { saved, actual });
        }
        if self.activated || self.status != 0 {
            return Err(MmioStateError::NotFresh);
        }
        Ok(())
    }

    /// Starts the device on its restored queues, each at its saved next indices.
    fn activate_at(&mut self, saved: &[QueueState]) -> Result<(), MmioStateError> {
        let event_idx = self.event_idx();
        let mut queues = Vec::with_capacity(saved.len());
        for (index, (config, state)) in self.queues.iter().zip(saved).enumerate() {
            let mut queue = config.build_queue(index, &self.mem, event_idx)?;
            queue.set_next_avail(state.next_avail);
            queue.set_next_used(state.next_used);
            queues.push(queue);
        }
        self.device.set_acked_features(self.acked_features);
        self.device
            .activate(self.mem.clone(), queues, self.interrupt.clone())?;
        self.activated = true;
        Ok(())
    }
}
