//! The VM configuration accumulated before boot, changed one API action at a time with
//! Firecracker's semantics.

use super::{MachineConfigUpdate, Resource, VmmAction, VmmActionError, VmmData, VmmResponse};
use crate::config::{
    BootSourceConfig, ConfigError, DriveConfig, MachineConfig, MetricsConfig,
    NetworkInterfaceConfig, VmConfig,
};

/// Owns the `VmConfig` of a VM that has not started, and applies pre-boot actions to it.
///
/// Every change is validated on a copy first, so a refused action leaves the configuration
/// exactly as it was.
#[derive(Clone, Debug, Default)]
pub struct PrebootConfigurator {
    config: VmConfig,
}

impl PrebootConfigurator {
    /// Starts from `config` (e.g. from `--config-file`), or `VmConfig::default()`.
    pub fn new(config: VmConfig) -> Self {
        PrebootConfigurator { config }
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Serves `action` if it is about pre-boot configuration.
    ///
    /// Returns `None` for the actions the VMM thread serves itself (`StartInstance`,
    /// `FlushMetrics`, `GetInstanceInfo`, `GetVersion`, `ConfigureLogger`); post-boot-only
    /// actions are refused.
    pub fn apply(&mut self, action: &VmmAction) -> Option<VmmResponse> {
        use VmmAction::*;
        let applied = match action {
            GetMachineConfig => {
                return Some(Ok(VmmData::MachineConfig(
                    self.config.machine_config.clone(),
                )))
            }
            GetVmConfig => return Some(Ok(VmmData::VmConfig(Box::new(self.config.clone())))),
            ConfigureBootSource(boot) => self.set_boot_source(boot),
            PutMachineConfig(machine) => self.set_machine_config(machine),
            PatchMachineConfig(update) => self.patch_machine_config(update),
            InsertDrive(drive) => self.insert_drive(drive),
            InsertNetworkInterface(iface) => self.insert_network_interface(iface),
            ConfigureMetrics(metrics) => self.set_metrics(metrics),
            PatchDrive(_) | PatchNetworkInterface(_) | SendCtrlAltDel | Pause | Resume => {
                Err(VmmActionError::NotSupportedBeforeStart)
            }
            StartInstance | FlushMetrics | GetInstanceInfo | GetVersion | ConfigureLogger(_) => {
                return None
            }
        };
        Some(
            applied
                .map(|()| VmmData::Empty)
                .map_err(|e| e.for_action(action)),
        )
    }

    /// Records a drive changed after boot, so `GET /vm/config` shows what the VM now uses.
    pub fn record_drive_update(&mut self, drive: DriveConfig) {
        if let Some(slot) = self
            .config
            .drives
            .iter_mut()
            .find(|d| d.drive_id == drive.drive_id)
        {
            *slot = drive;
        }
    }

    /// The validated configuration to boot, for `InstanceStart`.
    pub fn config_for_start(&self) -> Result<VmConfig, VmmActionError> {
        let checked = match self.config.validate() {
            Ok(()) => Ok(self.config.clone()),
            Err(ConfigError::MissingBootSource) => Err(VmmActionError::MissingKernelConfig),
            Err(err) => Err(err.into()),
        };
        checked.map_err(|e| e.about(Resource::StartMicrovm))
    }

    fn set_metrics(&mut self, metrics: &MetricsConfig) -> Result<(), VmmActionError> {
        if self.config.metrics.is_some() {
            return Err(VmmActionError::MetricsAlreadyConfigured);
        }
        self.config.metrics = Some(metrics.clone());
        Ok(())
    }

    /// Like Firecracker, opens the kernel and initrd at once, so a missing or unusable file is
    /// refused at this request; Ember also checks that they are non-empty regular files and
    /// that the kernel has an ELF or bzImage header. (The start checks them again.)
    fn set_boot_source(&mut self, boot: &BootSourceConfig) -> Result<(), VmmActionError> {
        let unusable = |e: crate::loader::LoaderError| VmmActionError::HostFile(e.to_string());
        crate::loader::open_kernel(&boot.kernel_image_path).map_err(unusable)?;
        if let Some(initrd) = &boot.initrd_path {
            crate::loader::open_initrd(initrd).map_err(unusable)?;
        }
        let mut candidate = self.config.clone();
        candidate.boot_source = Some(boot.clone());
        self.commit(candidate)
    }

    fn set_machine_config(&mut self, machine: &MachineConfig) -> Result<(), VmmActionError> {
        let mut candidate = self.config.clone();
        candidate.machine_config = machine.clone();
        self.commit(candidate)
    }

    fn patch_machine_config(&mut self, update: &MachineConfigUpdate) -> Result<(), VmmActionError> {
        if update.is_empty() {
            return Err(VmmActionError::EmptyPatch);
        }
        let merged = update.apply_to(&self.config.machine_config);
        self.set_machine_config(&merged)
    }

    /// Adds a drive or replaces the one with the same id; the root drive is kept first so the
    /// guest sees it as `/dev/vda`, as Firecracker orders them.
    fn insert_drive(&mut self, drive: &DriveConfig) -> Result<(), VmmActionError> {
        let drives = &self.config.drives;
        let existing = drives.iter().position(|d| d.drive_id == drive.drive_id);
        let root = drives.iter().position(|d| d.is_root_device);
        if drive.is_root_device && root.is_some() && root != existing {
            return Err(VmmActionError::RootDeviceExists);
        }
        crate::devices::virtio::block::check_backing_file(drive)
            .map_err(|e| VmmActionError::HostFile(e.to_string()))?;
        let mut candidate = self.config.clone();
        let index = match existing {
            Some(index) => {
                candidate.drives[index] = drive.clone();
                index
            }
            None => {
                candidate.drives.push(drive.clone());
                candidate.drives.len() - 1
            }
        };
        if drive.is_root_device {
            let root = candidate.drives.remove(index);
            candidate.drives.insert(0, root);
        }
        self.commit(candidate)
    }

    /// Adds an interface or replaces the one with the same id.
    fn insert_network_interface(
        &mut self,
        iface: &NetworkInterfaceConfig,
    ) -> Result<(), VmmActionError> {
        let ifaces = &self.config.network_interfaces;
        if let Some(mac) = &iface.guest_mac {
            let taken = ifaces.iter().any(|other| {
                other.iface_id != iface.iface_id
                    && other
                        .guest_mac
                        .as_ref()
                        .is_some_and(|m| m.eq_ignore_ascii_case(mac))
            });
            if taken {
                return Err(VmmActionError::GuestMacInUse(mac.clone()));
            }
        }
        let mut candidate = self.config.clone();
        let existing = ifaces.iter().position(|i| i.iface_id == iface.iface_id);
        match existing {
            Some(index) => candidate.network_interfaces[index] = iface.clone(),
            None => candidate.network_interfaces.push(iface.clone()),
        }
        self.commit(candidate)
    }

    fn commit(&mut self, candidate: VmConfig) -> Result<(), VmmActionError> {
        validate_before_boot(&candidate)?;
        self.config = candidate;
        Ok(())
    }
}

/// Validates a configuration whose boot source may still be coming.
fn validate_before_boot(config: &VmConfig) -> Result<(), ConfigError> {
    if config.boot_source.is_some() {
        return config.validate();
    }
    let mut with_kernel = config.clone();
    with_kernel.boot_source = Some(BootSourceConfig {
        kernel_image_path: "vmlinux".into(),
        boot_args: None,
        initrd_path: None,
    });
    with_kernel.validate()
}

#[cfg(test)]
#[path = "preboot_tests.rs"]
mod tests;
