//! `ValidVmConfig` -> a running `MicroVm`: memory, kernel, devices, vCPUs. Nothing else.

use crate::arch::x86_64::boot_params::{
    write_pvh_start_info, write_zero_page, BootInfo, BootParamsError,
};
use crate::arch::x86_64::cpuid::CpuTopology;
use crate::arch::x86_64::mptable::{setup_mptable, MptableError};
use crate::arch::x86_64::regs::BootProtocol;
use crate::config::ValidVmConfig;
use crate::device_manager::{DeviceManager, DeviceManagerError, LegacyOptions, Wiring};
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

    let mut pio_bus = Bus::new();
    let mut mmio_bus = Bus::new();
    let mut devices = DeviceManager::new();
    let mut wiring = Wiring {
        vm: &vm,
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

    let cmdline =
        loader::build_cmdline(boot_source.boot_args_or_default(), devices.cmdline_args())?;
    let cmdline_size = loader::write_cmdline(&memory, &cmdline)?;
    let mem_size = (machine.mem_size_mib as u64) << 20;
    let info = BootInfo {
        mem_size,
        cmdline_size,
        initrd,
        setup_header: kernel.setup_header.as_ref(),
    };
    match kernel.entry.protocol {
        BootProtocol::Pvh => write_pvh_start_info(&memory, &info)?,
        BootProtocol::Linux64 => write_zero_page(&memory, &info)?,
    }
    setup_mptable(&memory, machine.vcpu_count)?;

    let supported_cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(BuildError::SupportedCpuid)?;
    let topology = CpuTopology {
        vcpu_count: machine.vcpu_count,
        smt: machine.smt,
        tsc_deadline: vm.fd().check_extension(Cap::TscDeadlineTimer),
    };

    let vcpu_stopped = event_fd()?;
    let (stop_sender, stop_receiver) = channel();
    let (ack_sender, ack_receiver) = channel();
    let pio_bus = Arc::new(pio_bus);
    let mmio_bus = Arc::new(mmio_bus);
    crate::microvm::install_vcpu_kick_handler();
    let mut vcpus = Vec::with_capacity(usize::from(machine.vcpu_count));
    for index in 0..machine.vcpu_count {
        let fd = vm.create_vcpu(index)?;
        let entry = (index == 0).then_some(kernel.entry);
        configure_vcpu(&fd, index, &supported_cpuid, topology, &memory, entry)?;
        let (command_sender, command_receiver) = channel();
        let runner = VcpuRunner {
            index,
            fd,
            mmio_bus: mmio_bus.clone(),
            pio_bus: pio_bus.clone(),
            reset_request: reset_request.clone(),
            commands: command_receiver,
            acks: ack_sender.clone(),
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
        reset: reset_request,
        vcpu_stopped,
        vcpu_stops: stop_receiver,
        exit: None,
    }));
    event_manager.add_subscriber(stop_watcher.clone());

    Ok(MicroVm {
        vm,
        vcpus,
        acks: ack_receiver,
        stop_watcher,
        devices,
        state: crate::microvm::VmState::Running,
    })
}
