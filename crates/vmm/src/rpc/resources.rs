//! The VM's resources as configured: built up one API action at a time before boot (with
//! Firecracker's semantics), then kept for `GET /vm/config` and the drive updates that follow.

use super::{Resource, VmmAction, VmmActionError, VmmData, VmmResponse};
use crate::config::{
    self, BootSourceConfig, ConfigError, DriveConfig, DriveUpdate, EntropyConfig, MachineConfig,
    MachineConfigUpdate, MetricsConfig, NetworkInterfaceConfig, NetworkInterfaceUpdate,
    ValidVmConfig, VmConfig, VsockConfig, VsockConfigError,
};

/// Owns the `VmConfig` of a VM, and applies configuration actions to it.
///
/// Each action validates the resource it changes (against the others where they must agree:
/// ids, the root drive, MACs) before anything is kept, so a refused action leaves the
/// configuration as it was. Whether an action may run now is for
/// [`VmmAction::check_allowed`] to say, before it gets here.
#[derive(Clone, Debug, Default)]
pub struct VmResources {
    config: VmConfig,
}

impl VmResources {
    /// Starts from a validated config (e.g. from `--config-file`); `default()` starts empty.
    pub fn new(config: ValidVmConfig) -> Self {
        VmResources {
            config: config.to_vm_config(),
        }
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Whether anything that shapes the VM was configured (a snapshot load must come first).
    /// Metrics and the logger do not count: they are not part of the VM.
    pub fn vm_configured(&self) -> bool {
        let c = &self.config;
        c.boot_source.is_some()
            || !c.drives.is_empty()
            || !c.network_interfaces.is_empty()
            || c.machine_config != MachineConfig::default()
    }

    /// Takes the configuration of a VM restored from a snapshot, keeping the metrics and
    /// logger settings made before the load.
    pub fn restored(&mut self, mut config: VmConfig) {
        config.metrics = self.config.metrics.take();
        config.logger = self.config.logger.take();
        self.config = config;
    }

    /// Serves `action` if it configures the VM or reads its configuration.
    ///
    /// Returns `None` for every other action: the VMM thread serves those itself.
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
            SetVsock(vsock) => self.set_vsock(vsock),
            SetEntropy(entropy) => self.set_entropy(entropy),
            PatchDrive(_)
            | PatchNetworkInterface(_)
            | SendCtrlAltDel
            | Pause
            | Resume
            | StartInstance
            | FlushMetrics
            | GetInstanceInfo
            | GetVersion
            | ConfigureLogger(_)
            | CreateSnapshot(_)
            | LoadSnapshot(_) => return None,
        };
        Some(
            applied
                .map(|()| VmmData::Empty)
                .map_err(|e| e.for_action(action)),
        )
    }

    /// The drive `update` makes of the configured one, for `PATCH /drives/{id}`: a new
    /// backing file and/or new limits (buckets not named keep theirs).
    pub fn updated_drive(&self, update: &DriveUpdate) -> Result<DriveConfig, VmmActionError> {
        update.validate()?;
        if update.is_empty() {
            return Err(VmmActionError::EmptyPatch);
        }
        let mut drive = self
            .config
            .drives
            .iter()
            .find(|d| d.drive_id == update.drive_id)
            .cloned()
            .ok_or_else(|| VmmActionError::NotFound {
                kind: "Drive",
                id: update.drive_id.clone(),
            })?;
        if let Some(path) = &update.path_on_host {
            drive.path_on_host = path.clone();
        }
        drive.rate_limiter = config::merge_limiter(drive.rate_limiter, update.rate_limiter);
        Ok(drive)
    }

    /// Records a drive changed after boot, so `GET /vm/config` shows what the VM now uses.
    pub fn record_drive_update(&mut self, drive: DriveConfig) {
        let drives = &mut self.config.drives;
        if let Some(slot) = drives.iter_mut().find(|d| d.drive_id == drive.drive_id) {
            *slot = drive;
        }
    }

    /// The interface `update` makes of the configured one (`PATCH /network-interfaces`).
    pub fn updated_network_interface(
        &self,
        update: &NetworkInterfaceUpdate,
    ) -> Result<NetworkInterfaceConfig, VmmActionError> {
        update.validate()?;
        let mut iface = self
            .config
            .network_interfaces
            .iter()
            .find(|i| i.iface_id == update.iface_id)
            .cloned()
            .ok_or_else(|| VmmActionError::NotFound {
                kind: "Network interface",
                id: update.iface_id.clone(),
            })?;
        iface.rx_rate_limiter =
            config::merge_limiter(iface.rx_rate_limiter, update.rx_rate_limiter);
        iface.tx_rate_limiter =
            config::merge_limiter(iface.tx_rate_limiter, update.tx_rate_limiter);
        Ok(iface)
    }

    /// Records an interface changed after boot, for `GET /vm/config`.
    pub fn record_network_interface_update(&mut self, iface: NetworkInterfaceConfig) {
        let ifaces = &mut self.config.network_interfaces;
        if let Some(slot) = ifaces.iter_mut().find(|i| i.iface_id == iface.iface_id) {
            *slot = iface;
        }
    }

    /// The configuration to boot, for `InstanceStart`: the whole of it validated, as the
    /// actions that built it could not check that a boot source came.
    pub fn config_for_start(&self) -> Result<ValidVmConfig, VmmActionError> {
        let checked = self.config.validate().map_err(|e| match e {
            ConfigError::MissingBootSource => VmmActionError::MissingKernelConfig,
            other => other.into(),
        });
        checked.map_err(|e| e.about(Resource::StartMicrovm))
    }

    /// Refuses a second device and a socket path that cannot be bound, so that a refused
    /// request changes nothing and the start does not fail on it later.
    fn set_vsock(&mut self, vsock: &VsockConfig) -> Result<(), VmmActionError> {
        if self.config.vsock.is_some() {
            return Err(VsockConfigError::AlreadyConfigured.into());
        }
        vsock.check_host_path()?;
        self.config.vsock = Some(vsock.clone());
        Ok(())
    }

    fn set_entropy(&mut self, entropy: &EntropyConfig) -> Result<(), VmmActionError> {
        entropy.validate()?;
        self.config.entropy = Some(entropy.clone());
        Ok(())
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
        crate::loader::open_kernel(&boot.kernel_image_path)?;
        if let Some(initrd) = &boot.initrd_path {
            crate::loader::open_initrd(initrd)?;
        }
        boot.validate()?;
        self.config.boot_source = Some(boot.clone());
        Ok(())
    }

    fn set_machine_config(&mut self, machine: &MachineConfig) -> Result<(), VmmActionError> {
        machine.validate()?;
        self.config.machine_config = machine.clone();
        Ok(())
    }

    fn patch_machine_config(&mut self, update: &MachineConfigUpdate) -> Result<(), VmmActionError> {
        if update.is_empty() {
            return Err(VmmActionError::EmptyPatch);
        }
        let merged = update.apply_to(&self.config.machine_config);
        self.set_machine_config(&merged)
    }

    /// Adds a drive or replaces the one with the same id, once its file opens as the device
    /// will open it.
    fn insert_drive(&mut self, drive: &DriveConfig) -> Result<(), VmmActionError> {
        // A second root is refused as Firecracker refuses it, whatever its file.
        config::refuse_second_root(&self.config.drives, drive)?;
        crate::devices::virtio::block::check_backing_file(drive)?;
        self.config.drives = config::with_drive(&self.config.drives, drive)?;
        Ok(())
    }

    /// Adds an interface or replaces the one with the same id.
    fn insert_network_interface(
        &mut self,
        iface: &NetworkInterfaceConfig,
    ) -> Result<(), VmmActionError> {
        let ifaces = &self.config.network_interfaces;
        self.config.network_interfaces = config::with_network_interface(ifaces, iface)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
