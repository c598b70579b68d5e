//! Command-line options and the `--no-api --config-file` launch path.

use crate::api::ApiServer;
use clap::Parser;
use std::path::PathBuf;
use std::sync::mpsc::channel;
use std::time::Instant;
use vmm::builder::BuildOptions;
use vmm::config::VmConfig;
use vmm::controller::VmmController;
use vmm::event_loop::VmmEventManager;
use vmm::rpc::PrebootConfigurator;
use vmm::seccomp::{self, ThreadFilters, ThreadKind};
use vmm_sys_util::eventfd::EventFd;

#[derive(Parser, Debug)]
#[command(
    name = "ember",
    version,
    about = "A KVM microVM monitor with a Firecracker-compatible API"
)]
pub struct Args {
    /// Path to the API socket.
    #[arg(long, default_value = "/run/ember.socket")]
    pub api_sock: PathBuf,
    /// Start the microVM from this JSON configuration file (Firecracker's format).
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// Do not serve the API; requires --config-file.
    #[arg(long, requires = "config_file")]
    pub no_api: bool,
    /// Instance id, shown by `GET /` and in log lines.
    #[arg(long, default_value = "anonymous-instance")]
    pub id: String,
    /// Log level: Error, Warning, Info, Debug, Trace or Off.
    #[arg(long, default_value = "Warning")]
    pub level: String,
    /// Write the log here instead of stderr.
    #[arg(long)]
    pub log_path: Option<PathBuf>,
    /// Log the guest's boot time when it writes 123 to MMIO 0xc0000000 (Firecracker's boot timer).
    #[arg(long)]
    pub boot_timer: bool,
    /// Run without seccomp filters: every thread may make any system call. For debugging
    /// only; prints a warning.
    #[arg(long, conflicts_with = "seccomp_filter")]
    pub no_seccomp: bool,
    /// Use the seccomp filters in FILE instead of the built-in ones. Unlike Firecracker, which
    /// takes compiled BPF, FILE is seccompiler's JSON format (as resources/seccomp/x86_64.json),
    /// with one filter for each of the "vmm", "api" and "vcpu" threads. See docs/security.md.
    #[arg(long, value_name = "FILE")]
    pub seccomp_filter: Option<PathBuf>,
}

fn read_config(path: &std::path::Path) -> Result<VmConfig, String> {
    let text = vmm::host_file::read_text(path, vmm::config::MAX_CONFIG_FILE_BYTES)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let config = VmConfig::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    config
        .validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(config)
}

/// Runs Ember; returns the process exit code, or an error line for stderr.
pub fn run(args: Args, process_start: Instant) -> Result<u8, String> {
    let level = crate::logger::parse_level(&args.level)?;
    // Boot-timer lines are Info: make sure they show when the timer is asked for.
    let level = if args.boot_timer {
        level.max(log::LevelFilter::Info)
    } else {
        level
    };
    crate::logger::init(&args.id, level, args.log_path.as_deref())?;
    let seccomp = if args.no_seccomp {
        eprintln!(
            "ember: warning: --no-seccomp: no seccomp filters, every thread may make any system call"
        );
        log::warn!("seccomp filtering is disabled (--no-seccomp)");
        ThreadFilters::disabled()
    } else {
        seccomp::filters(args.seccomp_filter.as_deref()).map_err(|e| e.to_string())?
    };
    let config = match args.config_file.as_deref() {
        Some(path) => read_config(path)?,
        None => VmConfig::default(),
    };
    let options = BuildOptions {
        process_start,
        boot_timer: args.boot_timer,
        vcpu_seccomp: seccomp.vcpu.clone(),
    };
    let mut event_manager =
        VmmEventManager::new().map_err(|e| format!("cannot create the event loop: {e:?}"))?;
    let mut controller = VmmController::new(&args.id, options, PrebootConfigurator::new(config));
    if !args.no_api {
        let server = ApiServer::bind(&args.api_sock).map_err(|e| e.to_string())?;
        let wake = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| format!("cannot create an eventfd: {e}"))?;
        let (to_vmm, requests) = channel();
        let api_wake = wake
            .try_clone()
            .map_err(|e| format!("cannot clone an eventfd: {e}"))?;
        server
            .spawn(to_vmm, api_wake, seccomp.api.clone())
            .map_err(|e| e.to_string())?;
        controller.attach_api(&mut event_manager, requests, wake);
    }
    // The VMM thread's filter goes on once the API thread (which has its own) exists and
    // before any VM is built, so InstanceStart -- from the config file or the API -- runs
    // under it; the vCPU threads it spawns inherit it and add theirs.
    seccomp::apply(&seccomp.vmm).map_err(|e| format!("VMM thread: {e}"))?;
    seccomp::test_hook_forbidden_syscall(ThreadKind::Vmm);
    // Like Firecracker, a config file boots the VM at once; the API (if any) stays up.
    if args.config_file.is_some() {
        controller
            .start(&mut event_manager)
            .map_err(|e| e.to_string())?;
    }
    let exit = controller.run(&mut event_manager);
    let code = exit.exit_code();
    if code != 0 {
        eprintln!("ember: {exit}");
    } else {
        log::info!("{exit}");
    }
    // Exit here, with the VM still owned: the vCPUs were parked when the VM ended, but one
    // that did not answer in time may still be inside KVM_RUN, and dropping the VM would
    // unmap guest memory under it. The console was flushed when the VM ended.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code)
}
