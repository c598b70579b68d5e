//! Why the VMM thread refused or failed an action. The sources stay typed here; `Display` is
//! where they become the `fault_message` a Firecracker client expects, word for word.

use crate::builder::BuildError;
use crate::config::ConfigError;
use crate::devices::virtio::BlockError;
use crate::host_file::HostFileError;
use crate::loader::LoaderError;
use crate::logger::LoggerError;
use crate::microvm::MicroVmError;
use std::path::PathBuf;

/// What an error is about. Firecracker starts a `fault_message` with it ("Drive config
/// error: ..."), and clients match on that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    BootSource,
    MachineConfig,
    Drive,
    NetworkInterface,
    Vsock,
    Entropy,
    Metrics,
    Logger,
    StartMicrovm,
    CreateSnapshot,
    LoadSnapshot,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::BootSource => "Boot source error",
            Resource::MachineConfig => "Machine config error",
            Resource::Drive => "Drive config error",
            Resource::NetworkInterface => "Network config error",
            Resource::Vsock => "Vsock config error",
            Resource::Entropy => "Entropy device error",
            Resource::Metrics => "Metrics error",
            Resource::Logger => "Logger error",
            Resource::StartMicrovm => "Start microvm error",
            Resource::CreateSnapshot => "Create snapshot error",
            Resource::LoadSnapshot => "Load snapshot error",
        })
    }
}

/// Why the VMM thread refused or failed an action; `Display` is the `fault_message`.
#[derive(Debug, thiserror::Error)]
pub enum VmmActionError {
    /// `error`, about `resource`: shown as "<Resource> error: <error>".
    #[error("{resource}: {error}")]
    About {
        resource: Resource,
        error: Box<VmmActionError>,
    },
    /// The kernel or initrd of `PUT /boot-source` cannot be used; the text says which and why.
    #[error(transparent)]
    BootFile(#[from] LoaderError),
    /// The backing file of `PUT /drives` cannot be used; the text says which and why.
    #[error(transparent)]
    DriveFile(#[from] BlockError),
    #[error("The requested operation is not supported before starting the microVM.")]
    NotSupportedBeforeStart,
    #[error("The requested operation is not supported after starting the microVM.")]
    NotSupportedAfterStart,
    #[error("Loading a microVM snapshot not allowed after configuring boot-specific resources.")]
    LoadSnapshotNotAllowed,
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
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
    Logger(#[from] LoggerError),
    #[error(
        "Cannot initialize the metrics system due to bad user input: {path}: {source}",
        path = path.display()
    )]
    MetricsFile {
        path: PathBuf,
        source: HostFileError,
    },
    #[error("Cannot write metrics: {0}")]
    MetricsWrite(#[source] std::io::Error),
    /// Building the VM failed; the text says where.
    #[error(transparent)]
    StartMicrovm(#[from] BuildError),
    /// A running device to update is not there.
    #[error(transparent)]
    Device(#[from] crate::device_manager::DeviceManagerError),
    /// Pausing, resuming, a key press or a drive swap failed on the running VM.
    #[error(transparent)]
    MicroVm(#[from] MicroVmError),
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
    pub fn for_action(self, action: &super::VmmAction) -> Self {
        match action.resource() {
            Some(resource) => self.about(resource),
            None => self,
        }
    }
}

/// Pre-boot checks fail with the error of one resource; they are all configuration errors.
macro_rules! from_resource_error {
    ($($error:ty),*) => {$(
        impl From<$error> for VmmActionError {
            fn from(error: $error) -> Self {
                VmmActionError::InvalidConfig(error.into())
            }
        }
    )*};
}

from_resource_error!(
    crate::config::BootSourceError,
    crate::config::MachineConfigError,
    crate::config::DriveError,
    crate::config::NetworkInterfaceError,
    crate::config::VsockConfigError,
    crate::config::EntropyError
);
