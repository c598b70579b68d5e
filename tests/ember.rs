//! Running Ember in tests: Firecracker-format configs, a run with a timeout, and what the
//! guest and the process reported.

use crate::{ember_bin, output_text, run_with_timeout, GuestReport, TempDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Boot arguments for Ember guests: `reboot=k` makes a guest reboot end the VMM.
pub const EMBER_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1 i8042.noaux";
/// Guests in the lab run under nested, emulated SVM: boots take seconds to tens of seconds.
pub const EMBER_TIMEOUT_SECS: u64 = 600;

/// The `ember` binary; panics when none is built.
pub fn ember() -> PathBuf {
    ember_bin().expect("no ember binary: set EMBER_BIN or run `cargo build --release -p ember`")
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
