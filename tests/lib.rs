//! Shared helpers for integration tests.
//!
//! The integration tests boot real guests, so they need a standard KVM. On
//! this project's hosts `/dev/kvm` is PVM, so they run inside the lab:
//! `tools/kvm-lab -- <test binary>` (see `docs/lab.md`); `tools/test` does
//! it for you. Tests call [`require_kvm`] first: it panics (never skips) when
//! run without a usable KVM.
//!
//! Environment read here:
//! - `EMBER_GUEST_DIR`: folder with the guest artifacts (else `tools/build-guest`
//!   is run and its last stdout line is used).
//! - `EMBER_BIN`: the `ember` binary (see [`ember_bin`]).
//! - `EMBER_TEST_KEEP=1`: keep [`TempDir`]s for post-mortems.
//!
//! Guest protocol (see `resources/guest/init`): the guest prints
//! [`GUEST_READY`], `EMBER-GUEST: cpus=<N>`, `EMBER-GUEST: memtotal_kb=<N>`,
//! runs the base64 script given as `ember_cmd=` on the kernel command line
//! (see [`ember_cmd_arg`]), prints `EMBER-GUEST-CMD-EXIT: <status>` and
//! reboots. [`GuestReport::parse`] reads all of that from console output.

pub mod ember;
pub mod hostile;
pub mod jail;

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Line the guest init prints as soon as userspace runs.
pub const GUEST_READY: &str = "EMBER-GUEST-INIT: ready";
/// Prefix of the line with the `ember_cmd` script's exit status.
pub const GUEST_CMD_EXIT: &str = "EMBER-GUEST-CMD-EXIT: ";

/// The repository root (the parent of this crate's folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

// ---------------------------------------------------------------------------
// KVM

/// Panics with a clear message unless `/dev/kvm` is a usable, standard KVM.
///
/// Never skips: a test that needs KVM and does not get it is a failure, so a
/// run outside the lab cannot pass silently.
pub fn require_kvm() {
    const HOW: &str = "run the integration tests through `tools/kvm-lab` \
                       (e.g. `tools/test`), see docs/lab.md";
    if Path::new("/sys/module/kvm_pvm").exists() {
        panic!(
            "this test needs a standard KVM, but /dev/kvm here is kvm_pvm (PVM), \
             which only runs PVM-patched guests: {HOW}"
        );
    }
    if !Path::new("/dev/kvm").exists() {
        panic!("this test needs KVM, but /dev/kvm does not exist: {HOW}");
    }
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("this test needs KVM, but /dev/kvm cannot be opened read-write ({e}): {HOW}");
    }
}

// ---------------------------------------------------------------------------
// Guest artifacts

/// The guest artifacts made by `tools/build-guest`.
#[derive(Debug, Clone)]
pub struct GuestArtifacts {
    /// The artifact folder.
    pub dir: PathBuf,
    /// ELF kernel with the PVH entry note.
    pub vmlinux: PathBuf,
    /// Compressed kernel.
    pub bzimage: PathBuf,
    /// gzip'd newc cpio with busybox and the guest init.
    pub initramfs: PathBuf,
    /// ext4 image with busybox and the guest init. Copy it before writing to
    /// it ([`GuestArtifacts::rootfs_copy`]): it is a shared cached artifact.
    pub rootfs: PathBuf,
}

impl GuestArtifacts {
    /// The artifacts in `dir`; panics if one is missing.
    pub fn in_dir(dir: &Path) -> Self {
        let a = GuestArtifacts {
            dir: dir.to_path_buf(),
            vmlinux: dir.join("vmlinux"),
            bzimage: dir.join("bzImage"),
            initramfs: dir.join("initramfs.cpio.gz"),
            rootfs: dir.join("rootfs.ext4"),
        };
        for p in [&a.vmlinux, &a.bzimage, &a.initramfs, &a.rootfs] {
            assert!(p.is_file(), "guest artifact {} is missing", p.display());
        }
        a
    }

    /// A private, writable copy of `rootfs.ext4` in `dir`.
    pub fn rootfs_copy(&self, dir: &Path) -> PathBuf {
        let dst = dir.join("rootfs.ext4");
        fs::copy(&self.rootfs, &dst)
            .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", self.rootfs.display(), dst.display()));
        dst
    }
}

/// The guest artifact folder: `$EMBER_GUEST_DIR`, else the last stdout line
/// of `tools/build-guest` (run once per process; cached builds are instant).
pub fn guest_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("EMBER_GUEST_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        let script = repo_root().join("tools/build-guest");
        let mut cmd = Command::new(&script);
        cmd.current_dir(repo_root());
        let out = run_with_timeout(&mut cmd, 3600);
        assert!(
            out.status.success(),
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
        PathBuf::from(last.expect("tools/build-guest printed no path").trim())
    })
    .clone()
}

/// [`GuestArtifacts`] in [`guest_dir`].
pub fn guest_artifacts() -> GuestArtifacts {
    GuestArtifacts::in_dir(&guest_dir())
}

/// The `ember` binary: `$EMBER_BIN`, else `target/release/ember` or
/// `target/debug/ember` under the repository, if one exists.
pub fn ember_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EMBER_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    ["target/release/ember", "target/debug/ember"]
        .iter()
        .map(|p| repo_root().join(p))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// Guest command line and console output

/// Standard base64 (RFC 4648, with padding).
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The kernel command-line word that makes the guest init run `script`
/// (a `sh` script) and report its exit status.
pub fn ember_cmd_arg(script: &str) -> String {
    format!("ember_cmd={}", base64_encode(script.as_bytes()))
}

/// `n` random bytes from the kernel, as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the guest init reported on the console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestReport {
    /// [`GUEST_READY`] was printed.
    pub ready: bool,
    /// `EMBER-GUEST: cpus=<N>`.
    pub cpus: Option<u32>,
    /// `EMBER-GUEST: memtotal_kb=<N>`.
    pub memtotal_kb: Option<u64>,
    /// `EMBER-GUEST-CMD-EXIT: <status>`.
    pub cmd_exit: Option<i32>,
}

impl GuestReport {
    /// Parses console output (tolerates `\r`, kernel messages, any order).
    pub fn parse(console: &str) -> Self {
        let mut r = GuestReport::default();
        for line in console.lines() {
            let line = line.trim_matches(|c: char| c == '\r' || c.is_whitespace());
            if line.ends_with(GUEST_READY) {
                r.ready = true;
            } else if let Some(v) = after(line, "EMBER-GUEST: cpus=") {
                r.cpus = v.parse().ok();
            } else if let Some(v) = after(line, "EMBER-GUEST: memtotal_kb=") {
                r.memtotal_kb = v.parse().ok();
            } else if let Some(v) = after(line, GUEST_CMD_EXIT) {
                r.cmd_exit = v.parse().ok();
            }
        }
        r
    }
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| line[i + marker.len()..].trim())
}

/// stdout followed by stderr, lossily decoded (for assertions and messages).
pub fn output_text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.stderr.is_empty() {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    s
}

// ---------------------------------------------------------------------------
// Running processes with a deadline

/// A process that did not exit in time; it was killed (with its process
/// group) and this is what it had printed.
#[derive(Debug)]
pub struct TimedOut {
    /// The command, for messages.
    pub command: String,
    /// The limit that was exceeded.
    pub timeout: Duration,
    /// Output up to the kill (status is the kill's).
    pub output: Output,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` did not exit within {:?}; killed. Output so far:\n{}",
            self.command,
            self.timeout,
            output_text(&self.output)
        )
    }
}

impl std::error::Error for TimedOut {}

/// Runs `cmd` (stdin = /dev/null, stdout and stderr captured) for at most
/// `timeout_secs` seconds. Panics if it cannot be started or times out (the
/// message has its output so far). Does not check the exit status.
pub fn run_with_timeout(cmd: &mut Command, timeout_secs: u64) -> Output {
    match try_run_with_timeout(cmd, Duration::from_secs(timeout_secs)) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`run_with_timeout`] but returns the timeout as an error, with the
/// output captured up to the kill.
pub fn try_run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, TimedOut> {
    let command = describe(cmd);
    let mut child = spawn_captured(cmd).unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let stdout = reader_thread(child.stdout.take());
    let stderr = reader_thread(child.stderr.take());
    let (status, timed_out) = wait_deadline(&mut child, timeout);
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if timed_out {
        Err(TimedOut {
            command,
            timeout,
            output,
        })
    } else {
        Ok(output)
    }
}

/// Spawns `cmd` in its own process group with stdin = /dev/null and piped
/// stdout/stderr, so [`kill_group`] can take down everything it started.
pub fn spawn_captured(cmd: &mut Command) -> io::Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
}

/// SIGKILLs the process group of `child` (see [`spawn_captured`]) and the
/// child itself.
pub fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
}

/// Waits for `child` until `timeout`; on expiry kills its group. Returns
/// the exit status and whether it timed out.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> (ExitStatus, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (status, false),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child);
                return (child.wait().expect("wait for killed child"), true);
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("wait for child: {e}"),
        }
    }
}

fn reader_thread<R: Read + Send + 'static>(src: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = src {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// QEMU reference VMM

/// A `qemu-system-x86_64 -M microvm` command under KVM with a serial console
/// on stdio, which exits when the guest reboots (`reboot=t` on `cmdline`).
/// Add devices with `.args(...)` before running it.
///
/// `acpi=off`: with ACPI on, the guest kernel's ACPI init fails on microvm's
/// tables and the init's console output is lost; with it off QEMU appends
/// `virtio_mmio.device=...` to the command line, so `virtio-blk-device`
/// appears as /dev/vda. `x-option-roms=off,pit=off,pic=off` shorten the boot,
/// `rtc=on` gives the guest a real clock.
pub fn qemu_microvm_command(
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    vcpus: u32,
    mem_mib: u32,
) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        "microvm,x-option-roms=off,pit=off,pic=off,rtc=on,acpi=off",
    ])
    .args(["-enable-kvm", "-cpu", "host"])
    .args(["-smp", &vcpus.to_string(), "-m", &format!("{mem_mib}M")])
    .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
    .args(["-serial", "stdio"])
    .arg("-kernel")
    .arg(kernel);
    if let Some(initrd) = initrd {
        cmd.arg("-initrd").arg(initrd);
    }
    cmd.args(["-append", cmdline]);
    cmd
}

// ---------------------------------------------------------------------------
// Temporary folders

/// A temporary folder, removed on drop (kept with `EMBER_TEST_KEEP=1`).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new empty folder under `$TMPDIR` (or /tmp) named `ember-<prefix>-...`.
    pub fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "ember-{prefix}-{}-{nanos:x}-{n}",
            std::process::id()
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("EMBER_TEST_KEEP").is_some_and(|v| v == "1") {
            eprintln!("keeping {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(base64_encode(plain.as_bytes()), enc, "{plain:?}");
        }
        assert_eq!(base64_encode(&[0xfb, 0xff, 0xfe]), "+//+");
    }

    #[test]
    fn guest_report_parses_console() {
        let console = "[    0.1] boot\r\nEMBER-GUEST-INIT: ready\r\nEMBER-GUEST: cpus=2\n\
                       EMBER-GUEST: memtotal_kb=201234\nhello\nEMBER-GUEST-CMD-EXIT: 3\n";
        let r = GuestReport::parse(console);
        assert_eq!(
            r,
            GuestReport {
                ready: true,
                cpus: Some(2),
                memtotal_kb: Some(201234),
                cmd_exit: Some(3)
            }
        );
        assert_eq!(GuestReport::parse("nothing"), GuestReport::default());
    }

    #[test]
    fn timeout_kills_and_keeps_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; sleep 30"]);
        let t0 = Instant::now();
        let err = try_run_with_timeout(&mut cmd, Duration::from_millis(500)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert_eq!(String::from_utf8_lossy(&err.output.stdout), "started\n");
    }

    #[test]
    fn run_with_timeout_returns_status_and_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run_with_timeout(&mut cmd, 30);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(output_text(&out), "out\nerr\n");
    }

    #[test]
    fn temp_dir_is_removed() {
        let p = {
            let d = TempDir::new("selftest");
            fs::write(d.path().join("x"), "y").unwrap();
            d.path().to_path_buf()
        };
        if std::env::var_os("EMBER_TEST_KEEP").is_none() {
            assert!(!p.exists());
        }
    }
}
