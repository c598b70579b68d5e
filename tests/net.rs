//! virtio-net end to end: a real guest on two TAPs in a private network namespace.
//!
//! The host side lives in `ember-net-<pid>`: `tap0` (172.30.0.1/24) and `tap1`
//! (172.31.0.1/24), Ember runs there through `ip netns exec`, and the host's servers run on
//! threads that `setns` into it. Nothing leaves the namespace.
//!
//! The guest (see `resources/guest/init`: it runs the base64 script given as `ember_cmd=`
//! and prints `EMBER-GUEST-CMD-EXIT: <status>`) configures eth0/eth1, pings the host on
//! both, waits (HTTP `GET /go`) while the host pings it, then moves 64 MiB each way on eth0
//! and 8 MiB each way on eth1; md5 sums are compared on both sides.
//!
//! Needs root and a standard KVM: run it through the lab,
//! `tools/kvm-lab -- cargo test -p ember-integration-tests --test net`.
//! Env: `EMBER_BIN` (default `target/release/ember`), `EMBER_GUEST_DIR` (else the last
//! stdout line of `tools/build-guest`).

mod netlab;

use ember_integration_tests::ember::api_request;
use netlab::*;
use std::path::Path;
use std::time::Duration;

const BIG: usize = 64 << 20;
const SMALL: usize = 8 << 20;

/// The guest side. Each step's failure has its own exit status.
fn guest_script() -> String {
    format!(
        r#"for i in 0 1; do ip link set eth$i up && ip addr add 172.3$i.0.2/24 dev eth$i || exit 1$i; done
for i in 0 1; do ping -c 2 -W 5 172.3$i.0.1 >/dev/null || exit 2$i; done
echo EMBER-NET: up
wget -q -O /tmp/go http://172.30.0.1:{HTTP}/go || exit 30
dd if=/dev/urandom of=/tmp/blob bs=1M count={big_mib} 2>/dev/null
echo "EMBER-NET: put0 $(md5sum </tmp/blob)"
nc 172.30.0.1 {PUT} </tmp/blob || exit 31
echo "EMBER-NET: get0 $(wget -q -O - http://172.30.0.1:{HTTP}/big | md5sum)"
head -c {SMALL} /tmp/blob >/tmp/small
echo "EMBER-NET: put1 $(md5sum </tmp/small)"
nc 172.31.0.1 {PUT} </tmp/small || exit 32
echo "EMBER-NET: get1 $(wget -q -O - http://172.31.0.1:{HTTP}/small | md5sum)"
cat /sys/class/net/eth0/statistics/rx_bytes /sys/class/net/eth1/statistics/rx_bytes
"#,
        big_mib = BIG >> 20,
    )
}

#[test]
fn guest_talks_to_the_host_over_two_taps() {
    require_root_and_kvm();
    let guest = guest_dir();
    let tmp = TempDir::new("net");
    let ns = Netns::create(&[("tap0", "172.30.0.1/24"), ("tap1", "172.31.0.1/24")]);
    let big = tmp.random_file("big", BIG);
    let small = tmp.random_file("small", SMALL);
    let host = HostServers::start(&ns, &tmp, &[("/big", &big), ("/small", &small)]);

    let config = ember_config(&guest, &guest_script(), &["tap0", "tap1"]);
    let mut vm = Ember::start_in(&ns, &tmp, &config);
    vm.wait_for_line("EMBER-NET: up", Duration::from_secs(300));
    for addr in ["172.30.0.2", "172.31.0.2"] {
        ns.ping(addr);
    }
    host.release_go();
    let console = vm.wait_exit(Duration::from_secs(900));

    assert_eq!(
        guest_exit(&console),
        Some(0),
        "guest script; console:\n{console}"
    );
    let report = |key: &str| guest_value(&console, key).unwrap_or_default();
    let uploads = host.uploads(2);
    assert_eq!(uploads.len(), 2, "uploads; console:\n{console}");
    assert_eq!(report("put0"), md5_of(&uploads[0]), "guest->host on eth0");
    assert_eq!(report("put1"), md5_of(&uploads[1]), "guest->host on eth1");
    assert_eq!(report("get0"), md5_of(&big), "host->guest on eth0");
    assert_eq!(report("get1"), md5_of(&small), "host->guest on eth1");
    assert_eq!(std::fs::metadata(&uploads[0]).unwrap().len(), BIG as u64);
    assert_eq!(std::fs::metadata(&uploads[1]).unwrap().len(), SMALL as u64);
}

#[test]
fn a_missing_tap_fails_the_boot_with_its_name() {
    require_root_and_kvm();
    let guest = guest_dir();
    let tmp = TempDir::new("net-missing");
    let ns = Netns::create(&[("tap0", "172.30.0.1/24")]);
    let config = ember_config(&guest, "true", &["tap0", "nosuchtap9"]);
    let mut vm = Ember::start_in(&ns, &tmp, &config);
    let (status, stderr) = vm.wait_failure(Duration::from_secs(120));
    assert!(!status.success(), "ember exited with {status}");
    assert!(stderr.contains("nosuchtap9"), "stderr: {stderr}");
    assert!(stderr.contains("eth1"), "stderr: {stderr}");
}

/// `net.<iface>.rx_packets` of a fresh metrics line (FlushMetrics, then the file's last line).
fn rx_packets(socket: &Path, metrics: &Path, iface: &str) -> u64 {
    let flush = r#"{"action_type": "FlushMetrics"}"#;
    let (status, body) = api_request(socket, "PUT", "/actions", Some(flush));
    assert_eq!(status, 204, "FlushMetrics: {body}");
    let text = std::fs::read_to_string(metrics).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    line["net"][iface]["rx_packets"].as_u64().unwrap()
}

/// A paused VM's devices stop too: frames sent to its TAP wait there (the RX counters do
/// not move) and reach the guest after the resume.
#[test]
fn pause_holds_incoming_frames_until_resume() {
    require_root_and_kvm();
    let guest = guest_dir();
    let tmp = TempDir::new("net-pause");
    let ns = Netns::create(&[("tap0", "172.30.0.1/24")]);
    let script = "ip link set eth0 up && ip addr add 172.30.0.2/24 dev eth0 || exit 10
echo EMBER-NET: up
sleep 600";
    let metrics = tmp.path().join("metrics.json");
    std::fs::write(&metrics, "").unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&ember_config(&guest, script, &["tap0"])).unwrap();
    config["metrics"] = serde_json::json!({ "metrics_path": metrics });
    let socket = tmp.path().join("api.sock");
    let mut vm = Ember::start_with_api(&ns, &tmp, &config.to_string(), &socket);
    vm.wait_for_line("EMBER-NET: up", Duration::from_secs(300));
    ns.ping("172.30.0.2");

    let paused = r#"{"state": "Paused"}"#;
    assert_eq!(api_request(&socket, "PATCH", "/vm", Some(paused)).0, 204);
    let before = rx_packets(&socket, &metrics, "eth0");
    // Pings (and, once the ARP entry is stale, ARP requests) go into the TAP unanswered.
    let pings = ["ping", "-c", "5", "-W", "1", "172.30.0.2"];
    let _ = ns.command("busybox").args(pings).output();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        rx_packets(&socket, &metrics, "eth0"),
        before,
        "frames reached a paused guest"
    );

    let resumed = r#"{"state": "Resumed"}"#;
    assert_eq!(api_request(&socket, "PATCH", "/vm", Some(resumed)).0, 204);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rx_packets(&socket, &metrics, "eth0") < before + 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiting frames never arrived"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ns.ping("172.30.0.2");
}

/// One snapshot, three clones at once, each restored in its own network namespace onto its
/// own TAP (`network_overrides`): each runs and answers pings from its host side.
#[test]
fn clones_of_one_snapshot_run_at_once_on_their_own_taps() {
    require_root_and_kvm();
    let guest = guest_dir();
    let tmp = TempDir::new("net-clones");
    let ns = Netns::create(&[("tap0", "172.30.0.1/24")]);
    let script = "ip link set eth0 up && ip addr add 172.30.0.2/24 dev eth0 || exit 10
echo EMBER-NET: up
while true; do sleep 1; done";
    let config = ember_config(&guest, script, &["tap0"]);
    let socket = tmp.path().join("origin.sock");
    let mut origin = Ember::start_with_api(&ns, &tmp, &config, &socket);
    origin.wait_for_line("EMBER-NET: up", Duration::from_secs(300));
    ns.ping("172.30.0.2");
    let paused = r#"{"state": "Paused"}"#;
    assert_eq!(api_request(&socket, "PATCH", "/vm", Some(paused)).0, 204);
    let (state, memory) = (tmp.path().join("vm.snap"), tmp.path().join("vm.mem"));
    let create = serde_json::json!({"snapshot_path": state, "mem_file_path": memory});
    let (status, body) = api_request(
        &socket,
        "PUT",
        "/snapshot/create",
        Some(&create.to_string()),
    );
    assert_eq!(status, 204, "{body}");
    drop(origin);

    let clones: Vec<(Netns, Ember, std::path::PathBuf)> = (1..=3)
        .map(|n| {
            let tap = format!("clone{n}");
            let ns = Netns::create(&[(tap.as_str(), "172.30.0.1/24")]);
            let socket = tmp.path().join(format!("clone{n}.sock"));
            let ember = Ember::start_unconfigured(&ns, &socket);
            (ns, ember, socket)
        })
        .collect();
    let loads: Vec<_> = clones
        .iter()
        .enumerate()
        .map(|(i, (_, _, socket))| {
            let load = serde_json::json!({
                "snapshot_path": state,
                "mem_backend": {"backend_type": "File", "backend_path": memory},
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": format!("clone{}", i + 1)}],
                "resume_vm": true,
            });
            let socket = socket.clone();
            std::thread::spawn(move || {
                ember_integration_tests::ember::wait_for_socket(&socket, 30);
                api_request(&socket, "PUT", "/snapshot/load", Some(&load.to_string()))
            })
        })
        .collect();
    for load in loads {
        let (status, body) = load.join().unwrap();
        assert_eq!(status, 204, "{body}");
    }
    for (ns, _, _) in &clones {
        ns.ping("172.30.0.2");
    }
}
