//! vCPU and VM state of a running guest: saved while paused, restored, and the guest goes on.
//!
//! Uses the debug-build hook `EMBER_TEST_STATE_ROUND_TRIP` (compiled out of release builds,
//! so this needs `$EMBER_DEBUG_BIN` or `target/debug/ember`): on each pause Ember saves
//! every vCPU's and the VM's KVM state, restores it onto the same VM, saves again, and logs
//! whether the two saves match (clock readings aside).
//!
//! Left for the snapshot work: restoring into a *new* VM in the same process also needs
//! guest memory and device state; `MicroVm::restore_vcpus_and_vm` is the vCPU/VM part of it.

use ember_integration_tests::ember::{
    api_request, ember_debug, last_tick, wait_for_socket, EmberProcess, EMBER_BOOT_ARGS,
};
use ember_integration_tests::{ember_cmd_arg, guest_artifacts, require_kvm, TempDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BOOT_SECS: u64 = 180;
const HOOK: &str = "EMBER_TEST_STATE_ROUND_TRIP";
const EQUAL: &str = "state round trip: equal";

fn request(socket: &Path, method: &str, path: &str, body: Value) -> u16 {
    api_request(socket, method, path, Some(&body.to_string())).0
}

/// One vCPU: in the nested, emulated lab, kicking two L2 vCPUs at once has frozen it.
fn start_ticking_guest(dir: &TempDir) -> (EmberProcess, PathBuf) {
    let socket = dir.path().join("api.sock");
    let args = ["--api-sock", socket.to_str().unwrap(), "--level", "Info"];
    let ember = EmberProcess::spawn_with(&ember_debug(HOOK), &args, &[(HOOK, "1")]);
    wait_for_socket(&socket, 30);
    let guest = guest_artifacts();
    let script = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.1; done";
    let boot_args = format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(script));
    let boot = json!({"kernel_image_path": guest.vmlinux, "initrd_path": guest.initramfs,
                      "boot_args": boot_args});
    assert_eq!(request(&socket, "PUT", "/boot-source", boot), 204);
    let machine = json!({"vcpu_count": 1, "mem_size_mib": 256});
    assert_eq!(request(&socket, "PUT", "/machine-config", machine), 204);
    let start = json!({"action_type": "InstanceStart"});
    assert_eq!(request(&socket, "PUT", "/actions", start), 204);
    (ember, socket)
}

/// The hook logs as the pause request is handled; the console reader may lag behind.
fn wait_for_round_trips(ember: &EmberProcess, count: usize) {
    for _ in 0..100 {
        if ember.console().matches(EQUAL).count() >= count {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "round trip {count}: the saved, restored and saved-again states differ or failed:\n{}",
        ember.console()
    );
}

#[test]
fn a_paused_guest_goes_on_running_after_its_state_is_saved_and_restored() {
    require_kvm();
    let dir = TempDir::new("state-round-trip");
    let (ember, socket) = start_ticking_guest(&dir);
    ember.wait_for("tick-5", BOOT_SECS);
    // Twice: the second round trip starts from a guest that ran on restored state.
    for round in 1..=2 {
        assert_eq!(
            request(&socket, "PATCH", "/vm", json!({"state": "Paused"})),
            204
        );
        wait_for_round_trips(&ember, round);
        std::thread::sleep(Duration::from_secs(1));
        let paused_at = last_tick(&ember.console()).expect("ticks before the pause");
        assert_eq!(
            request(&socket, "PATCH", "/vm", json!({"state": "Resumed"})),
            204
        );
        ember.wait_for(&format!("tick-{}", paused_at + 10), 60);
    }
    ember.terminate();
    let (status, console) = ember.wait(60);
    assert!(status.success(), "ember ended with {status}:\n{console}");
}
