//! Rate limiters with a real guest: an O_DIRECT read from a limited drive takes the time its
//! bandwidth bucket allows while an unlimited drive is clearly faster, and a PATCH on the
//! running VM changes the rate at once.

use ember_integration_tests::ember::EMBER_BOOT_ARGS;
use ember_integration_tests::ember::{api_request, drive, vm_config, EmberProcess};
use ember_integration_tests::{ember_cmd_arg, guest_artifacts, require_kvm, TempDir};
use serde_json::json;
use std::fs;

const KIB: u64 = 1024;
/// What the guest reads from each drive, per measurement.
const READ: u64 = 1024 * KIB;
const DRIVE_SIZE: u64 = 4 * READ;
/// The first limit: 64 KiB per 250 ms, 256 KiB/s.
const SLOW: (u64, u64) = (64 * KIB, 250);
/// After the PATCH: 128 KiB per 250 ms, 512 KiB/s.
const FASTER: (u64, u64) = (128 * KIB, 250);

/// Reads READ bytes from `dev` at `offset` MiB with O_DIRECT (plain dd if this busybox has
/// no iflag=direct) and prints `EMBER-RL: <tag> <seconds>` from /proc/uptime.
fn timed_read(dev: &str, offset_mib: u64, tag: &str) -> String {
    let count = READ / (64 * KIB);
    let skip = offset_mib * 16;
    let dd = format!("dd if={dev} of=/dev/null bs=64k count={count} skip={skip}");
    format!(
        "a=$(cut -d' ' -f1 /proc/uptime)\n\
         {dd} iflag=direct 2>/dev/null || {dd} 2>/dev/null || exit 4\n\
         b=$(cut -d' ' -f1 /proc/uptime)\n\
         echo \"EMBER-RL: {tag} $(awk \"BEGIN {{print $b - $a}}\")\"\n"
    )
}

/// The seconds the guest reported for `tag`.
fn seconds(console: &str, tag: &str) -> f64 {
    let prefix = format!("EMBER-RL: {tag} ");
    let line = console
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()));
    let line = line.unwrap_or_else(|| panic!("no {tag} timing; console:\n{console}"));
    line.trim().parse().unwrap()
}

/// How long READ bytes take through a bucket of (size, refill_ms) that starts full.
fn expected(bucket: (u64, u64)) -> f64 {
    let rate = bucket.0 as f64 / (bucket.1 as f64 / 1000.0);
    (READ - bucket.0) as f64 / rate
}

fn bandwidth(bucket: (u64, u64)) -> serde_json::Value {
    json!({"bandwidth": {"size": bucket.0, "refill_time": bucket.1}})
}

#[test]
fn limited_drive_reads_at_its_rate_and_a_patch_changes_it() {
    require_kvm();
    let guest = guest_artifacts();
    let dir = TempDir::new("ratelimit");
    let mut drives = Vec::new();
    for (id, limit) in [("fast", None), ("slow", Some(bandwidth(SLOW)))] {
        let path = dir.path().join(format!("{id}.img"));
        fs::File::create(&path)
            .unwrap()
            .set_len(DRIVE_SIZE)
            .unwrap();
        let mut entry = drive(id, &path, false, true);
        if let Some(limit) = limit {
            entry["rate_limiter"] = limit;
        }
        drives.push(entry);
    }
    // Config order: fast is /dev/vda, slow /dev/vdb.
    let script = [
        timed_read("/dev/vda", 0, "fast"),
        timed_read("/dev/vdb", 0, "slow"),
        "echo EMBER-RL: patch-me\nsleep 4\n".to_string(),
        timed_read("/dev/vdb", 1, "patched"),
    ]
    .concat();
    let args = format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(&script));
    let mut config = vm_config(&guest.vmlinux, Some(&guest.initramfs), &args, 1, 128);
    config["drives"] = json!(drives);
    let config_path = dir.path().join("config.json");
    fs::write(&config_path, config.to_string()).unwrap();
    let socket = dir.path().join("api.sock");
    let ember = EmberProcess::spawn(&[
        "--api-sock",
        socket.to_str().unwrap(),
        "--config-file",
        config_path.to_str().unwrap(),
    ]);
    ember.wait_for("EMBER-RL: patch-me", 240);
    let body = json!({"drive_id": "slow", "rate_limiter": bandwidth(FASTER)}).to_string();
    let (status, reply) = api_request(&socket, "PATCH", "/drives/slow", Some(&body));
    assert_eq!(status, 204, "{reply}");
    let (_, vm) = api_request(&socket, "GET", "/vm/config", None);
    assert!(
        vm.contains("131072"),
        "GET /vm/config lacks the new limit: {vm}"
    );
    ember.wait_for("EMBER-GUEST-CMD-EXIT: 0", 120);
    let console = ember.console();
    let (fast, slow, patched) = (
        seconds(&console, "fast"),
        seconds(&console, "slow"),
        seconds(&console, "patched"),
    );
    eprintln!(
        "fast {fast} s, slow {slow} s (want {}), patched {patched} s (want {})",
        expected(SLOW),
        expected(FASTER)
    );
    // Never faster than the bucket allows (less /proc/uptime's 10 ms steps); slower by at
    // most a second of lab overhead.
    let within = |got: f64, want: f64| got >= want - 0.05 && got <= want + 1.0;
    assert!(within(slow, expected(SLOW)), "slow read took {slow} s");
    assert!(
        within(patched, expected(FASTER)),
        "patched read took {patched} s"
    );
    assert!(fast < slow / 3.0, "unlimited {fast} s vs limited {slow} s");
}
