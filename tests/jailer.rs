//! `ember-jailer` end to end: a jailed Ember boots a guest from a rootfs placed in the jail
//! and pings over a TAP in its network namespace, while the host checks that the process is
//! confined; the same daemonized; and every bad input refused with one line, leaving
//! nothing behind.
//!
//! Needs root; the guest tests need a standard KVM (`tools/test -- jail`, see docs/lab.md).
//! The cgroup limits use v1 where the machine mounts a v1 memory hierarchy, else v2.
//! Env: `EMBER_BIN` (a static `ember`: `cargo build-static`), `EMBER_JAILER_BIN`,
//! `EMBER_GUEST_DIR`.

#[allow(dead_code)]
mod netlab;

use ember_integration_tests::ember::{api_request, wait_for_socket, EMBER_BOOT_ARGS};
use ember_integration_tests::jail::*;
use ember_integration_tests::{
    ember_cmd_arg, guest_artifacts, random_hex, require_kvm, run_with_timeout, GuestReport, TempDir,
};
use serde_json::json;
use std::fs;
use std::path::Path;
use std::process::Command;

/// The guest's side: up on eth0, ping the host, then wait for the host's checks (`/go`).
const GUEST_SCRIPT: &str = "ip link set eth0 up && ip addr add 172.30.0.2/24 dev eth0 || exit 11
ping -c 2 -W 5 172.30.0.1 >/dev/null || exit 12
echo EMBER-JAIL: up
wget -q -O /tmp/go http://172.30.0.1:8080/go || exit 13";

/// `args` with each `--flag value` pair of `bad` replacing the same flag's, or added; from
/// `--` on, `bad` is appended as it is.
fn with_overrides(mut args: Vec<String>, bad: &[&str]) -> Vec<String> {
    let mut rest = bad;
    while let [flag, value, tail @ ..] = rest {
        if *flag == "--" {
            break;
        }
        match args.iter().position(|a| a == flag) {
            Some(i) => args[i + 1] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
        rest = tail;
    }
    args.extend(rest.iter().map(|s| s.to_string()));
    args
}

fn jailer_args(base: &Path, id: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--id".into(),
        id.into(),
        "--exec-file".into(),
        static_ember().to_string_lossy().into_owned(),
        "--uid".into(),
        JAIL_ID.to_string(),
        "--gid".into(),
        JAIL_ID.to_string(),
        "--chroot-base-dir".into(),
        base.to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn jailed_guest_boots_and_pings_while_confined() {
    require_kvm();
    let guest = guest_artifacts();
    let tmp = TempDir::new("jail");
    let id = format!("jail-{}", random_hex(4));
    let files = [(&guest.vmlinux, "vmlinux"), (&guest.rootfs, "rootfs.ext4")];
    let root = prepare_jail(tmp.path(), &id, &files.map(|(p, n)| (p.as_path(), n)));
    let config = json!({
        "boot-source": {"kernel_image_path": "/vmlinux",
                        "boot_args": format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(GUEST_SCRIPT))},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "drives": [{"drive_id": "rootfs", "path_on_host": "/rootfs.ext4",
                    "is_root_device": true, "is_read_only": false}],
        "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                                "guest_mac": "06:00:AC:1E:00:02"}],
    });
    fs::write(root.join("vm.json"), config.to_string()).unwrap();

    let ns = netlab::Netns::create(&[("tap0", "172.30.0.1/24")]);
    let host = netlab::HostServers::start(&ns, &netlab::TempDir::new("jail-up"), &[]);
    let cgroups = Cgroups::of_this_machine();
    let _cleanup = CgroupCleanup(cgroups.dirs("ember", &id));
    let netns = format!("/run/netns/{}", ns.name);
    let mut extra = vec![
        "--new-pid-ns",
        "--netns",
        &netns,
        "--resource-limit",
        "fsize=1073741824",
    ];
    let cgroup_flags = cgroups.flags();
    extra.extend(cgroup_flags.iter().map(String::as_str));
    extra.extend(["--", "--no-api", "--config-file", "/vm.json"]);
    let mut jailer =
        Running::spawn(Command::new(jailer_bin()).args(jailer_args(tmp.path(), &id, &extra)));

    jailer.wait_for("EMBER-JAIL: up", 300);
    ns.ping("172.30.0.2");
    let pid = jailed_pid(&root, 10);
    check_confined(pid, &root, "vmlinux", &netns, &cgroups, &id);
    host.release_go();
    assert_eq!(jailer.wait(300), Some(0), "output:\n{}", jailer.console());
    let report = GuestReport::parse(&jailer.console());
    assert_eq!(report.cmd_exit, Some(0), "output:\n{}", jailer.console());
}

/// What the host sees of the jailed monitor `pid`.
fn check_confined(pid: u32, root: &Path, placed: &str, netns: &str, cgroups: &Cgroups, id: &str) {
    let all = format!("{JAIL_ID} {JAIL_ID} {JAIL_ID} {JAIL_ID}");
    assert_eq!(status_field(pid, "Uid"), all);
    assert_eq!(status_field(pid, "Gid"), all);
    assert_eq!(status_field(pid, "Groups"), "", "no supplementary groups");
    for caps in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let proc_root = format!("/proc/{pid}/root");
    assert_eq!(
        file_id(Path::new(&proc_root)),
        file_id(root),
        "its root is the jail"
    );
    assert!(
        Path::new(&proc_root).join(placed).exists(),
        "{placed} placed in the jail"
    );
    for outside in ["etc/passwd", "proc", "sys", "usr", root.to_str().unwrap()] {
        let seen = Path::new(&proc_root).join(outside.trim_start_matches('/'));
        assert!(!seen.exists(), "{} is reachable from the jail", outside);
    }
    let me = std::process::id().to_string();
    for kind in ["mnt", "pid", "net"] {
        assert_ne!(
            namespace(&pid.to_string(), kind),
            namespace(&me, kind),
            "{kind}"
        );
    }
    assert_eq!(
        file_id(Path::new(&format!("/proc/{pid}/ns/net"))),
        file_id(Path::new(netns))
    );
    assert!(
        status_field(pid, "NSpid").ends_with(" 1"),
        "PID 1 in its namespace"
    );
    let membership = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for (mount, file, value) in &cgroups.limits {
        let dir = mount.join("ember").join(id);
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "in {}: {membership}",
            dir.display()
        );
        assert_eq!(
            fs::read_to_string(dir.join(file)).unwrap().trim(),
            *value,
            "{file}"
        );
    }
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_string()
    };
    assert!(line("Max open files").contains("2048"), "{limits}");
    assert!(line("Max file size").contains("1073741824"), "{limits}");
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    assert!(fds < 40, "{fds} descriptors open");
}

/// The same confinement without a guest, so it also runs where KVM cannot boot one (natively
/// on this project's hosts: cgroup v1 there). SIGTERM to the jailer ends Ember cleanly.
#[test]
fn jailed_monitor_is_confined_without_a_guest() {
    let tmp = TempDir::new("jail-api");
    let id = format!("jail-{}", random_hex(4));
    let root = prepare_jail(tmp.path(), &id, &[(Path::new("/etc/hostname"), "placed")]);
    let ns = netlab::Netns::create(&[("tap0", "172.30.0.1/24")]);
    let cgroups = Cgroups::of_this_machine();
    let _cleanup = CgroupCleanup(cgroups.dirs("ember", &id));
    let netns = format!("/run/netns/{}", ns.name);
    let mut extra = vec![
        "--new-pid-ns",
        "--netns",
        &netns,
        "--resource-limit",
        "fsize=1073741824",
    ];
    let cgroup_flags = cgroups.flags();
    extra.extend(cgroup_flags.iter().map(String::as_str));
    let mut jailer =
        Running::spawn(Command::new(jailer_bin()).args(jailer_args(tmp.path(), &id, &extra)));
    let socket = root.join("run/ember.socket");
    wait_for_socket(&socket, 30);
    let (status, body) = api_request(&socket, "GET", "/", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("\"id\":\"{id}\"")),
        "the jailer passes --id: {body}"
    );
    let pid = jailed_pid(&root, 10);
    check_confined(pid, &root, "placed", &netns, &cgroups, &id);
    let _ = Command::new("kill")
        .arg(jailer.child.id().to_string())
        .status();
    assert_eq!(jailer.wait(30), Some(0), "output:\n{}", jailer.console());
    assert!(!socket.exists(), "Ember removed its socket on SIGTERM");
}

#[test]
fn daemonized_jailer_returns_and_the_vm_runs() {
    require_kvm();
    let guest = guest_artifacts();
    let tmp = TempDir::new("jail-daemon");
    let id = format!("jail-{}", random_hex(4));
    let files = [(&guest.vmlinux, "vmlinux"), (&guest.rootfs, "rootfs.ext4")];
    let root = prepare_jail(tmp.path(), &id, &files.map(|(p, n)| (p.as_path(), n)));

    let (code, stderr) = run_jailer(&jailer_args(tmp.path(), &id, &["--daemonize"]));
    assert_eq!(code, Some(0), "{stderr:?}");
    assert!(stderr.is_empty(), "{stderr:?}");
    let pid = jailed_pid(&root, 10);
    let socket = root.join("run/ember.socket");
    wait_for_socket(&socket, 30);
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let session = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(3) // after "pid (comm)": state ppid pgrp session
        .unwrap();
    assert_eq!(session, pid.to_string(), "a session of its own");
    for fd in 0..3 {
        let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(target, Path::new("/dev/null"), "fd {fd}");
    }
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");

    let nonce = random_hex(16);
    let script = format!("echo {nonce} > /nonce.txt && sync");
    let boot = json!({"kernel_image_path": "/vmlinux",
                      "boot_args": format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(&script))});
    let drive = json!({"drive_id": "rootfs", "path_on_host": "/rootfs.ext4",
                       "is_root_device": true, "is_read_only": false});
    let machine = json!({"vcpu_count": 1, "mem_size_mib": 128});
    for (path, body) in [
        ("/boot-source", boot),
        ("/drives/rootfs", drive),
        ("/machine-config", machine),
    ] {
        let (status, reply) = api_request(&socket, "PUT", path, Some(&body.to_string()));
        assert_eq!(status, 204, "PUT {path}: {reply}");
    }
    let start = json!({"action_type": "InstanceStart"}).to_string();
    let (status, reply) = api_request(&socket, "PUT", "/actions", Some(&start));
    assert_eq!(status, 204, "InstanceStart: {reply}");
    // The guest writes the nonce to its disk and reboots, which ends Ember.
    wait_gone(pid, 300);
    let out = run_with_timeout(
        Command::new("debugfs")
            .args(["-R", "cat /nonce.txt"])
            .arg(root.join("rootfs.ext4")),
        60,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), nonce);
}

/// Each bad input: exit 1, one line naming it, and no jail folder or cgroup made. The last
/// cases fail late (the kernel refuses a cgroup value; the jail is taken): whatever the
/// jailer had made by then is gone again, and what was there before is kept.
#[test]
fn bad_inputs_fail_with_one_line_and_leave_nothing() {
    let tmp = TempDir::new("jail-bad");
    let cgroups = Cgroups::of_this_machine();
    let v = cgroups.version.to_string();
    let (_, mem_file, _) = cgroups.limits[0];
    let garbage = format!("{mem_file}=garbage");
    let nosuch = format!("{}.nosuchfile=1", mem_file.split('.').next().unwrap());
    let long_id = "x".repeat(65);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("--id", vec!["--id", "bad/id"]),
        ("--id", vec!["--id", &long_id]),
        ("--exec-file", vec!["--exec-file", "/etc/passwd"]),
        ("--exec-file", vec!["--exec-file", "/no/such/ember"]),
        ("--exec-file", vec!["--exec-file", "/usr"]),
        ("--uid", vec!["--uid", "abc"]),
        ("--gid", vec!["--gid", "4294967295"]),
        (
            "--chroot-base-dir",
            vec!["--chroot-base-dir", "relative/dir"],
        ),
        ("--netns", vec!["--netns", "/no/such/netns"]),
        ("--netns", vec!["--netns", "/etc/passwd"]),
        (
            "--cgroup",
            vec!["--cgroup-version", &v, "--cgroup", &nosuch],
        ),
        (
            "--cgroup",
            vec!["--cgroup-version", "2", "--cgroup", "nosuchctl.max=1"],
        ),
        ("--cgroup", vec!["--cgroup", "memory.max"]),
        ("--cgroup-version", vec!["--cgroup-version", "3"]),
        ("--resource-limit", vec!["--resource-limit", "nofile=5"]),
        (
            "--parent-cgroup",
            vec!["--parent-cgroup", "../up", "--cgroup", &garbage],
        ),
        ("--id", vec!["--", "--id", "other"]),
        (
            "garbage",
            vec!["--cgroup-version", &v, "--cgroup", &garbage],
        ),
    ];
    for (n, (names, bad)) in cases.into_iter().enumerate() {
        let base = tmp.path().join(format!("base{n}"));
        let parent = format!("ember-jailer-test-{}-{n}", std::process::id());
        let _cleanup = CgroupCleanup(cgroups.dirs(&parent, "vm"));
        let args = with_overrides(
            jailer_args(&base, "vm", &["--parent-cgroup", &parent]),
            &bad,
        );
        let (code, stderr) = run_jailer(&args);
        assert_eq!(code, Some(1), "{bad:?}: {stderr:?}");
        assert_eq!(stderr.len(), 1, "{bad:?}: one line, got {stderr:?}");
        assert!(
            stderr[0].starts_with("ember-jailer: ") && stderr[0].contains(names),
            "{bad:?}: {stderr:?}"
        );
        assert!(!base.exists(), "{bad:?} left {}", base.display());
        for dir in cgroups.dirs(&parent, "vm") {
            assert!(!dir.exists(), "{bad:?} left {}", dir.display());
        }
    }
    // A jail that is in use: refused, and the operator's files stay.
    let base = tmp.path().join("taken");
    let root = prepare_jail(&base, "vm", &[(Path::new("/etc/hostname"), "kernel")]);
    fs::create_dir(root.join("dev")).unwrap();
    let (code, stderr) = run_jailer(&jailer_args(&base, "vm", &[]));
    assert_eq!(code, Some(1), "{stderr:?}");
    assert!(
        stderr.len() == 1 && stderr[0].contains("already set up"),
        "{stderr:?}"
    );
    assert!(root.join("kernel").is_file() && root.join("dev").is_dir());
    assert!(!root.join("ember").exists());
}
