//! Running Ember in tests: Firecracker-format configs, a run with a timeout, and what the
//! guest and the process reported.

use crate::{ember_bin, output_text, run_with_timeout, GuestReport, TempDir};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Boot arguments for Ember guests: `reboot=k` makes a guest reboot end the VMM.
pub const EMBER_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1 i8042.noaux";
/// Guests in the lab run under nested, emulated SVM: boots take seconds to tens of seconds.
pub const EMBER_TIMEOUT_SECS: u64 = 240;

/// The `ember` binary; panics when none is built.
pub fn ember() -> PathBuf {
    ember_bin().expect("no ember binary: set EMBER_BIN or run `cargo build --release -p ember`")
}

/// A debug build of ember, for tests of its debug-only hooks (named by `hook` in the
/// message when there is none).
pub fn ember_debug(hook: &str) -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_DEBUG_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let p = crate::repo_root().join("target/debug/ember");
    assert!(
        p.is_file(),
        "this test needs a debug build of ember (its {hook} hook is compiled out of release \
         builds): run `cargo build -p ember` or set EMBER_DEBUG_BIN"
    );
    p
}

/// The number of the last `tick-<n>` line a ticking guest printed.
pub fn last_tick(console: &str) -> Option<u64> {
    console
        .lines()
        .rev()
        .filter_map(|l| l.trim().strip_prefix("tick-"))
        .find_map(|n| n.split_whitespace().next()?.parse().ok())
}

/// A Firecracker-format VM config.
pub fn vm_config(
    kernel: &Path,
    initrd: Option<&Path>,
    boot_args: &str,
    vcpus: u32,
    mem_mib: u32,
) -> Value {
    let mut boot = json!({ "kernel_image_path": kernel, "boot_args": boot_args });
    if let Some(initrd) = initrd {
        boot["initrd_path"] = json!(initrd);
    }
    json!({
        "boot-source": boot,
        "machine-config": { "vcpu_count": vcpus, "mem_size_mib": mem_mib },
    })
}

/// A `drives` entry.
pub fn drive(id: &str, path: &Path, root: bool, read_only: bool) -> Value {
    json!({
        "drive_id": id,
        "path_on_host": path,
        "is_root_device": root,
        "is_read_only": read_only,
        "cache_type": "Writeback",
    })
}

/// What one Ember run produced.
pub struct EmberRun {
    pub output: Output,
    /// stdout (the guest console) then stderr.
    pub text: String,
    pub report: GuestReport,
}

impl EmberRun {
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Writes `config` to `dir/vm.json` and runs `ember --no-api --config-file` on it.
pub fn run_ember_config(config: &Value, dir: &TempDir) -> EmberRun {
    let path = dir.path().join("vm.json");
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    run_ember_args(&["--no-api", "--config-file", path.to_str().unwrap()])
}

/// Runs ember with `args`, stdin closed.
pub fn run_ember_args(args: &[&str]) -> EmberRun {
    let mut cmd = Command::new(ember());
    cmd.args(args).stdin(std::process::Stdio::null());
    let output = run_with_timeout(&mut cmd, EMBER_TIMEOUT_SECS);
    let text = output_text(&output);
    let report = GuestReport::parse(&text);
    EmberRun {
        output,
        text,
        report,
    }
}

/// A running `ember` with its console captured, for tests that talk to it while it runs.
pub struct EmberProcess {
    child: std::process::Child,
    console: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl EmberProcess {
    /// Starts ember with `args`; stdout and stderr are collected in the background.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with(&ember(), args, &[])
    }

    /// Starts the ember binary `bin` with `args` and extra environment `envs`.
    pub fn spawn_with(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        use std::process::Stdio;
        let mut child = Command::new(bin)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ember");
        let console = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        let readers = [stdout, stderr]
            .into_iter()
            .map(|mut stream| {
                let console = console.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 {
                            break;
                        }
                        console
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buffer[..n]));
                    }
                })
            })
            .collect();
        EmberProcess {
            child,
            console,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far.
    pub fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// Waits until the console contains `needle`; panics with the console after `secs`.
    pub fn wait_for(&self, needle: &str, secs: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if self.console().contains(needle) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "{needle:?} did not appear within {secs} s; console:\n{}",
            self.console()
        );
    }

    /// Waits for the process to end (at most `secs`, then kills it and panics).
    pub fn wait(mut self, secs: u64) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for ember") {
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return (status, self.console());
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "ember did not exit within {secs} s; console:\n{}",
                    self.console()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait for ember")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
    }
}

impl Drop for EmberProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// One HTTP/1.1 request over the API socket; returns (status code, body).
pub fn api_request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Waits until the API socket accepts connections.
pub fn wait_for_socket(socket: &Path, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("API socket {} never came up", socket.display());
}
