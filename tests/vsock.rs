//! virtio-vsock with a real guest: Firecracker's host side (`CONNECT <port>` on uds_path,
//! `<uds_path>_<port>` for the guest's connections), echo both ways, many connections at
//! once, a large transfer with checksums, refusals both ways, closes mid-stream on either
//! side, and a host client that stops reading while Ember's memory stays flat.
//!
//! One guest serves every check (boots are the slow part of the lab): it runs
//! `vsock-helper` servers (resources/guest/vsock-helper.c) and its own connections, then
//! waits until the host says it is done.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use ember_integration_tests::ember::{vm_config, EmberProcess, EMBER_BOOT_ARGS};
use ember_integration_tests::{ember_cmd_arg, guest_artifacts, require_kvm, TempDir};
use serde_json::json;

const ECHO_PORT: u32 = 5000;
const SOURCE_PORT: u32 = 5001;
const CLOSE_AFTER_PORT: u32 = 5002;
const DONE_PORT: u32 = 5999;
/// The host listener the guest sends its large file to (and gets it back from).
const HOST_ECHO_PORT: u32 = 6000;
const GUEST_FILE_LEN: usize = 4 << 20;

const GUEST_SCRIPT: &str = r#"
vsock-helper echo 5000 &
vsock-helper source 5001 &
vsock-helper close-after 1000 5002 &
sleep 1
echo VSOCK-READY
head -c 4194304 /dev/urandom > /tmp/big
echo "GUEST-SHA $(sha256sum /tmp/big | cut -d' ' -f1)"
vsock-helper connect 2 6000 < /tmp/big > /tmp/back || echo GUEST-CONNECT-FAILED
cmp /tmp/big /tmp/back && echo GUEST-ECHO-OK
# Nothing listens on host port 6001.
vsock-helper connect 2 6001 < /dev/null
echo "GUEST-REFUSED-EXIT $?"
vsock-helper accept 5999
"#;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Connects to the device's socket and asks for guest port `port`; returns the stream and
/// the host port from the `OK` line, or None when the connection was closed instead.
fn connect(uds: &Path, port: u32) -> Option<(UnixStream, u32)> {
    let mut stream = UnixStream::connect(uds).expect("connect to uds_path");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            Ok(_) => return None,
            Err(e) => panic!("waiting for OK from guest port {port}: {e}"),
        }
    }
    let line = String::from_utf8(line).unwrap();
    let host_port = line
        .strip_prefix("OK ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad reply {line:?}"));
    Some((stream, host_port))
}

/// Sends `payload` through the guest's echo server and returns what came back, writing
/// and reading at once (the echo fills the socket buffers otherwise).
fn echo(uds: &Path, payload: Vec<u8>) -> Vec<u8> {
    let (stream, _) = connect(uds, ECHO_PORT).expect("the echo server accepts");
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&payload).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    let mut reader = stream;
    reader.read_to_end(&mut back).unwrap();
    sender.join().unwrap();
    back
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn sha256(data: &[u8], dir: &Path) -> String {
    let path = dir.join("received.bin");
    std::fs::write(&path, data).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The host end of the guest's connection to host port 6000: echoes everything back and
/// returns what it received.
fn host_echo_server(uds: &Path) -> thread::JoinHandle<Vec<u8>> {
    let listener = UnixListener::bind(port_path(uds, HOST_ECHO_PORT)).unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut received = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n]).unwrap();
            received.extend_from_slice(&buf[..n]);
        }
        stream.shutdown(Shutdown::Write).unwrap();
        received
    })
}

fn port_path(uds: &Path, port: u32) -> PathBuf {
    let mut path = uds.as_os_str().to_owned();
    path.push(format!("_{port}"));
    PathBuf::from(path)
}

fn start_guest(dir: &TempDir) -> (EmberProcess, PathBuf) {
    let guest = guest_artifacts();
    let uds = dir.path().join("v.sock");
    let args = format!("{EMBER_BOOT_ARGS} {}", ember_cmd_arg(GUEST_SCRIPT));
    let mut config = vm_config(&guest.vmlinux, Some(&guest.initramfs), &args, 2, 256);
    config["vsock"] = json!({"guest_cid": 3, "uds_path": uds});
    let path = dir.path().join("vm.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let ember = EmberProcess::spawn(&["--no-api", "--config-file", path.to_str().unwrap()]);
    (ember, uds)
}

fn check_echo_and_concurrency(uds: &Path) {
    assert_eq!(echo(uds, b"hello vsock\n".to_vec()), b"hello vsock\n");
    let workers: Vec<_> = (0..16u32)
        .map(|n| {
            let uds = uds.to_path_buf();
            thread::spawn(move || {
                let payload = pattern(128 << 10, n + 1);
                assert!(echo(&uds, payload.clone()) == payload, "connection {n}");
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a concurrent connection failed");
    }
    let big = pattern(8 << 20, 99);
    assert!(echo(uds, big.clone()) == big, "8 MiB echo differs");
}

fn check_refusal_and_closes(uds: &Path) {
    assert!(
        connect(uds, 5555).is_none(),
        "a port nobody listens on was accepted"
    );
    // The host closes mid-stream, unread data and all; the device carries on.
    let (mut stream, _) = connect(uds, ECHO_PORT).unwrap();
    stream.write_all(&pattern(100 << 10, 7)).unwrap();
    drop(stream);
    // The guest closes mid-stream: the host sees the end instead of hanging.
    let (mut stream, _) = connect(uds, CLOSE_AFTER_PORT).unwrap();
    let chunk = vec![1u8; 64 << 10];
    let deadline = Instant::now() + TIMEOUT;
    let ended = loop {
        if stream.write_all(&chunk).is_err() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(ended, "writing to a guest that closed never failed");
    assert_eq!(echo(uds, b"still there".to_vec()), b"still there");
}

fn check_stalled_reader(uds: &Path, pid: u32) {
    let (mut stream, _) = connect(uds, SOURCE_PORT).unwrap();
    let mut first = vec![0u8; 1 << 20];
    stream.read_exact(&mut first).unwrap();
    thread::sleep(Duration::from_secs(2));
    let before = rss_kib(pid);
    thread::sleep(Duration::from_secs(8));
    let after = rss_kib(pid);
    assert!(
        after < before + 8 * 1024,
        "Ember's RSS grew from {before} KiB to {after} KiB while a host client did not read"
    );
    // The stream was stalled, not lost.
    stream.read_exact(&mut first).unwrap();
    assert!(first.iter().all(|&b| b == 0));
}

#[test]
fn vsock_streams_between_host_and_guest() {
    require_kvm();
    let dir = TempDir::new("vsock");
    let uds = dir.path().join("v.sock");
    let host_echo = host_echo_server(&uds);
    let (ember, uds) = start_guest(&dir);
    ember.wait_for("VSOCK-READY", 240);
    // A failing check shows what the guest and Ember said.
    let pid = ember.pid();
    let checks = std::panic::catch_unwind(|| {
        check_echo_and_concurrency(&uds);
        check_refusal_and_closes(&uds);
        check_stalled_reader(&uds, pid);
    });
    if let Err(panic) = checks {
        eprintln!("console and log so far:\n{}", ember.console());
        std::panic::resume_unwind(panic);
    }
    let received = host_echo
        .join()
        .expect("the guest's connection to the host");
    assert_eq!(received.len(), GUEST_FILE_LEN);
    ember.wait_for("GUEST-REFUSED-EXIT", 120);
    let console = ember.console();
    let guest_sha = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("GUEST-SHA "))
        .expect("the guest printed its checksum")
        .trim()
        .to_string();
    assert_eq!(sha256(&received, dir.path()), guest_sha);
    let (mut done, _) = connect(&uds, DONE_PORT).expect("the guest waits for the end");
    done.write_all(b"HOST-DONE\n").unwrap();
    done.shutdown(Shutdown::Write).unwrap();
    let (status, console) = ember.wait(120);
    assert!(status.success(), "ember failed:\n{console}");
    for line in ["GUEST-ECHO-OK", "GUEST-REFUSED-EXIT 2", "HOST-DONE"] {
        assert!(console.contains(line), "no {line:?} in:\n{console}");
    }
    assert!(!console.contains("GUEST-CONNECT-FAILED"), "{console}");
}

#[test]
fn bad_vsock_configs_are_refused_with_one_line() {
    require_kvm();
    let dir = TempDir::new("vsock-bad");
    let guest = guest_artifacts();
    let cases = [
        (
            json!({"guest_cid": 2, "uds_path": dir.path().join("a.sock")}),
            "guest_cid 2",
        ),
        (
            json!({"guest_cid": 4294967296u64, "uds_path": dir.path().join("b.sock")}),
            "guest_cid 4294967296",
        ),
        (
            json!({"guest_cid": 3, "uds_path": dir.path().join("no/c.sock")}),
            "c.sock",
        ),
        (json!({"guest_cid": 3, "uds_path": dir.path()}), "uds_path"),
    ];
    for (n, (vsock, needle)) in cases.into_iter().enumerate() {
        let mut config = vm_config(
            &guest.vmlinux,
            Some(&guest.initramfs),
            EMBER_BOOT_ARGS,
            1,
            128,
        );
        config["vsock"] = vsock;
        let path = dir.path().join(format!("vm{n}.json"));
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        let ember = EmberProcess::spawn(&["--no-api", "--config-file", path.to_str().unwrap()]);
        let (status, console) = ember.wait(120);
        assert_eq!(status.code(), Some(1), "case {n}:\n{console}");
        assert!(
            console.contains(needle),
            "case {n}: no {needle:?} in:\n{console}"
        );
        assert!(
            !console.contains("EMBER-GUEST-INIT"),
            "case {n} booted:\n{console}"
        );
    }
}
