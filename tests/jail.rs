//! Helpers for `tests/jailer.rs`: the `ember-jailer` binary, a jail prepared the way an
//! operator prepares one, the machine's cgroup flavour, and what /proc says about a process.

use crate::{output_text, repo_root};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The uid and gid the tests jail Ember as.
pub const JAIL_ID: u32 = 1234;

/// `$EMBER_JAILER_BIN`, else `target/{release,debug}/ember-jailer`.
pub fn jailer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_JAILER_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    ["target/release/ember-jailer", "target/debug/ember-jailer"]
        .iter()
        .map(|p| repo_root().join(p))
        .find(|p| p.is_file())
        .expect("no ember-jailer: set EMBER_JAILER_BIN or `cargo build -p ember-jailer`")
}

/// The `ember` binary to jail; panics unless it is static (it must start in an empty jail).
pub fn static_ember() -> PathBuf {
    let bin = crate::ember_bin().expect("no ember binary: set EMBER_BIN (`cargo build-static`)");
    let bytes = fs::read(&bin).unwrap_or_else(|e| panic!("read {}: {e}", bin.display()));
    assert!(
        !has_interpreter(&bytes),
        "{} is dynamically linked and cannot start in an empty jail: build it with \
         `cargo build-static` and set EMBER_BIN (tools/test does)",
        bin.display()
    );
    bin
}

/// Whether an ELF64 file names a program interpreter (PT_INTERP): a dynamic executable.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let num = |at: usize, len: usize| {
        elf.get(at..at + len).map_or(0, |b| {
            b.iter().rev().fold(0usize, |n, &x| n << 8 | usize::from(x))
        })
    };
    let (phoff, phentsize, phnum) = (num(0x20, 8), num(0x36, 2), num(0x38, 2));
    (0..phnum).any(|i| num(phoff + i * phentsize, 4) == PT_INTERP as usize)
}

/// Which cgroup version carries memory and cpu limits here, and the flags that set them.
#[derive(Debug, Clone)]
pub struct Cgroups {
    pub version: u8,
    /// `(mount of the hierarchy, file, value)` for the memory and the cpu limit.
    pub limits: Vec<(PathBuf, &'static str, &'static str)>,
}

impl Cgroups {
    /// v1 where a v1 memory hierarchy is mounted (this project's hybrid hosts), else v2.
    pub fn of_this_machine() -> Cgroups {
        let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
        let root = PathBuf::from("/sys/fs/cgroup");
        if v1 {
            Cgroups {
                version: 1,
                limits: vec![
                    (root.join("memory"), "memory.limit_in_bytes", "402653184"),
                    (root.join("cpu"), "cpu.cfs_quota_us", "150000"),
                ],
            }
        } else {
            Cgroups {
                version: 2,
                limits: vec![
                    (root.clone(), "memory.max", "402653184"),
                    (root, "cpu.max", "150000 100000"),
                ],
            }
        }
    }

    /// `--cgroup-version N --cgroup FILE=VALUE ...`.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = vec!["--cgroup-version".to_string(), self.version.to_string()];
        for (_, file, value) in &self.limits {
            flags.extend(["--cgroup".to_string(), format!("{file}={value}")]);
        }
        flags
    }

    /// Every folder the jailer may have made for `parent`/`id`, deepest first.
    pub fn dirs(&self, parent: &str, id: &str) -> Vec<PathBuf> {
        let mounts = self.limits.iter().map(|(m, _, _)| m);
        let leaves = mounts.clone().map(|m| m.join(parent).join(id));
        leaves.chain(mounts.map(|m| m.join(parent))).collect()
    }
}

/// Removes the cgroups a test made, when it ends (the monitor has exited by then).
pub struct CgroupCleanup(pub Vec<PathBuf>);

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// `<base>/ember/<id>/root`, made by the operator beforehand and holding `files` (copied,
/// owned by the jail's user, who must be able to write a disk).
pub fn prepare_jail(base: &Path, id: &str, files: &[(&Path, &str)]) -> PathBuf {
    let root = base.join("ember").join(id).join("root");
    fs::create_dir_all(&root).unwrap();
    for (src, name) in files {
        let dst = root.join(name);
        fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        std::os::unix::fs::chown(&dst, Some(JAIL_ID), Some(JAIL_ID)).unwrap();
    }
    root
}

/// A line of `/proc/<pid>/status`, e.g. `status_field(pid, "CapEff")`.
pub fn status_field(pid: u32, key: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let prefix = format!("{key}:");
    status
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The namespace `kind` (net, mnt, pid) of `pid`, as `kind:[inode]`.
pub fn namespace(pid: &str, kind: &str) -> String {
    let link = fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    link.to_string_lossy().into_owned()
}

/// (device, inode) of a path.
pub fn file_id(path: &Path) -> (u64, u64) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.dev(), m.ino())
}

/// The pid the jailer wrote to `<root>/ember.pid`, once it is there.
pub fn jailed_pid(root: &Path, secs: u64) -> u32 {
    let file = root.join("ember.pid");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(pid) = fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", file.display());
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `pid` is gone (or a zombie nobody reaped yet).
pub fn wait_gone(pid: u32, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')) =>
            {
                return
            }
            Ok(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
    panic!("process {pid} still runs after {secs} s");
}

/// A running jailer whose stdout (the guest console) is collected as it comes.
pub struct Running {
    pub child: Child,
    console: Arc<Mutex<String>>,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ember-jailer");
        let console = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = console.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut text = sink.lock().unwrap();
                    text.push_str(line.trim_end_matches('\r'));
                    text.push('\n');
                }
            });
        }
        Running { child, console }
    }

    pub fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// Waits for `marker` in the output.
    pub fn wait_for(&mut self, marker: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.console().contains(marker) {
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "no {marker:?} (jailer: {exited:?}); output:\n{}",
                self.console()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the jailer to exit; returns its exit code.
    pub fn wait(&mut self, secs: u64) -> Option<i32> {
        let (status, timed_out) = crate::wait_deadline(&mut self.child, Duration::from_secs(secs));
        assert!(
            !timed_out,
            "ember-jailer ran over {secs} s:\n{}",
            self.console()
        );
        thread::sleep(Duration::from_millis(200));
        status.code()
    }
}

impl Drop for Running {
    /// SIGTERM first: the jailer passes it on to the monitor, which then ends cleanly.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let _ = crate::wait_deadline(&mut self.child, Duration::from_secs(20));
        }
    }
}

/// Runs the jailer to its end: (exit code, stderr lines).
pub fn run_jailer(args: &[String]) -> (Option<i32>, Vec<String>) {
    let out = crate::run_with_timeout(Command::new(jailer_bin()).args(args), 60);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = stderr.lines().map(str::to_string).collect();
    assert!(out.stdout.is_empty(), "stdout: {}", output_text(&out));
    (out.status.code(), lines)
}
