//! `ValidVmConfig` -> a running `MicroVm`: memory, kernel, devices, vCPUs. Nothing else.

use crate::arch::x86_64::boot_params::{
    write_pvh_start_info, write_zero_page, BootInfo, BootParamsError,
};
use crate::arch::x86_64::cpuid::CpuTopology;
use crate::arch::x86_64::mptable::{setup_mptable, MptableError};
use crate::arch::x86_64::regs::BootProtocol;
use crate::config::ValidVmConfig;
use crate::device_manager::{DeviceManager, DeviceManagerError, LegacyOptions, Wiring};
use crate::devices::legacy::ResetRequest;
use crate::devices::Bus;
mod virtio;

pub use virtio::root_cmdline_arg;

use crate::event_loop::{StopWatcher, VmmEventManager};
use crate::loader::{self, LoaderError};
use crate::microvm::{MicroVm, VcpuHandle};
use crate::seccomp::BpfProgram;
use crate::vstate::kvm::{self, KvmError};
use crate::vstate::memory::{create_guest_memory, MemoryError};
use crate::vstate::vcpu::{configure_vcpu, VcpuError, VcpuRunner};
use crate::vstate::vcpu_state::{msrs_to_save, VcpuStateError};
use crate::vstate::vm::{Vm, VmError};
use event_manager::SubscriberOps;
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Cap;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vmm_sys_util::eventfd::EventFd;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Kvm(#[from] KvmError),
    #[error("{0}")]
    Memory(#[from] MemoryError),
    #[error("{0}")]
    Vm(#[from] VmError),
    #[error("{0}")]
    Loader(#[from] LoaderError),
    #[error("{0}")]
    BootParams(#[from] BootParamsError),
    #[error("{0}")]
    Mptable(#[from] MptableError),
    #[error("{0}")]
    Vcpu(#[from] VcpuError),
    #[error(transparent)]
    Devices(#[from] DeviceManagerError),
    #[error(transparent)]
    VcpuState(#[from] VcpuStateError),
    #[error("cannot get the CPUID KVM supports: {0}")]
    SupportedCpuid(kvm_ioctls::Error),
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("cannot start vCPU thread {index}: {source}")]
    SpawnVcpu { index: u8, source: std::io::Error },
    #[error("{0}")]
    Virtio(String),
}

/// Choices that are not part of the VM's configuration.
pub struct BuildOptions {
    /// When the process started, for the boot timer.
    pub process_start: Instant,
    /// Map Firecracker's boot timer device.
    pub boot_timer: bool,
    /// The seccomp filter each vCPU thread installs before it first enters the guest (see
    /// [`crate::seccomp`]); empty: none.
    pub vcpu_seccomp: BpfProgram,
}

pub(crate) fn event_fd() -> Result<EventFd, BuildError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(BuildError::EventFd)
}

pub(crate) fn clone_fd(fd: &EventFd) -> Result<EventFd, BuildError> {
    fd.try_clone().map_err(BuildError::EventFd)
}

/// Builds the VM described by `config`, registers its fds with `event_manager` and starts
/// its vCPUs. The config was validated when it was made, so nothing here checks it again.
pub fn build_microvm(
    config: &ValidVmConfig,
    event_manager: &mut VmmEventManager,
    options: &BuildOptions,
) -> Result<MicroVm, BuildError> {
    let boot_source = config.boot_source();
    let machine = config.machine_config();
    // Opened and checked first, so a missing file or a directory is reported as such, not as
    // "not a PVM kernel".
    let kernel_path = &boot_source.kernel_image_path;
    let kernel_file = loader::open_kernel(kernel_path)?;
    kvm::check_kernel_for_host(kernel_path, &kernel_file)?;
    let kvm = kvm::open_kvm()?;
    let memory = create_guest_memory(machine.mem_size_mib)?;
    let vm = Vm::new(&kvm, memory.clone())?;

    let kernel = loader::load_kernel(&memory, kernel_path, kernel_file)?;
    let initrd = match &boot_source.initrd_path {
        Some(path) => Some(loader::load_initrd(&memory, path, &kernel)?),
        None => None,
    };
    let machinery = attach_devices(&vm, config, event_manager, options)?;
    let cmdline = loader::build_cmdline(
        boot_source.boot_args_or_default(),
        machinery.devices.cmdline_args(),
    )?;
    let info = BootInfo {
        mem_size: (machine.mem_size_mib as u64) << 20,
        cmdline_size: loader::write_cmdline(&memory, &cmdline)?,
        initrd,
        setup_header: kernel.setup_header.as_ref(),
    };
    match kernel.entry.protocol {
        BootProtocol::Pvh => write_pvh_start_info(&memory, &info)?,
        BootProtocol::Linux64 => write_zero_page(&memory, &info)?,
    }
    setup_mptable(&memory, machine.vcpu_count)?;
    let boot = FreshVcpus {
        supported_cpuid: kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(BuildError::SupportedCpuid)?,
        topology: CpuTopology {
            vcpu_count: machine.vcpu_count,
            smt: machine.smt,
            tsc_deadline: vm.fd().check_extension(Cap::TscDeadlineTimer),
        },
        entry: kernel.entry,
    };
    let vcpus = VcpuStart {
        count: machine.vcpu_count,
        boot: Some(boot),
    };
    start_vcpus(&kvm, vm, machinery, vcpus, event_manager, options)
}

/// Builds the VM described by `config` on `memory` (a snapshot's), with its devices attached
/// and its vCPUs created but neither configured nor running: the VM is paused, devices
/// included, for the saved state to be put onto it ([`crate::snapshot`]).
pub fn build_microvm_for_restore(
    config: &ValidVmConfig,
    memory: crate::vstate::memory::GuestMemory,
    event_manager: &mut VmmEventManager,
    options: &BuildOptions,
) -> Result<MicroVm, BuildError> {
    let kvm = kvm::open_kvm()?;
    let vm = Vm::new(&kvm, memory)?;
    let machinery = attach_devices(&vm, config, event_manager, options)?;
    let vcpus = VcpuStart {
        count: config.machine_config().vcpu_count,
        boot: None,
    };
    let microvm = start_vcpus(&kvm, vm, machinery, vcpus, event_manager, options)?;
    microvm.devices.pause(event_manager)?;
    Ok(microvm)
}

/// The devices of a VM being built and what its vCPUs dispatch on.
struct Machinery {
    devices: DeviceManager,
    pio_bus: Bus,
    mmio_bus: Bus,
    reset_request: ResetRequest,
}

fn attach_devices(
    vm: &Vm,
    config: &ValidVmConfig,
    event_manager: &mut VmmEventManager,
    options: &BuildOptions,
) -> Result<Machinery, BuildError> {
    let mut pio_bus = Bus::new();
    let mut mmio_bus = Bus::new();
    let mut devices = DeviceManager::new();
    let mut wiring = Wiring {
        vm,
        pio_bus: &mut pio_bus,
        mmio_bus: &mut mmio_bus,
        event_manager,
    };
    let legacy = LegacyOptions {
        boot_timer: options.boot_timer,
        process_start: options.process_start,
    };
    let reset_request = devices.attach_legacy(&mut wiring, &legacy)?;
    virtio::attach_drives(&mut devices, &mut wiring, config.drives())?;
    virtio::attach_network_interfaces(&mut devices, &mut wiring, config.network_interfaces())?;
    virtio::attach_vsock(&mut devices, &mut wiring, config.vsock())?;
    virtio::attach_entropy(&mut devices, &mut wiring, config.entropy())?;
    Ok(Machinery {
        devices,
        pio_bus,
        mmio_bus,
        reset_request,
    })
}

/// How vCPUs that boot the kernel are set up.
struct FreshVcpus {
    supported_cpuid: kvm_bindings::CpuId,
    topology: CpuTopology,
    entry: crate::arch::x86_64::regs::EntryPoint,
}

/// How many vCPUs to start, and how: set up to boot (`boot`) and running, or (None) left
/// for a saved state and paused.
struct VcpuStart {
    count: u8,
    boot: Option<FreshVcpus>,
}

fn start_vcpus(
    kvm: &kvm_ioctls::Kvm,
    vm: Vm,
    machinery: Machinery,
    start: VcpuStart,
    event_manager: &mut VmmEventManager,
    options: &BuildOptions,
) -> Result<MicroVm, BuildError> {
    let vcpu_stopped = event_fd()?;
    let (stop_sender, stop_receiver) = channel();
    let (response_sender, response_receiver) = channel();
    let msrs_to_save: Arc<[u32]> = msrs_to_save(kvm)?.into();
    let pio_bus = Arc::new(machinery.pio_bus);
    let mmio_bus = Arc::new(machinery.mmio_bus);
    crate::microvm::install_vcpu_kick_handler();
    let mut vcpus = Vec::with_capacity(usize::from(start.count));
    for index in 0..start.count {
        let fd = vm.create_vcpu(index)?;
        if let Some(boot) = &start.boot {
            let entry = (index == 0).then_some(boot.entry);
            let (cpuid, topology) = (&boot.supported_cpuid, boot.topology);
            configure_vcpu(&fd, index, cpuid, topology, vm.memory(), entry)?;
        }
        let (command_sender, command_receiver) = channel();
        let runner = VcpuRunner {
            index,
            fd,
            start_paused: start.boot.is_none(),
            mmio_bus: mmio_bus.clone(),
            pio_bus: pio_bus.clone(),
            reset_request: machinery.reset_request.clone(),
            commands: command_receiver,
            responses: response_sender.clone(),
            msrs_to_save: msrs_to_save.clone(),
            stops: stop_sender.clone(),
            stop_event: clone_fd(&vcpu_stopped)?,
            seccomp: options.vcpu_seccomp.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("ember_vcpu{index}"))
            .spawn(move || runner.run())
            .map_err(|source| BuildError::SpawnVcpu { index, source })?;
        vcpus.push(VcpuHandle {
            thread,
            commands: command_sender,
        });
    }

    let stop_watcher = Arc::new(Mutex::new(StopWatcher {
        reset: machinery.reset_request,
        vcpu_stopped,
        vcpu_stops: stop_receiver,
        exit: None,
    }));
    event_manager.add_subscriber(stop_watcher.clone());
    let state = match start.boot {
        Some(_) => crate::microvm::VmState::Running,
        None => crate::microvm::VmState::Paused,
    };
    Ok(MicroVm {
        vm,
        vcpus,
        responses: response_receiver,
        stop_watcher,
        devices: machinery.devices,
        state,
    })
}
