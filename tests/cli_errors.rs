//! Bad input never panics Ember: every mistake in a config file gets one clear line on
//! stderr and a non-zero exit, before any guest runs.

use ember_integration_tests::ember::{
    drive, run_ember_args, run_ember_config, vm_config, EmberRun, EMBER_BOOT_ARGS,
};
use ember_integration_tests::{guest_artifacts, require_kvm, TempDir};
use serde_json::Value;
use std::path::Path;

/// Asserts a clean refusal: non-zero exit, no panic, a stderr line containing `expected`.
fn assert_refused(run: &EmberRun, expected: &str) {
    let stderr = run.stderr();
    assert!(
        !run.output.status.success(),
        "ember accepted it; output:\n{}",
        run.text
    );
    assert_eq!(run.output.status.code(), Some(1), "output:\n{}", run.text);
    assert!(!stderr.contains("panicked"), "ember panicked:\n{stderr}");
    assert!(!run.report.ready, "a guest ran:\n{}", run.text);
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in stderr:\n{stderr}"
    );
    assert!(
        stderr.trim().lines().count() == 1,
        "want one error line, got:\n{stderr}"
    );
}

fn refuse_config(config: &Value, expected: &str) {
    let dir = TempDir::new("cli-errors");
    assert_refused(&run_ember_config(config, &dir), expected);
}

fn good_config() -> Value {
    let guest = guest_artifacts();
    vm_config(
        &guest.vmlinux,
        Some(&guest.initramfs),
        EMBER_BOOT_ARGS,
        1,
        128,
    )
}

#[test]
fn malformed_json_names_line_and_column() {
    let dir = TempDir::new("cli-json");
    let path = dir.path().join("vm.json");
    std::fs::write(
        &path,
        "{\n  \"boot-source\": {\n    \"kernel_image_path\": \"/k\",,\n  }\n}\n",
    )
    .unwrap();
    let run = run_ember_args(&["--no-api", "--config-file", path.to_str().unwrap()]);
    assert_refused(&run, "line 3 column");
}

#[test]
fn missing_config_file_is_named() {
    let run = run_ember_args(&["--no-api", "--config-file", "/nonexistent/vm.json"]);
    assert_refused(&run, "/nonexistent/vm.json");
}

#[test]
fn unknown_fields_are_refused() {
    let mut config = good_config();
    config["machine-config"]["vcpus"] = 2.into();
    refuse_config(&config, "unknown field `vcpus`");
}

#[test]
fn vcpu_count_out_of_range() {
    for count in [0, 33] {
        let mut config = good_config();
        config["machine-config"]["vcpu_count"] = count.into();
        refuse_config(&config, &format!("vcpu_count is {count}"));
    }
}

#[test]
fn memory_zero_or_beyond_the_host() {
    let mut config = good_config();
    config["machine-config"]["mem_size_mib"] = 0.into();
    refuse_config(&config, "mem_size_mib is 0");
    config["machine-config"]["mem_size_mib"] = (1u64 << 40).into();
    refuse_config(&config, "but the host has only");
}

#[test]
fn command_line_too_long() {
    let mut config = good_config();
    config["boot-source"]["boot_args"] = "x".repeat(4096).into();
    refuse_config(&config, "boot_args is 4096 bytes long");
}

#[test]
fn missing_kernel_and_initrd_are_named() {
    let mut config = good_config();
    config["boot-source"]["initrd_path"] = "/nonexistent/initrd".into();
    refuse_config(&config, "/nonexistent/initrd");
    let mut config = good_config();
    config["boot-source"]["kernel_image_path"] = "/nonexistent/vmlinux".into();
    refuse_config(&config, "/nonexistent/vmlinux");
}

#[test]
fn a_file_that_is_not_a_kernel() {
    require_kvm();
    let dir = TempDir::new("cli-not-kernel");
    let fake = dir.path().join("fake-kernel");
    std::fs::write(&fake, vec![0x5a; 64 * 1024]).unwrap();
    let mut config = good_config();
    config["boot-source"]["kernel_image_path"] = fake.to_str().unwrap().into();
    refuse_config(&config, "is not a kernel");
}

#[test]
fn bad_drives_are_refused_before_boot() {
    let guest = guest_artifacts();
    let dir = TempDir::new("cli-drives");
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let cases: Vec<(Value, &str)> = vec![
        (
            drive("rootfs", Path::new("/nonexistent/disk.img"), true, false),
            "/nonexistent/disk.img",
        ),
        (drive("rootfs", dir.path(), true, false), "Is a directory"),
    ];
    for (bad, expected) in cases {
        let mut config = vm_config(&guest.vmlinux, None, EMBER_BOOT_ARGS, 1, 128);
        config["drives"] = Value::Array(vec![bad]);
        refuse_config(&config, expected);
    }
    let mut config = vm_config(&guest.vmlinux, None, EMBER_BOOT_ARGS, 1, 128);
    config["drives"] = Value::Array(vec![
        drive("a", &image, true, false),
        drive("b", &image, true, false),
    ]);
    refuse_config(&config, "both root devices");
    config["drives"] = Value::Array(vec![
        drive("a", &image, true, false),
        drive("a", &image, false, false),
    ]);
    refuse_config(&config, "used by more than one drive");
}

#[test]
fn read_only_image_for_a_writable_drive() {
    let guest = guest_artifacts();
    let dir = TempDir::new("cli-ro-image");
    let image = dir.path().join("ro.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let mut perms = std::fs::metadata(&image).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&image, perms).unwrap();
    let mut config = vm_config(&guest.vmlinux, None, EMBER_BOOT_ARGS, 1, 128);
    config["drives"] = Value::Array(vec![drive("data", &image, false, false)]);
    refuse_config(&config, "no write permission");
}
