//! Starting the monitor inside the finished jail: in this process, or in a child when it
//! must be PID 1 of a new PID namespace or detached from the caller (`--daemonize`).

use crate::privileges::{self, PrivError};
use crate::validate::Jail;
use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, execve, fork, pipe2, setsid};
use nix::unistd::{getppid, ForkResult, Pid};
use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Privileges(#[from] PrivError),
    #[error("cannot {0}: {1}")]
    Sys(&'static str, nix::Error),
    #[error("cannot write the pid file {0}: {1}")]
    PidFile(String, std::io::Error),
    #[error("an argument for the monitor contains a NUL byte")]
    Nul,
    #[error("{0}")]
    Child(String),
}

/// Times the jailer passes on, so the monitor's startup metrics include the jailer.
#[derive(Debug, Clone, Copy)]
pub struct Stamps {
    /// CLOCK_MONOTONIC when the jailer started, in microseconds.
    pub start_us: u64,
}

/// The child the jailer waits for, for the signal handler.
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Starts the monitor. Returns only on failure, or (when the monitor runs in a child) with
/// the exit status the jailer should end with.
pub fn launch(jail: &Jail, stamps: Stamps, dev_null: Option<OwnedFd>) -> Result<u8, LaunchError> {
    privileges::set_limits(&jail.limits)?;
    if !jail.daemonize && !jail.new_pid_ns {
        write_pid_file(jail, std::process::id())?;
        return exec_monitor(jail, stamps, 0, None).map(|never| match never {});
    }
    if jail.new_pid_ns {
        // The next child is PID 1 of a new namespace; this process stays where it is.
        unshare(CloneFlags::CLONE_NEWPID)
            .map_err(|e| LaunchError::Sys("unshare(CLONE_NEWPID)", e))?;
    }
    // The child reports a failure before exec through this pipe; a successful exec closes
    // it (O_CLOEXEC) without a word.
    let (report_rx, report_tx) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| LaunchError::Sys("pipe2", e))?;
    let parent_cpu_us = cpu_time_us();
    // SAFETY: the jailer is single-threaded, so the child may run any code after fork.
    match unsafe { fork() }.map_err(|e| LaunchError::Sys("fork", e))? {
        ForkResult::Child => {
            drop(report_rx);
            let err = child(jail, stamps, dev_null, parent_cpu_us).unwrap_err();
            let _ = File::from(report_tx).write_all(err.to_string().as_bytes());
            std::process::exit(1);
        }
        ForkResult::Parent { child } => {
            drop(report_tx);
            parent(jail, child, report_rx)
        }
    }
}

fn child(
    jail: &Jail,
    stamps: Stamps,
    dev_null: Option<OwnedFd>,
    parent_cpu_us: u64,
) -> Result<Infallible, LaunchError> {
    if let Some(null) = dev_null {
        // A new session: no controlling terminal, no signals from the caller's terminal.
        setsid().map_err(|e| LaunchError::Sys("setsid", e))?;
        for dup in [dup2_stdin, dup2_stdout, dup2_stderr] {
            dup(&null).map_err(|e| LaunchError::Sys("redirect stdio to /dev/null", e))?;
        }
        return exec_monitor(jail, stamps, parent_cpu_us, None);
    }
    // The jailer waits in the caller's place: if it is killed (SIGKILL cannot be passed on),
    // the monitor must not live on unsupervised.
    exec_monitor(jail, stamps, parent_cpu_us, Some(getppid()))
}

fn parent(jail: &Jail, child: Pid, report: OwnedFd) -> Result<u8, LaunchError> {
    write_pid_file(jail, child.as_raw() as u32)?;
    let mut failure = String::new();
    let _ = File::from(report).read_to_string(&mut failure);
    if !failure.is_empty() {
        let _ = waitpid(child, None);
        return Err(LaunchError::Child(failure));
    }
    if jail.daemonize {
        return Ok(0);
    }
    // Waiting in the caller's place: nothing of root is needed any more, and signals for
    // the jailer go to the monitor.
    privileges::drop_to(jail.uid, jail.gid)?;
    CHILD.store(child.as_raw(), Ordering::SeqCst);
    forward_signals()?;
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code as u8),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as u8),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(LaunchError::Sys("wait for the monitor", e)),
        }
    }
}

extern "C" fn pass_on(sig: libc::c_int) {
    // SAFETY: kill(2) is async-signal-safe; CHILD is the monitor's pid, set before the
    // handlers go on.
    unsafe { libc::kill(CHILD.load(Ordering::SeqCst), sig) };
}

fn forward_signals() -> Result<(), LaunchError> {
    let action = SigAction::new(
        SigHandler::Handler(pass_on),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: the handler only calls kill(2), which is async-signal-safe.
        unsafe { nix::sys::signal::sigaction(sig, &action) }
            .map_err(|e| LaunchError::Sys("install a signal handler", e))?;
    }
    // A signal that came before the handlers would otherwise be lost.
    let _ = kill(Pid::from_raw(CHILD.load(Ordering::SeqCst)), None);
    Ok(())
}

/// `<exec-name>.pid` in the jail root: the monitor's pid as the host sees it.
fn write_pid_file(jail: &Jail, pid: u32) -> Result<(), LaunchError> {
    let path = format!("/{}.pid", jail.exec_name);
    std::fs::write(&path, pid.to_string()).map_err(|e| LaunchError::PidFile(path, e))
}

/// Drops every privilege and becomes the monitor: `/<exec-name> --id <id> --start-time-us
/// <us> --start-time-cpu-us 0 --parent-cpu-time-us <us> <monitor args>`, with an empty
/// environment.
fn exec_monitor(
    jail: &Jail,
    stamps: Stamps,
    parent_cpu_us: u64,
    die_with: Option<Pid>,
) -> Result<Infallible, LaunchError> {
    let path = CString::new(format!("/{}", jail.exec_name)).map_err(|_| LaunchError::Nul)?;
    let mut argv = vec![CString::new(jail.exec_name.as_str()).map_err(|_| LaunchError::Nul)?];
    // This process's CPU clock counts from its own start (or fork): the monitor adds its
    // own time to it, and the parent's comes separately.
    let fixed = [
        "--id".to_string(),
        jail.id.clone(),
        "--start-time-us".into(),
        stamps.start_us.to_string(),
        "--start-time-cpu-us".into(),
        "0".into(),
        "--parent-cpu-time-us".into(),
        parent_cpu_us.to_string(),
    ];
    for arg in fixed
        .iter()
        .map(|s| s.as_bytes())
        .chain(jail.monitor_args.iter().map(|a| a.as_bytes()))
    {
        argv.push(CString::new(arg).map_err(|_| LaunchError::Nul)?);
    }
    privileges::drop_to(jail.uid, jail.gid)?;
    if let Some(parent) = die_with {
        // Set after the uid switch, which clears it; the check covers a parent that died
        // before it was set.
        set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| LaunchError::Sys("set the parent-death signal", e))?;
        if getppid() != parent {
            return Err(LaunchError::Child(
                "the jailer died before the monitor started".into(),
            ));
        }
    }
    let env: [CString; 0] = [];
    execve(&path, &argv, &env).map_err(|e| LaunchError::Sys("exec the monitor", e))
}

/// This process's CPU time so far, in microseconds.
pub fn cpu_time_us() -> u64 {
    clock_us(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
}

/// A clock's reading in microseconds (0 if it cannot be read).
pub fn clock_us(clock: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(clock).map_or(0, |t| {
        (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1_000
    })
}
