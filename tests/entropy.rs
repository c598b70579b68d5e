//! virtio-rng with a real guest: /dev/hwrng is the virtio device and gives fresh bytes.

use std::collections::HashSet;

use ember_integration_tests::ember::{drive, run_ember_config, vm_config, EMBER_BOOT_ARGS};
use ember_integration_tests::{ember_cmd_arg, guest_artifacts, require_kvm, TempDir};
use serde_json::{json, Value};

const LEN: usize = 1 << 20;

#[test]
fn the_guest_reads_a_mebibyte_of_fresh_bytes_from_hwrng() {
    require_kvm();
    let guest = guest_artifacts();
    let dir = TempDir::new("entropy");
    let out = dir.path().join("random.img");
    std::fs::write(&out, vec![0u8; LEN]).unwrap();
    let script = "echo \"RNG-CURRENT $(cat /sys/class/misc/hw_random/rng_current)\"\n\
                  head -c 1048576 /dev/hwrng > /dev/vda && sync";
    let args = format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(script));
    let mut config = vm_config(&guest.vmlinux, Some(&guest.initramfs), &args, 1, 128);
    config["drives"] = Value::Array(vec![drive("out", &out, false, false)]);
    config["entropy"] = json!({});
    let run = run_ember_config(&config, &dir);
    assert_eq!(run.report.cmd_exit, Some(0), "output:\n{}", run.text);
    let current = run
        .text
        .lines()
        .find_map(|l| l.trim().strip_prefix("RNG-CURRENT "))
        .unwrap_or_default();
    assert!(
        current.contains("virtio"),
        "rng_current {current:?}:\n{}",
        run.text
    );
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len(), LEN);
    assert!(bytes.iter().any(|&b| b != 0), "all zeros");
    let mut seen = HashSet::new();
    for block in bytes.chunks(16) {
        assert!(seen.insert(block), "a 16-byte block repeats");
    }
}

#[test]
fn an_entropy_rate_limiter_is_refused_by_name() {
    require_kvm();
    let guest = guest_artifacts();
    let dir = TempDir::new("entropy-limited");
    let mut config = vm_config(
        &guest.vmlinux,
        Some(&guest.initramfs),
        EMBER_BOOT_ARGS,
        1,
        128,
    );
    config["entropy"] = json!({"rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}});
    let run = run_ember_config(&config, &dir);
    assert_eq!(run.output.status.code(), Some(1), "{}", run.text);
    assert!(run.stderr().contains("rate_limiter"), "{}", run.stderr());
}
