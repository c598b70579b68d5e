//! The VMM thread's epoll loop (event-manager): what stops the VM, and console input.

use crate::devices::legacy::{ResetRequest, SerialConsole};
use crate::vstate::vcpu::VcpuStop;
use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber};
use std::fs::File;
use std::io::{ErrorKind, Read, Stdout};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;

/// Every subscriber of the VMM thread's loop is shared this way, so its owner can reach it.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;
pub type VmmEventManager = EventManager<Subscriber>;

/// How the VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest rebooted or powered off.
    GuestShutdown,
    /// The host asked Ember to stop (SIGTERM).
    Terminated,
    /// The guest crashed its CPU (triple fault).
    TripleFault,
    /// A vCPU or the VMM failed.
    Error(String),
}

impl VmExit {
    /// The process exit code: 0 for a clean end, non-zero otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            VmExit::GuestShutdown | VmExit::Terminated => 0,
            VmExit::TripleFault => 2,
            VmExit::Error(_) => 1,
        }
    }
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::GuestShutdown => write!(f, "the guest shut down"),
            VmExit::Terminated => write!(f, "stopped by SIGTERM"),
            VmExit::TripleFault => write!(f, "the guest triple-faulted (KVM_EXIT_SHUTDOWN)"),
            VmExit::Error(reason) => write!(f, "{reason}"),
        }
    }
}

/// Watches everything that ends the VM: guest reset (i8042), vCPU stops, SIGTERM.
pub struct StopWatcher {
    pub reset: ResetRequest,
    pub vcpu_stopped: EventFd,
    pub vcpu_stops: Receiver<(u8, VcpuStop)>,
    pub terminate: EventFd,
    pub exit: Option<VmExit>,
}

const RESET: u32 = 0;
const VCPU_STOPPED: u32 = 1;
const TERMINATE: u32 = 2;

impl MutEventSubscriber for StopWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        for (fd, data) in [
            (self.reset.event(), RESET),
            (&self.vcpu_stopped, VCPU_STOPPED),
            (&self.terminate, TERMINATE),
        ] {
            if let Err(e) = ops.add(Events::with_data(fd, data, EventSet::IN)) {
                self.exit = Some(VmExit::Error(format!("cannot watch stop events: {e:?}")));
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let exit = match events.data() {
            RESET => {
                let _ = self.reset.event().read();
                VmExit::GuestShutdown
            }
            TERMINATE => {
                let _ = self.terminate.read();
                VmExit::Terminated
            }
            _ => {
                let _ = self.vcpu_stopped.read();
                match self.vcpu_stops.try_recv() {
                    Ok((_, VcpuStop::GuestShutdown)) => VmExit::GuestShutdown,
                    Ok((_, VcpuStop::TripleFault)) => VmExit::TripleFault,
                    Ok((index, VcpuStop::Error(reason))) => {
                        VmExit::Error(format!("vCPU {index}: {reason}"))
                    }
                    Err(_) => return,
                }
            }
        };
        // The first reason wins: later ones are consequences of it.
        self.exit.get_or_insert(exit);
    }
}

/// Forwards host stdin to the guest's serial console, as fast as its FIFO drains.
pub struct ConsoleInput {
    pub stdin: RawFd,
    pub serial: Arc<Mutex<SerialConsole<Stdout>>>,
}

impl MutEventSubscriber for ConsoleInput {
    fn init(&mut self, ops: &mut EventOps) {
        // Regular files and /dev/null cannot be polled; they simply give no console input.
        if ops.add(Events::new_raw(self.stdin, EventSet::IN)).is_err() {
            log::debug!("stdin cannot be polled: no console input");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buffer = [0u8; 64];
        // SAFETY: `stdin` stays open for the life of the process; ManuallyDrop keeps this
        // borrowed File from closing it.
        let mut stdin = ManuallyDrop::new(unsafe { File::from_raw_fd(self.stdin) });
        match stdin.read(&mut buffer) {
            Ok(0) => {
                // End of input: stop watching; the guest keeps running.
                let _ = ops.remove(events);
            }
            Ok(read) => {
                let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
                let queued = serial.queue_input(&buffer[..read]);
                if queued < read {
                    // Reading on regardless keeps a level-triggered loop from spinning.
                    log::warn!(
                        "console input: guest FIFO full, dropped {} bytes",
                        read - queued
                    );
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => {
                log::warn!("console input stopped: {e}");
                let _ = ops.remove(events);
            }
        }
    }
}

/// The fd SIGTERM's handler writes to; -1 until a handler is installed.
static TERMINATE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigterm(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let fd = TERMINATE_FD.load(Ordering::Relaxed);
    let one: u64 = 1;
    // SAFETY: write(2) is async-signal-safe; `one` is a valid 8-byte buffer for the call.
    unsafe { libc::write(fd, std::ptr::addr_of!(one).cast(), 8) };
}

/// Makes SIGTERM write to `terminate`, so the loop stops the VM cleanly.
pub fn install_sigterm_handler(terminate: &EventFd) -> std::io::Result<()> {
    TERMINATE_FD.store(terminate.as_raw_fd(), Ordering::Relaxed);
    vmm_sys_util::signal::register_signal_handler(libc::SIGTERM, on_sigterm)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}
