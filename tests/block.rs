//! virtio-block with real guests: what the guest writes reaches the host's file, what the
//! host put in a file is what the guest reads, and a read-only drive stays unchanged.

use ember_integration_tests::ember::{
    drive, run_ember_config, vm_config, EmberRun, EMBER_BOOT_ARGS,
};
use ember_integration_tests::{
    ember_cmd_arg, guest_artifacts, random_hex, require_kvm, run_with_timeout, TempDir,
};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const DATA_SIZE: usize = 4 << 20;

/// A deterministic, position-dependent pattern (no two sectors alike).
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 512) as u8) ^ (i as u8).wrapping_mul(31))
        .collect()
}

fn sha256_hex(path: &Path) -> String {
    let out = run_with_timeout(Command::new("sha256sum").arg(path), 60);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn run_script_with_drives(dir: &TempDir, script: &str, drives: Vec<Value>) -> EmberRun {
    let guest = guest_artifacts();
    let args = format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(script));
    let mut config = vm_config(&guest.vmlinux, Some(&guest.initramfs), &args, 1, 128);
    config["drives"] = Value::Array(drives);
    let run = run_ember_config(&config, dir);
    assert!(
        run.output.status.success(),
        "ember failed; output:\n{}",
        run.text
    );
    run
}

#[test]
fn guest_writes_to_ext4_root_reach_the_host_image() {
    require_kvm();
    let guest = guest_artifacts();
    let dir = TempDir::new("block-root");
    let image = guest.rootfs_copy(dir.path());
    let nonce = random_hex(16);
    let script =
        format!("grep -q ' / ext4 rw' /proc/mounts || exit 3\necho {nonce} > /nonce.txt && sync");
    let args = format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(&script));
    let mut config = vm_config(&guest.vmlinux, None, &args, 1, 128);
    config["drives"] = Value::Array(vec![drive("rootfs", &image, true, false)]);
    let run = run_ember_config(&config, &dir);
    assert_eq!(run.report.cmd_exit, Some(0), "output:\n{}", run.text);
    assert!(run.output.status.success(), "output:\n{}", run.text);
    let out = run_with_timeout(
        Command::new("debugfs")
            .arg("-R")
            .arg("cat /nonce.txt")
            .arg(&image),
        60,
    );
    let content = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        content.trim(),
        nonce,
        "debugfs saw:\n{content}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn data_drive_reads_match_and_writes_land_at_the_offset() {
    require_kvm();
    let dir = TempDir::new("block-data");
    let image = dir.path().join("data.img");
    std::fs::write(&image, pattern(DATA_SIZE)).unwrap();
    let host_sum = sha256_hex(&image);
    let marker = random_hex(16);
    // Read the whole drive, then write the marker at 1 MiB + 512 with a flush.
    let script = format!(
        "echo guest-sum=$(sha256sum /dev/vda | cut -d' ' -f1)\n\
         echo guest-size=$(cat /sys/block/vda/size)\n\
         printf '{marker}' | dd of=/dev/vda bs=512 seek=2049 conv=notrunc,fsync 2>/dev/null || exit 4"
    );
    let run = run_script_with_drives(&dir, &script, vec![drive("data", &image, false, false)]);
    assert_eq!(run.report.cmd_exit, Some(0), "output:\n{}", run.text);
    assert!(
        run.text.contains(&format!("guest-sum={host_sum}")),
        "host sum {host_sum}; output:\n{}",
        run.text
    );
    assert!(
        run.text
            .contains(&format!("guest-size={}", DATA_SIZE / 512)),
        "output:\n{}",
        run.text
    );
    let bytes = std::fs::read(&image).unwrap();
    let at = 2049 * 512;
    assert_eq!(&bytes[at..at + marker.len()], marker.as_bytes());
    // Nothing else changed.
    let expected = pattern(DATA_SIZE);
    assert_eq!(&bytes[..at], &expected[..at]);
    assert_eq!(&bytes[at + 512..], &expected[at + 512..]);
}

#[test]
fn read_only_drive_refuses_writes_and_stays_unchanged() {
    require_kvm();
    let dir = TempDir::new("block-ro");
    let image = dir.path().join("ro.img");
    std::fs::write(&image, pattern(DATA_SIZE)).unwrap();
    let before = sha256_hex(&image);
    let script = "echo ro=$(cat /sys/block/vda/ro)\n\
                  if dd if=/dev/zero of=/dev/vda bs=512 count=8 conv=fsync 2>/dev/null; then echo write-accepted; fi\n\
                  head -c 4096 /dev/vda | sha256sum";
    let run = run_script_with_drives(&dir, script, vec![drive("ro", &image, false, true)]);
    assert!(
        run.text.contains("ro=1"),
        "guest does not see a read-only disk; output:\n{}",
        run.text
    );
    assert!(
        !run.text.contains("write-accepted"),
        "output:\n{}",
        run.text
    );
    assert_eq!(sha256_hex(&image), before, "the read-only image changed");
}

#[test]
fn two_data_drives_appear_in_config_order() {
    require_kvm();
    let dir = TempDir::new("block-two");
    let first = dir.path().join("a.img");
    let second = dir.path().join("b.img");
    std::fs::write(&first, vec![0xaa; 1 << 20]).unwrap();
    std::fs::write(&second, vec![0xbb; 2 << 20]).unwrap();
    let script = "echo sizes=$(cat /sys/block/vda/size),$(cat /sys/block/vdb/size)\n\
                  echo ids=$(cat /sys/block/vda/serial 2>/dev/null),$(cat /sys/block/vdb/serial 2>/dev/null)";
    let drives = vec![
        drive("first", &first, false, false),
        drive("second", &second, false, false),
    ];
    let run = run_script_with_drives(&dir, script, drives);
    assert!(
        run.text.contains("sizes=2048,4096"),
        "output:\n{}",
        run.text
    );
    assert!(
        run.text.contains("ids=first,second"),
        "drive ids (GET_ID); output:\n{}",
        run.text
    );
}
