//! The API end to end: raw bytes over a real socket, answered by a fake VMM thread that
//! serves actions from a `VmResources`.

use super::{ApiError, ApiServer};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;
use std::{fs, thread};
use vmm::rpc::{
    ActionPhase, ApiRequest, InstanceInfo, InstanceState, VmResources, VmmAction, VmmData,
    VmmResponse, DEFAULT_INSTANCE_ID, VMM_VERSION,
};
use vmm_sys_util::eventfd::EventFd;

fn socket_path() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ember-api-{}-{n}.sock", std::process::id()))
}

/// Answers like the VMM thread will: configuration before start, state changes after.
fn fake_vmm(requests: Receiver<ApiRequest>) {
    let mut config = VmResources::default();
    let mut state = InstanceState::NotStarted;
    for (action, reply) in requests {
        let answer = answer(&mut config, &mut state, &action);
        let _ = reply.send(answer);
    }
}

fn answer(config: &mut VmResources, state: &mut InstanceState, action: &VmmAction) -> VmmResponse {
    let started = *state != InstanceState::NotStarted;
    action.check_allowed(started)?;
    match action {
        VmmAction::StartInstance => config.config_for_start().map(|_| {
            *state = InstanceState::Running;
            VmmData::Empty
        }),
        VmmAction::GetVersion => Ok(VmmData::Version(VMM_VERSION.into())),
        VmmAction::GetInstanceInfo => Ok(VmmData::InstanceInfo(InstanceInfo::new(
            DEFAULT_INSTANCE_ID,
            *state,
        ))),
        _ if action.phase() == ActionPhase::PostBootOnly => Ok(VmmData::Empty),
        _ => config.apply(action).unwrap_or(Ok(VmmData::Empty)),
    }
}

/// A served socket with a fake VMM behind it.
fn serve() -> PathBuf {
    let path = socket_path();
    let server = ApiServer::bind(&path).unwrap();
    let (to_vmm, requests) = mpsc::channel();
    thread::spawn(move || fake_vmm(requests));
    let wake = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    server.spawn(to_vmm, wake, Vec::new()).unwrap();
    path
}

fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Sends `wire`, closes the write side and returns everything the server answered.
fn exchange(path: &Path, wire: &str) -> String {
    let mut stream = connect(path);
    stream.write_all(wire.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn request(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The status code and body of the only response in `answer`.
fn status_and_body(answer: &str) -> (u16, String) {
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

fn call(path: &Path, method: &str, uri: &str, body: &str) -> (u16, String) {
    status_and_body(&exchange(path, &request(method, uri, body)))
}

fn fault(text: &str) -> String {
    serde_json::json!({ "fault_message": text }).to_string()
}

/// A file with an ELF header and a disk image, for requests to name: the fake VMM's
/// `VmResources` opens them at the PUT, as the real one does.
fn fixture(name: &str) -> String {
    static DIR: std::sync::OnceLock<vmm_sys_util::tempdir::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let mut kernel = vec![0u8; 4096];
        kernel[..4].copy_from_slice(b"\x7fELF");
        std::fs::write(dir.as_path().join("vmlinux"), kernel).unwrap();
        std::fs::write(dir.as_path().join("rootfs.img"), [0u8; 4096]).unwrap();
        dir
    });
    dir.as_path().join(name).to_str().unwrap().to_string()
}

fn kernel_body() -> String {
    serde_json::json!({"kernel_image_path": fixture("vmlinux"), "boot_args": "console=ttyS0"})
        .to_string()
}

fn drive_body(id: &str) -> String {
    serde_json::json!({"drive_id": id, "path_on_host": fixture("rootfs.img"), "is_root_device": true})
        .to_string()
}

#[test]
fn configures_starts_and_reports_a_vm() {
    let sock = serve();
    assert_eq!(call(&sock, "PUT", "/boot-source", &kernel_body()).0, 204);
    let machine = r#"{"vcpu_count": 2, "mem_size_mib": 256}"#;
    assert_eq!(call(&sock, "PUT", "/machine-config", machine).0, 204);
    assert_eq!(
        call(&sock, "PUT", "/drives/rootfs", &drive_body("rootfs")).0,
        204
    );
    let (status, body) = call(&sock, "GET", "/machine-config", "");
    assert_eq!(status, 200);
    assert!(body.contains(r#""vcpu_count":2"#), "{body}");
    let (status, body) = call(&sock, "GET", "/vm/config", "");
    assert_eq!(status, 200);
    assert!(body.contains(r#""drive_id":"rootfs""#), "{body}");
    let start = r#"{"action_type": "InstanceStart"}"#;
    assert_eq!(call(&sock, "PUT", "/actions", start), (204, String::new()));
    let (_, body) = call(&sock, "GET", "/", "");
    assert!(body.contains(r#""state":"Running""#), "{body}");
    assert!(body.contains(r#""app_name":"Ember""#), "{body}");
    let after = "The requested operation is not supported after starting the microVM.";
    assert_eq!(
        call(&sock, "PUT", "/drives/rootfs", &drive_body("rootfs")),
        (400, fault(after))
    );
    assert_eq!(call(&sock, "PATCH", "/vm", r#"{"state": "Paused"}"#).0, 204);
}

#[test]
fn version_and_preboot_errors() {
    let sock = serve();
    let (status, body) = call(&sock, "GET", "/version", "");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({ "firecracker_version": VMM_VERSION }).to_string()
    );
    let before = "The requested operation is not supported before starting the microVM.";
    let pause = r#"{"state": "Paused"}"#;
    assert_eq!(call(&sock, "PATCH", "/vm", pause), (400, fault(before)));
    let start = r#"{"action_type": "InstanceStart"}"#;
    let no_kernel = "Start microvm error: Cannot start microvm without kernel configuration.";
    assert_eq!(
        call(&sock, "PUT", "/actions", start),
        (400, fault(no_kernel))
    );
}

#[test]
fn keep_alive_serves_pipelined_requests_in_order() {
    let sock = serve();
    let wire = [
        request("PUT", "/boot-source", &kernel_body()),
        request("GET", "/machine-config", ""),
        request("GET", "/nope", ""),
    ]
    .concat();
    let answer = exchange(&sock, &wire);
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["204", "200", "400"], "{answer}");
}

#[test]
fn keep_alive_connection_stays_open_between_requests() {
    let sock = serve();
    let mut stream = connect(&sock);
    for _ in 0..3 {
        stream
            .write_all(request("GET", "/version", "").as_bytes())
            .unwrap();
        let mut buf = [0u8; 512];
        let len = stream.read(&mut buf).unwrap();
        assert!(buf[..len].starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}

#[test]
fn malformed_requests_get_400_and_close() {
    let sock = serve();
    let answer = exchange(&sock, "GARBAGE\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    assert!(answer.contains("fault_message"), "{answer}");
    let chunked = "PUT /boot-source HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert!(exchange(&sock, chunked).starts_with("HTTP/1.1 400"));
}

#[test]
fn oversized_bodies_are_refused_before_reading_them() {
    let sock = serve();
    let wire = "PUT /boot-source HTTP/1.1\r\nContent-Length: 51201\r\n\r\n";
    let (status, body) = status_and_body(&exchange(&sock, wire));
    assert_eq!(status, 400);
    let message = "Request payload with size 51201 is larger than the limit of 51200 \
                   allowed by server.";
    assert_eq!(body, fault(message));
    let wire = "PUT /boot-source HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
    assert!(exchange(&sock, wire).starts_with("HTTP/1.1 400"));
}

#[test]
fn truncated_body_gets_no_answer_and_does_not_hurt_others() {
    let sock = serve();
    let truncated = "PUT /boot-source HTTP/1.1\r\nContent-Length: 100\r\n\r\n{";
    assert_eq!(exchange(&sock, truncated), "");
    assert_eq!(call(&sock, "GET", "/version", "").0, 200);
}

#[test]
fn a_stalled_client_does_not_block_others_and_times_out() {
    let sock = serve();
    let mut slow = connect(&sock);
    slow.write_all(b"PUT /boot-source HTTP/1.1\r\nContent-Le")
        .unwrap();
    assert_eq!(call(&sock, "GET", "/version", "").0, 200);
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[test]
fn expect_continue_is_answered() {
    let sock = serve();
    let mut stream = connect(&sock);
    let head = "PUT /boot-source HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: ";
    let kernel = kernel_body();
    stream
        .write_all(format!("{head}{}\r\n\r\n", kernel.len()).as_bytes())
        .unwrap();
    let mut buf = [0u8; 256];
    let len = stream.read(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(kernel.as_bytes()).unwrap();
    let len = stream.read(&mut buf).unwrap();
    assert!(buf[..len].starts_with(b"HTTP/1.1 204 No Content\r\n"));
}

#[test]
fn http_1_0_closes_after_the_answer() {
    let sock = serve();
    let mut stream = connect(&sock);
    stream.write_all(b"GET /version HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Connection: close\r\n"));
}

#[test]
fn routing_errors_carry_firecracker_fault_messages() {
    let sock = serve();
    let invalid = "Invalid request method and/or path: PUT /vm.";
    assert_eq!(call(&sock, "PUT", "/vm", "{}"), (400, fault(invalid)));
    let other = drive_body("other");
    let mismatch = "The id from the path does not match the id from the body!";
    assert_eq!(
        call(&sock, "PUT", "/drives/rootfs", &other),
        (400, fault(mismatch))
    );
    let (status, body) = call(&sock, "PUT", "/machine-config", r#"{"vcpu_count": "2"}"#);
    assert_eq!(status, 400);
    assert!(body.contains("invalid type: string"), "{body}");
    let unsupported = "/balloon is not supported by Ember.";
    assert_eq!(
        call(&sock, "GET", "/balloon", ""),
        (400, fault(unsupported))
    );
}

#[test]
fn socket_is_private_and_stale_sockets_are_replaced() {
    let path = socket_path();
    drop(UnixListener::bind(&path).unwrap());
    let server = ApiServer::bind(&path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(matches!(
        ApiServer::bind(&path),
        Err(ApiError::SocketInUse(_))
    ));
    drop(server);
    fs::remove_file(&path).unwrap();
    fs::write(&path, "not a socket").unwrap();
    assert!(matches!(
        ApiServer::bind(&path),
        Err(ApiError::NotASocket(_))
    ));
    fs::remove_file(&path).unwrap();
}

#[test]
fn server_thread_ends_when_the_vmm_goes_away() {
    let path = socket_path();
    let server = ApiServer::bind(&path).unwrap();
    let (to_vmm, requests) = mpsc::channel::<super::ApiRequest>();
    drop(requests);
    let handle = server
        .spawn(
            to_vmm,
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            Vec::new(),
        )
        .unwrap();
    let (status, _) = call(&path, "GET", "/version", "");
    assert_eq!(status, 500);
    handle.join().unwrap().unwrap();
}

/// `answer_wire` (what the api_request fuzz target drives) sends what the server sends.
#[test]
fn answer_wire_answers_like_the_server() {
    let wires = [
        format!(
            "{}{}GET /vm/config HTTP/1.1\r\n\r\n",
            request("PUT", "/boot-source", &kernel_body()),
            request("PUT", "/drives/rootfs", &drive_body("rootfs"))
        ),
        "GET /version HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n".to_string(),
        format!("{}PUT /x HTTP/1.1\r\nbad", request("PATCH", "/vm", "{}")),
        "PUT /actions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n{".into(),
    ];
    for wire in wires {
        let sock = serve();
        let from_server = exchange(&sock, &wire);
        let mut config = VmResources::default();
        let mut state = InstanceState::NotStarted;
        let direct = super::answer_wire(wire.as_bytes(), |action| {
            answer(&mut config, &mut state, &action)
        });
        assert_eq!(String::from_utf8(direct).unwrap(), from_server, "{wire:?}");
    }
}

#[test]
fn silent_clients_cannot_lock_others_out() {
    let sock = serve();
    let silent: Vec<UnixStream> = (0..super::server::MAX_CONNECTIONS + 4)
        .map(|_| connect(&sock))
        .collect();
    assert_eq!(call(&sock, "GET", "/version", "").0, 200);
    // Those that are still open are closed once they have been silent for the timeout.
    for mut stream in silent {
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
}

#[test]
fn connect_close_cycles_leave_room_for_the_next_client() {
    let sock = serve();
    for _ in 0..1000 {
        drop(connect(&sock));
    }
    let started = std::time::Instant::now();
    assert_eq!(call(&sock, "GET", "/version", "").0, 200);
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[test]
fn clients_in_the_middle_of_requests_are_not_evicted() {
    let sock = serve();
    let mut busy: Vec<UnixStream> = (0..super::server::MAX_CONNECTIONS)
        .map(|_| connect(&sock))
        .collect();
    for stream in &mut busy {
        stream
            .write_all(b"PUT /machine-config HTTP/1.1\r\n")
            .unwrap();
    }
    // Give the server time to read every partial request before the next client comes.
    thread::sleep(Duration::from_millis(100));
    let mut refused = connect(&sock);
    let mut answer = String::new();
    refused.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(busy);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(call(&sock, "GET", "/version", "").0, 200);
}

#[test]
fn vsock_and_entropy_are_put_and_shown_in_the_vm_config() {
    let sock = serve();
    let dir = std::env::temp_dir().join(format!("ember-api-vsock-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let uds = dir.join("v.sock");
    let put = |path: &str, body: &str| call(&sock, "PUT", path, body);
    let (status, body) = put("/vsock", r#"{"guest_cid": 2, "uds_path": "/tmp/x.sock"}"#);
    assert_eq!(status, 400);
    assert!(
        body.contains("Vsock config error: guest_cid 2 is invalid"),
        "{body}"
    );
    let (status, body) = put("/vsock", r#"{"guest_cid": 4294967296, "uds_path": "/x"}"#);
    assert!(status == 400 && body.contains("4294967296"), "{body}");
    let missing = format!(
        r#"{{"guest_cid": 3, "uds_path": "{}/no/v.sock"}}"#,
        dir.display()
    );
    let (status, body) = put("/vsock", &missing);
    assert!(
        status == 400 && body.contains("folder does not exist"),
        "{body}"
    );
    let good = format!(r#"{{"guest_cid": 3, "uds_path": "{}"}}"#, uds.display());
    assert_eq!(put("/vsock", &good).0, 204);
    let (status, body) = put("/vsock", &good);
    assert!(
        status == 400 && body.contains("already configured"),
        "{body}"
    );
    let limited = r#"{"rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}}"#;
    let (status, body) = put("/entropy", limited);
    assert!(status == 400 && body.contains("rate_limiter"), "{body}");
    assert_eq!(put("/entropy", r#"{"rate_limiter": null}"#).0, 204);
    let (status, body) = call(&sock, "GET", "/vm/config", "");
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["vsock"]["guest_cid"], 3);
    assert_eq!(config["vsock"]["uds_path"], uds.to_str().unwrap());
    assert_eq!(config["entropy"], serde_json::json!({}));
    let _ = fs::remove_dir_all(&dir);
}
