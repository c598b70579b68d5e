//! `machine-config` (and the bodies of `PUT` and `PATCH /machine-config`): vCPUs and memory.

use serde::{Deserialize, Serialize};

/// The most vCPUs one VM may have.
pub const MAX_VCPUS: u8 = 32;

/// A machine this host cannot give the guest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MachineConfigError {
    #[error("machine-config.vcpu_count is {0}: it must be between 1 and {MAX_VCPUS}")]
    VcpuCount(u8),
    #[error("machine-config.vcpu_count is {0} with smt enabled: it must be 1 or even")]
    VcpuCountSmt(u8),
    #[error("machine-config.mem_size_mib is 0: the guest needs memory")]
    MemoryZero,
    #[error("machine-config.mem_size_mib is {asked} MiB but the host has only {host} MiB")]
    MemoryTooLarge { asked: usize, host: usize },
    #[error("machine-config.huge_pages {0:?} is not supported: only \"None\"")]
    HugePages(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: usize,
    #[serde(default)]
    pub smt: bool,
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Accepted for compatibility; only "None" (no huge pages) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            track_dirty_pages: false,
            huge_pages: None,
        }
    }
}

impl MachineConfig {
    /// Validates vCPU count, SMT and memory size against this host.
    pub fn validate(&self) -> Result<(), MachineConfigError> {
        if self.vcpu_count == 0 || self.vcpu_count > MAX_VCPUS {
            return Err(MachineConfigError::VcpuCount(self.vcpu_count));
        }
        if self.smt && self.vcpu_count > 1 && self.vcpu_count % 2 == 1 {
            return Err(MachineConfigError::VcpuCountSmt(self.vcpu_count));
        }
        if self.mem_size_mib == 0 {
            return Err(MachineConfigError::MemoryZero);
        }
        let host = host_memory_mib();
        if self.mem_size_mib > host {
            return Err(MachineConfigError::MemoryTooLarge {
                asked: self.mem_size_mib,
                host,
            });
        }
        match self.huge_pages.as_deref() {
            None | Some("None") => Ok(()),
            Some(other) => Err(MachineConfigError::HugePages(other.to_string())),
        }
    }
}

/// The body of `PATCH /machine-config`: only the fields present change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
}

impl MachineConfigUpdate {
    /// True when the update names no field (Firecracker refuses such a PATCH).
    pub fn is_empty(&self) -> bool {
        *self == MachineConfigUpdate::default()
    }

    /// `base` with the fields of this update written over it.
    pub fn apply_to(&self, base: &MachineConfig) -> MachineConfig {
        MachineConfig {
            vcpu_count: self.vcpu_count.unwrap_or(base.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(base.mem_size_mib),
            smt: self.smt.unwrap_or(base.smt),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(base.track_dirty_pages),
            huge_pages: self.huge_pages.clone().or_else(|| base.huge_pages.clone()),
        }
    }
}

/// Physical memory of the host in MiB (`MemTotal`), or `usize::MAX` when unreadable.
pub fn host_memory_mib() -> usize {
    let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else {
        return usize::MAX;
    };
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(usize::MAX, |kib| kib / 1024)
}
