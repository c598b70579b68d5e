//! Baseline: the guest artifacts boot under QEMU's microvm machine with KVM.
//!
//! These tests pin down that the kernel, initramfs, rootfs and guest init
//! from `tools/build-guest` work on a reference VMM, so an Ember boot test
//! failure points at Ember. They need a standard KVM: run them through
//! `tools/kvm-lab` (`tools/test` does).
//!
//! The QEMU command line comes from `qemu_microvm_command` (see its doc for
//! the machine options chosen and why).

use std::process::{Command, Output};

use ember_integration_tests::{
    ember_cmd_arg, guest_artifacts, output_text, qemu_microvm_command, random_hex, require_kvm,
    run_with_timeout, GuestReport, TempDir,
};

/// Generous: the lab runs L2 guests under nested, emulated SVM (tens of
/// seconds per boot on a loaded host).
const BOOT_TIMEOUT_SECS: u64 = 600;
const BASE_CMDLINE: &str = "console=ttyS0 reboot=t panic=-1";

fn run_qemu(mut cmd: Command) -> (Output, String, GuestReport) {
    let out = run_with_timeout(&mut cmd, BOOT_TIMEOUT_SECS);
    let text = output_text(&out);
    let report = GuestReport::parse(&text);
    (out, text, report)
}

#[test]
fn qemu_microvm_boots_initramfs() {
    require_kvm();
    let g = guest_artifacts();
    let cmd = qemu_microvm_command(&g.vmlinux, Some(&g.initramfs), BASE_CMDLINE, 2, 256);
    let (out, text, r) = run_qemu(cmd);

    assert!(
        r.ready,
        "guest never printed the ready marker; console:\n{text}"
    );
    assert_eq!(r.cpus, Some(2), "cpus; console:\n{text}");
    let mem = r
        .memtotal_kb
        .unwrap_or_else(|| panic!("no memtotal_kb; console:\n{text}"));
    assert!(
        (150_000..=256_000).contains(&mem),
        "memtotal_kb={mem}; console:\n{text}"
    );
    assert!(
        out.status.success(),
        "QEMU exited with {}; console:\n{text}",
        out.status
    );
}

#[test]
fn qemu_microvm_rootfs_write_survives() {
    require_kvm();
    let g = guest_artifacts();
    let tmp = TempDir::new("qemu-rootfs");
    let image = g.rootfs_copy(tmp.path());
    let nonce = random_hex(16);
    let path = "/ember-nonce";
    let script = format!("echo {nonce} > {path} && sync");
    let cmdline = format!("{BASE_CMDLINE} root=/dev/vda rw {}", ember_cmd_arg(&script));

    let mut cmd = qemu_microvm_command(&g.vmlinux, None, &cmdline, 2, 256);
    cmd.arg("-drive")
        .arg(format!(
            "id=rootfs,file={},format=raw,if=none",
            image.display()
        ))
        .args(["-device", "virtio-blk-device,drive=rootfs"]);
    let (out, text, r) = run_qemu(cmd);

    assert!(
        r.ready,
        "guest never printed the ready marker; console:\n{text}"
    );
    assert_eq!(r.cmd_exit, Some(0), "ember_cmd exit; console:\n{text}");
    assert!(
        out.status.success(),
        "QEMU exited with {}; console:\n{text}",
        out.status
    );

    let mut debugfs = Command::new("debugfs");
    debugfs.arg("-R").arg(format!("cat {path}")).arg(&image);
    let dbg = run_with_timeout(&mut debugfs, 60);
    let stdout = String::from_utf8_lossy(&dbg.stdout);
    assert!(
        dbg.status.success() && stdout.lines().any(|l| l.trim() == nonce),
        "nonce {nonce} not found in {path} of {}: {}",
        image.display(),
        output_text(&dbg)
    );
}
