//! The filters compile, and installed in a forked child they allow what Ember needs and kill
//! the process on anything else. Each check forks, so a kill ends the child, not the test.

use super::*;
use serde_json::Value;

fn default_filters() -> ThreadFilters {
    filters(None).expect("the built-in filters compile")
}

/// How a forked child ended.
#[derive(Debug, PartialEq, Eq)]
enum ChildEnd {
    Exited(i32),
    Signaled(i32),
}

/// Forks; the child installs `filter`, runs `body` and exits 0. `body` must only make raw
/// system calls: a forked child of a multi-threaded process must not allocate or take locks.
fn in_filtered_child(filter: &BpfProgram, body: fn()) -> ChildEnd {
    // SAFETY: the child only makes system calls (prctl, seccomp, `body`'s) and `_exit`s; it
    // never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        if apply(filter).is_err() {
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(99) };
        }
        body();
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFSIGNALED(status) {
        ChildEnd::Signaled(libc::WTERMSIG(status))
    } else {
        ChildEnd::Exited(libc::WEXITSTATUS(status))
    }
}

const KILLED: ChildEnd = ChildEnd::Signaled(libc::SIGSYS);
const FINE: ChildEnd = ChildEnd::Exited(0);

/// Runs `body` in a child under the built-in filter of `kind`.
fn check(kind: ThreadKind, body: fn()) -> ChildEnd {
    in_filtered_child(default_filters().get(kind), body)
}

fn kvm_run_on_bad_fd() {
    // SAFETY: ioctl on an invalid fd only returns EBADF.
    let ret = unsafe { libc::ioctl(-1, 0xae80, 0) };
    if ret != -1 {
        // SAFETY: ends the child with a status the parent reports.
        unsafe { libc::_exit(3) };
    }
}

fn tiocsti_on_bad_fd() {
    // SAFETY: as above; TIOCSTI is a request no filter allows.
    unsafe { libc::ioctl(-1, libc::TIOCSTI, 0) };
}

fn mmap_rw() {
    // SAFETY: a fresh anonymous mapping, unmapped right away.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            libc::_exit(3);
        }
        libc::munmap(p, 4096);
    }
}

fn mmap_exec() {
    // SAFETY: a fresh anonymous mapping (the filter should kill before it exists).
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
    }
}

fn mprotect_exec() {
    // SAFETY: changes the protection of a mapping made here and used by nothing else.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            libc::_exit(3);
        }
        libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC);
    }
}

fn fork_like_clone() {
    // SAFETY: clone(SIGCHLD) is fork(); the filter should kill before a child exists. If one
    // did, it exits at once.
    let ret = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    if ret == 0 {
        // SAFETY: the (unexpected) child ends here.
        unsafe { libc::_exit(0) };
    }
}

fn clone3_gets_enosys() {
    // clone_args with flags = 0 would be a fork; the guard must answer ENOSYS first.
    let args = [0u64; 11];
    // SAFETY: clone3 reads `args` (88 bytes, CLONE_ARGS_SIZE_VER2); it should fail before.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_ptr(),
            std::mem::size_of_val(&args),
        )
    };
    if ret == 0 {
        // SAFETY: the (unexpected) child ends here.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: reads this thread's errno.
    let errno = unsafe { *libc::__errno_location() };
    if ret != -1 || errno != libc::ENOSYS {
        // SAFETY: ends the child with a status the parent reports.
        unsafe { libc::_exit(4) };
    }
}

fn execve_true() {
    let path = c"/bin/true".as_ptr();
    let argv = [path, std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: valid NUL-terminated strings and NULL-terminated arrays.
    unsafe { libc::execve(path, argv.as_ptr(), envp.as_ptr()) };
}

fn open_create() {
    // SAFETY: a NUL-terminated path; the filter should kill before anything is created.
    unsafe {
        libc::openat(
            libc::AT_FDCWD,
            c"/nonexistent-ember-seccomp-test".as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
            0o600,
        )
    };
}

fn open_read() {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::openat(libc::AT_FDCWD, c"/dev/null".as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        // SAFETY: ends the child with a status the parent reports.
        unsafe { libc::_exit(5) };
    }
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(fd) };
}

fn socket_inet_stream() {
    // SAFETY: creating a socket has no memory-safety preconditions.
    unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
}

fn personality_query() {
    // SAFETY: personality(0xffffffff) only reads the execution domain.
    unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffff_u64) };
}

#[test]
fn built_in_filters_compile_for_every_thread_kind() {
    let filters = default_filters();
    for kind in ThreadKind::ALL {
        let program = filters.get(kind);
        // 3 guard instructions + the architecture check + at least one rule.
        assert!(program.len() > 10, "{kind:?} filter is too short");
        assert!(
            program.len() < 4096,
            "{kind:?} filter is too long for the kernel"
        );
    }
}

#[test]
fn built_in_json_is_kill_process_allow_lists() {
    let json: Value = serde_json::from_str(DEFAULT_FILTERS_JSON).unwrap();
    let map = json.as_object().unwrap();
    let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["api", "vcpu", "vmm"]);
    for (name, filter) in map {
        assert_eq!(filter["mismatch_action"], "kill_process", "{name}");
        assert_eq!(filter["match_action"], "allow", "{name}");
    }
}

fn rules<'a>(json: &'a Value, kind: &str) -> Vec<&'a Value> {
    json[kind]["filter"].as_array().unwrap().iter().collect()
}

fn syscall_names(json: &Value, kind: &str) -> std::collections::BTreeSet<String> {
    rules(json, kind)
        .into_iter()
        .map(|r| r["syscall"].as_str().unwrap().to_string())
        .collect()
}

/// vCPU threads are spawned by the VMM thread after its filter is in place, so they run
/// under both: each call (with its arguments) a vCPU thread may make must pass the VMM filter.
#[test]
fn every_vcpu_rule_is_also_a_vmm_rule() {
    let json: Value = serde_json::from_str(DEFAULT_FILTERS_JSON).unwrap();
    let vmm: Vec<Value> = rules(&json, "vmm")
        .into_iter()
        .map(|r| strip_comments(r.clone()))
        .collect();
    for rule in rules(&json, "vcpu") {
        let rule = strip_comments(rule.clone());
        assert!(
            vmm.contains(&rule),
            "the vcpu filter allows {rule} but the vmm filter (which vCPU threads inherit) does not"
        );
    }
}

fn strip_comments(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            map.remove("comment");
            for v in map.values_mut() {
                *v = strip_comments(v.take());
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                *v = strip_comments(v.take());
            }
        }
        _ => {}
    }
    value
}

#[test]
fn dangerous_calls_are_in_no_filter() {
    let json: Value = serde_json::from_str(DEFAULT_FILTERS_JSON).unwrap();
    for kind in ["vmm", "api", "vcpu"] {
        let names = syscall_names(&json, kind);
        for forbidden in [
            "execve",
            "execveat",
            "fork",
            "vfork",
            "clone3",
            "ptrace",
            "personality",
            "open",
            "creat",
            "unlinkat",
            "mount",
            "kill",
        ] {
            assert!(
                !names.contains(forbidden),
                "{kind} filter allows {forbidden}"
            );
        }
    }
    // Only the VMM thread makes Unix sockets of its own: virtio-vsock's listener at
    // uds_path and its connections to <uds_path>_<port>.
    for call in ["connect", "bind", "listen"] {
        assert!(
            !syscall_names(&json, "api").contains(call),
            "api allows {call}"
        );
        assert!(
            !syscall_names(&json, "vcpu").contains(call),
            "vcpu allows {call}"
        );
    }
    // Only the VMM thread removes a file: the API socket, when Ember ends.
    assert!(!syscall_names(&json, "api").contains("unlink"));
    assert!(!syscall_names(&json, "vcpu").contains("unlink"));
    // Only the VMM thread spawns threads.
    assert!(!syscall_names(&json, "api").contains("clone"));
    assert!(!syscall_names(&json, "vcpu").contains("clone"));
}

#[test]
fn mmap_without_exec_is_allowed_everywhere() {
    for kind in ThreadKind::ALL {
        assert_eq!(check(kind, mmap_rw), FINE, "{kind:?}");
    }
}

#[test]
fn mmap_or_mprotect_with_exec_kills_everywhere() {
    for kind in ThreadKind::ALL {
        assert_eq!(check(kind, mmap_exec), KILLED, "{kind:?} mmap");
        assert_eq!(check(kind, mprotect_exec), KILLED, "{kind:?} mprotect");
    }
}

#[test]
fn execve_and_fork_kill_everywhere() {
    for kind in ThreadKind::ALL {
        assert_eq!(check(kind, execve_true), KILLED, "{kind:?} execve");
        assert_eq!(check(kind, fork_like_clone), KILLED, "{kind:?} clone");
    }
}

#[test]
fn clone3_fails_with_enosys_so_glibc_falls_back_to_clone() {
    for kind in ThreadKind::ALL {
        assert_eq!(check(kind, clone3_gets_enosys), FINE, "{kind:?}");
    }
}

#[test]
fn ioctl_is_limited_to_the_requests_ember_uses() {
    assert_eq!(check(ThreadKind::Vcpu, kvm_run_on_bad_fd), FINE);
    assert_eq!(check(ThreadKind::Vmm, kvm_run_on_bad_fd), FINE);
    assert_eq!(check(ThreadKind::Api, kvm_run_on_bad_fd), KILLED);
    for kind in ThreadKind::ALL {
        assert_eq!(check(kind, tiocsti_on_bad_fd), KILLED, "{kind:?}");
    }
}

#[test]
fn the_vmm_thread_opens_files_but_never_creates_them() {
    assert_eq!(check(ThreadKind::Vmm, open_read), FINE);
    assert_eq!(check(ThreadKind::Vmm, open_create), KILLED);
    assert_eq!(check(ThreadKind::Vcpu, open_read), KILLED);
    assert_eq!(check(ThreadKind::Api, open_read), KILLED);
}

#[test]
fn unlisted_calls_kill() {
    for kind in ThreadKind::ALL {
        assert_eq!(check(kind, socket_inet_stream), KILLED, "{kind:?}");
        assert_eq!(check(kind, personality_query), KILLED, "{kind:?}");
    }
}

#[test]
fn disabled_filters_install_nothing() {
    let none = ThreadFilters::disabled();
    for kind in ThreadKind::ALL {
        assert!(none.get(kind).is_empty());
        assert_eq!(in_filtered_child(none.get(kind), personality_query), FINE);
    }
}

#[test]
fn custom_filter_files_need_all_three_thread_kinds() {
    // A deny list: everything but execve is allowed.
    let allow_all = r#"{"mismatch_action": "allow", "match_action": "kill_process", "filter": [{"syscall": "execve"}]}"#;
    let missing = format!(r#"{{"vmm": {allow_all}, "api": {allow_all}}}"#);
    let err = compile(&missing, "test.json").unwrap_err();
    assert!(err.to_string().contains("\"vcpu\""), "{err}");

    let extra = format!(
        r#"{{"vmm": {allow_all}, "api": {allow_all}, "vcpu": {allow_all}, "vpcu": {allow_all}}}"#
    );
    let err = compile(&extra, "test.json").unwrap_err();
    assert!(err.to_string().contains("vpcu"), "{err}");

    let bad = r#"{"vmm": {"mismatch_action": "allow", "match_action": "allow", "filter": [{"syscall": "no_such_call"}]}}"#;
    let err = compile(bad, "test.json").unwrap_err();
    assert!(err.to_string().contains("test.json"), "{err}");

    let ok = format!(r#"{{"vmm": {allow_all}, "api": {allow_all}, "vcpu": {allow_all}}}"#);
    let filters = compile(&ok, "test.json").unwrap();
    // A filter that allows clone3 still gets the guard.
    assert_eq!(in_filtered_child(&filters.api, clone3_gets_enosys), FINE);
    assert_eq!(in_filtered_child(&filters.api, personality_query), FINE);
    assert_eq!(in_filtered_child(&filters.api, execve_true), KILLED);
}

#[test]
fn custom_filter_file_is_read_from_disk() {
    let dir = std::env::temp_dir().join(format!("ember-seccomp-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("filters.json");
    std::fs::write(&path, DEFAULT_FILTERS_JSON).unwrap();
    assert_eq!(filters(Some(&path)).unwrap(), default_filters());
    let err = filters(Some(&dir.join("missing.json"))).unwrap_err();
    assert!(matches!(err, SeccompError::Read(..)), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_precompiled_filters_are_the_json_compiled() {
    let compiled = compile(DEFAULT_FILTERS_JSON, "the built-in filter file").unwrap();
    assert_eq!(builtin(), compiled);
    assert!(ThreadKind::ALL
        .iter()
        .all(|&kind| !builtin().get(kind).is_empty()));
}
