//! The requests the VMM thread serves and their replies, shared by the REST API and the CLI.
//!
//! A client sends an [`ApiRequest`]: a [`VmmAction`] plus the channel the reply goes back on.
//! Pre-boot configuration is applied by a [`PrebootConfigurator`]; actions on a running VM are
//! carried out by the VMM thread itself. Every [`VmmActionError`] displays as the
//! `fault_message` a Firecracker client expects.

mod preboot;

use crate::config::{
    BootSourceConfig, ConfigError, DriveConfig, LoggerConfig, MachineConfig, MetricsConfig,
    NetworkInterfaceConfig, VmConfig,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::mpsc::Sender;

pub use preboot::PrebootConfigurator;

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
            PatchDrive(_) | PatchNetworkInterface(_) | SendCtrlAltDel | Pause | Resume => {
                ActionPhase::PostBootOnly
            }
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
            ConfigureMetrics(_) | FlushMetrics => Some(Resource::Metrics),
            ConfigureLogger(_) => Some(Resource::Logger),
            StartInstance => Some(Resource::StartMicrovm),
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

/// The body of `PATCH /machine-config`: only the fields present change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
}

impl MachineConfigUpdate {
    /// True when the update names no field (Firecracker refuses such a PATCH).
    pub fn is_empty(&self) -> bool {
        *self == MachineConfigUpdate::default()
    }

    /// `base` with the fields of this update written over it.
    pub fn apply_to(&self, base: &MachineConfig) -> MachineConfig {
        MachineConfig {
            vcpu_count: self.vcpu_count.unwrap_or(base.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(base.mem_size_mib),
            smt: self.smt.unwrap_or(base.smt),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(base.track_dirty_pages),
            huge_pages: self.huge_pages.clone().or_else(|| base.huge_pages.clone()),
        }
    }
}

/// The body of `PATCH /drives/{id}` (Firecracker's `PartialDrive`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveUpdate {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
    /// Rate limiters are not implemented; an update that sets one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<serde_json::Value>,
}

/// The body of `PATCH /network-interfaces/{id}` (Firecracker's `PartialNetworkInterface`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceUpdate {
    pub iface_id: String,
    /// Rate limiters are not implemented; an update that sets one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<serde_json::Value>,
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

/// What an error is about. Firecracker starts a `fault_message` with it ("Drive config
/// error: ..."), and clients match on that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    BootSource,
    MachineConfig,
    Drive,
    NetworkInterface,
    Metrics,
    Logger,
    StartMicrovm,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::BootSource => "Boot source error",
            Resource::MachineConfig => "Machine config error",
            Resource::Drive => "Drive config error",
            Resource::NetworkInterface => "Network config error",
            Resource::Metrics => "Metrics error",
            Resource::Logger => "Logger error",
            Resource::StartMicrovm => "Start microvm error",
        })
    }
}

/// Why the VMM thread refused or failed an action; `Display` is the `fault_message`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VmmActionError {
    /// `error`, about `resource`: shown as "<Resource> error: <error>".
    #[error("{resource}: {error}")]
    About {
        resource: Resource,
        error: Box<VmmActionError>,
    },
    /// A file the request names cannot be used (kernel, initrd, disk); the text says which
    /// file and why.
    #[error("{0}")]
    HostFile(String),
    #[error("The requested operation is not supported before starting the microVM.")]
    NotSupportedBeforeStart,
    #[error("The requested operation is not supported after starting the microVM.")]
    NotSupportedAfterStart,
    #[error("{0}")]
    InvalidConfig(#[from] ConfigError),
    #[error("A root block device already exists!")]
    RootDeviceExists,
    #[error("The MAC address is already in use: {0}")]
    GuestMacInUse(String),
    #[error("Empty PATCH request.")]
    EmptyPatch,
    #[error("Cannot start microvm without kernel configuration.")]
    MissingKernelConfig,
    #[error("{kind} {id:?} does not exist.")]
    NotFound { kind: &'static str, id: String },
    #[error("Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed.")]
    MetricsAlreadyConfigured,
    #[error("The metrics system is not initialized: configure it with PUT /metrics first.")]
    MetricsNotConfigured,
    #[error("Cannot configure the logger: {0}")]
    Logger(String),
    #[error("Cannot initialize the metrics system due to bad user input: {path}: {reason}")]
    MetricsFile { path: String, reason: String },
    /// Starting the VM failed; the text says where.
    #[error("{0}")]
    StartMicrovm(String),
    /// A post-boot operation failed; the text says which and why.
    #[error("{0}")]
    Internal(String),
}

impl VmmActionError {
    /// This error as Firecracker reports it for `resource`. Errors already about a resource,
    /// and the "not supported before/after start" refusals (which Firecracker reports bare),
    /// are left as they are.
    pub fn about(self, resource: Resource) -> Self {
        match self {
            VmmActionError::About { .. }
            | VmmActionError::NotSupportedBeforeStart
            | VmmActionError::NotSupportedAfterStart => self,
            error => VmmActionError::About {
                resource,
                error: Box::new(error),
            },
        }
    }

    /// This error as Firecracker reports it for `action`.
    pub fn for_action(self, action: &VmmAction) -> Self {
        match action.resource() {
            Some(resource) => self.about(resource),
            None => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_firecracker() {
        assert_eq!(
            VmmAction::StartInstance.check_allowed(true),
            Err(VmmActionError::NotSupportedAfterStart)
        );
        assert_eq!(
            VmmAction::Pause.check_allowed(false),
            Err(VmmActionError::NotSupportedBeforeStart)
        );
        assert_eq!(VmmAction::GetVmConfig.check_allowed(false), Ok(()));
        assert_eq!(VmmAction::GetVmConfig.check_allowed(true), Ok(()));
        assert_eq!(VmmAction::SendCtrlAltDel.check_allowed(true), Ok(()));
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

    #[test]
    fn machine_config_update_merges() {
        let update: MachineConfigUpdate = serde_json::from_str(r#"{"vcpu_count": 4}"#).unwrap();
        let merged = update.apply_to(&MachineConfig::default());
        assert_eq!((merged.vcpu_count, merged.mem_size_mib), (4, 128));
        assert!(!update.is_empty());
        assert!(MachineConfigUpdate::default().is_empty());
    }
}
