//! Ember's Firecracker-compatible REST API: HTTP/1.1 on a Unix socket, served by one thread.
//!
//! HTTP parser: `httparse`, under the small framing loop in `http.rs`. It is the parser hyper
//! is built on: widely used, fuzzed, actively maintained, `no_std`-capable and dependency-free.
//! It parses only the request head, which leaves framing (Content-Length, keep-alive, size
//! limits) to us: exactly the small subset Firecracker's API needs. `dbs-uhttp` (a fork of
//! Firecracker's `micro_http`) was the alternative: it is released rarely, pulls in `mio` 0.8
//! and brings its own server and routing model; crates.io's `micro-http` is an unrelated async
//! server.
//!
//! Threading: one thread, no async runtime. It waits in epoll on the listening socket and on up
//! to [`server::MAX_CONNECTIONS`] keep-alive connections, so an idle or slow client never
//! blocks another; a request left unfinished for 10 s is answered 408 and its connection closed.
//! The thread never touches VM state: each request becomes a `VmmAction`, sent with a reply
//! channel to the VMM thread, woken through an `EventFd`.

mod connection;
mod handler;
mod http;
#[cfg(test)]
mod openapi_tests;
mod router;
mod server;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Sender};
use std::thread::{self, JoinHandle};
use vmm::seccomp::{BpfProgram, ThreadKind};
use vmm_sys_util::eventfd::EventFd;

pub use vmm::rpc::ApiRequest;
use vmm::rpc::{VmmAction, VmmResponse};

/// Why the API socket could not be set up or served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API socket path {0:?} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("API socket {0:?} is in use by a running process")]
    SocketInUse(PathBuf),
    #[error("cannot inspect the API socket path {0:?}: {1}")]
    Inspect(PathBuf, io::Error),
    #[error("cannot remove the stale API socket {0:?}: {1}")]
    RemoveStale(PathBuf, io::Error),
    #[error("cannot bind the API socket {0:?}: {1}")]
    Bind(PathBuf, io::Error),
    #[error("cannot restrict the API socket {0:?} to its owner: {1}")]
    Permissions(PathBuf, io::Error),
    #[error("API event loop failed: {0}")]
    Epoll(io::Error),
    #[error("cannot start the API thread: {0}")]
    Spawn(io::Error),
    #[error("API thread: {0}")]
    Seccomp(String),
}

/// A bound API socket, ready to be served.
#[derive(Debug)]
pub struct ApiServer {
    listener: UnixListener,
    max_payload: usize,
}

impl ApiServer {
    /// Binds a socket at `path` with mode 0600, replacing a stale socket left there.
    pub fn bind(path: impl AsRef<Path>) -> Result<ApiServer, ApiError> {
        let path = path.as_ref().to_path_buf();
        remove_stale_socket(&path)?;
        let listener = UnixListener::bind(&path).map_err(|e| ApiError::Bind(path.clone(), e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(|e| ApiError::Permissions(path.clone(), e))?;
        Ok(ApiServer {
            listener,
            max_payload: http::MAX_PAYLOAD_BYTES,
        })
    }

    /// Accepts request bodies of up to `bytes` (`--http-api-max-payload-size`).
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Serves the API on a new thread named `ember-api` until the VMM thread drops its
    /// receiver. Each request is sent on `to_vmm`, then `wake` is written 1.
    ///
    /// The thread installs `seccomp` (empty: no filter) before it touches the socket; this
    /// returns once it has, with the error if it could not.
    pub fn spawn(
        self,
        to_vmm: Sender<ApiRequest>,
        wake: EventFd,
        seccomp: BpfProgram,
    ) -> Result<JoinHandle<Result<(), ApiError>>, ApiError> {
        let (installed_tx, installed_rx) = sync_channel(1);
        let handle = thread::Builder::new()
            .name("ember-api".into())
            .spawn(move || {
                let installed = vmm::seccomp::apply(&seccomp).map_err(|e| e.to_string());
                let _ = installed_tx.send(installed.clone());
                installed.map_err(ApiError::Seccomp)?;
                vmm::seccomp::test_hook_forbidden_syscall(ThreadKind::Api);
                self.run(to_vmm, wake)
            })
            .map_err(ApiError::Spawn)?;
        match installed_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(ApiError::Seccomp(e)),
            Err(_) => Err(ApiError::Seccomp("the thread ended at its start".into())),
        }
    }

    /// Serves the API on the calling thread (what [`ApiServer::spawn`] runs).
    pub fn run(self, to_vmm: Sender<ApiRequest>, wake: EventFd) -> Result<(), ApiError> {
        let handler = handler::Handler::new(to_vmm, wake);
        http::set_max_payload(self.max_payload);
        server::Server::new(self.listener, handler)?.run()
    }
}

/// Clears `path` for a new socket: nothing there is fine, a dead socket is removed, a live
/// socket or any other file is an error.
fn remove_stale_socket(path: &Path) -> Result<(), ApiError> {
    let file_type = match fs::symlink_metadata(path) {
        Ok(meta) => meta.file_type(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(ApiError::Inspect(path.to_path_buf(), err)),
    };
    if !file_type.is_socket() {
        return Err(ApiError::NotASocket(path.to_path_buf()));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(ApiError::SocketInUse(path.to_path_buf()));
    }
    fs::remove_file(path).map_err(|e| ApiError::RemoveStale(path.to_path_buf(), e))
}

/// What the server sends back on a connection whose client sent exactly `wire`, with `vmm`
/// answering each action in place of the VMM thread: every complete request is answered in
/// order, an unfinished one that expects it gets `100 Continue`, and bytes that cannot be
/// framed get a 400 after which the connection closes. Stops where the server would close
/// the connection. This is the framing, routing and rendering the server runs, without the
/// socket and threads, for the `api_request` fuzz target.
pub fn answer_wire(mut wire: &[u8], mut vmm: impl FnMut(VmmAction) -> VmmResponse) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        match http::parse_request(wire) {
            Ok(http::Parsed::Complete(request, used)) => {
                wire = &wire[used..];
                let mut response = handler::respond(&request, &mut vmm);
                if !request.keep_alive {
                    response = response.closing();
                }
                out.extend_from_slice(&response.to_bytes());
                if response.close {
                    return out;
                }
            }
            Ok(http::Parsed::Incomplete { expects_continue }) => {
                if expects_continue {
                    out.extend_from_slice(http::CONTINUE);
                }
                return out;
            }
            Err(err) => {
                let response = http::Response::fault(400, &err.to_string()).closing();
                out.extend_from_slice(&response.to_bytes());
                return out;
            }
        }
    }
}
