//! The Firecracker-compatible API, driven over its Unix socket while a real guest runs.

use ember_integration_tests::ember::{
    api_request, drive, last_tick, wait_for_socket, EmberProcess, EMBER_BOOT_ARGS,
};
use ember_integration_tests::hostile::{assert_alive_and_quick, stress_every_route};
use ember_integration_tests::{ember_cmd_arg, guest_artifacts, require_kvm, TempDir};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const BOOT_SECS: u64 = 180;

/// Starts `ember --api-sock` in `dir`; returns the process and its socket.
fn start_api(dir: &TempDir) -> (EmberProcess, PathBuf) {
    let socket = dir.path().join("api.sock");
    let ember = EmberProcess::spawn(&["--api-sock", socket.to_str().unwrap(), "--id", "api-test"]);
    wait_for_socket(&socket, 30);
    (ember, socket)
}

fn put(socket: &Path, path: &str, body: Value) -> (u16, String) {
    api_request(socket, "PUT", path, Some(&body.to_string()))
}

fn patch(socket: &Path, path: &str, body: Value) -> (u16, String) {
    api_request(socket, "PATCH", path, Some(&body.to_string()))
}

fn get_json(socket: &Path, path: &str) -> Value {
    let (status, body) = api_request(socket, "GET", path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} body {body:?}: {e}"))
}

fn fault_message(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("body {body:?}: {e}"));
    value["fault_message"]
        .as_str()
        .unwrap_or_else(|| panic!("no fault_message in {body}"))
        .to_string()
}

/// Configures a guest whose script prints a tick every 100 ms forever. One vCPU: in the
/// nested, emulated lab, kicking two L2 vCPUs at once has frozen the whole lab twice.
fn configure_ticking_guest(socket: &Path) {
    let guest = guest_artifacts();
    let script = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.1; done";
    let args = format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(script));
    let boot = json!({"kernel_image_path": guest.vmlinux, "initrd_path": guest.initramfs, "boot_args": args});
    assert_eq!(put(socket, "/boot-source", boot).0, 204);
    assert_eq!(
        put(
            socket,
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 256})
        )
        .0,
        204
    );
}

#[test]
fn configure_start_pause_resume_and_stop() {
    require_kvm();
    let dir = TempDir::new("api-lifecycle");
    let (ember, socket) = start_api(&dir);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "API socket mode");
    let info = get_json(&socket, "/");
    assert_eq!(
        (info["id"].as_str(), info["state"].as_str()),
        (Some("api-test"), Some("Not started"))
    );

    configure_ticking_guest(&socket);
    assert_eq!(
        patch(&socket, "/machine-config", json!({"mem_size_mib": 300})).0,
        204
    );
    assert_eq!(get_json(&socket, "/machine-config")["mem_size_mib"], 300);
    let (status, _) = put(&socket, "/actions", json!({"action_type": "InstanceStart"}));
    assert_eq!(status, 204);
    ember.wait_for("EMBER-GUEST: cpus=1", BOOT_SECS);
    ember.wait_for("tick-5", 60);
    assert_eq!(get_json(&socket, "/")["state"], "Running");

    assert_eq!(patch(&socket, "/vm", json!({"state": "Paused"})).0, 204);
    assert_eq!(get_json(&socket, "/")["state"], "Paused");
    // Let ticks printed before the pause drain through the console pipe first.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let paused_at = last_tick(&ember.console()).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let still = last_tick(&ember.console()).unwrap();
    assert_eq!(still, paused_at, "the guest kept running while paused");

    assert_eq!(patch(&socket, "/vm", json!({"state": "Resumed"})).0, 204);
    ember.wait_for(&format!("tick-{}", still + 5), 60);
    assert_eq!(get_json(&socket, "/")["state"], "Running");

    ember.terminate();
    let (status, console) = ember.wait(60);
    assert!(
        status.success(),
        "SIGTERM should stop the VM cleanly: {status}; console:\n{console}"
    );
}

#[test]
fn errors_carry_firecracker_fault_messages() {
    require_kvm();
    let dir = TempDir::new("api-errors");
    let (ember, socket) = start_api(&dir);
    let (status, body) = put(&socket, "/actions", json!({"action_type": "InstanceStart"}));
    assert_eq!(status, 400);
    assert_eq!(
        fault_message(&body),
        "Start microvm error: Cannot start microvm without kernel configuration."
    );
    let (status, body) = api_request(
        &socket,
        "PUT",
        "/machine-config",
        Some("{\"vcpu_count\": 2,"),
    );
    assert_eq!(status, 400);
    assert!(!fault_message(&body).is_empty());
    let (status, body) = put(
        &socket,
        "/machine-config",
        json!({"vcpu_count": 0, "mem_size_mib": 128}),
    );
    assert_eq!(status, 400);
    assert!(fault_message(&body).contains("vcpu_count"), "{body}");
    let (status, body) = patch(&socket, "/vm", json!({"state": "Paused"}));
    assert_eq!(status, 400);
    assert_eq!(
        fault_message(&body),
        "The requested operation is not supported before starting the microVM."
    );
    let (status, body) = api_request(&socket, "GET", "/no/such/path", None);
    assert_eq!(status, 400, "{body}");

    configure_ticking_guest(&socket);
    assert_eq!(
        put(&socket, "/actions", json!({"action_type": "InstanceStart"})).0,
        204
    );
    ember.wait_for("tick-1", BOOT_SECS);
    let (status, body) = put(&socket, "/boot-source", json!({"kernel_image_path": "/k"}));
    assert_eq!(status, 400);
    assert_eq!(
        fault_message(&body),
        "The requested operation is not supported after starting the microVM."
    );
    ember.terminate();
    ember.wait(60);
}

#[test]
fn vm_config_round_trips_as_a_config_file() {
    require_kvm();
    let dir = TempDir::new("api-roundtrip");
    let (ember, socket) = start_api(&dir);
    let guest = guest_artifacts();
    let args = format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg("echo roundtrip-ok"));
    let boot = json!({"kernel_image_path": guest.vmlinux, "initrd_path": guest.initramfs, "boot_args": args});
    assert_eq!(put(&socket, "/boot-source", boot).0, 204);
    assert_eq!(
        put(
            &socket,
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 128})
        )
        .0,
        204
    );
    let config = get_json(&socket, "/vm/config");
    ember.terminate();
    ember.wait(30);

    let path = dir.path().join("from-api.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let run = ember_integration_tests::ember::run_ember_args(&[
        "--no-api",
        "--config-file",
        path.to_str().unwrap(),
    ]);
    assert!(run.text.contains("roundtrip-ok"), "output:\n{}", run.text);
    assert!(run.output.status.success(), "output:\n{}", run.text);
}

#[test]
fn patched_drive_shows_its_new_size_to_the_guest() {
    require_kvm();
    let dir = TempDir::new("api-patch-drive");
    let small = dir.path().join("small.img");
    let big = dir.path().join("big.img");
    std::fs::write(&small, vec![0u8; 1 << 20]).unwrap();
    std::fs::write(&big, vec![0u8; 3 << 20]).unwrap();
    let (ember, socket) = start_api(&dir);
    let guest = guest_artifacts();
    let script = "echo size-before=$(cat /sys/block/vda/size)\n\
                  while [ $(cat /sys/block/vda/size) = 2048 ]; do sleep 0.1; done\n\
                  echo size-after=$(cat /sys/block/vda/size)";
    let args = format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(script));
    let boot = json!({"kernel_image_path": guest.vmlinux, "initrd_path": guest.initramfs, "boot_args": args});
    assert_eq!(put(&socket, "/boot-source", boot).0, 204);
    assert_eq!(
        put(&socket, "/drives/data", drive("data", &small, false, false)).0,
        204
    );
    assert_eq!(
        put(&socket, "/actions", json!({"action_type": "InstanceStart"})).0,
        204
    );
    ember.wait_for("size-before=2048", BOOT_SECS);
    let (status, body) = patch(
        &socket,
        "/drives/data",
        json!({"drive_id": "data", "path_on_host": big}),
    );
    assert_eq!(status, 204, "{body}");
    ember.wait_for("size-after=6144", 60);
    let config = get_json(&socket, "/vm/config");
    assert_eq!(config["drives"][0]["path_on_host"], json!(big));
    let (status, console) = ember.wait(120);
    assert!(status.success(), "console:\n{console}");
}

#[test]
fn ctrl_alt_del_shuts_the_guest_down_cleanly() {
    require_kvm();
    let dir = TempDir::new("api-ctrl-alt-del");
    let (ember, socket) = start_api(&dir);
    configure_ticking_guest(&socket);
    assert_eq!(
        put(&socket, "/actions", json!({"action_type": "InstanceStart"})).0,
        204
    );
    ember.wait_for("tick-2", BOOT_SECS);
    let (status, body) = put(
        &socket,
        "/actions",
        json!({"action_type": "SendCtrlAltDel"}),
    );
    assert_eq!(status, 204, "{body}");
    let (status, console) = ember.wait(120);
    assert!(
        status.success(),
        "ember exited with {status}; console:\n{console}"
    );
    assert!(
        console.contains("reboot: Restarting system"),
        "the guest did not reboot; console:\n{console}"
    );
}

#[test]
fn flush_metrics_writes_device_counters() {
    require_kvm();
    let dir = TempDir::new("api-metrics");
    let (ember, socket) = start_api(&dir);
    let (status, body) = put(&socket, "/actions", json!({"action_type": "FlushMetrics"}));
    assert_eq!(status, 400, "{body}");
    let metrics_path = dir.path().join("metrics.json");
    let missing = dir.path().join("missing.json");
    let (status, body) = put(&socket, "/metrics", json!({ "metrics_path": missing }));
    assert_eq!(status, 400, "a metrics file that does not exist: {body}");
    std::fs::write(&metrics_path, "").unwrap();
    let image = dir.path().join("data.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let (status, body) = put(
        &socket,
        "/metrics",
        json!({"metrics_path": metrics_path, "emit_id": true}),
    );
    assert_eq!(status, 204, "{body}");
    configure_ticking_guest(&socket);
    assert_eq!(
        put(&socket, "/drives/data", drive("data", &image, false, false)).0,
        204
    );
    assert_eq!(
        put(&socket, "/actions", json!({"action_type": "InstanceStart"})).0,
        204
    );
    ember.wait_for("tick-1", BOOT_SECS);
    assert_eq!(
        put(&socket, "/actions", json!({"action_type": "FlushMetrics"})).0,
        204
    );
    let text = std::fs::read_to_string(&metrics_path).unwrap();
    let line: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["id"], "api-test");
    // The guest's driver probes the disk (partition table) at boot.
    assert!(
        line["block"]["data"]["requests"].as_u64().unwrap() > 0,
        "{line}"
    );
    assert!(line["vmm"]["api_requests"].as_u64().unwrap() >= 6, "{line}");
    ember.terminate();
    ember.wait(60);
    let lines = std::fs::read_to_string(&metrics_path)
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, 2, "a final line is written when the VM ends");
}

/// The hostile-client stress of `tests/hostile_client.rs` with a guest running: large and
/// concurrent requests on every route must neither kill Ember (any thread's seccomp filter
/// included) nor stop the guest.
#[test]
fn a_running_guest_survives_a_hostile_client() {
    require_kvm();
    let dir = TempDir::new("api-hostile");
    let (mut ember, socket) = start_api(&dir);
    configure_ticking_guest(&socket);
    assert_eq!(
        put(&socket, "/actions", json!({"action_type": "InstanceStart"})).0,
        204
    );
    ember.wait_for("tick-3", BOOT_SECS);
    let key = "a".repeat(16_000);
    let echo = format!("{{\"{key}\":1}}");
    assert_eq!(
        api_request(&socket, "PUT", "/machine-config", Some(&echo)).0,
        400
    );
    stress_every_route(&socket, dir.path(), 1);
    assert_alive_and_quick(&mut ember, &socket);
    let after = last_tick(&ember.console()).unwrap();
    ember.wait_for(&format!("tick-{}", after + 3), 60);
    ember.terminate();
    let (status, console) = ember.wait(60);
    assert!(status.success(), "{status}; console:\n{console}");
}
