//! Command-line options and the `--no-api --config-file` launch path.

use crate::api::ApiServer;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::time::Instant;
use vmm::builder::BuildOptions;
use vmm::config::{
    LogLevel, LoggerConfig, MetricsConfig, UnknownLogLevel, ValidVmConfig, VmConfig,
};
use vmm::controller::VmmController;
use vmm::event_loop::VmmEventManager;
use vmm::metrics::StartupTimes;
use vmm::rpc::{VmResources, VmmAction};
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
    // Firecracker's other flags, which Firecracker clients pass.
    /// Put each log record's level in its line.
    #[arg(long)]
    pub show_level: bool,
    /// Put the source file and line of each log record in its line.
    #[arg(long)]
    pub show_log_origin: bool,
    /// Log only records whose module path starts with this (e.g. `vmm::controller`).
    #[arg(long)]
    pub module: Option<String>,
    /// Write metrics to this existing file or named pipe, as `PUT /metrics` does.
    #[arg(long, value_name = "PATH")]
    pub metrics_path: Option<PathBuf>,
    /// The largest API request body accepted, in bytes.
    #[arg(long, default_value_t = 51_200, value_name = "BYTES")]
    pub http_api_max_payload_size: usize,
    /// The MMDS data store limit, in bytes. Accepted and ignored: Ember has no MMDS yet, so
    /// it stores no metadata to limit (and refuses `--metadata` and `/mmds`).
    #[arg(long, value_name = "BYTES")]
    pub mmds_size_limit: Option<usize>,
    /// MMDS contents from a JSON file. Not supported yet: Ember has no MMDS.
    #[arg(long, value_name = "FILE")]
    pub metadata: Option<PathBuf>,
    /// CPU time, in microseconds, the launcher's parent spent; added to
    /// `api_server.process_startup_time_cpu_us`.
    #[arg(long, value_name = "US")]
    pub parent_cpu_time_us: Option<u64>,
    /// When the launcher began (monotonic clock, microseconds), for
    /// `api_server.process_startup_time_us` in the metrics.
    #[arg(long, value_name = "US")]
    pub start_time_us: Option<u64>,
    /// The launcher's process CPU clock when it began (microseconds), for
    /// `api_server.process_startup_time_cpu_us` in the metrics.
    #[arg(long, value_name = "US")]
    pub start_time_cpu_us: Option<u64>,
    /// PCI devices. Not supported yet: Ember's devices are virtio-mmio.
    #[arg(long)]
    pub enable_pci: bool,
}

/// Refuses the Firecracker flags whose feature Ember does not have yet, with one line.
fn refuse_unsupported(args: &Args) -> Result<(), String> {
    if args.metadata.is_some() {
        return Err("--metadata is not supported yet: Ember has no MMDS".into());
    }
    if args.enable_pci {
        return Err("--enable-pci is not supported yet: Ember's devices are virtio-mmio".into());
    }
    Ok(())
}

/// The logger as the flags set it up.
fn logger_flags(args: &Args) -> Result<LoggerConfig, String> {
    let level: LogLevel = args
        .level
        .parse()
        .map_err(|e: UnknownLogLevel| e.to_string())?;
    // Boot-timer lines are Info: make sure they show when the timer is asked for.
    let level = if args.boot_timer {
        level.max(LogLevel::Info)
    } else {
        level
    };
    Ok(LoggerConfig {
        log_path: args.log_path.clone(),
        level: Some(level),
        show_level: Some(args.show_level),
        show_log_origin: Some(args.show_log_origin),
        module: args.module.clone(),
    })
}

/// Reads and validates a config file: its errors are reported here, naming the file, before
/// anything starts.
fn read_config(path: &std::path::Path) -> Result<ValidVmConfig, String> {
    let text = vmm::host_file::read_text(path, vmm::config::MAX_CONFIG_FILE_BYTES)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let in_path = |e: vmm::config::ConfigError| format!("{}: {e}", path.display());
    let config = VmConfig::from_json(&text).map_err(in_path)?;
    config.validate().map_err(in_path)
}

/// The resources a config file describes (none without one), with its `logger` section
/// applied at once, as Firecracker does.
fn read_config_file(path: Option<&Path>) -> Result<VmResources, String> {
    let Some(path) = path else {
        return Ok(VmResources::default());
    };
    let config = read_config(path)?;
    if let Some(logger) = config.logger() {
        vmm::logger::update(logger).map_err(|e| format!("{}: logger: {e}", path.display()))?;
    }
    Ok(VmResources::new(config))
}

fn seccomp_filters(args: &Args) -> Result<ThreadFilters, String> {
    if args.no_seccomp {
        eprintln!(
            "ember: warning: --no-seccomp: no seccomp filters, every thread may make any system call"
        );
        log::warn!("seccomp filtering is disabled (--no-seccomp)");
        return Ok(ThreadFilters::disabled());
    }
    seccomp::filters(args.seccomp_filter.as_deref()).map_err(|e| e.to_string())
}

/// `--metrics-path`: the same as `PUT /metrics` before anything else.
fn configure_metrics(
    args: &Args,
    controller: &mut VmmController,
    event_manager: &mut VmmEventManager,
) -> Result<(), String> {
    let Some(path) = &args.metrics_path else {
        return Ok(());
    };
    let metrics = MetricsConfig {
        metrics_path: path.clone(),
        emit_id: false,
    };
    controller
        .handle(VmmAction::ConfigureMetrics(metrics), event_manager)
        .map(|_| ())
        .map_err(|e| format!("--metrics-path: {e}"))
}

/// Binds the API socket and starts the API thread, which sends its requests to `controller`.
fn serve_api(
    args: &Args,
    seccomp: &ThreadFilters,
    controller: &mut VmmController,
    event_manager: &mut VmmEventManager,
) -> Result<(), String> {
    let server = ApiServer::bind(&args.api_sock)
        .map_err(|e| e.to_string())?
        .with_max_payload(args.http_api_max_payload_size);
    let wake =
        EventFd::new(libc::EFD_NONBLOCK).map_err(|e| format!("cannot create an eventfd: {e}"))?;
    let (to_vmm, requests) = channel();
    let api_wake = wake
        .try_clone()
        .map_err(|e| format!("cannot clone an eventfd: {e}"))?;
    server
        .spawn(to_vmm, api_wake, seccomp.api.clone())
        .map_err(|e| e.to_string())?;
    controller.attach_api(event_manager, requests, wake);
    Ok(())
}

/// Puts the VMM thread under its filter, boots a config file's VM, and runs until the VM,
/// a stop signal or the API ends it; returns the exit code.
fn run_vmm(
    args: &Args,
    seccomp: &ThreadFilters,
    controller: &mut VmmController,
    event_manager: &mut VmmEventManager,
) -> Result<i32, String> {
    // The VMM thread's filter goes on once the API thread (which has its own) exists and
    // before any VM is built, so InstanceStart -- from the config file or the API -- runs
    // under it; the vCPU threads it spawns inherit it and add theirs.
    seccomp::apply(&seccomp.vmm).map_err(|e| format!("VMM thread: {e}"))?;
    seccomp::test_hook_forbidden_syscall(ThreadKind::Vmm);
    // Like Firecracker, a config file boots the VM at once; the API (if any) stays up.
    if args.config_file.is_some() {
        controller.start(event_manager).map_err(|e| e.to_string())?;
    }
    let exit = controller.run(event_manager);
    let code = exit.exit_code();
    if code != 0 {
        eprintln!("ember: {exit}");
    } else {
        log::info!("{exit}");
    }
    Ok(code)
}

/// Removes the API socket file, so a finished Ember leaves nothing behind.
fn remove_socket(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove the API socket {}: {e}", path.display()),
    }
}

/// Runs Ember; returns the process exit code, or an error line for stderr.
pub fn run(args: Args, process_start: Instant) -> Result<u8, String> {
    refuse_unsupported(&args)?;
    vmm::logger::init(&args.id, &logger_flags(&args)?).map_err(|e| e.to_string())?;
    let seccomp = seccomp_filters(&args)?;
    let resources = read_config_file(args.config_file.as_deref())?;
    // Once the log is where the flags and the config file put it, so it shows there.
    log::info!("Running Ember v{}", vmm::rpc::VMM_VERSION);
    if let Some(limit) = args.mmds_size_limit {
        log::debug!("--mmds-size-limit {limit}: ignored, Ember has no MMDS");
    }
    let options = BuildOptions {
        process_start,
        boot_timer: args.boot_timer,
        vcpu_seccomp: seccomp.vcpu.clone(),
    };
    let mut event_manager =
        VmmEventManager::new().map_err(|e| format!("cannot create the event loop: {e:?}"))?;
    let mut controller = VmmController::new(&args.id, options, resources);
    // Before the socket exists, so that no stop signal can leave it behind.
    controller
        .watch_stop_signals(&mut event_manager)
        .map_err(|e| format!("cannot handle SIGTERM and SIGINT: {e}"))?;
    configure_metrics(&args, &mut controller, &mut event_manager)?;
    if !args.no_api {
        serve_api(&args, &seccomp, &mut controller, &mut event_manager)?;
    }
    let startup = StartupTimes::measure(
        args.start_time_us,
        args.start_time_cpu_us,
        args.parent_cpu_time_us.unwrap_or(0),
    );
    controller.set_startup_times(startup);
    let result = run_vmm(&args, &seccomp, &mut controller, &mut event_manager);
    if !args.no_api {
        remove_socket(&args.api_sock);
    }
    let code = result?;
    // Exit here, with the VM still owned: the vCPUs were parked when the VM ended, but one
    // that did not answer in time may still be inside KVM_RUN, and dropping the VM would
    // unmap guest memory under it. The console was flushed when the VM ended.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code)
}
