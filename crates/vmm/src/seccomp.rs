//! Seccomp filters: which system calls each of Ember's threads may make.
//!
//! The filters are data, not code: `resources/seccomp/x86_64.json`, in seccompiler's JSON
//! format, holds one filter per kind of thread ([`ThreadKind`]). Anything a filter does not
//! allow kills the whole process (`SECCOMP_RET_KILL_PROCESS`): the parent sees it die of
//! SIGSYS, and the kernel log (`dmesg`, or the audit log) names the system call. See
//! `docs/security.md` for what each filter allows and why, and how to debug a kill.
//!
//! The built-in JSON is compiled when Ember is built (`build.rs`), so a start does not pay
//! for parsing and compiling it; a user's own filter (`--seccomp-filter`) is JSON too and is
//! compiled at start by the same seccompiler. A unit test compiles the built-in JSON at run
//! time and compares it with the build's output, so they cannot drift apart.
//!
//! Installing: [`apply`] on the thread itself. The VMM thread installs its filter after the API
//! thread is spawned and before it builds the VM, so the vCPU threads it spawns later inherit
//! it and add their own: a vCPU thread runs under both (a call must pass both). The API thread
//! and the vCPU threads install theirs first thing, before serving a request or entering the
//! guest.

use seccompiler::{sock_filter, TargetArch};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use seccompiler::BpfProgram;

/// Ember's own filters (seccompiler's JSON format).
pub const DEFAULT_FILTERS_JSON: &str = include_str!("../../../resources/seccomp/x86_64.json");

/// The largest `--seccomp-filter` file read (Ember's own is about 20 KiB).
pub const MAX_FILTER_FILE_BYTES: u64 = 1 << 20;

/// Env variable of the debug-build test hook, see [`test_hook_forbidden_syscall`].
pub const FORBIDDEN_SYSCALL_HOOK: &str = "EMBER_TEST_FORBIDDEN_SYSCALL";

/// The kinds of thread Ember runs, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// The main thread: the event loop, device emulation, building the VM.
    Vmm,
    /// The API server thread.
    Api,
    /// One thread per vCPU: KVM_RUN and MMIO/PIO exits.
    Vcpu,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 3] = [ThreadKind::Vmm, ThreadKind::Api, ThreadKind::Vcpu];

    /// The filter's name in the JSON file.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Api => "api",
            ThreadKind::Vcpu => "vcpu",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot read the seccomp filter file {0}: {1}")]
    Read(PathBuf, crate::host_file::HostFileError),
    #[error("invalid seccomp filters in {origin}: {reason}")]
    Compile { origin: String, reason: String },
    #[error("the seccomp filters in {origin} have no {thread:?} filter (need vmm, api and vcpu)")]
    MissingThread {
        origin: String,
        thread: &'static str,
    },
    #[error("the seccomp filters in {origin} have an unknown thread kind {thread:?} (expected vmm, api and vcpu)")]
    UnknownThread { origin: String, thread: String },
    #[error("cannot install the seccomp filter: {0}")]
    Install(String),
    #[error("cannot limit glibc's allocator to one arena (mallopt M_ARENA_MAX failed)")]
    Allocator,
}

/// A compiled BPF program per thread kind. An empty program means "no filter"
/// ([`ThreadFilters::disabled`], for `--no-seccomp`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadFilters {
    pub vmm: BpfProgram,
    pub api: BpfProgram,
    pub vcpu: BpfProgram,
}

impl ThreadFilters {
    /// No filtering at all.
    pub fn disabled() -> Self {
        ThreadFilters::default()
    }

    pub fn get(&self, kind: ThreadKind) -> &BpfProgram {
        match kind {
            ThreadKind::Vmm => &self.vmm,
            ThreadKind::Api => &self.api,
            ThreadKind::Vcpu => &self.vcpu,
        }
    }
}

/// Compiles the filters of `custom` (a seccompiler JSON file with a `vmm`, an `api` and a
/// `vcpu` filter), or Ember's own.
pub fn filters(custom: Option<&Path>) -> Result<ThreadFilters, SeccompError> {
    match custom {
        Some(path) => {
            let json = crate::host_file::read_text(path, MAX_FILTER_FILE_BYTES)
                .map_err(|e| SeccompError::Read(path.to_path_buf(), e))?;
            compile(&json, &path.display().to_string())
        }
        None => Ok(builtin()),
    }
}

mod precompiled {
    include!(concat!(env!("OUT_DIR"), "/seccomp_filters.rs"));
}

/// Ember's own filters, compiled to BPF from [`DEFAULT_FILTERS_JSON`] when Ember was built
/// (`build.rs`): nothing to parse or compile at start.
pub fn builtin() -> ThreadFilters {
    let program = |kind: ThreadKind| -> BpfProgram {
        let (_, insns) = precompiled::PRECOMPILED
            .iter()
            .find(|(name, _)| *name == kind.name())
            .copied()
            .unwrap_or(("", &[]));
        let insns = insns
            .iter()
            .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k });
        with_clone3_guard(insns.collect())
    };
    ThreadFilters {
        vmm: program(ThreadKind::Vmm),
        api: program(ThreadKind::Api),
        vcpu: program(ThreadKind::Vcpu),
    }
}

/// Compiles seccompiler JSON text; `origin` names it in errors.
pub fn compile(json: &str, origin: &str) -> Result<ThreadFilters, SeccompError> {
    let mut programs: HashMap<String, BpfProgram> =
        seccompiler::compile_from_json(json.as_bytes(), TargetArch::x86_64).map_err(|e| {
            SeccompError::Compile {
                origin: origin.to_string(),
                reason: e.to_string(),
            }
        })?;
    let mut take = |kind: ThreadKind| {
        programs
            .remove(kind.name())
            .map(with_clone3_guard)
            .ok_or_else(|| SeccompError::MissingThread {
                origin: origin.to_string(),
                thread: kind.name(),
            })
    };
    let filters = ThreadFilters {
        vmm: take(ThreadKind::Vmm)?,
        api: take(ThreadKind::Api)?,
        vcpu: take(ThreadKind::Vcpu)?,
    };
    if let Some(thread) = programs.into_keys().next() {
        return Err(SeccompError::UnknownThread {
            origin: origin.to_string(),
            thread,
        });
    }
    Ok(filters)
}

// Classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// `offsetof(struct seccomp_data, nr)`.
const SECCOMP_DATA_NR: u32 = 0;

/// Puts "clone3 fails with ENOSYS" in front of `program`.
///
/// clone3 passes its flags in memory, where a seccomp filter cannot read them, so a filter
/// cannot tell a new thread from a new process. glibc's `pthread_create` tries clone3 first
/// and falls back to clone(2) on ENOSYS, and clone(2) takes the flags in a register, where
/// the filters check them (threads only). seccompiler's JSON has a single match action per
/// filter, so this one errno rule is added here, to every filter (built-in or not). It only
/// ever denies: it is checked before the filter's own architecture check, and on any
/// architecture 435 is either clone3 or not an Ember syscall at all.
fn with_clone3_guard(program: BpfProgram) -> BpfProgram {
    let clone3 = libc::SYS_clone3 as u32;
    let guard = [
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: SECCOMP_DATA_NR,
        },
        sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: clone3,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
    ];
    guard.into_iter().chain(program).collect()
}

/// Makes glibc's allocator safe under the filters; call first thing in `main`, before any
/// thread starts.
///
/// By default glibc gives each new thread its own malloc arena. When a thread arena's heap
/// shrinks, glibc reads `/proc/sys/vm/overcommit_memory` once per process
/// (`check_may_shrink_heap`), and when the first extra arena is made it counts the CPUs
/// (`sched_getaffinity`, or files under `/sys`). Either can happen on any thread at any later
/// time, e.g. when the API thread frees a large reply, and an `openat` from the API or a vCPU
/// thread, whose filters forbid it, kills the process with the guest in it. With one arena
/// every thread allocates from the main heap, which grows and shrinks with `brk` and takes
/// large blocks with `mmap`/`mremap`/`munmap` -- all allowed on every thread -- and never
/// opens a file. The cost is one allocator lock shared by Ember's few threads, which
/// allocate little once the VM runs.
pub fn prepare_allocator() -> Result<(), SeccompError> {
    // SAFETY: mallopt only changes glibc's allocator settings; it is called before any other
    // thread exists, so no allocation races with it.
    let done = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    if done == 1 {
        Ok(())
    } else {
        Err(SeccompError::Allocator)
    }
}

/// Installs `filter` on the calling thread (for good: filters cannot be removed). An empty
/// program installs nothing (`--no-seccomp`).
pub fn apply(filter: &BpfProgram) -> Result<(), SeccompError> {
    if filter.is_empty() {
        return Ok(());
    }
    seccompiler::apply_filter(filter).map_err(|e| SeccompError::Install(e.to_string()))
}

/// Test hook, honoured only in debug builds: when `EMBER_TEST_FORBIDDEN_SYSCALL` names
/// `kind` ("vmm", "api" or "vcpu"), the calling thread makes a system call no filter allows
/// (`personality(0xffffffff)`, which only queries), so the whole process should die of SIGSYS.
/// Call it right after [`apply`]. In release builds it does nothing.
pub fn test_hook_forbidden_syscall(kind: ThreadKind) {
    #[cfg(debug_assertions)]
    if std::env::var(FORBIDDEN_SYSCALL_HOOK).is_ok_and(|v| v == kind.name()) {
        eprintln!(
            "ember: {FORBIDDEN_SYSCALL_HOOK}={}: calling personality(2), which the seccomp filter forbids",
            kind.name()
        );
        // SAFETY: personality(0xffffffff) only reads the process's execution domain.
        unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffff_u64) };
        eprintln!(
            "ember: {FORBIDDEN_SYSCALL_HOOK}: the forbidden call returned: no seccomp filter?"
        );
    }
    #[cfg(not(debug_assertions))]
    let _ = kind;
}

#[cfg(test)]
mod tests;
