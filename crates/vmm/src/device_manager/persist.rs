//! Saving every device of a paused VM and putting the states back onto the devices of a
//! freshly built VM with the same configuration.

use super::{lock, DeviceKind, DeviceManager, DeviceManagerError};
use crate::devices::legacy::{I8042State, SerialConsoleState};
use crate::devices::virtio::MmioState;
use serde::{Deserialize, Serialize};

/// One virtio device's state, with what identifies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioDeviceState {
    pub kind: DeviceKind,
    pub id: String,
    pub transport: MmioState,
}

/// The state of every device of a VM, virtio devices in the order they were attached
/// (which decides their MMIO windows and IRQ lines).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicesState {
    pub virtio: Vec<VirtioDeviceState>,
    pub serial: Option<SerialConsoleState>,
    pub i8042: Option<I8042State>,
}

impl DeviceManager {
    /// Every device's state; call with the VM paused.
    pub fn save(&self) -> DevicesState {
        let virtio = self.virtio.iter().map(|entry| VirtioDeviceState {
            kind: entry.kind,
            id: entry.id.clone(),
            transport: lock(&entry.transport).save(),
        });
        DevicesState {
            virtio: virtio.collect(),
            serial: self.serial().map(|serial| lock(serial).save()),
            i8042: self.i8042().map(|i8042| lock(i8042).save()),
        }
    }

    /// Puts `state` onto this VM's devices, which must be the same devices in the same
    /// order (the VM was built from the configuration the state was saved with).
    pub fn restore(&self, state: &DevicesState) -> Result<(), DeviceManagerError> {
        let attached: Vec<(DeviceKind, &str)> = self
            .virtio
            .iter()
            .map(|e| (e.kind, e.id.as_str()))
            .collect();
        let saved: Vec<(DeviceKind, &str)> = state
            .virtio
            .iter()
            .map(|s| (s.kind, s.id.as_str()))
            .collect();
        if attached != saved {
            return Err(DeviceManagerError::StateMismatch(format!(
                "saved devices {saved:?}, this VM has {attached:?}"
            )));
        }
        for (entry, saved) in self.virtio.iter().zip(&state.virtio) {
            lock(&entry.transport)
                .restore(&saved.transport)
                .map_err(|source| DeviceManagerError::RestoreVirtio {
                    id: entry.id.clone(),
                    source,
                })?;
        }
        if let (Some(serial), Some(saved)) = (self.serial(), &state.serial) {
            lock(serial).restore(saved, std::io::stdout())?;
        }
        if let (Some(i8042), Some(saved)) = (self.i8042(), &state.i8042) {
            lock(i8042).restore(saved)?;
        }
        Ok(())
    }
}
