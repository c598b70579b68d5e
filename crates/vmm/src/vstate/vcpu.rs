//! vCPUs: their boot state, and the thread that runs each one and dispatches its exits.
//!
//! A vCPU thread only runs the guest and forwards MMIO/PIO exits to the buses. It talks to
//! the VMM thread through channels: commands in (pause, resume, save or restore its state),
//! a response to each out, and one stop report out.

use crate::arch::x86_64::cpuid::{normalize_cpuid, CpuTopology};
use crate::arch::x86_64::msr::{boot_msrs, MsrError};
use crate::arch::x86_64::regs::{boot_fpu, boot_regs, setup_sregs, EntryPoint, RegsError};
use crate::devices::legacy::ResetRequest;
use crate::devices::Bus;
use crate::seccomp::{self, BpfProgram, ThreadKind};
use crate::vstate::memory::GuestMemory;
use crate::vstate::vcpu_state::{VcpuState, VcpuStateError};
use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("vCPU {index}: cannot set CPUID: {source}")]
    Cpuid {
        index: u8,
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {index}: {source}")]
    Msrs { index: u8, source: MsrError },
    #[error("vCPU {index}: cannot set MSRs: {source}")]
    SetMsrs {
        index: u8,
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {index}: KVM accepted {set} of {wanted} boot MSRs")]
    PartialMsrs {
        index: u8,
        set: usize,
        wanted: usize,
    },
    #[error("vCPU {index}: cannot set registers: {source}")]
    Registers {
        index: u8,
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {index}: {source}")]
    BootState { index: u8, source: RegsError },
    #[error("vCPU {index}: cannot program the local APIC: {source}")]
    Lapic {
        index: u8,
        source: kvm_ioctls::Error,
    },
}

/// Why a vCPU thread stopped running the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuStop {
    /// The guest asked for a reset or power-off: a clean end of the VM.
    GuestShutdown,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// KVM or the VMM failed; the text says how.
    Error(String),
}

/// Commands the VMM thread sends to a vCPU thread.
#[derive(Debug)]
pub enum VcpuCommand {
    Pause,
    Resume,
    /// Only while paused: the thread is then out of KVM_RUN and the state stands still.
    SaveState,
    /// Only while paused, like `SaveState`.
    RestoreState(Box<VcpuState>),
}

impl VcpuCommand {
    /// For messages: a state is too big to print.
    pub fn name(&self) -> &'static str {
        match self {
            VcpuCommand::Pause => "pause",
            VcpuCommand::Resume => "resume",
            VcpuCommand::SaveState => "save state",
            VcpuCommand::RestoreState(_) => "restore state",
        }
    }
}

/// A vCPU thread's answer to one command, once it is out of the guest and has applied it.
#[derive(Debug)]
pub struct VcpuResponse {
    pub index: u8,
    pub kind: VcpuResponseKind,
}

#[derive(Debug)]
pub enum VcpuResponseKind {
    Paused,
    Resumed,
    Saved(Box<VcpuState>),
    Restored,
    Error(VcpuStateError),
}

impl VcpuResponseKind {
    /// For messages: a state is too big to print.
    pub fn name(&self) -> &'static str {
        match self {
            VcpuResponseKind::Paused => "paused",
            VcpuResponseKind::Resumed => "resumed",
            VcpuResponseKind::Saved(_) => "saved",
            VcpuResponseKind::Restored => "restored",
            VcpuResponseKind::Error(_) => "error",
        }
    }
}

/// Sets CPUID, MSRs, FPU, LAPIC, and (for the boot vCPU, `entry` given) the entry state.
pub fn configure_vcpu(
    fd: &VcpuFd,
    index: u8,
    base_cpuid: &CpuId,
    topology: CpuTopology,
    memory: &GuestMemory,
    entry: Option<EntryPoint>,
) -> Result<(), VcpuError> {
    let mut cpuid = base_cpuid.clone();
    normalize_cpuid(&mut cpuid, index, topology);
    fd.set_cpuid2(&cpuid)
        .map_err(|source| VcpuError::Cpuid { index, source })?;
    let msrs = boot_msrs().map_err(|source| VcpuError::Msrs { index, source })?;
    let set = fd
        .set_msrs(&msrs)
        .map_err(|source| VcpuError::SetMsrs { index, source })?;
    if set != msrs.as_slice().len() {
        return Err(VcpuError::PartialMsrs {
            index,
            set,
            wanted: msrs.as_slice().len(),
        });
    }
    fd.set_fpu(&boot_fpu())
        .map_err(|source| VcpuError::Registers { index, source })?;
    setup_lapic(fd).map_err(|source| VcpuError::Lapic { index, source })?;
    // Application processors wait for INIT/SIPI from the boot vCPU in the in-kernel LAPIC.
    if let Some(entry) = entry {
        let mut sregs = fd
            .get_sregs()
            .map_err(|source| VcpuError::Registers { index, source })?;
        setup_sregs(memory, entry.protocol, &mut sregs)
            .map_err(|source| VcpuError::BootState { index, source })?;
        fd.set_sregs(&sregs)
            .map_err(|source| VcpuError::Registers { index, source })?;
        fd.set_regs(&boot_regs(entry))
            .map_err(|source| VcpuError::Registers { index, source })?;
    }
    Ok(())
}

/// LINT0 delivers the PIC's interrupts (ExtINT), LINT1 delivers NMIs, as on a PC.
fn setup_lapic(fd: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    let mut lapic = fd.get_lapic()?;
    for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, byte) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[offset + i] = *byte as _;
        }
    }
    fd.set_lapic(&lapic)
}

/// Everything a vCPU thread needs to run the guest.
pub struct VcpuRunner {
    pub index: u8,
    pub fd: VcpuFd,
    /// Wait for a Resume before first entering the guest (a VM being restored).
    pub start_paused: bool,
    pub mmio_bus: Arc<Bus>,
    pub pio_bus: Arc<Bus>,
    /// Set by the i8042 when the guest resets the CPU; checked after each port write.
    pub reset_request: ResetRequest,
    pub commands: Receiver<VcpuCommand>,
    /// Answers each command once the thread is out of the guest and has applied it.
    pub responses: Sender<VcpuResponse>,
    /// The MSRs a saved state holds (see [`crate::vstate::vcpu_state::msrs_to_save`]).
    pub msrs_to_save: Arc<[u32]>,
    /// Where the stop report goes, with `stop_event` written to wake the VMM thread.
    pub stops: Sender<(u8, VcpuStop)>,
    pub stop_event: EventFd,
    /// Installed on the thread before it first enters the guest; empty: none.
    pub seccomp: BpfProgram,
}

/// What one exit asks the run loop to do next.
enum ExitAction {
    Continue,
    Stop(VcpuStop),
}

impl VcpuRunner {
    /// Installs the vCPU seccomp filter, then runs the guest until it stops; reports why to
    /// the VMM thread.
    pub fn run(mut self) {
        let stop = match seccomp::apply(&self.seccomp) {
            Ok(()) => {
                seccomp::test_hook_forbidden_syscall(ThreadKind::Vcpu);
                self.run_loop()
            }
            Err(e) => VcpuStop::Error(e.to_string()),
        };
        log::info!("vCPU {} stopped: {:?}", self.index, stop);
        // The VMM thread may already be gone when the whole VM is shutting down.
        let _ = self.stops.send((self.index, stop));
        let _ = self.stop_event.write(1);
    }

    fn run_loop(&mut self) -> VcpuStop {
        let mut paused = self.start_paused;
        loop {
            if let Some(stop) = self.apply_commands(&mut paused) {
                return stop;
            }
            let result = match self.fd.run() {
                Ok(exit) => handle_exit(exit, &self.mmio_bus, &self.pio_bus, &self.reset_request),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    ExitAction::Continue
                }
                Err(e) => ExitAction::Stop(VcpuStop::Error(format!("KVM_RUN failed: {e}"))),
            };
            if let ExitAction::Stop(stop) = result {
                return stop;
            }
        }
    }

    /// Applies pending commands; while paused, blocks until resumed.
    fn apply_commands(&mut self, paused: &mut bool) -> Option<VcpuStop> {
        loop {
            let command = if *paused {
                match self.commands.recv() {
                    Ok(command) => command,
                    Err(_) => return Some(VcpuStop::Error("VMM thread went away".into())),
                }
            } else {
                match self.commands.try_recv() {
                    Ok(command) => command,
                    Err(TryRecvError::Empty) => return None,
                    Err(TryRecvError::Disconnected) => return None,
                }
            };
            let kind = self.apply(command, paused);
            let index = self.index;
            let _ = self.responses.send(VcpuResponse { index, kind });
        }
    }

    fn apply(&self, command: VcpuCommand, paused: &mut bool) -> VcpuResponseKind {
        match command {
            VcpuCommand::Pause => {
                *paused = true;
                VcpuResponseKind::Paused
            }
            VcpuCommand::Resume => {
                *paused = false;
                VcpuResponseKind::Resumed
            }
            VcpuCommand::SaveState | VcpuCommand::RestoreState(_) if !*paused => {
                VcpuResponseKind::Error(VcpuStateError::NotPaused)
            }
            VcpuCommand::SaveState => match VcpuState::save(&self.fd, &self.msrs_to_save) {
                Ok(state) => VcpuResponseKind::Saved(Box::new(state)),
                Err(e) => VcpuResponseKind::Error(e),
            },
            VcpuCommand::RestoreState(state) => match state.restore(&self.fd) {
                Ok(()) => VcpuResponseKind::Restored,
                Err(e) => VcpuResponseKind::Error(e),
            },
        }
    }
}

fn handle_exit(exit: VcpuExit, mmio_bus: &Bus, pio_bus: &Bus, reset: &ResetRequest) -> ExitAction {
    match exit {
        VcpuExit::IoIn(port, data) => {
            // Unclaimed ports read as all ones, like an empty ISA bus.
            if !pio_bus.read(u64::from(port), data) {
                data.fill(0xff);
            }
        }
        VcpuExit::IoOut(port, data) => {
            pio_bus.write(u64::from(port), data);
            // The guest's reboot code must not run past its reset request (see ResetRequest).
            if reset.is_requested() {
                return ExitAction::Stop(VcpuStop::GuestShutdown);
            }
        }
        VcpuExit::MmioRead(addr, data) => {
            if !mmio_bus.read(addr, data) {
                data.fill(0);
            }
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !mmio_bus.write(addr, data) {
                log::debug!(
                    "guest wrote {} bytes to unclaimed MMIO {addr:#x}",
                    data.len()
                );
            }
        }
        VcpuExit::Hlt => log::debug!("vCPU halted"),
        // Another vCPU may reach a reset method of last resort before the VMM thread stops it.
        VcpuExit::Shutdown if reset.is_requested() => {
            return ExitAction::Stop(VcpuStop::GuestShutdown)
        }
        VcpuExit::Shutdown => return ExitAction::Stop(VcpuStop::TripleFault),
        VcpuExit::SystemEvent(kind, _) => {
            return match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN | kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                    ExitAction::Stop(VcpuStop::GuestShutdown)
                }
                other => {
                    ExitAction::Stop(VcpuStop::Error(format!("unexpected system event {other}")))
                }
            }
        }
        VcpuExit::FailEntry(reason, cpu) => {
            return ExitAction::Stop(VcpuStop::Error(format!(
                "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on CPU {cpu}"
            )))
        }
        VcpuExit::InternalError => {
            return ExitAction::Stop(VcpuStop::Error("KVM_EXIT_INTERNAL_ERROR".into()))
        }
        other => {
            return ExitAction::Stop(VcpuStop::Error(format!("unexpected vCPU exit {other:?}")))
        }
    }
    ExitAction::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::legacy::I8042;
    use std::sync::Mutex;

    const I8042_COMMAND_PORT: u16 = 0x64;
    const RESET_CPU: u8 = 0xfe;

    /// A port bus with an i8042 on it, and the reset request it shares with the vCPU.
    fn pio_bus_with_i8042() -> (Bus, ResetRequest) {
        let reset = ResetRequest::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let keyboard_irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut bus = Bus::new();
        let i8042 = Arc::new(Mutex::new(I8042::new(reset.clone(), keyboard_irq)));
        bus.insert(0x60, 5, i8042).unwrap();
        (bus, reset)
    }

    fn stop_of(action: ExitAction) -> Option<VcpuStop> {
        match action {
            ExitAction::Continue => None,
            ExitAction::Stop(stop) => Some(stop),
        }
    }

    #[test]
    fn the_vcpu_stops_right_after_writing_the_reset_command() {
        let (pio_bus, reset) = pio_bus_with_i8042();
        let mmio_bus = Bus::new();
        let other = VcpuExit::IoOut(I8042_COMMAND_PORT, &[0xaa]);
        assert_eq!(
            stop_of(handle_exit(other, &mmio_bus, &pio_bus, &reset)),
            None
        );
        let exit = VcpuExit::IoOut(I8042_COMMAND_PORT, &[RESET_CPU]);
        assert_eq!(
            stop_of(handle_exit(exit, &mmio_bus, &pio_bus, &reset)),
            Some(VcpuStop::GuestShutdown)
        );
    }

    #[test]
    fn a_triple_fault_is_a_clean_end_only_after_a_reset_request() {
        let (pio_bus, reset) = pio_bus_with_i8042();
        let mmio_bus = Bus::new();
        assert_eq!(
            stop_of(handle_exit(VcpuExit::Shutdown, &mmio_bus, &pio_bus, &reset)),
            Some(VcpuStop::TripleFault)
        );
        reset.request();
        assert_eq!(
            stop_of(handle_exit(VcpuExit::Shutdown, &mmio_bus, &pio_bus, &reset)),
            Some(VcpuStop::GuestShutdown)
        );
    }
}
