//! The VM configuration in Firecracker's JSON shapes, shared by the `--config-file` path and
//! the REST API. Each resource has one file with its types (including its API bodies), its
//! validation and its errors; [`VmConfig`] gathers them as a config file does, and
//! [`VmConfig::validate`] is the only way to the [`ValidVmConfig`] a VM is built from.

mod boot_source;
mod drive;
mod entropy;
mod logger;
mod machine;
mod metrics;
mod net;
mod rate_limiter;
mod snapshot;
mod unsupported;
mod valid;
mod vsock;

use serde::{Deserialize, Serialize};

pub use boot_source::{BootSourceConfig, BootSourceError, DEFAULT_BOOT_ARGS, MAX_CMDLINE_LEN};
pub use drive::{
    refuse_second_root, valid_partuuid, validate_drives, with_drive, CacheType, DriveConfig,
    DriveError, DriveUpdate,
};
pub use entropy::{EntropyConfig, EntropyError};
pub use logger::{LogLevel, LoggerConfig, UnknownLogLevel};
pub use machine::{
    host_memory_mib, MachineConfig, MachineConfigError, MachineConfigUpdate, MAX_VCPUS,
};
pub use metrics::MetricsConfig;
pub use net::{
    parse_mac, valid_ifname, validate_network_interfaces, with_network_interface,
    NetworkInterfaceConfig, NetworkInterfaceError, NetworkInterfaceUpdate,
};
pub use rate_limiter::{
    merge_limiter, RateLimiterConfig, RateLimiterConfigError, TokenBucketConfig, MAX_REFILL_TIME_MS,
};
pub use snapshot::{
    CreateSnapshotConfig, LoadSnapshotConfig, LoadSnapshotParams, MemBackend, MemBackendType,
    NetworkOverride, SnapshotConfigError, SnapshotType,
};
pub use unsupported::UnsupportedSection;
pub use valid::ValidVmConfig;
pub use vsock::{VsockConfig, VsockConfigError, FIRST_GUEST_CID, LAST_GUEST_CID};

/// The largest `--config-file` read; a config with a hundred drives is a few tens of KiB.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// A configuration that cannot describe a VM; each resource's error names the field and the
/// value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid JSON config: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no boot-source given: a kernel_image_path is required")]
    MissingBootSource,
    #[error(transparent)]
    BootSource(#[from] BootSourceError),
    #[error(transparent)]
    Machine(#[from] MachineConfigError),
    #[error(transparent)]
    Drive(#[from] DriveError),
    #[error(transparent)]
    NetworkInterface(#[from] NetworkInterfaceError),
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    #[error(transparent)]
    Vsock(#[from] VsockConfigError),
    #[error(transparent)]
    Unsupported(#[from] UnsupportedSection),
}

/// A whole VM: what `--config-file` holds and what `GET /vm/config` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(rename = "boot-source", default)]
    pub boot_source: Option<BootSourceConfig>,
    #[serde(rename = "machine-config", default)]
    pub machine_config: MachineConfig,
    #[serde(default)]
    pub drives: Vec<DriveConfig>,
    #[serde(rename = "network-interfaces", default)]
    pub network_interfaces: Vec<NetworkInterfaceConfig>,
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// The virtio-vsock device, if any (at most one, as in Firecracker).
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// The virtio-rng device, if any.
    #[serde(default)]
    pub entropy: Option<EntropyConfig>,
    /// Sections Ember does not serve yet: see `unsupported.rs`. (They stay fields here, not
    /// a flattened struct, because serde cannot flatten with `deny_unknown_fields`.)
    #[serde(default)]
    pub balloon: Option<serde_json::Value>,
    #[serde(rename = "cpu-config", default)]
    pub cpu_config: Option<serde_json::Value>,
    #[serde(rename = "mmds-config", default)]
    pub mmds_config: Option<serde_json::Value>,
    #[serde(default)]
    pub pmem: Vec<serde_json::Value>,
    #[serde(rename = "memory-hotplug", default)]
    pub memory_hotplug: Option<serde_json::Value>,
    /// The log's destination and format, as `PUT /logger` sets them.
    #[serde(default)]
    pub logger: Option<LoggerConfig>,
}

impl VmConfig {
    /// Parses a JSON config; errors carry serde's line and column.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Checks everything that needs no file and no KVM, resource by resource.
    pub fn validate(&self) -> Result<ValidVmConfig, ConfigError> {
        let boot = self
            .boot_source
            .as_ref()
            .ok_or(ConfigError::MissingBootSource)?;
        boot.validate()?;
        unsupported::refuse_unsupported(self)?;
        self.machine_config.validate()?;
        validate_drives(&self.drives)?;
        validate_network_interfaces(&self.network_interfaces)?;
        if let Some(vsock) = &self.vsock {
            vsock.validate()?;
        }
        if let Some(entropy) = &self.entropy {
            entropy.validate()?;
        }
        Ok(ValidVmConfig::new(boot.clone(), self.clone()))
    }
}

/// Whether `id` may name a drive or an interface: 1 to 64 characters from `[A-Za-z0-9_-]`,
/// since API paths and metrics name devices by it.
fn valid_id(id: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    !id.is_empty() && id.len() <= 64 && id.chars().all(ok_char)
}

#[cfg(test)]
mod tests;
