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

const APIC_ISR: usize = 0x100;
const APIC_IRR: usize = 0x200;
const APIC_TPR: usize = 0x80;
const APIC_SVR: usize = 0xf0;
const APIC_LVTT: usize = 0x320;
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
        // The last exits, for the report on a triple fault; on the stack, never reallocated.
        let mut exits = ExitRing::new();
        loop {
            if let Some(stop) = self.apply_commands(&mut paused) {
                return stop;
            }
            let result = match self.fd.run() {
                Ok(exit) => handle_exit(
                    exit,
                    &self.mmio_bus,
                    &self.pio_bus,
                    &self.reset_request,
                    &mut exits,
                ),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    exits.push(ExitRecord::new(ExitKind::Interrupted, 0, &[]));
                    self.fd.set_kvm_immediate_exit(0);
                    ExitAction::Continue
                }
                Err(e) => ExitAction::Stop(VcpuStop::Error(format!("KVM_RUN failed: {e}"))),
            };
            if let ExitAction::Stop(stop) = result {
                if stop == VcpuStop::TripleFault {
                    self.report_triple_fault(&exits);
                }
                return stop;
            }
        }
    }

    /// Logs, at error level, what can still be read of the vCPU that triple-faulted: its
    /// registers, pending events, local APIC summary, and its last exits (oldest first).
    fn report_triple_fault(&self, exits: &ExitRing) {
        let index = self.index;
        log::error!(
            "vCPU {index}: the guest triple-faulted (KVM_EXIT_SHUTDOWN without a reset request) \
             after {} exits; its state follows",
            exits.total()
        );
        match self.fd.get_regs() {
            Ok(r) => log::error!(
                "vCPU {index}: rip={:#018x} rsp={:#018x} rbp={:#018x} rflags={:#x} \
                 rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} \
                 r8={:#x} r9={:#x} r10={:#x} r11={:#x} r12={:#x} r13={:#x} r14={:#x} r15={:#x}",
                r.rip,
                r.rsp,
                r.rbp,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                r.r8,
                r.r9,
                r.r10,
                r.r11,
                r.r12,
                r.r13,
                r.r14,
                r.r15
            ),
            Err(e) => log::error!("vCPU {index}: KVM_GET_REGS failed: {e}"),
        }
        match self.fd.get_sregs() {
            Ok(s) => log::error!(
                "vCPU {index}: cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} cr8={:#x} efer={:#x} \
                 apic_base={:#x} cs={:#x}/base={:#x}/l={}/dpl={} ss={:#x}/base={:#x} \
                 tr={:#x}/base={:#x} gdt={:#x}/limit={:#x} idt={:#x}/limit={:#x} \
                 pending_irq_bitmap={:x?}",
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.cr8,
                s.efer,
                s.apic_base,
                s.cs.selector,
                s.cs.base,
                s.cs.l,
                s.cs.dpl,
                s.ss.selector,
                s.ss.base,
                s.tr.selector,
                s.tr.base,
                s.gdt.base,
                s.gdt.limit,
                s.idt.base,
                s.idt.limit,
                s.interrupt_bitmap
            ),
            Err(e) => log::error!("vCPU {index}: KVM_GET_SREGS failed: {e}"),
        }
        // KVM on AMD (SVM) puts a vCPU through INIT when it intercepts the shutdown, so there
        // the registers above are reset values and say nothing about the fault.
        let regs = self.fd.get_regs().ok();
        let sregs = self.fd.get_sregs().ok();
        if let (Some(r), Some(s)) = (regs, sregs) {
            if is_reset_state(r.rip, s.cs.selector, s.cr0) {
                log::error!(
                    "vCPU {index}: these are INIT values (KVM re-initialises the vCPU on a \
                     shutdown intercept on AMD): the faulting state is lost; the last exits and \
                     the guest console are what is left"
                );
            }
        }
        match self.fd.get_vcpu_events() {
            Ok(ev) => log::error!(
                "vCPU {index}: events: exception injected={} pending={} nr={} error_code={:?} \
                 payload={:?}; interrupt injected={} nr={} shadow={}; nmi injected={} \
                 pending={} masked={}; triple_fault pending={}; flags={:#x}",
                ev.exception.injected,
                ev.exception.pending,
                ev.exception.nr,
                (ev.exception.has_error_code != 0).then_some(ev.exception.error_code),
                (ev.exception_has_payload != 0).then_some(ev.exception_payload),
                ev.interrupt.injected,
                ev.interrupt.nr,
                ev.interrupt.shadow,
                ev.nmi.injected,
                ev.nmi.pending,
                ev.nmi.masked,
                ev.triple_fault.pending,
                ev.flags
            ),
            Err(e) => log::error!("vCPU {index}: KVM_GET_VCPU_EVENTS failed: {e}"),
        }
        match self.fd.get_lapic() {
            Ok(lapic) => {
                let regs: Vec<u8> = lapic.regs.iter().map(|b| *b as u8).collect();
                log::error!(
                    "vCPU {index}: LAPIC tpr={:#x} svr={:#x} lvt_timer={:#x} lvt0={:#x} \
                     lvt1={:#x} in-service vectors={:?} requested vectors={:?}",
                    apic_reg(&regs, APIC_TPR),
                    apic_reg(&regs, APIC_SVR),
                    apic_reg(&regs, APIC_LVTT),
                    apic_reg(&regs, APIC_LVT0),
                    apic_reg(&regs, APIC_LVT1),
                    apic_vectors(&regs, APIC_ISR),
                    apic_vectors(&regs, APIC_IRR)
                );
            }
            Err(e) => log::error!("vCPU {index}: KVM_GET_LAPIC failed: {e}"),
        }
        for (age, exit) in exits.iter_oldest_first().enumerate() {
            log::error!(
                "vCPU {index}: exit {} of the last {}: {exit}",
                age + 1,
                exits.len()
            );
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

/// Whether rip, cs and cr0 are those of a vCPU just after RESET/INIT (real mode at
/// f000:fff0, paging and protection off).
fn is_reset_state(rip: u64, cs_selector: u16, cr0: u64) -> bool {
    rip == 0xfff0 && cs_selector == 0xf000 && cr0 & 1 == 0
}

/// A 32-bit local APIC register from the `KVM_GET_LAPIC` page.
fn apic_reg(regs: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(std::array::from_fn(|i| regs[offset + i]))
}

/// The vectors set in a 256-bit LAPIC bitmap (ISR, IRR: eight 32-bit registers 16 bytes
/// apart).
fn apic_vectors(regs: &[u8], offset: usize) -> Vec<u16> {
    let mut vectors = Vec::new();
    for word in 0..8u16 {
        let bits = apic_reg(regs, offset + usize::from(word) * 0x10);
        for bit in 0..32u16 {
            if bits & (1 << bit) != 0 {
                vectors.push(word * 32 + bit);
            }
        }
    }
    vectors
}

fn handle_exit(
    exit: VcpuExit,
    mmio_bus: &Bus,
    pio_bus: &Bus,
    reset: &ResetRequest,
    exits: &mut ExitRing,
) -> ExitAction {
    match exit {
        VcpuExit::IoIn(port, data) => {
            // Unclaimed ports read as all ones, like an empty ISA bus.
            if !pio_bus.read(u64::from(port), data) {
                data.fill(0xff);
            }
            exits.push(ExitRecord::new(ExitKind::IoIn, u64::from(port), data));
        }
        VcpuExit::IoOut(port, data) => {
            exits.push(ExitRecord::new(ExitKind::IoOut, u64::from(port), data));
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
            exits.push(ExitRecord::new(ExitKind::MmioRead, addr, data));
        }
        VcpuExit::MmioWrite(addr, data) => {
            exits.push(ExitRecord::new(ExitKind::MmioWrite, addr, data));
            if !mmio_bus.write(addr, data) {
                log::debug!(
                    "guest wrote {} bytes to unclaimed MMIO {addr:#x}",
                    data.len()
                );
            }
        }
        VcpuExit::Hlt => {
            exits.push(ExitRecord::new(ExitKind::Hlt, 0, &[]));
            log::debug!("vCPU halted")
        }
        // Another vCPU may reach a reset method of last resort before the VMM thread stops it.
        VcpuExit::Shutdown if reset.is_requested() => {
            return ExitAction::Stop(VcpuStop::GuestShutdown)
        }
        VcpuExit::Shutdown => {
            exits.push(ExitRecord::new(ExitKind::Shutdown, 0, &[]));
            return ExitAction::Stop(VcpuStop::TripleFault);
        }
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

/// What kind of vCPU exit an [`ExitRecord`] is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExitKind {
    /// An unused slot.
    #[default]
    Empty,
    IoIn,
    IoOut,
    MmioRead,
    MmioWrite,
    Hlt,
    Shutdown,
    /// KVM_RUN returned EINTR/EAGAIN (a kick, a signal).
    Interrupted,
}

/// One exit: its kind, the port or guest-physical address, and up to 8 bytes of data (the
/// value written, or the value the device returned for a read), little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitRecord {
    pub kind: ExitKind,
    pub addr: u64,
    pub len: u8,
    pub value: u64,
}

impl ExitRecord {
    pub fn new(kind: ExitKind, addr: u64, data: &[u8]) -> ExitRecord {
        let mut bytes = [0u8; 8];
        let len = data.len().min(8);
        bytes[..len].copy_from_slice(&data[..len]);
        ExitRecord {
            kind,
            addr,
            len: data.len().min(usize::from(u8::MAX)) as u8,
            value: u64::from_le_bytes(bytes),
        }
    }
}

impl std::fmt::Display for ExitRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ExitKind::IoIn | ExitKind::IoOut => write!(
                f,
                "{:?} port {:#x} len {} value {:#x}",
                self.kind, self.addr, self.len, self.value
            ),
            ExitKind::MmioRead | ExitKind::MmioWrite => write!(
                f,
                "{:?} addr {:#x} len {} value {:#x}",
                self.kind, self.addr, self.len, self.value
            ),
            kind => write!(f, "{kind:?}"),
        }
    }
}

/// How many exits a vCPU remembers for its triple-fault report.
pub const EXIT_RING_LEN: usize = 32;

/// The last [`EXIT_RING_LEN`] exits of one vCPU: a fixed array written in place, so keeping
/// it costs one copy of 24 bytes per exit and no allocation.
#[derive(Clone, Debug)]
pub struct ExitRing {
    records: [ExitRecord; EXIT_RING_LEN],
    /// Exits recorded so far; the next one goes to `total % EXIT_RING_LEN`.
    total: u64,
}

impl Default for ExitRing {
    fn default() -> Self {
        Self::new()
    }
}

impl ExitRing {
    pub const fn new() -> ExitRing {
        ExitRing {
            records: [ExitRecord {
                kind: ExitKind::Empty,
                addr: 0,
                len: 0,
                value: 0,
            }; EXIT_RING_LEN],
            total: 0,
        }
    }

    #[inline]
    pub fn push(&mut self, record: ExitRecord) {
        self.records[(self.total % EXIT_RING_LEN as u64) as usize] = record;
        self.total = self.total.wrapping_add(1);
    }

    /// Exits recorded since the vCPU started (not only those still held).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How many exits are held (at most [`EXIT_RING_LEN`]).
    pub fn len(&self) -> usize {
        self.total.min(EXIT_RING_LEN as u64) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The held exits, oldest first.
    pub fn iter_oldest_first(&self) -> impl Iterator<Item = &ExitRecord> {
        let start = if self.total > EXIT_RING_LEN as u64 {
            (self.total % EXIT_RING_LEN as u64) as usize
        } else {
            0
        };
        let len = self.len();
        (0..len).map(move |i| &self.records[(start + i) % EXIT_RING_LEN])
    }
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
            stop_of(handle_exit(
                other,
                &mmio_bus,
                &pio_bus,
                &reset,
                &mut ExitRing::new()
            )),
            None
        );
        let exit = VcpuExit::IoOut(I8042_COMMAND_PORT, &[RESET_CPU]);
        assert_eq!(
            stop_of(handle_exit(
                exit,
                &mmio_bus,
                &pio_bus,
                &reset,
                &mut ExitRing::new()
            )),
            Some(VcpuStop::GuestShutdown)
        );
    }

    #[test]
    fn a_triple_fault_is_a_clean_end_only_after_a_reset_request() {
        let (pio_bus, reset) = pio_bus_with_i8042();
        let mmio_bus = Bus::new();
        assert_eq!(
            stop_of(handle_exit(
                VcpuExit::Shutdown,
                &mmio_bus,
                &pio_bus,
                &reset,
                &mut ExitRing::new()
            )),
            Some(VcpuStop::TripleFault)
        );
        reset.request();
        assert_eq!(
            stop_of(handle_exit(
                VcpuExit::Shutdown,
                &mmio_bus,
                &pio_bus,
                &reset,
                &mut ExitRing::new()
            )),
            Some(VcpuStop::GuestShutdown)
        );
    }

    #[test]
    fn the_exit_ring_keeps_the_last_exits_oldest_first() {
        let mut ring = ExitRing::new();
        assert!(ring.is_empty());
        assert_eq!(ring.iter_oldest_first().count(), 0);
        for port in 0..5u64 {
            ring.push(ExitRecord::new(ExitKind::IoOut, port, &[port as u8]));
        }
        assert_eq!(ring.len(), 5);
        let ports: Vec<u64> = ring.iter_oldest_first().map(|r| r.addr).collect();
        assert_eq!(ports, [0, 1, 2, 3, 4]);

        let n = EXIT_RING_LEN as u64;
        for port in 5..(3 * n + 7) {
            ring.push(ExitRecord::new(ExitKind::MmioWrite, port, &[]));
        }
        assert_eq!(ring.total(), 3 * n + 7);
        assert_eq!(ring.len(), EXIT_RING_LEN);
        let addrs: Vec<u64> = ring.iter_oldest_first().map(|r| r.addr).collect();
        let expected: Vec<u64> = (2 * n + 7..3 * n + 7).collect();
        assert_eq!(addrs, expected);
    }

    #[test]
    fn an_exit_record_keeps_up_to_eight_bytes_of_data() {
        let r = ExitRecord::new(ExitKind::MmioWrite, 0xd000_0050, &[0x01, 0x02, 0x03, 0x04]);
        assert_eq!((r.len, r.value), (4, 0x0403_0201));
        let long = ExitRecord::new(ExitKind::MmioRead, 0, &[0xff; 12]);
        assert_eq!((long.len, long.value), (12, u64::MAX));
        assert_eq!(
            ExitRecord::new(ExitKind::IoOut, 0x3f8, b"A").to_string(),
            "IoOut port 0x3f8 len 1 value 0x41"
        );
        assert_eq!(ExitRecord::new(ExitKind::Hlt, 0, &[]).to_string(), "Hlt");
    }

    #[test]
    fn handled_exits_land_in_the_ring_with_the_value_read() {
        let (pio_bus, reset) = pio_bus_with_i8042();
        let mmio_bus = Bus::new();
        let mut ring = ExitRing::new();
        let mut data = [0u8; 1];
        // An unclaimed port reads as 0xff; the record holds what the guest got.
        handle_exit(
            VcpuExit::IoIn(0x2f8, &mut data),
            &mmio_bus,
            &pio_bus,
            &reset,
            &mut ring,
        );
        handle_exit(
            VcpuExit::MmioWrite(0x1000, &[7, 0, 0, 0]),
            &mmio_bus,
            &pio_bus,
            &reset,
            &mut ring,
        );
        handle_exit(VcpuExit::Shutdown, &mmio_bus, &pio_bus, &reset, &mut ring);
        let got: Vec<ExitRecord> = ring.iter_oldest_first().copied().collect();
        assert_eq!(
            got,
            [
                ExitRecord {
                    kind: ExitKind::IoIn,
                    addr: 0x2f8,
                    len: 1,
                    value: 0xff
                },
                ExitRecord {
                    kind: ExitKind::MmioWrite,
                    addr: 0x1000,
                    len: 4,
                    value: 7
                },
                ExitRecord {
                    kind: ExitKind::Shutdown,
                    addr: 0,
                    len: 0,
                    value: 0
                },
            ]
        );
    }

    #[test]
    fn reset_state_is_recognised() {
        assert!(is_reset_state(0xfff0, 0xf000, 0x6000_0010));
        assert!(!is_reset_state(0xffff_ffff_8100_0000, 0x10, 0x8005_0033));
        assert!(!is_reset_state(0xfff0, 0xf000, 0x8005_0033));
    }
}
