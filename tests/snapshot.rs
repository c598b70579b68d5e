//! Snapshots end to end: a running guest is paused and snapshotted, its process killed, and
//! a new process restores it from the files; the guest goes on where it was.
//!
//! The guest prints `tick-<n> boot=<boot id> up=<uptime> disk=<first bytes of /dev/vda>` five
//! times a second, dropping the page cache first, so each line reads its data drive again
//! through virtio-block. The host checks that the counter continues, the boot id is the
//! same (no reboot), uptime does not go back, and the drive still holds what the guest wrote
//! to it before the snapshot.

use ember_integration_tests::ember::{api_request, wait_for_socket, EmberProcess, EMBER_BOOT_ARGS};
use ember_integration_tests::hostile::fault_message;
use ember_integration_tests::{ember_cmd_arg, guest_artifacts, random_hex, require_kvm, TempDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const BOOT_SECS: u64 = 180;

fn put(socket: &Path, path: &str, body: Value) -> (u16, String) {
    api_request(socket, "PUT", path, Some(&body.to_string()))
}

fn start_api(dir: &Path, name: &str) -> (EmberProcess, PathBuf) {
    let socket = dir.join(format!("{name}.sock"));
    let ember = EmberProcess::spawn(&["--api-sock", socket.to_str().unwrap()]);
    wait_for_socket(&socket, 30);
    (ember, socket)
}

/// One parsed tick line.
#[derive(Clone, Debug, PartialEq)]
struct Tick {
    n: u64,
    boot: String,
    uptime: f64,
    disk: String,
}

fn ticks(console: &str) -> Vec<Tick> {
    console
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("tick-")?;
            let mut fields = rest.split_whitespace();
            let n = fields.next()?.parse().ok()?;
            let mut field = |key: &str| fields.next()?.strip_prefix(key).map(str::to_string);
            Some(Tick {
                n,
                boot: field("boot=")?,
                uptime: field("up=")?.parse().ok()?,
                disk: field("disk=")?,
            })
        })
        .collect()
}

/// Boots the counting guest with a data drive; the guest writes `nonce` to the drive first.
fn boot_counting_guest(socket: &Path, disk: &Path, nonce: &str) {
    let guest = guest_artifacts();
    let script = format!(
        "echo {nonce} | dd of=/dev/vda conv=fsync 2>/dev/null || exit 3
boot=$(cat /proc/sys/kernel/random/boot_id)
i=0
while true; do
  echo 3 > /proc/sys/vm/drop_caches
  echo tick-$i boot=$boot up=$(cut -d' ' -f1 /proc/uptime) disk=$(head -c {len} /dev/vda)
  i=$((i+1)); sleep 0.2
done",
        len = nonce.len()
    );
    let boot_args = format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(&script));
    let boot = json!({"kernel_image_path": guest.vmlinux, "initrd_path": guest.initramfs,
                      "boot_args": boot_args});
    assert_eq!(put(socket, "/boot-source", boot).0, 204);
    let machine = json!({"vcpu_count": 1, "mem_size_mib": 128});
    assert_eq!(put(socket, "/machine-config", machine).0, 204);
    let drive = json!({"drive_id": "data", "path_on_host": disk, "is_root_device": false});
    assert_eq!(put(socket, "/drives/data", drive).0, 204);
    assert_eq!(
        put(socket, "/actions", json!({"action_type": "InstanceStart"})).0,
        204
    );
}

#[test]
fn a_restored_guest_goes_on_where_it_was() {
    require_kvm();
    let dir = TempDir::new("snapshot");
    let disk = dir.path().join("data.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let nonce = random_hex(8);
    let (first, socket) = start_api(dir.path(), "first");
    boot_counting_guest(&socket, &disk, &nonce);
    first.wait_for("tick-5 ", BOOT_SECS);

    let paused = json!({"state": "Paused"});
    assert_eq!(
        api_request(&socket, "PATCH", "/vm", Some(&paused.to_string())).0,
        204
    );
    let (state, memory) = (dir.path().join("vm.snap"), dir.path().join("vm.mem"));
    let create = json!({"snapshot_path": state, "mem_file_path": memory});
    let (status, body) = put(&socket, "/snapshot/create", create);
    assert_eq!(status, 204, "{body}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = ticks(&first.console());
    let last = before.last().expect("ticks before the snapshot").clone();
    drop(first); // SIGKILL: nothing of the first process survives but the files.
    assert_eq!(std::fs::metadata(&memory).unwrap().len(), 128 << 20);

    let (second, socket) = start_api(dir.path(), "second");
    let load = json!({"snapshot_path": state,
                      "mem_backend": {"backend_type": "File", "backend_path": memory},
                      "resume_vm": true});
    let (status, body) = put(&socket, "/snapshot/load", load);
    assert_eq!(status, 204, "{body}");
    second.wait_for(&format!("tick-{} ", last.n + 3), 120);
    let after = ticks(&second.console());
    let first_after = &after[0];
    assert_eq!(first_after.n, last.n + 1, "the counter goes on: {after:?}");
    assert!(
        after.iter().all(|t| t.boot == last.boot),
        "no reboot: {after:?}"
    );
    assert!(
        first_after.uptime >= last.uptime,
        "uptime went back: {after:?}"
    );
    assert!(
        after.iter().all(|t| t.disk == nonce),
        "the drive: {after:?}"
    );
    let config: Value =
        serde_json::from_str(&api_request(&socket, "GET", "/vm/config", None).1).unwrap();
    assert_eq!(config["drives"][0]["drive_id"], "data");
    assert_eq!(config["machine-config"]["mem_size_mib"], 128);
    let info: Value = serde_json::from_str(&api_request(&socket, "GET", "/", None).1).unwrap();
    assert_eq!(info["state"], "Running");
    second.terminate();
    let (status, console) = second.wait(60);
    assert!(status.success(), "{status}: {console}");
}

#[test]
fn bad_snapshots_are_refused_and_a_good_one_still_loads() {
    require_kvm();
    let dir = TempDir::new("snapshot-bad");
    let disk = dir.path().join("data.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let nonce = random_hex(8);
    let (first, socket) = start_api(dir.path(), "first");
    boot_counting_guest(&socket, &disk, &nonce);
    first.wait_for("tick-2 ", BOOT_SECS);
    let create = |path: &str| {
        let (state, memory) = (dir.path().join("vm.snap"), dir.path().join("vm.mem"));
        put(
            &socket,
            path,
            json!({"snapshot_path": state, "mem_file_path": memory}),
        )
    };
    let (status, body) = create("/snapshot/create");
    assert_eq!(status, 400, "a running VM cannot be snapshotted");
    assert!(
        fault_message(&body).starts_with("Create snapshot error:"),
        "{body}"
    );
    let paused = json!({"state": "Paused"});
    assert_eq!(
        api_request(&socket, "PATCH", "/vm", Some(&paused.to_string())).0,
        204
    );
    assert_eq!(create("/snapshot/create").0, 204);
    drop(first);

    let state = dir.path().join("vm.snap");
    let memory = dir.path().join("vm.mem");
    let good = std::fs::read(&state).unwrap();
    let damaged = dir.path().join("damaged.snap");
    let short_mem = dir.path().join("short.mem");
    std::fs::write(&short_mem, vec![0u8; 4096]).unwrap();
    let (second, socket) = start_api(dir.path(), "second");
    let load = |snap: &Path, mem: &Path| {
        put(
            &socket,
            "/snapshot/load",
            json!({"snapshot_path": snap, "mem_file_path": mem, "resume_vm": true}),
        )
    };
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage!".repeat(10), "wrong magic"),
        (good[..good.len() / 2].to_vec(), "truncated"),
    ];
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x20;
    cases.push((flipped, "checksum"));
    for (bytes, why) in cases {
        std::fs::write(&damaged, bytes).unwrap();
        let (status, body) = load(&damaged, &memory);
        assert_eq!(status, 400, "{why}");
        let message = fault_message(&body);
        assert!(
            message.starts_with("Load snapshot error:") && message.contains(why),
            "{message}"
        );
    }
    let (status, body) = load(&dir.path().join("missing.snap"), &memory);
    assert!(
        status == 400 && fault_message(&body).contains("No such file"),
        "{body}"
    );
    let (status, body) = load(&state, &short_mem);
    assert!(
        status == 400 && fault_message(&body).contains("bytes"),
        "{body}"
    );
    let uffd = json!({"snapshot_path": state,
                      "mem_backend": {"backend_type": "Uffd", "backend_path": "/tmp/uffd.sock"}});
    let (status, body) = put(&socket, "/snapshot/load", uffd);
    assert!(
        status == 400 && fault_message(&body).contains("Uffd"),
        "{body}"
    );

    let (status, body) = load(&state, &memory);
    assert_eq!(status, 204, "the good snapshot after the bad ones: {body}");
    second.wait_for("tick-4 ", 120);
    let (status, body) = load(&state, &memory);
    assert_eq!(status, 400, "a second load: {body}");
}
