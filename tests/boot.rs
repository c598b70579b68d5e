//! Ember boots real Linux guests (through `tools/kvm-lab`) and the guest sees what the
//! config asked for: its CPUs, its memory, its command line; the process ends as the
//! guest does.

use ember_integration_tests::ember::{run_ember_config, vm_config, EmberRun, EMBER_BOOT_ARGS};
use ember_integration_tests::{ember_cmd_arg, guest_artifacts, random_hex, require_kvm, TempDir};

fn assert_booted(run: &EmberRun, cpus: u32, mem_mib: u64) {
    let text = &run.text;
    assert!(
        run.report.ready,
        "guest never reached init; output:\n{text}"
    );
    assert_eq!(
        run.report.cpus,
        Some(cpus),
        "CPU count the guest saw; output:\n{text}"
    );
    let mem_kb = run
        .report
        .memtotal_kb
        .unwrap_or_else(|| panic!("no MemTotal; output:\n{text}"));
    // The kernel keeps some memory for itself: MemTotal is a bit under the RAM size.
    let ram_kb = mem_mib * 1024;
    assert!(
        mem_kb <= ram_kb && mem_kb > ram_kb * 8 / 10,
        "MemTotal {mem_kb} kB for {mem_mib} MiB; output:\n{text}"
    );
    assert!(
        run.output.status.success(),
        "ember exited with {}; output:\n{text}",
        run.output.status
    );
}

#[test]
fn elf_vmlinux_with_initramfs_boots_with_two_vcpus() {
    require_kvm();
    let guest = guest_artifacts();
    let dir = TempDir::new("boot-elf");
    let config = vm_config(
        &guest.vmlinux,
        Some(&guest.initramfs),
        EMBER_BOOT_ARGS,
        2,
        256,
    );
    assert_booted(&run_ember_config(&config, &dir), 2, 256);
}

#[test]
fn bzimage_with_initramfs_boots() {
    require_kvm();
    let guest = guest_artifacts();
    let dir = TempDir::new("boot-bzimage");
    let config = vm_config(
        &guest.bzimage,
        Some(&guest.initramfs),
        EMBER_BOOT_ARGS,
        1,
        128,
    );
    let run = run_ember_config(&config, &dir);
    assert_booted(&run, 1, 128);
}

#[test]
fn four_vcpus_and_a_gib_of_memory_are_all_seen() {
    require_kvm();
    let guest = guest_artifacts();
    let dir = TempDir::new("boot-smp");
    let config = vm_config(
        &guest.vmlinux,
        Some(&guest.initramfs),
        EMBER_BOOT_ARGS,
        4,
        1024,
    );
    let run = run_ember_config(&config, &dir);
    assert_booted(&run, 4, 1024);
    assert!(
        run.text
            .contains("smpboot: Total of 4 processors activated"),
        "output:\n{}",
        run.text
    );
}

#[test]
fn guest_gets_the_command_line_and_runs_the_test_script() {
    require_kvm();
    let guest = guest_artifacts();
    let dir = TempDir::new("boot-cmdline");
    let nonce = random_hex(8);
    let script =
        format!("grep -q 'ember_nonce={nonce}' /proc/cmdline || exit 9\necho seen-{nonce}\nexit 7");
    let args = format!(
        "{EMBER_BOOT_ARGS} ember_nonce={nonce} {}",
        ember_cmd_arg(&script)
    );
    let config = vm_config(&guest.vmlinux, Some(&guest.initramfs), &args, 1, 128);
    let run = run_ember_config(&config, &dir);
    assert!(
        run.text.contains(&format!("seen-{nonce}")),
        "output:\n{}",
        run.text
    );
    assert_eq!(run.report.cmd_exit, Some(7), "output:\n{}", run.text);
    assert!(run.output.status.success(), "output:\n{}", run.text);
}

#[test]
fn guest_triple_fault_is_a_failure_with_a_reason() {
    require_kvm();
    let guest = guest_artifacts();
    let dir = TempDir::new("boot-triple-fault");
    // reboot=t makes the guest's reboot a deliberate triple fault.
    let args = "console=ttyS0 reboot=t panic=1 i8042.noaux";
    let config = vm_config(&guest.vmlinux, Some(&guest.initramfs), args, 1, 128);
    let run = run_ember_config(&config, &dir);
    assert!(run.report.ready, "output:\n{}", run.text);
    assert_eq!(run.output.status.code(), Some(2), "output:\n{}", run.text);
    assert!(
        run.stderr().contains("triple-faulted"),
        "stderr:\n{}",
        run.stderr()
    );
}

#[test]
fn boot_timer_logs_boot_time() {
    require_kvm();
    let guest = guest_artifacts();
    let dir = TempDir::new("boot-timer");
    let config = vm_config(
        &guest.vmlinux,
        Some(&guest.initramfs),
        EMBER_BOOT_ARGS,
        1,
        128,
    );
    let path = dir.path().join("vm.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let run = ember_integration_tests::ember::run_ember_args(&[
        "--no-api",
        "--boot-timer",
        "--config-file",
        path.to_str().unwrap(),
    ]);
    assert!(run.output.status.success(), "output:\n{}", run.text);
    assert!(
        run.stderr().contains("Guest-boot-time ="),
        "stderr:\n{}",
        run.stderr()
    );
}
