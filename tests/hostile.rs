//! What a hostile API client does, shared by the tests with and without a guest: large and
//! concurrent requests on every route, and the check that Ember survived them.

use crate::ember::{api_request, EmberProcess};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Client input is padded to this size, so that each body stays under Ember's and
/// Firecracker's 51,200-byte limit (a body holds at most a padding and a padded path) and
/// every reply that echoes input is large too.
const LARGE: usize = 24_000;

/// `fault_message` of an error body.
pub fn fault_message(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("body {body:?}: {e}"));
    value["fault_message"]
        .as_str()
        .unwrap_or_else(|| panic!("no fault_message in {body}"))
        .to_string()
}

/// Makes a FIFO at `path`.
pub fn make_fifo(path: &Path) -> PathBuf {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
    let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo {path:?}");
    path.to_path_buf()
}

/// Panics unless Ember is still running and answers `GET /` within 100 ms (best of three,
/// so that one scheduling hiccup of the test machine is not blamed on Ember).
pub fn assert_alive_and_quick(ember: &mut EmberProcess, socket: &Path) {
    if let Some(status) = ember.exited() {
        panic!("ember died ({status}); output:\n{}", ember.console());
    }
    let fastest = (0..3)
        .map(|_| {
            let started = Instant::now();
            let (status, body) = api_request(socket, "GET", "/", None);
            assert_eq!(status, 200, "{body}");
            started.elapsed()
        })
        .min()
        .unwrap();
    assert!(
        fastest < Duration::from_millis(100),
        "GET / took {fastest:?}"
    );
    assert!(
        ember.exited().is_none(),
        "ember died; output:\n{}",
        ember.console()
    );
}

/// Requests for every route, each padded with large client input that error replies echo.
fn large_requests(dir: &Path) -> Vec<(&'static str, &'static str, Option<String>)> {
    let pad = "x".repeat(LARGE);
    let long_path = dir.join(&pad);
    let bodies = [
        (
            "PUT",
            "/boot-source",
            json!({"kernel_image_path": long_path, "boot_args": pad}),
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 128, pad.as_str(): 1}),
        ),
        (
            "PATCH",
            "/machine-config",
            json!({"vcpu_count": 1, pad.as_str(): 1}),
        ),
        (
            "PUT",
            "/drives/d",
            json!({"drive_id": "d", "path_on_host": long_path, "is_root_device": false}),
        ),
        (
            "PATCH",
            "/drives/d",
            json!({"drive_id": "d", "path_on_host": long_path}),
        ),
        (
            "PUT",
            "/network-interfaces/n",
            json!({"iface_id": "n", "host_dev_name": pad}),
        ),
        (
            "PATCH",
            "/network-interfaces/n",
            json!({"iface_id": "n", "rx_rate_limiter": pad}),
        ),
        ("PUT", "/metrics", json!({"metrics_path": long_path})),
        ("PUT", "/actions", json!({"action_type": pad})),
        ("PATCH", "/vm", json!({"state": pad})),
        ("PUT", "/logger", json!({"log_path": long_path})),
        (
            "PUT",
            "/vsock",
            json!({"guest_cid": 3, "uds_path": long_path}),
        ),
    ];
    let mut requests: Vec<_> = bodies
        .into_iter()
        .map(|(method, path, body)| (method, path, Some(body.to_string())))
        .collect();
    for path in ["/", "/version", "/machine-config", "/vm/config"] {
        requests.push(("GET", path, None));
    }
    requests
}

/// Eight clients at once, each sending every large request `rounds` times. Every request
/// must get an answer (any status but 5xx).
pub fn stress_every_route(socket: &Path, dir: &Path, rounds: usize) {
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (socket, requests) = (socket.to_path_buf(), large_requests(dir));
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    for (method, path, body) in &requests {
                        let (status, reply) = api_request(&socket, method, path, body.as_deref());
                        assert!(
                            (200..500).contains(&status),
                            "{method} {path}: {status} {reply}"
                        );
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}
