//! The requests the VMM thread serves and their replies, shared by the REST API and the CLI.
//!
//! A client sends an [`ApiRequest`]: a [`VmmAction`] plus the channel the reply goes back on.
//! Whether an action may run before or after boot is decided here, by
//! [`VmmAction::check_allowed`], and nowhere else. The VM's configuration is kept and changed
//! by [`VmResources`]; actions on a running VM are carried out by the VMM thread itself.
//! Every [`VmmActionError`] displays as the `fault_message` a Firecracker client expects.

mod error;
mod resources;

use crate::config::{
    BootSourceConfig, CreateSnapshotConfig, DriveConfig, DriveUpdate, EntropyConfig,
    LoadSnapshotConfig, LoggerConfig, MachineConfig, MachineConfigUpdate, MetricsConfig,
    NetworkInterfaceConfig, NetworkInterfaceUpdate, VmConfig, VsockConfig,
};
use serde::{Deserialize, Serialize};
use std::sync::mpsc::Sender;

pub use error::{Resource, VmmActionError};
pub use resources::VmResources;

/// What the VMM thread answers to one action.
pub type VmmResponse = Result<VmmData, VmmActionError>;

/// One request to the VMM thread and the channel its reply goes back on.
pub type ApiRequest = (VmmAction, Sender<VmmResponse>);

/// The name `GET /` reports as `app_name`.
pub const APP_NAME: &str = "Ember";
/// The instance id `GET /` reports when none was given (Firecracker's default).
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";
/// This build's version, reported by `GET /` and `GET /version`.
pub const VMM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A request to the VMM thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmmAction {
    /// `PUT /boot-source`: set or replace the kernel, command line and initrd.
    ConfigureBootSource(BootSourceConfig),
    /// `GET /machine-config`.
    GetMachineConfig,
    /// `PUT /machine-config`: replace the whole machine configuration.
    PutMachineConfig(MachineConfig),
    /// `PATCH /machine-config`: change only the fields given.
    PatchMachineConfig(MachineConfigUpdate),
    /// `PUT /drives/{id}`: add a drive, or replace the one with the same id.
    InsertDrive(DriveConfig),
    /// `PATCH /drives/{id}`: swap the backing file of a running VM's drive.
    PatchDrive(DriveUpdate),
    /// `PUT /network-interfaces/{id}`: add an interface, or replace the one with the same id.
    InsertNetworkInterface(NetworkInterfaceConfig),
    /// `PATCH /network-interfaces/{id}`: update a running interface's rate limiters.
    PatchNetworkInterface(NetworkInterfaceUpdate),
    /// `PUT /vsock`: the VM's vsock device (one at most).
    SetVsock(VsockConfig),
    /// `PUT /entropy`: the VM's entropy device (a second PUT replaces the first).
    SetEntropy(EntropyConfig),
    /// `PUT /actions` `InstanceStart`: build and boot the VM.
    StartInstance,
    /// `PUT /actions` `SendCtrlAltDel`: press Ctrl+Alt+Del on the guest's i8042.
    SendCtrlAltDel,
    /// `PUT /actions` `FlushMetrics`.
    FlushMetrics,
    /// `PUT /metrics`: where `FlushMetrics` writes.
    ConfigureMetrics(MetricsConfig),
    /// `PUT /logger`: change where and what the log writes, before or after boot.
    ConfigureLogger(LoggerConfig),
    /// `PATCH /vm` `Paused`.
    Pause,
    /// `PATCH /vm` `Resumed`.
    Resume,
    /// `GET /vm/config`.
    GetVmConfig,
    /// `GET /`.
    GetInstanceInfo,
    /// `GET /version`.
    GetVersion,
    /// `PUT /snapshot/create`: save a paused VM to a state file and a memory file.
    CreateSnapshot(CreateSnapshotConfig),
    /// `PUT /snapshot/load`: build the VM from a snapshot, in a process not yet configured.
    LoadSnapshot(LoadSnapshotConfig),
}

/// When an action may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionPhase {
    PreBootOnly,
    PostBootOnly,
    Any,
}

impl VmmAction {
    /// Whether the action is for a VM being configured, a started one, or both.
    pub fn phase(&self) -> ActionPhase {
        use VmmAction::*;
        match self {
            ConfigureBootSource(_) | PutMachineConfig(_) | PatchMachineConfig(_) => {
                ActionPhase::PreBootOnly
            }
            InsertDrive(_) | InsertNetworkInterface(_) | StartInstance | ConfigureMetrics(_) => {
                ActionPhase::PreBootOnly
            }
            LoadSnapshot(_) => ActionPhase::PreBootOnly,
            SetVsock(_) | SetEntropy(_) => ActionPhase::PreBootOnly,
            PatchDrive(_) | PatchNetworkInterface(_) | SendCtrlAltDel | Pause | Resume => {
                ActionPhase::PostBootOnly
            }
            CreateSnapshot(_) => ActionPhase::PostBootOnly,
            GetMachineConfig | GetVmConfig | GetInstanceInfo | GetVersion | FlushMetrics
            | ConfigureLogger(_) => ActionPhase::Any,
        }
    }

    /// The resource a configuration action's errors are about.
    pub fn resource(&self) -> Option<Resource> {
        use VmmAction::*;
        match self {
            ConfigureBootSource(_) => Some(Resource::BootSource),
            PutMachineConfig(_) | PatchMachineConfig(_) => Some(Resource::MachineConfig),
            InsertDrive(_) | PatchDrive(_) => Some(Resource::Drive),
            InsertNetworkInterface(_) | PatchNetworkInterface(_) => {
                Some(Resource::NetworkInterface)
            }
            SetVsock(_) => Some(Resource::Vsock),
            SetEntropy(_) => Some(Resource::Entropy),
            ConfigureMetrics(_) | FlushMetrics => Some(Resource::Metrics),
            ConfigureLogger(_) => Some(Resource::Logger),
            StartInstance => Some(Resource::StartMicrovm),
            CreateSnapshot(_) => Some(Resource::CreateSnapshot),
            LoadSnapshot(_) => Some(Resource::LoadSnapshot),
            SendCtrlAltDel | Pause | Resume => None,
            GetMachineConfig | GetVmConfig | GetInstanceInfo | GetVersion => None,
        }
    }

    /// Refuses the action with Firecracker's message when it cannot run in this phase.
    pub fn check_allowed(&self, started: bool) -> Result<(), VmmActionError> {
        match (self.phase(), started) {
            (ActionPhase::PreBootOnly, true) => Err(VmmActionError::NotSupportedAfterStart),
            (ActionPhase::PostBootOnly, false) => Err(VmmActionError::NotSupportedBeforeStart),
            _ => Ok(()),
        }
    }
}

/// Where the VM is in its life, as `GET /` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

/// The body of `GET /`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
    pub app_name: String,
}

impl InstanceInfo {
    /// Ember's instance info for an instance `id` in `state`.
    pub fn new(id: &str, state: InstanceState) -> Self {
        InstanceInfo {
            id: id.to_string(),
            state,
            vmm_version: VMM_VERSION.to_string(),
            app_name: APP_NAME.to_string(),
        }
    }
}

/// A successful reply of the VMM thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmmData {
    /// The action was carried out and has nothing to report (HTTP 204).
    Empty,
    MachineConfig(MachineConfig),
    VmConfig(Box<VmConfig>),
    InstanceInfo(InstanceInfo),
    /// The VMM's version, e.g. "0.1.0".
    Version(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_firecracker() {
        assert!(matches!(
            VmmAction::StartInstance.check_allowed(true),
            Err(VmmActionError::NotSupportedAfterStart)
        ));
        assert!(matches!(
            VmmAction::Pause.check_allowed(false),
            Err(VmmActionError::NotSupportedBeforeStart)
        ));
        assert!(VmmAction::GetVmConfig.check_allowed(false).is_ok());
        assert!(VmmAction::GetVmConfig.check_allowed(true).is_ok());
        assert!(VmmAction::SendCtrlAltDel.check_allowed(true).is_ok());
    }

    #[test]
    fn messages_are_firecracker_wording() {
        assert_eq!(
            VmmActionError::NotSupportedAfterStart.to_string(),
            "The requested operation is not supported after starting the microVM."
        );
        assert_eq!(
            VmmActionError::NotSupportedBeforeStart.to_string(),
            "The requested operation is not supported before starting the microVM."
        );
    }

    #[test]
    fn instance_state_serializes_as_firecracker_does() {
        let info = InstanceInfo::new("vm0", InstanceState::NotStarted);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["state"], "Not started");
        assert_eq!(json["app_name"], APP_NAME);
    }
}
