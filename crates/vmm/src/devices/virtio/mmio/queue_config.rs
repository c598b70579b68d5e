//! What the driver wrote into one queue's registers, turned into a `virtio_queue::Queue` and
//! validated against guest memory at DRIVER_OK.

use virtio_queue::{Queue, QueueState, QueueT};

use crate::vstate::memory::GuestMemory;

/// A queue the driver configured badly; the transport answers with DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
pub enum QueueConfigError {
    #[error("queue {index} is not ready")]
    NotReady { index: usize },
    #[error("queue {index}: size {size} is not a power of two up to {max}, or misaligned rings")]
    Invalid { index: usize, size: u32, max: u16 },
    #[error("queue {index}: rings are not inside guest memory")]
    OutsideMemory { index: usize },
}

/// The raw register values of one queue, as the driver wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueConfig {
    pub max_size: u16,
    pub size: u32,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl QueueConfig {
    pub fn new(max_size: u16) -> Self {
        QueueConfig {
            max_size,
            size: u32::from(max_size),
            ready: false,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
        }
    }

    /// Back to the power-on values.
    pub fn reset(&mut self) {
        *self = QueueConfig::new(self.max_size);
    }

    /// Builds the queue the device will use, checking size, alignment and that the rings lie
    /// inside guest memory.
    pub fn build_queue(
        &self,
        index: usize,
        mem: &GuestMemory,
        event_idx: bool,
    ) -> Result<Queue, QueueConfigError> {
        if !self.ready {
            return Err(QueueConfigError::NotReady { index });
        }
        let invalid = || QueueConfigError::Invalid {
            index,
            size: self.size,
            max: self.max_size,
        };
        let state = QueueState {
            max_size: self.max_size,
            next_avail: 0,
            next_used: 0,
            event_idx_enabled: event_idx,
            size: u16::try_from(self.size).map_err(|_| invalid())?,
            ready: true,
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
        };
        let queue = Queue::try_from(state).map_err(|_| invalid())?;
        if !queue.is_valid(mem) {
            return Err(QueueConfigError::OutsideMemory { index });
        }
        Ok(queue)
    }
}

/// Sets the low or high half of a 64-bit register pair.
pub fn set_half(reg: &mut u64, value: u32, high: bool) {
    *reg = if high {
        (*reg & 0xffff_ffff) | (u64::from(value) << 32)
    } else {
        (*reg & !0xffff_ffff) | u64::from(value)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn valid() -> QueueConfig {
        QueueConfig {
            size: 16,
            ready: true,
            desc_table: 0x1000,
            avail_ring: 0x2000,
            used_ring: 0x3000,
            ..QueueConfig::new(256)
        }
    }

    #[test]
    fn validates_size_alignment_and_placement() {
        let mem = mem();
        assert!(valid().build_queue(0, &mem, false).is_ok());
        for size in [0, 3, 512, 0x1_0000 + 16] {
            let cfg = QueueConfig { size, ..valid() };
            assert!(cfg.build_queue(0, &mem, false).is_err(), "size {size}");
        }
        let cfg = QueueConfig {
            desc_table: 0x1001,
            ..valid()
        };
        assert!(cfg.build_queue(0, &mem, false).is_err());
        let cfg = QueueConfig {
            used_ring: 0xfff0,
            ..valid()
        };
        assert!(matches!(
            cfg.build_queue(0, &mem, false),
            Err(QueueConfigError::OutsideMemory { .. })
        ));
        let cfg = QueueConfig {
            ready: false,
            ..valid()
        };
        assert!(cfg.build_queue(0, &mem, false).is_err());
    }

    #[test]
    fn halves() {
        let mut reg = 0u64;
        set_half(&mut reg, 0x1234_5678, false);
        set_half(&mut reg, 0x9abc_def0, true);
        assert_eq!(reg, 0x9abc_def0_1234_5678);
        set_half(&mut reg, 1, false);
        assert_eq!(reg, 0x9abc_def0_0000_0001);
    }
}
