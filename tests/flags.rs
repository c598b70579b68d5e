//! Firecracker's process flags, the config file's `logger` section and the stop signals,
//! checked on the real binary before any guest runs (no KVM needed).

use ember_integration_tests::ember::{
    api_request, run_ember_args, vm_config, wait_for_socket, EmberProcess, EmberRun,
    EMBER_BOOT_ARGS,
};
use ember_integration_tests::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

const EXIT_SECS: u64 = 30;

/// Starts `ember --api-sock DIR/api.sock ARGS` and waits for its socket.
fn start(dir: &TempDir, args: &[&str]) -> (EmberProcess, PathBuf) {
    let socket = dir.path().join("api.sock");
    let mut all = vec!["--api-sock", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    let ember = EmberProcess::spawn(&all);
    wait_for_socket(&socket, 30);
    (ember, socket)
}

fn signal(ember: &EmberProcess, name: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(ember.pid().to_string())
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{name} failed");
}

/// Stops `ember` with `name` and checks it exits 0 and removes its socket.
fn stop_cleanly(ember: EmberProcess, socket: &Path, name: &str) -> String {
    signal(&ember, name);
    let (status, console): (ExitStatus, String) = ember.wait(EXIT_SECS);
    assert_eq!(
        status.code(),
        Some(0),
        "SIG{name}: {status}; console:\n{console}"
    );
    assert!(!socket.exists(), "SIG{name} left {}", socket.display());
    console
}

fn assert_answers(socket: &Path) {
    let (status, body) = api_request(socket, "GET", "/", None);
    assert_eq!(status, 200, "GET /: {body}");
    assert!(body.contains("\"Not started\""), "GET /: {body}");
}

/// Exit 1 with one stderr line that names `flag`.
fn assert_refused(run: &EmberRun, flag: &str) {
    let stderr = run.stderr();
    assert_eq!(run.output.status.code(), Some(1), "output:\n{}", run.text);
    assert_eq!(stderr.trim().lines().count(), 1, "want one line:\n{stderr}");
    assert!(stderr.contains(flag), "{flag} not named:\n{stderr}");
    assert!(stderr.contains("not supported yet"), "{stderr}");
}

#[test]
fn accepted_firecracker_flags_start_and_answer() {
    let dir = TempDir::new("flags-accepted");
    let metrics = dir.path().join("metrics.json");
    std::fs::write(&metrics, "").unwrap();
    let metrics = metrics.to_str().unwrap();
    let cases: [&[&str]; 9] = [
        &["--show-level"],
        &["--show-log-origin"],
        &["--module", "vmm::controller"],
        &["--metrics-path", metrics],
        &["--http-api-max-payload-size", "100000"],
        &["--mmds-size-limit", "4096"],
        &["--parent-cpu-time-us", "1000"],
        &["--start-time-us", "1000"],
        &["--start-time-cpu-us", "1000"],
    ];
    for args in cases {
        let run_dir = TempDir::new("flags-accepted-run");
        let (ember, socket) = start(&run_dir, args);
        assert_answers(&socket);
        stop_cleanly(ember, &socket, "TERM");
    }
}

#[test]
fn refused_firecracker_flags_name_themselves() {
    let dir = TempDir::new("flags-refused");
    let socket = dir.path().join("api.sock");
    let socket = socket.to_str().unwrap();
    let metadata = dir.path().join("metadata.json");
    std::fs::write(&metadata, "{}").unwrap();
    let run = run_ember_args(&[
        "--api-sock",
        socket,
        "--metadata",
        metadata.to_str().unwrap(),
    ]);
    assert_refused(&run, "--metadata");
    let run = run_ember_args(&["--api-sock", socket, "--enable-pci"]);
    assert_refused(&run, "--enable-pci");
    assert!(
        !Path::new(socket).exists(),
        "a refused start left its socket"
    );
}

#[test]
fn payload_limit_follows_the_flag() {
    let dir = TempDir::new("flags-payload");
    let (ember, socket) = start(&dir, &["--http-api-max-payload-size", "16"]);
    let body = r#"{"vcpu_count": 2, "mem_size_mib": 256}"#;
    let (status, reply) = api_request(&socket, "PUT", "/machine-config", Some(body));
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("limit of 16"), "{reply}");
    let (status, reply) = api_request(&socket, "PUT", "/logger", Some(r#"{"level":"Info"}"#));
    assert_eq!(status, 204, "16 bytes must pass: {reply}");
    stop_cleanly(ember, &socket, "TERM");
}

#[test]
fn metrics_path_and_start_times_reach_the_metrics() {
    let dir = TempDir::new("flags-metrics");
    let metrics = dir.path().join("metrics.json");
    std::fs::write(&metrics, "").unwrap();
    let args = [
        "--metrics-path",
        metrics.to_str().unwrap(),
        "--start-time-cpu-us",
        "0",
    ];
    let (ember, socket) = start(&dir, &args);
    let flush = r#"{"action_type": "FlushMetrics"}"#;
    let (status, reply) = api_request(&socket, "PUT", "/actions", Some(flush));
    assert_eq!(status, 204, "{reply}");
    let again = format!(r#"{{"metrics_path": "{}"}}"#, metrics.display());
    let (status, reply) = api_request(&socket, "PUT", "/metrics", Some(&again));
    assert_eq!(status, 400, "metrics were configured by the flag: {reply}");
    stop_cleanly(ember, &socket, "TERM");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(
        first["api_server"]["process_startup_time_cpu_us"].as_u64() > Some(0),
        "{text}"
    );
}

#[test]
fn put_logger_changes_the_log() {
    let dir = TempDir::new("flags-put-logger");
    let log = dir.path().join("ember.log");
    std::fs::write(&log, "").unwrap();
    let (ember, socket) = start(&dir, &[]);
    let body = serde_json::json!({
        "log_path": log, "level": "debug", "show_level": true, "module": "ember::api"
    });
    let (status, reply) = api_request(&socket, "PUT", "/logger", Some(&body.to_string()));
    assert_eq!(status, 204, "{reply}");
    let (status, reply) = api_request(&socket, "PUT", "/logger", Some(r#"{"level": "Loud"}"#));
    assert_eq!(status, 400, "{reply}");
    assert_answers(&socket);
    stop_cleanly(ember, &socket, "TERM");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(":DEBUG] API request: GET /"), "log:\n{text}");
    // The stop line comes from ember::cli, which the module filter leaves out.
    assert!(!text.contains("stopped by"), "log:\n{text}");
}

#[test]
fn config_file_logger_section_is_applied() {
    let dir = TempDir::new("flags-logger-section");
    let log = dir.path().join("ember.log");
    std::fs::write(&log, "").unwrap();
    // No guest is needed: the kernel does not exist, so the start fails after the logger
    // section has been applied.
    let mut config = vm_config(
        Path::new("/nonexistent/vmlinux"),
        None,
        EMBER_BOOT_ARGS,
        1,
        128,
    );
    config["logger"] = serde_json::json!({
        "log_path": log, "level": "Info", "show_level": true, "show_log_origin": true
    });
    let path = dir.path().join("vm.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let run = run_ember_args(&["--no-api", "--config-file", path.to_str().unwrap()]);
    let stderr = run.stderr();
    assert!(!stderr.contains("unknown field"), "{stderr}");
    assert!(stderr.contains("/nonexistent/vmlinux"), "{stderr}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(":INFO:"), "log:\n{text}");
    assert!(text.contains("cli.rs:"), "no origin in the log:\n{text}");
    assert!(text.contains("Running Ember"), "log:\n{text}");
    config["logger"] = serde_json::json!({"level": "Loud"});
    std::fs::write(&path, config.to_string()).unwrap();
    let run = run_ember_args(&["--no-api", "--config-file", path.to_str().unwrap()]);
    assert_eq!(run.output.status.code(), Some(1));
    assert!(run.stderr().contains("\"Loud\""), "{}", run.stderr());
}

#[test]
fn sigterm_and_sigint_before_boot_exit_0_and_remove_the_socket() {
    for name in ["TERM", "INT"] {
        let dir = TempDir::new("flags-signal");
        let (ember, socket) = start(&dir, &["--level", "Info"]);
        assert_answers(&socket);
        let console = stop_cleanly(ember, &socket, name);
        assert!(
            console.contains(&format!("stopped by SIG{name}")),
            "{console}"
        );
    }
}
