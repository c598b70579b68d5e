//! The VMM thread's epoll loop (event-manager): what stops the VM, and console input.

use crate::devices::legacy::{ResetRequest, SerialConsole};
use crate::devices::Pausable;
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
    /// The host asked Ember to stop with this signal (SIGTERM or SIGINT).
    Terminated(i32),
    /// The guest crashed its CPU (triple fault).
    TripleFault,
    /// A vCPU or the VMM failed.
    Error(String),
}

impl VmExit {
    /// The process exit code: 0 for a clean end, non-zero otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            VmExit::GuestShutdown | VmExit::Terminated(_) => 0,
            VmExit::TripleFault => 2,
            VmExit::Error(_) => 1,
        }
    }
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::GuestShutdown => write!(f, "the guest shut down"),
            VmExit::Terminated(signal) => write!(f, "stopped by {}", signal_name(*signal)),
            VmExit::TripleFault => write!(f, "the guest triple-faulted (KVM_EXIT_SHUTDOWN)"),
            VmExit::Error(reason) => write!(f, "{reason}"),
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Watches everything in the guest that ends the VM: guest reset (i8042), vCPU stops. Stop
/// signals are watched by [`SignalWatcher`], which exists before any VM does.
pub struct StopWatcher {
    pub reset: ResetRequest,
    pub vcpu_stopped: EventFd,
    pub vcpu_stops: Receiver<(u8, VcpuStop)>,
    pub exit: Option<VmExit>,
}

const RESET: u32 = 0;
const VCPU_STOPPED: u32 = 1;

impl MutEventSubscriber for StopWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        for (fd, data) in [
            (self.reset.event(), RESET),
            (&self.vcpu_stopped, VCPU_STOPPED),
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
    stdin: RawFd,
    serial: Arc<Mutex<SerialConsole<Stdout>>>,
    /// Whether stdin is in the loop (it leaves at EOF, on a read error and on pause).
    watching: bool,
    /// Whether stdin ended or failed: a resume must not bring it back.
    ended: bool,
}

impl ConsoleInput {
    pub fn new(stdin: RawFd, serial: Arc<Mutex<SerialConsole<Stdout>>>) -> Self {
        ConsoleInput {
            stdin,
            serial,
            watching: false,
            ended: false,
        }
    }

    fn stop(&mut self, events: Events, ops: &mut EventOps) {
        let _ = ops.remove(events);
        self.watching = false;
        self.ended = true;
    }
}

impl Pausable for ConsoleInput {
    fn pause(&mut self, ops: &mut EventOps) {
        if self.watching {
            let _ = ops.remove(Events::new_raw(self.stdin, EventSet::IN));
            self.watching = false;
        }
    }

    fn resume(&mut self, ops: &mut EventOps) {
        if !self.ended && !self.watching {
            self.init(ops);
        }
    }
}

impl MutEventSubscriber for ConsoleInput {
    fn init(&mut self, ops: &mut EventOps) {
        // Regular files and /dev/null cannot be polled; they simply give no console input.
        match ops.add(Events::new_raw(self.stdin, EventSet::IN)) {
            Ok(()) => self.watching = true,
            Err(_) => log::debug!("stdin cannot be polled: no console input"),
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buffer = [0u8; 64];
        // SAFETY: `stdin` stays open for the life of the process; ManuallyDrop keeps this
        // borrowed File from closing it.
        let mut stdin = ManuallyDrop::new(unsafe { File::from_raw_fd(self.stdin) });
        match stdin.read(&mut buffer) {
            // End of input: stop watching; the guest keeps running.
            Ok(0) => self.stop(events, ops),
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
                self.stop(events, ops);
            }
        }
    }
}

/// The fd the stop signals' handler writes to; -1 until it is installed.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);
/// The first stop signal caught; 0 until one is.
static CAUGHT_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(signal: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // The first signal names the exit; a second one (an impatient Ctrl-C) changes nothing.
    let _ = CAUGHT_SIGNAL.compare_exchange(0, signal, Ordering::Relaxed, Ordering::Relaxed);
    let fd = SIGNAL_FD.load(Ordering::Relaxed);
    let one: u64 = 1;
    // SAFETY: write(2) is async-signal-safe; `one` is a valid 8-byte buffer for the call.
    unsafe { libc::write(fd, std::ptr::addr_of!(one).cast(), 8) };
}

/// Ends the VMM loop on SIGTERM or SIGINT in every state, booted or not, so that Ember exits
/// 0 and removes its API socket instead of being killed by the signal.
pub struct SignalWatcher {
    event: EventFd,
    pub exit: Option<VmExit>,
}

impl SignalWatcher {
    /// Makes SIGTERM and SIGINT write to a new eventfd this watcher reads.
    pub fn install() -> std::io::Result<Self> {
        let event = EventFd::new(libc::EFD_NONBLOCK)?;
        SIGNAL_FD.store(event.as_raw_fd(), Ordering::Relaxed);
        for signal in [libc::SIGTERM, libc::SIGINT] {
            vmm_sys_util::signal::register_signal_handler(signal, on_stop_signal)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        }
        Ok(SignalWatcher { event, exit: None })
    }
}

impl MutEventSubscriber for SignalWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.event, EventSet::IN)) {
            self.exit = Some(VmExit::Error(format!("cannot watch stop signals: {e:?}")));
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.event.read();
        let signal = CAUGHT_SIGNAL.load(Ordering::Relaxed);
        self.exit.get_or_insert(VmExit::Terminated(signal));
    }
}
