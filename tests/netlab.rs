//! Helpers for the network tests: a private network namespace with TAPs, host-side servers
//! on threads inside it, and an Ember process started in it.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Port of the host's HTTP server (`/go` and the download files).
pub const HTTP: u16 = 8080;
/// Port where the host takes uploads: one file per connection.
pub const PUT: u16 = 7001;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Panics (never skips) unless running as root with a standard, usable KVM.
pub fn require_root_and_kvm() {
    const HOW: &str = "run through `tools/kvm-lab -- cargo test -p ember-integration-tests \
                       --test net` as root";
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "network tests need root: {HOW}");
    assert!(
        !Path::new("/sys/module/kvm_pvm").exists(),
        "/dev/kvm is PVM here: {HOW}"
    );
    let kvm = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    assert!(kvm.is_ok(), "cannot open /dev/kvm ({kvm:?}): {HOW}");
}

/// `$EMBER_GUEST_DIR`, else the last stdout line of `tools/build-guest`.
pub fn guest_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EMBER_GUEST_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let out = Command::new(repo_root().join("tools/build-guest"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tools/build-guest (or set EMBER_GUEST_DIR)");
    assert!(out.status.success(), "tools/build-guest failed");
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap()
            .trim(),
    )
}

pub fn ember_bin() -> PathBuf {
    std::env::var_os("EMBER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/ember"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn md5_of(path: &Path) -> String {
    let out = run(Command::new("md5sum").arg(path));
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A temporary folder, removed on drop unless `EMBER_TEST_KEEP=1`.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(&format!("ember-{prefix}")));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A file of `len` random bytes.
    pub fn random_file(&self, name: &str, len: usize) -> PathBuf {
        let path = self.0.join(name);
        let mut data = vec![0u8; len];
        File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut data)
            .unwrap();
        fs::write(&path, data).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("EMBER_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// A network namespace with TAPs (name, address/prefix), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(taps: &[(&str, &str)]) -> Netns {
        let ns = Netns {
            name: unique("ember-net"),
        };
        run(Command::new("ip").args(["netns", "add", &ns.name]));
        ns.ip(&["link", "set", "lo", "up"]);
        for (tap, addr) in taps {
            ns.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
            ns.ip(&["addr", "add", addr, "dev", tap]);
            ns.ip(&["link", "set", tap, "up"]);
        }
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    pub fn ping(&self, addr: &str) -> String {
        // Debian's busybox-static: the lab has no iputils.
        run(self
            .command("busybox")
            .args(["ping", "-c", "3", "-W", "5", addr]))
    }

    /// Moves the calling thread into the namespace.
    pub fn enter(&self) {
        let file = File::open(Path::new("/run/netns").join(&self.name)).unwrap();
        // SAFETY: `file` is an open namespace fd; setns changes only this thread.
        let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(ret, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The host side: an HTTP/1.0 server (`/go` answers once released; other paths serve
/// files) and an upload sink, on threads inside the namespace.
pub struct HostServers {
    go: Arc<(Mutex<bool>, Condvar)>,
    uploads: Arc<Mutex<Vec<PathBuf>>>,
}

impl HostServers {
    pub fn start(ns: &Netns, dir: &TempDir, files: &[(&str, &Path)]) -> HostServers {
        let go = Arc::new((Mutex::new(false), Condvar::new()));
        let uploads = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = channel();
        let files: Vec<(String, PathBuf)> = files
            .iter()
            .map(|(p, f)| (p.to_string(), f.to_path_buf()))
            .collect();
        let (name, go2) = (ns.name.clone(), go.clone());
        let ready = ready_tx.clone();
        thread::spawn(move || {
            Netns { name }.enter_forget();
            let listener = TcpListener::bind(("0.0.0.0", HTTP)).unwrap();
            ready.send(()).unwrap();
            for stream in listener.incoming().flatten() {
                serve_http(stream, &files, &go2);
            }
        });
        let (name, sink, dir) = (ns.name.clone(), uploads.clone(), dir.path().to_path_buf());
        thread::spawn(move || {
            Netns { name }.enter_forget();
            let listener = TcpListener::bind(("0.0.0.0", PUT)).unwrap();
            ready_tx.send(()).unwrap();
            for (n, stream) in listener.incoming().flatten().enumerate() {
                let path = dir.join(format!("upload-{n}"));
                let mut file = File::create(&path).unwrap();
                let mut stream = stream;
                if let Err(e) = std::io::copy(&mut stream, &mut file) {
                    eprintln!("upload {n}: {e}");
                }
                sink.lock().unwrap().push(path);
            }
        });
        for _ in 0..2 {
            ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        HostServers { go, uploads }
    }

    /// Lets `GET /go` answer.
    pub fn release_go(&self) {
        *self.go.0.lock().unwrap() = true;
        self.go.1.notify_all();
    }

    /// The uploaded files, once `count` uploads are complete (10 s at most).
    pub fn uploads(&self, count: usize) -> Vec<PathBuf> {
        for _ in 0..100 {
            if self.uploads.lock().unwrap().len() >= count {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        self.uploads.lock().unwrap().clone()
    }
}

impl Netns {
    /// `enter` for a handle that must not delete the namespace when dropped.
    fn enter_forget(self) {
        self.enter();
        std::mem::forget(self);
    }
}

fn serve_http(stream: TcpStream, files: &[(String, PathBuf)], go: &(Mutex<bool>, Condvar)) {
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
    let body = if path == "/go" {
        let mut released = go.0.lock().unwrap();
        while !*released {
            released = go.1.wait(released).unwrap();
        }
        b"go\n".to_vec()
    } else {
        match files.iter().find(|(p, _)| *p == path) {
            Some((_, file)) => fs::read(file).unwrap(),
            None => Vec::new(),
        }
    };
    let mut stream = reader.into_inner();
    let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// The Ember JSON config: the guest's vmlinux and initramfs, `script` as `ember_cmd`, one
/// interface per TAP (eth0, eth1, ...).
pub fn ember_config(guest: &Path, script: &str, taps: &[&str]) -> String {
    let boot_args = format!(
        "console=ttyS0 reboot=k panic=1 i8042.noaux ember_cmd={}",
        base64(script.as_bytes())
    );
    let ifaces: Vec<serde_json::Value> = taps
        .iter()
        .enumerate()
        .map(|(i, tap)| {
            serde_json::json!({
                "iface_id": format!("eth{i}"),
                "host_dev_name": tap,
                "guest_mac": format!("06:00:AC:1E:00:{:02X}", i + 2),
            })
        })
        .collect();
    serde_json::json!({
        "boot-source": {
            "kernel_image_path": guest.join("vmlinux"),
            "initrd_path": guest.join("initramfs.cpio.gz"),
            "boot_args": boot_args,
        },
        "machine-config": { "vcpu_count": 2, "mem_size_mib": 256 },
        "network-interfaces": ifaces,
    })
    .to_string()
}

/// An Ember process in a namespace, its console lines streamed to the test.
pub struct Ember {
    child: Child,
    lines: Receiver<String>,
    console: String,
    stderr: Arc<Mutex<String>>,
}

impl Ember {
    pub fn start_in(ns: &Netns, dir: &TempDir, config: &str) -> Ember {
        Ember::start_with(ns, dir, config, &["--no-api"])
    }

    /// Like [`Ember::start_in`], with the API served on `socket` as well.
    pub fn start_with_api(ns: &Netns, dir: &TempDir, config: &str, socket: &Path) -> Ember {
        Ember::start_with(ns, dir, config, &["--api-sock", socket.to_str().unwrap()])
    }

    /// Ember serving only its API on `socket`, with nothing configured (for a snapshot load).
    pub fn start_unconfigured(ns: &Netns, socket: &Path) -> Ember {
        Ember::spawn(ns, &["--api-sock", socket.to_str().unwrap()])
    }

    fn start_with(ns: &Netns, dir: &TempDir, config: &str, args: &[&str]) -> Ember {
        let path = dir.path().join("config.json");
        fs::write(&path, config).unwrap();
        let mut args = args.to_vec();
        args.extend(["--config-file", path.to_str().unwrap()]);
        Ember::spawn(ns, &args)
    }

    fn spawn(ns: &Netns, args: &[&str]) -> Ember {
        let mut child = ns
            .command(ember_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", ember_bin().display()));
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            sink.lock().unwrap().push_str(&text);
        });
        Ember {
            child,
            lines,
            console: String::new(),
            stderr,
        }
    }

    /// Waits for a console line containing `marker`.
    pub fn wait_for_line(&mut self, marker: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(marker);
                    self.console.push_str(line.trim_end_matches('\r'));
                    self.console.push('\n');
                    if found {
                        return;
                    }
                }
                Err(e) => panic!(
                    "no {marker:?} ({e:?}); console:\n{}\nstderr:\n{}",
                    self.console,
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Waits for Ember to exit; returns the whole console.
    pub fn wait_exit(&mut self, timeout: Duration) -> String {
        let status = self.wait(timeout);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.console.push_str(line.trim_end_matches('\r'));
            self.console.push('\n');
        }
        let stderr = self.stderr.lock().unwrap().clone();
        assert!(
            status.success(),
            "ember: {status}\n{}\n{stderr}",
            self.console
        );
        self.console.clone()
    }

    /// Waits for Ember to exit; returns its status and stderr.
    pub fn wait_failure(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let status = self.wait(timeout);
        thread::sleep(Duration::from_millis(200));
        (status, self.stderr.lock().unwrap().clone())
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "ember did not exit in {timeout:?}; console:\n{}",
                    self.console
                );
            }
            while let Ok(line) = self.lines.try_recv() {
                self.console.push_str(line.trim_end_matches('\r'));
                self.console.push('\n');
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Ember {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The status in `EMBER-GUEST-CMD-EXIT: <status>`.
pub fn guest_exit(console: &str) -> Option<i32> {
    console
        .lines()
        .find_map(|l| l.split("EMBER-GUEST-CMD-EXIT: ").nth(1))
        .and_then(|s| s.trim().parse().ok())
}

/// The first word after `EMBER-NET: <key> `.
pub fn guest_value(console: &str, key: &str) -> Option<String> {
    let prefix = format!("EMBER-NET: {key} ");
    console
        .lines()
        .find_map(|l| l.split(prefix.as_str()).nth(1))
        .and_then(|s| s.split_whitespace().next())
        .map(str::to_string)
}
