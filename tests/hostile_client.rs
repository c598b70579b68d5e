//! A hostile API client: huge and many concurrent requests, files of every kind as paths,
//! silent and churning connections. Ember must answer each, stay up, and answer `GET /`
//! quickly afterwards. None of this needs a guest; `tests/api.rs` repeats the stress with
//! one running.

use ember_integration_tests::ember::{api_request, wait_for_socket, EmberProcess};
use ember_integration_tests::hostile::{
    assert_alive_and_quick, fault_message, make_fifo, stress_every_route,
};
use ember_integration_tests::TempDir;
use serde_json::json;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn start_api(dir: &TempDir) -> (EmberProcess, PathBuf) {
    let socket = dir.path().join("api.sock");
    let ember = EmberProcess::spawn(&["--api-sock", socket.to_str().unwrap()]);
    wait_for_socket(&socket, 30);
    (ember, socket)
}

fn put(socket: &Path, path: &str, body: &serde_json::Value) -> (u16, String) {
    api_request(socket, "PUT", path, Some(&body.to_string()))
}

/// Answers within `limit`, or panics naming the request.
fn put_within(
    socket: &Path,
    path: &str,
    body: &serde_json::Value,
    limit: Duration,
) -> (u16, String) {
    let started = Instant::now();
    let answer = put(socket, path, body);
    assert!(
        started.elapsed() < limit,
        "PUT {path} {body} took {:?}",
        started.elapsed()
    );
    answer
}

#[test]
fn error_replies_that_echo_16_kib_do_not_kill_ember() {
    let dir = TempDir::new("hostile-echo");
    let (mut ember, socket) = start_api(&dir);
    let key = "a".repeat(16_000);
    for path in ["/machine-config", "/metrics", "/boot-source"] {
        let (status, body) = api_request(&socket, "PUT", path, Some(&format!("{{\"{key}\":1}}")));
        assert_eq!(status, 400, "{path}: {body}");
        assert!(fault_message(&body).contains(&key));
    }
    let drive =
        json!({"drive_id": "d", "path_on_host": "/x", "is_root_device": false, "partuuid": key});
    assert_eq!(put(&socket, "/drives/d", &drive).0, 400);
    let iface = json!({"iface_id": "n", "host_dev_name": key});
    assert_eq!(put(&socket, "/network-interfaces/n", &iface).0, 400);
    assert_alive_and_quick(&mut ember, &socket);
}

#[test]
fn many_concurrent_45_kib_drive_requests_do_not_kill_ember() {
    let dir = TempDir::new("hostile-drives");
    let (mut ember, socket) = start_api(&dir);
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                for n in 0..5 {
                    let id = format!("d{worker}x{n}");
                    let path = format!("/{}", "p".repeat(45_000));
                    let body =
                        json!({"drive_id": id, "path_on_host": path, "is_root_device": false});
                    let (status, body) = put(&socket, &format!("/drives/{id}"), &body);
                    assert_eq!(status, 400, "{body}");
                    assert!(
                        fault_message(&body).starts_with("Drive config error:"),
                        "{body}"
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_alive_and_quick(&mut ember, &socket);
}

#[test]
fn every_route_under_large_concurrent_requests() {
    let dir = TempDir::new("hostile-stress");
    let (mut ember, socket) = start_api(&dir);
    stress_every_route(&socket, dir.path(), 4);
    assert_alive_and_quick(&mut ember, &socket);
}

#[test]
fn files_of_every_kind_are_refused_at_once_or_accepted() {
    let dir = TempDir::new("hostile-files");
    let (mut ember, socket) = start_api(&dir);
    let fifo = make_fifo(&dir.path().join("fifo"));
    let limit = Duration::from_secs(2);
    for (path, why) in [
        (PathBuf::from("/dev/zero"), "it is a character device"),
        (fifo.clone(), "it is a named pipe (FIFO)"),
        (dir.path().to_path_buf(), "it is a directory"),
        (dir.path().join("missing"), "No such file or directory"),
    ] {
        let boot = json!({"kernel_image_path": path});
        let (status, body) = put_within(&socket, "/boot-source", &boot, limit);
        assert_eq!(status, 400, "{body}");
        let message = fault_message(&body);
        assert!(
            message.starts_with("Boot source error: The kernel file"),
            "{message}"
        );
        assert!(message.contains(why), "{message}");
        let drive = json!({"drive_id": "d", "path_on_host": path, "is_root_device": false, "is_read_only": true});
        let (status, body) = put_within(&socket, "/drives/d", &drive, limit);
        assert_eq!(status, 400, "{body}");
        assert!(
            fault_message(&body).starts_with("Drive config error:"),
            "{body}"
        );
    }
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let (status, body) = put(
        &socket,
        "/boot-source",
        &json!({"kernel_image_path": empty}),
    );
    assert_eq!(status, 400);
    assert!(fault_message(&body).ends_with("is empty"), "{body}");
    let not_a_kernel = dir.path().join("text");
    std::fs::write(&not_a_kernel, "hello\n".repeat(1000)).unwrap();
    let (status, body) = put(
        &socket,
        "/boot-source",
        &json!({"kernel_image_path": not_a_kernel}),
    );
    assert_eq!(status, 400);
    assert!(fault_message(&body).contains("is not a kernel"), "{body}");
    // A FIFO is a fine metrics sink (as in Firecracker), and nobody needs to read it.
    let metrics = json!({"metrics_path": fifo});
    assert_eq!(put_within(&socket, "/metrics", &metrics, limit).0, 204);
    let flush = json!({"action_type": "FlushMetrics"});
    let (status, _) = put_within(&socket, "/actions", &flush, limit);
    assert_eq!(status, 204);
    // So is a log, and a FIFO nobody reads costs log lines, never a stuck thread.
    let logger = json!({"log_path": fifo, "level": "Debug"});
    assert_eq!(put_within(&socket, "/logger", &logger, limit).0, 204);
    for _ in 0..200 {
        assert_eq!(api_request(&socket, "GET", "/machine-config", None).0, 200);
    }
    assert_alive_and_quick(&mut ember, &socket);
}

#[test]
fn a_huge_sparse_kernel_does_not_block_the_api() {
    let dir = TempDir::new("hostile-sparse");
    let (mut ember, socket) = start_api(&dir);
    let kernel = dir.path().join("sparse-vmlinux");
    std::fs::write(&kernel, b"\x7fELF\x02").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&kernel)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let limit = Duration::from_secs(2);
    let boot = json!({"kernel_image_path": kernel});
    assert_eq!(put_within(&socket, "/boot-source", &boot, limit).0, 204);
    let start = json!({"action_type": "InstanceStart"});
    let (status, body) = put_within(&socket, "/actions", &start, limit);
    assert_eq!(status, 400, "{body}");
    assert!(
        fault_message(&body).starts_with("Start microvm error:"),
        "{body}"
    );
    assert_alive_and_quick(&mut ember, &socket);
}

#[test]
fn silent_connections_do_not_lock_clients_out() {
    let dir = TempDir::new("hostile-silent");
    let (mut ember, socket) = start_api(&dir);
    let silent: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    assert_alive_and_quick(&mut ember, &socket);
    drop(silent);
}

#[test]
fn connect_close_cycles_leave_room_for_the_next_request() {
    let dir = TempDir::new("hostile-churn");
    let (mut ember, socket) = start_api(&dir);
    for _ in 0..1000 {
        drop(UnixStream::connect(&socket).unwrap());
    }
    assert_eq!(api_request(&socket, "GET", "/", None).0, 200);
    assert_alive_and_quick(&mut ember, &socket);
}

#[test]
fn silent_connections_are_closed_after_the_request_timeout() {
    let dir = TempDir::new("hostile-timeout");
    let (_ember, socket) = start_api(&dir);
    let mut silent = UnixStream::connect(&socket).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    silent.read_to_string(&mut answer).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[test]
fn unusable_config_files_end_ember_with_one_line() {
    let dir = TempDir::new("hostile-config");
    let fifo = make_fifo(&dir.path().join("config-fifo"));
    for (path, why) in [
        (PathBuf::from("/dev/zero"), "it is a character device"),
        (fifo, "EOF while parsing"),
        (dir.path().to_path_buf(), "it is a directory"),
    ] {
        let started = Instant::now();
        let mut ember = EmberProcess::spawn(&["--no-api", "--config-file", path.to_str().unwrap()]);
        let status = loop {
            if let Some(status) = ember.exited() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "ember hung on {path:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let (_, output) = ember.wait(10);
        assert_eq!(status.code(), Some(1), "{output}");
        assert_eq!(output.trim().lines().count(), 1, "{output}");
        assert!(output.contains(why), "{path:?}: {output}");
    }
}
