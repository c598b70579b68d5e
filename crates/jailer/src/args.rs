//! The command line: Firecracker's jailer flags, parsed but not yet checked against the host.

use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;

/// Starts a microVM monitor unprivileged, in a chroot, in its own namespaces and cgroup.
#[derive(Debug, Parser)]
#[command(name = "ember-jailer", version)]
pub struct Args {
    /// The microVM's id: 1-64 characters from A-Z, a-z, 0-9 and '-'.
    #[arg(long)]
    pub id: String,
    /// The monitor binary, copied into the jail and run there.
    #[arg(long, value_name = "PATH")]
    pub exec_file: PathBuf,
    /// The user the monitor runs as.
    #[arg(long)]
    pub uid: u32,
    /// The group the monitor runs as.
    #[arg(long)]
    pub gid: u32,
    /// Where jails are made: <chroot-base-dir>/<exec-file name>/<id>/root.
    #[arg(long, value_name = "PATH", default_value = "/srv/jailer")]
    pub chroot_base_dir: PathBuf,
    /// A network namespace to join (e.g. /var/run/netns/NAME).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// Detach: new session, stdin/stdout/stderr on /dev/null; the jailer returns once the
    /// monitor runs.
    #[arg(long)]
    pub daemonize: bool,
    /// Run the monitor as PID 1 of a new PID namespace.
    #[arg(long)]
    pub new_pid_ns: bool,
    /// A cgroup file and the value to write to it, e.g. memory.limit_in_bytes=268435456.
    #[arg(long, value_name = "FILE=VALUE")]
    pub cgroup: Vec<CgroupSetting>,
    /// The cgroup hierarchy the --cgroup files belong to.
    #[arg(long, default_value = "1", value_parser = ["1", "2"])]
    pub cgroup_version: String,
    /// The cgroup, relative to each hierarchy's root, under which <id> is made (default:
    /// the exec file's name).
    #[arg(long, value_name = "PATH")]
    pub parent_cgroup: Option<PathBuf>,
    /// fsize=BYTES or no-file=COUNT (no-file is 2048 unless given).
    #[arg(long, value_name = "RESOURCE=VALUE")]
    pub resource_limit: Vec<ResourceLimit>,
    /// Arguments for the monitor, after `--`.
    #[arg(last = true, value_name = "MONITOR-ARGS")]
    pub monitor_args: Vec<OsString>,
}

/// `--cgroup FILE=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupSetting {
    /// The interface file, `<controller>.<name>`.
    pub file: String,
    /// What is written to it.
    pub value: String,
}

impl CgroupSetting {
    /// The controller the file belongs to (`memory` for `memory.max`).
    pub fn controller(&self) -> &str {
        self.file.split('.').next().unwrap_or_default()
    }
}

impl FromStr for CgroupSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (file, value) = s
            .split_once('=')
            .ok_or("expected <cgroup file>=<value>, e.g. memory.max=268435456")?;
        let well_formed = file
            .split_once('.')
            .is_some_and(|(c, n)| !c.is_empty() && !n.is_empty())
            && file
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
        if !well_formed {
            return Err(format!(
                "'{file}' is not a cgroup file name (<controller>.<name>)"
            ));
        }
        if value.is_empty() || value.contains('\n') {
            return Err(format!("the value for {file} must be one non-empty line"));
        }
        Ok(CgroupSetting {
            file: file.to_string(),
            value: value.to_string(),
        })
    }
}

/// `--resource-limit RESOURCE=VALUE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceLimit {
    /// Largest file the monitor may create or grow, in bytes.
    FileSize(u64),
    /// One more than the highest file descriptor number the monitor may open.
    OpenFiles(u64),
}

impl FromStr for ResourceLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = s
            .split_once('=')
            .ok_or("expected <resource>=<value>: fsize=BYTES or no-file=COUNT")?;
        let value: u64 = value
            .parse()
            .map_err(|_| format!("the value for {name} must be a whole number, not '{value}'"))?;
        match name {
            "fsize" => Ok(ResourceLimit::FileSize(value)),
            "no-file" => Ok(ResourceLimit::OpenFiles(value)),
            _ => Err(format!(
                "unknown resource '{name}' (fsize and no-file are supported)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_settings_need_a_controller_file_and_a_value() {
        let s: CgroupSetting = "memory.limit_in_bytes=256M".parse().unwrap();
        assert_eq!(s.controller(), "memory");
        assert_eq!(s.value, "256M");
        let max: CgroupSetting = "cpu.max=50000 100000".parse().unwrap();
        assert_eq!(max.value, "50000 100000");
        for bad in [
            "memory",
            "memory=1",
            ".max=1",
            "memory.=1",
            "../x.y=1",
            "a.b=",
            "a/b.c=1",
        ] {
            assert!(bad.parse::<CgroupSetting>().is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_limits_know_fsize_and_no_file() {
        assert_eq!("fsize=10".parse(), Ok(ResourceLimit::FileSize(10)));
        assert_eq!("no-file=1024".parse(), Ok(ResourceLimit::OpenFiles(1024)));
        for bad in ["nofile=1", "fsize=-1", "fsize", "no-file=x"] {
            assert!(bad.parse::<ResourceLimit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_are_firecrackers() {
        let a = Args::try_parse_from([
            "ember-jailer",
            "--id",
            "vm-1",
            "--exec-file",
            "/usr/bin/ember",
            "--uid",
            "123",
            "--gid",
            "100",
            "--cgroup",
            "cpu.cfs_quota_us=50000",
            "--cgroup-version",
            "2",
            "--resource-limit",
            "no-file=64",
            "--daemonize",
            "--new-pid-ns",
            "--netns",
            "/var/run/netns/x",
            "--",
            "--config-file",
            "vm.json",
        ])
        .unwrap();
        assert_eq!(a.chroot_base_dir, PathBuf::from("/srv/jailer"));
        assert_eq!(a.cgroup_version, "2");
        assert!(a.daemonize && a.new_pid_ns);
        assert_eq!(a.monitor_args, ["--config-file", "vm.json"]);
        assert!(Args::try_parse_from(["ember-jailer", "--id", "x"]).is_err());
    }
}
