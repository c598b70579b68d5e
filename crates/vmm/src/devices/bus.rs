//! Address-range dispatch of guest MMIO and port I/O accesses to devices.
//!
//! vCPU threads call `Bus::read`/`Bus::write` on every MMIO or PIO exit; each device sits
//! behind its own mutex so two vCPUs touching different devices never contend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that answers guest reads and writes inside its address range.
///
/// `offset` is relative to the start of the range the device was inserted at. Devices must
/// accept any offset and length the guest sends (the guest is hostile): unknown registers
/// read as zero and writes to them are ignored.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between vCPU threads (accesses) and the VMM thread (event handling).
pub type SharedBusDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overlaps a device already at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
}

struct BusEntry {
    len: u64,
    device: SharedBusDevice,
}

/// Maps non-overlapping address ranges to devices.
#[derive(Default)]
pub struct Bus {
    entries: BTreeMap<u64, BusEntry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedBusDevice) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let end = end.ok_or(BusError::BadRange { base, len })?;
        let before = self.entries.range(..end).next_back();
        if let Some((&other, entry)) = before {
            if other + entry.len > base {
                return Err(BusError::Overlap { base, len, other });
            }
        }
        self.entries.insert(base, BusEntry { len, device });
        Ok(())
    }

    /// The device covering `addr` and the offset of `addr` inside its range.
    fn resolve(&self, addr: u64) -> Option<(&SharedBusDevice, u64)> {
        let (base, entry) = self.entries.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < entry.len).then_some((&entry.device, offset))
    }

    /// Forwards a guest read; returns false when no device covers `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((device, offset)) = self.resolve(addr) else {
            return false;
        };
        lock(device).read(offset, data);
        true
    }

    /// Forwards a guest write; returns false when no device covers `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((device, offset)) = self.resolve(addr) else {
            return false;
        };
        lock(device).write(offset, data);
        true
    }
}

/// Locks a device, recovering from a poisoned mutex: a panic in one access must not take
/// every later access (and so the whole VM) down with it.
pub fn lock(device: &SharedBusDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write and answers reads with its offset.
    #[derive(Default)]
    struct Probe {
        last_write: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_relative_offsets() {
        let mut bus = Bus::new();
        let probe = Arc::new(Mutex::new(Probe::default()));
        bus.insert(0x1000, 0x100, probe.clone()).unwrap();
        let mut data = [0u8; 2];
        assert!(bus.read(0x1010, &mut data));
        assert_eq!(data, [0x10, 0x10]);
        assert!(bus.write(0x10ff, &[7]));
        assert_eq!(probe.lock().unwrap().last_write, vec![(0xff, vec![7])]);
        assert!(!bus.read(0x1100, &mut data));
        assert!(!bus.write(0xfff, &[1]));
    }

    #[test]
    fn refuses_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        let probe = || Arc::new(Mutex::new(Probe::default()));
        bus.insert(0x1000, 0x100, probe()).unwrap();
        assert!(matches!(
            bus.insert(0x10ff, 1, probe()),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(0xf00, 0x101, probe()),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(0x2000, 0, probe()),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(u64::MAX, 2, probe()),
            Err(BusError::BadRange { .. })
        ));
        bus.insert(0x1100, 0x100, probe()).unwrap();
        bus.insert(0xf00, 0x100, probe()).unwrap();
    }
}
