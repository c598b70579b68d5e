//! A configuration that passed [`VmConfig::validate`]: what the builder takes, so it need not
//! check again, and cannot be handed anything unchecked.

use super::{BootSourceConfig, DriveConfig, LoggerConfig, MachineConfig, MetricsConfig};
use super::{EntropyConfig, NetworkInterfaceConfig, VmConfig, VsockConfig};

/// Made only by [`VmConfig::validate`]; its boot source is therefore always there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidVmConfig {
    boot_source: BootSourceConfig,
    /// Everything else; its own `boot_source` is `None`, so the two cannot disagree.
    rest: VmConfig,
}

impl ValidVmConfig {
    /// Only for [`VmConfig::validate`], once every check passed.
    pub(super) fn new(boot_source: BootSourceConfig, mut rest: VmConfig) -> Self {
        rest.boot_source = None;
        ValidVmConfig { boot_source, rest }
    }

    pub fn boot_source(&self) -> &BootSourceConfig {
        &self.boot_source
    }

    pub fn machine_config(&self) -> &MachineConfig {
        &self.rest.machine_config
    }

    pub fn drives(&self) -> &[DriveConfig] {
        &self.rest.drives
    }

    pub fn network_interfaces(&self) -> &[NetworkInterfaceConfig] {
        &self.rest.network_interfaces
    }

    pub fn metrics(&self) -> Option<&MetricsConfig> {
        self.rest.metrics.as_ref()
    }

    pub fn vsock(&self) -> Option<&VsockConfig> {
        self.rest.vsock.as_ref()
    }

    pub fn entropy(&self) -> Option<&EntropyConfig> {
        self.rest.entropy.as_ref()
    }

    pub fn logger(&self) -> Option<&LoggerConfig> {
        self.rest.logger.as_ref()
    }

    /// The configuration as it was before validation.
    pub fn to_vm_config(&self) -> VmConfig {
        VmConfig {
            boot_source: Some(self.boot_source.clone()),
            ..self.rest.clone()
        }
    }
}
