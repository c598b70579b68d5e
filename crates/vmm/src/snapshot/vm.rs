//! Taking a snapshot of a paused microVM, and building a paused microVM from one.

use super::cpu::{check_cpu_features, MissingCpuFeatures};
use super::file::{read_state, write_state, StateFileError};
use super::memory::{map_memory_file, write_memory, MemoryRange, SnapshotMemoryError};
use crate::builder::{build_microvm_for_restore, BuildError, BuildOptions};
use crate::config::{
    ConfigError, CreateSnapshotConfig, LoadSnapshotParams, SnapshotConfigError, VmConfig,
};
use crate::device_manager::{DeviceKind, DeviceManagerError, DevicesState};
use crate::devices::virtio::vsock::Vsock;
use crate::event_loop::VmmEventManager;
use crate::microvm::{MicroVm, MicroVmError, VcpusAndVmState, VmState};
use serde::{Deserialize, Serialize};

/// CPUID leaf 1 ECX: the LAPIC's TSC-deadline mode.
const TSC_DEADLINE_BIT: u32 = 24;

/// Everything a restore needs besides the contents of guest memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmSnapshot {
    /// The VM's configuration as it ran (drives, interfaces, machine...): the restore
    /// builds the same devices from it.
    pub config: VmConfig,
    pub memory: Vec<MemoryRange>,
    pub devices: DevicesState,
    pub vcpus_and_vm: VcpusAndVmState,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Request(#[from] SnapshotConfigError),
    #[error("the microVM must be paused first (PATCH /vm with state Paused)")]
    NotPaused,
    #[error("cannot save the microVM's state: {0}")]
    Save(#[source] MicroVmError),
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    #[error(transparent)]
    Memory(#[from] SnapshotMemoryError),
    #[error("the snapshot's configuration is not valid: {0}")]
    Config(#[from] ConfigError),
    #[error("network_overrides names interface {0:?}, which the snapshot does not have")]
    UnknownInterface(String),
    #[error("the snapshot has no vCPU state")]
    NoVcpus,
    #[error(transparent)]
    Cpu(#[from] MissingCpuFeatures),
    #[error("cannot read this host's CPUID: {0}")]
    HostCpuid(String),
    #[error("cannot build the microVM: {0}")]
    Build(#[from] BuildError),
    #[error("cannot restore the vCPUs and the VM: {0}")]
    RestoreVcpus(#[source] MicroVmError),
    #[error("cannot restore the devices: {0}")]
    RestoreDevices(#[from] DeviceManagerError),
}

/// Writes a Full snapshot of `microvm`, which runs `config` and must be paused.
pub fn create_snapshot(
    microvm: &MicroVm,
    config: &VmConfig,
    params: &CreateSnapshotConfig,
) -> Result<(), SnapshotError> {
    params.validate()?;
    if microvm.state() != VmState::Paused {
        return Err(SnapshotError::NotPaused);
    }
    let vcpus_and_vm = microvm.save_vcpus_and_vm().map_err(SnapshotError::Save)?;
    let devices = microvm.devices().save();
    let memory = write_memory(microvm.vm().memory(), &params.mem_file_path)?;
    let snapshot = VmSnapshot {
        config: config.clone(),
        memory,
        devices,
        vcpus_and_vm,
    };
    write_state(&params.snapshot_path, &snapshot)?;
    Ok(())
}

/// Builds a paused microVM from the snapshot `params` names; returns it with the
/// configuration it runs. Nothing of the process changes when this fails, so another load
/// can follow.
pub fn load_snapshot(
    params: &LoadSnapshotParams,
    event_manager: &mut VmmEventManager,
    options: &BuildOptions,
) -> Result<(MicroVm, VmConfig), SnapshotError> {
    let snapshot: VmSnapshot = read_state(&params.snapshot_path)?;
    let config = with_overrides(snapshot.config, params)?;
    let valid = config.validate()?;
    check_host_cpu(&snapshot.vcpus_and_vm)?;
    let memory = map_memory_file(&params.mem_file_path, &snapshot.memory)?;
    let microvm = build_microvm_for_restore(&valid, memory, event_manager, options)?;
    // The VM's and vCPUs' state first: the devices' restore may raise interrupts again,
    // which must land in the restored interrupt controllers.
    microvm
        .restore_vcpus_and_vm(&snapshot.vcpus_and_vm)
        .map_err(SnapshotError::RestoreVcpus)?;
    microvm.devices().restore(&snapshot.devices)?;
    // The guest's vsock connections ended with the process that saved it: its driver must
    // hear so (a VM without vsock has no such device: nothing to do).
    let reset = |vsock: &mut Vsock| vsock.send_transport_reset();
    let _ = microvm
        .devices()
        .with_device(DeviceKind::Vsock, "vsock", reset);
    Ok((microvm, config))
}

/// The snapshot's configuration with each overridden interface on its new TAP.
fn with_overrides(
    mut config: VmConfig,
    params: &LoadSnapshotParams,
) -> Result<VmConfig, SnapshotError> {
    for new in &params.network_overrides {
        let iface = config
            .network_interfaces
            .iter_mut()
            .find(|iface| iface.iface_id == new.iface_id)
            .ok_or_else(|| SnapshotError::UnknownInterface(new.iface_id.clone()))?;
        iface.host_dev_name = new.host_dev_name.clone();
    }
    Ok(config)
}

fn check_host_cpu(state: &VcpusAndVmState) -> Result<(), SnapshotError> {
    let guest = state.vcpus.first().ok_or(SnapshotError::NoVcpus)?;
    let kvm =
        crate::vstate::kvm::open_kvm().map_err(|e| SnapshotError::HostCpuid(e.to_string()))?;
    let host = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| SnapshotError::HostCpuid(e.to_string()))?;
    let mut host = host.as_slice().to_vec();
    // KVM reports the TSC-deadline timer as a capability, not in its CPUID; the builder
    // shows it to the guest when the capability is there (arch::x86_64::cpuid).
    if kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) {
        for entry in host.iter_mut().filter(|e| e.function == 1) {
            entry.ecx |= 1 << TSC_DEADLINE_BIT;
        }
    }
    check_cpu_features(&guest.cpuid, &host)?;
    Ok(())
}
