//! Seccomp with a real guest: every thread runs filtered, a forbidden system call kills the
//! whole process with SIGSYS, `--no-seccomp` and `--seccomp-filter` do what they say. The
//! other integration tests (boot, block, api, ...) run with the built-in filters on, so they
//! check that the filters allow everything those features need.
//!
//! The forbidden-call tests use Ember's debug-build test hook (`EMBER_TEST_FORBIDDEN_SYSCALL`,
//! ignored by release builds), so they need a debug `ember`: `$EMBER_DEBUG_BIN`, else
//! `target/debug/ember` (`cargo build -p ember`). The other tests use [`ember()`] like every
//! integration test (`$EMBER_BIN`, usually the release build).

use ember_integration_tests::ember::{
    api_request, ember, ember_debug, vm_config, wait_for_socket, EmberProcess, EMBER_BOOT_ARGS,
    EMBER_TIMEOUT_SECS,
};
use ember_integration_tests::{
    ember_cmd_arg, guest_artifacts, output_text, repo_root, require_kvm, run_with_timeout, TempDir,
};
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// SIGSYS on x86_64: what `SECCOMP_RET_KILL_PROCESS` kills with.
const SIGSYS: i32 = 31;
const HOOK: &str = "EMBER_TEST_FORBIDDEN_SYSCALL";

/// A VM config for a guest that runs `script` (then reboots, which ends Ember).
fn write_config(dir: &TempDir, script: &str) -> PathBuf {
    let guest = guest_artifacts();
    let args = format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(script));
    let config = vm_config(&guest.vmlinux, Some(&guest.initramfs), &args, 2, 128);
    let path = dir.path().join("vm.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

/// `Seccomp:` (mode) and `Seccomp_filters:` (count) of each thread of `pid`, by thread name.
fn thread_seccomp(pid: u32) -> Vec<(String, String, String)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("status")),
        ) else {
            continue; // the thread just ended
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        threads.push((
            comm.trim().to_string(),
            field("Seccomp:"),
            field("Seccomp_filters:"),
        ));
    }
    threads.sort();
    threads
}

/// Describes how a process ended, for assertion messages.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (_, Some(SIGSYS)) => "killed by SIGSYS (a seccomp filter)".into(),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(code), _) => format!("exited with code {code}"),
        _ => format!("{status}"),
    }
}

#[test]
fn every_thread_runs_under_its_filter_while_a_guest_runs() {
    require_kvm();
    let dir = TempDir::new("seccomp-threads");
    let config = write_config(&dir, "sleep 600");
    let socket = dir.path().join("api.sock");
    let ember = EmberProcess::spawn(&[
        "--api-sock",
        socket.to_str().unwrap(),
        "--config-file",
        config.to_str().unwrap(),
    ]);
    ember.wait_for("EMBER-GUEST: cpus=2", EMBER_TIMEOUT_SECS);
    wait_for_socket(&socket, 30);

    let threads = thread_seccomp(ember.pid());
    let names: Vec<&str> = threads.iter().map(|(n, ..)| n.as_str()).collect();
    for wanted in ["ember", "ember-api", "ember_vcpu0", "ember_vcpu1"] {
        assert!(names.contains(&wanted), "no {wanted} thread in {threads:?}");
    }
    for (name, mode, count) in &threads {
        assert_eq!(
            mode, "2",
            "thread {name} is not in seccomp filter mode: {threads:?}"
        );
        // vCPU threads inherit the VMM thread's filter and add their own.
        let want = if name.starts_with("ember_vcpu") {
            "2"
        } else {
            "1"
        };
        assert_eq!(count, want, "filters on thread {name}: {threads:?}");
    }

    // The filtered threads still do their jobs: API requests, pausing (signals to the vCPU
    // threads), resuming, and a clean exit on SIGTERM.
    let (status, body) = api_request(&socket, "GET", "/", None);
    assert_eq!(status, 200, "{body}");
    for state in ["Paused", "Resumed"] {
        let body = format!(r#"{{"state":"{state}"}}"#);
        let (status, reply) = api_request(&socket, "PATCH", "/vm", Some(&body));
        assert_eq!(status, 204, "PATCH /vm {state}: {reply}");
    }
    let (status, body) = api_request(&socket, "GET", "/", None);
    assert!(status == 200 && body.contains("Running"), "{status} {body}");
    ember.terminate();
    let (status, console) = ember.wait(60);
    assert!(
        status.success(),
        "ember {} after SIGTERM; output:\n{console}",
        describe(status)
    );
    // Removed by the VMM thread, under its filter, after the VM ended.
    assert!(!socket.exists(), "the API socket is left after SIGTERM");
}

/// Runs the debug ember with the hook set to `thread`; returns how it ended and its output.
fn run_with_hook(thread: &str, args: &[&str]) -> (ExitStatus, String) {
    let mut cmd = Command::new(ember_debug(HOOK));
    cmd.args(args).env(HOOK, thread).stdin(Stdio::null());
    let out = run_with_timeout(&mut cmd, EMBER_TIMEOUT_SECS);
    (out.status, output_text(&out))
}

fn assert_killed_by_seccomp(thread: &str, status: ExitStatus, output: &str) {
    assert!(
        output.contains(&format!("{HOOK}={thread}")),
        "the {HOOK} hook did not run on the {thread} thread (is {} a debug build?); ember {}:\n{output}",
        ember_debug(HOOK).display(),
        describe(status)
    );
    assert_eq!(
        status.signal(),
        Some(SIGSYS),
        "a forbidden call on the {thread} thread: ember {}, not killed by SIGSYS:\n{output}",
        describe(status)
    );
}

#[test]
fn a_forbidden_call_on_a_vcpu_thread_kills_the_process() {
    require_kvm();
    let dir = TempDir::new("seccomp-vcpu");
    let config = write_config(&dir, "true");
    let (status, output) = run_with_hook(
        "vcpu",
        &["--no-api", "--config-file", config.to_str().unwrap()],
    );
    assert_killed_by_seccomp("vcpu", status, &output);
}

#[test]
fn a_forbidden_call_on_the_api_thread_kills_the_process() {
    require_kvm();
    let dir = TempDir::new("seccomp-api");
    let socket = dir.path().join("api.sock");
    let (status, output) = run_with_hook("api", &["--api-sock", socket.to_str().unwrap()]);
    assert_killed_by_seccomp("api", status, &output);
}

#[test]
fn a_forbidden_call_on_the_vmm_thread_kills_the_process() {
    require_kvm();
    let dir = TempDir::new("seccomp-vmm");
    let config = write_config(&dir, "true");
    let (status, output) = run_with_hook(
        "vmm",
        &["--no-api", "--config-file", config.to_str().unwrap()],
    );
    assert_killed_by_seccomp("vmm", status, &output);
}

#[test]
fn no_seccomp_warns_and_leaves_threads_unfiltered() {
    require_kvm();
    let dir = TempDir::new("seccomp-off");
    let socket = dir.path().join("api.sock");
    // The debug build, so the hook shows that nothing is filtered: the forbidden call returns.
    let mut child = Command::new(ember_debug(HOOK))
        .args(["--no-seccomp", "--api-sock", socket.to_str().unwrap()])
        .env(HOOK, "api")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_socket(&socket, 30);
    // The socket is bound before the API thread starts: a served request proves it runs.
    let (status, body) = api_request(&socket, "GET", "/", None);
    let threads = thread_seccomp(child.id());
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status, 200, "{body}");
    assert!(
        stderr.contains("warning: --no-seccomp"),
        "no warning:\n{stderr}"
    );
    assert!(
        stderr.contains("the forbidden call returned"),
        "hook: {stderr}"
    );
    assert!(
        threads.iter().any(|(n, ..)| n == "ember-api"),
        "{threads:?}"
    );
    for (name, mode, _) in &threads {
        assert_eq!(mode, "0", "thread {name} is filtered: {threads:?}");
    }
}

/// The built-in filters with `syscall` removed from the `thread` filter.
fn filters_without(thread: &str, syscall: &str) -> String {
    let path = repo_root().join("resources/seccomp/x86_64.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rules = json[thread]["filter"].as_array_mut().unwrap();
    let before = rules.len();
    rules.retain(|r| r["syscall"] != syscall);
    assert!(rules.len() < before, "{thread} filter has no {syscall}");
    json.to_string()
}

#[test]
fn seccomp_filter_replaces_the_built_in_filters() {
    require_kvm();
    let dir = TempDir::new("seccomp-custom");
    let config = write_config(&dir, "true");
    let filter = dir.path().join("filters.json");
    let run = |filter: &Path| {
        let mut cmd = Command::new(ember());
        cmd.args(["--seccomp-filter", filter.to_str().unwrap()])
            .args(["--no-api", "--config-file", config.to_str().unwrap()])
            .stdin(Stdio::null());
        let out = run_with_timeout(&mut cmd, EMBER_TIMEOUT_SECS);
        (out.status, output_text(&out))
    };

    // The built-in filters, from a file: the guest boots and Ember exits cleanly.
    std::fs::copy(repo_root().join("resources/seccomp/x86_64.json"), &filter).unwrap();
    let (status, output) = run(&filter);
    assert!(status.success(), "ember {}:\n{output}", describe(status));
    assert!(output.contains("EMBER-GUEST-CMD-EXIT: 0"), "{output}");

    // Without KVM_RUN's syscall in the vCPU filter, the first guest entry kills Ember.
    std::fs::write(&filter, filters_without("vcpu", "ioctl")).unwrap();
    let (status, output) = run(&filter);
    assert_eq!(
        status.signal(),
        Some(SIGSYS),
        "ember {}:\n{output}",
        describe(status)
    );

    // A file that is not a filter set is refused before anything runs.
    std::fs::write(&filter, r#"{"vmm": {}}"#).unwrap();
    let (status, output) = run(&filter);
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("filters.json"), "{output}");
}
