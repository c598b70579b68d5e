//! Checks on a `VmConfig` that need no guest: ranges, duplicates, formats.

use super::{BootSourceConfig, DriveConfig, MachineConfig, NetworkInterfaceConfig, VmConfig};
use std::collections::HashSet;

/// The most vCPUs one VM may have.
pub const MAX_VCPUS: u8 = 32;
/// The x86_64 kernel's `COMMAND_LINE_SIZE` including the trailing NUL.
pub const MAX_CMDLINE_LEN: usize = 2048;

/// A configuration that cannot describe a VM; each variant names the field and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid JSON config: {0}")]
    Json(String),
    #[error("no boot-source given: a kernel_image_path is required")]
    MissingBootSource,
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
    #[error("boot_args is {len} bytes long; the kernel accepts at most {max}", max = MAX_CMDLINE_LEN - 1)]
    CmdlineTooLong { len: usize },
    #[error("{0} id {1:?} is invalid: use 1 to 64 characters from [A-Za-z0-9_-]")]
    BadId(&'static str, String),
    #[error("drive_id {0:?} is used by more than one drive")]
    DuplicateDriveId(String),
    #[error("drives {0:?} and {1:?} are both root devices; at most one may be")]
    TwoRootDevices(String, String),
    #[error("drive {0:?}: io_engine {1:?} is not supported: only \"Sync\"")]
    IoEngine(String, String),
    #[error(
        "drive {0:?}: partuuid {1:?} is not a partition UUID like \"0eaa91a0-01\" or \
         \"6b1b4a54-9a0a-4ae9-8f0a-1d7c0e7b1d2a\" (optionally with \"/PARTNROFF=N\")"
    )]
    BadPartuuid(String, String),
    #[error("the {0:?} section is not supported by Ember yet")]
    Unsupported(&'static str),
    #[error("{0}: rate limiters are not supported yet")]
    RateLimiter(String),
    #[error("unknown log level {0:?}: use Error, Warning, Info, Debug, Trace or Off")]
    LogLevel(String),
    #[error("iface_id {0:?} is used by more than one network interface")]
    DuplicateIfaceId(String),
    #[error("host_dev_name {0:?} is used by more than one network interface")]
    DuplicateHostDev(String),
    #[error("network interface {0:?}: host_dev_name {1:?} is not a valid interface name")]
    BadHostDevName(String, String),
    #[error(
        "network interface {0:?}: guest_mac {1:?} is not a MAC address like 06:00:AC:10:00:02"
    )]
    BadMac(String, String),
}

impl VmConfig {
    /// Validates everything that can be checked without opening files or KVM.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let boot = self
            .boot_source
            .as_ref()
            .ok_or(ConfigError::MissingBootSource)?;
        validate_boot_source(boot)?;
        self.refuse_unsupported_sections()?;
        self.machine_config.validate()?;
        validate_drives(&self.drives)?;
        validate_network_interfaces(&self.network_interfaces)
    }
}

impl VmConfig {
    fn refuse_unsupported_sections(&self) -> Result<(), ConfigError> {
        let sections = [
            ("balloon", &self.balloon),
            ("cpu-config", &self.cpu_config),
            ("mmds-config", &self.mmds_config),
            ("vsock", &self.vsock),
            ("entropy", &self.entropy),
            ("memory-hotplug", &self.memory_hotplug),
        ];
        for (name, section) in sections {
            if section.as_ref().is_some_and(|value| !value.is_null()) {
                return Err(ConfigError::Unsupported(name));
            }
        }
        if !self.pmem.is_empty() {
            return Err(ConfigError::Unsupported("pmem"));
        }
        Ok(())
    }
}

fn validate_boot_source(boot: &BootSourceConfig) -> Result<(), ConfigError> {
    let len = boot.boot_args_or_default().len();
    // Devices append their own parameters later; this catches the user's share early.
    if len >= MAX_CMDLINE_LEN {
        return Err(ConfigError::CmdlineTooLong { len });
    }
    Ok(())
}

impl MachineConfig {
    /// Validates vCPU count, SMT and memory size against this host.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpu_count == 0 || self.vcpu_count > MAX_VCPUS {
            return Err(ConfigError::VcpuCount(self.vcpu_count));
        }
        if self.smt && self.vcpu_count > 1 && self.vcpu_count % 2 == 1 {
            return Err(ConfigError::VcpuCountSmt(self.vcpu_count));
        }
        if self.mem_size_mib == 0 {
            return Err(ConfigError::MemoryZero);
        }
        let host = host_memory_mib();
        if self.mem_size_mib > host {
            return Err(ConfigError::MemoryTooLarge {
                asked: self.mem_size_mib,
                host,
            });
        }
        match self.huge_pages.as_deref() {
            None | Some("None") => Ok(()),
            Some(other) => Err(ConfigError::HugePages(other.to_string())),
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

fn validate_id(kind: &'static str, id: &str) -> Result<(), ConfigError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if id.is_empty() || id.len() > 64 || !id.chars().all(ok_char) {
        return Err(ConfigError::BadId(kind, id.to_string()));
    }
    Ok(())
}

fn validate_drives(drives: &[DriveConfig]) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    let mut root: Option<&str> = None;
    for drive in drives {
        validate_id("drive", &drive.drive_id)?;
        if !ids.insert(drive.drive_id.as_str()) {
            return Err(ConfigError::DuplicateDriveId(drive.drive_id.clone()));
        }
        if drive.is_root_device {
            if let Some(first) = root {
                return Err(ConfigError::TwoRootDevices(
                    first.into(),
                    drive.drive_id.clone(),
                ));
            }
            root = Some(&drive.drive_id);
        }
        if let Some(engine) = drive.io_engine.as_deref().filter(|e| *e != "Sync") {
            return Err(ConfigError::IoEngine(drive.drive_id.clone(), engine.into()));
        }
        if let Some(partuuid) = drive.partuuid.as_deref().filter(|p| !valid_partuuid(p)) {
            return Err(ConfigError::BadPartuuid(
                drive.drive_id.clone(),
                partuuid.into(),
            ));
        }
        if drive.rate_limiter.is_some() {
            return Err(ConfigError::RateLimiter(format!(
                "drive {:?}",
                drive.drive_id
            )));
        }
    }
    Ok(())
}

fn validate_network_interfaces(ifaces: &[NetworkInterfaceConfig]) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    let mut devs = HashSet::new();
    for iface in ifaces {
        validate_id("network interface", &iface.iface_id)?;
        if !ids.insert(iface.iface_id.as_str()) {
            return Err(ConfigError::DuplicateIfaceId(iface.iface_id.clone()));
        }
        let dev = &iface.host_dev_name;
        if !valid_ifname(dev) {
            return Err(ConfigError::BadHostDevName(
                iface.iface_id.clone(),
                dev.clone(),
            ));
        }
        if !devs.insert(dev.as_str()) {
            return Err(ConfigError::DuplicateHostDev(dev.clone()));
        }
        if let Some(mac) = &iface.guest_mac {
            parse_mac(mac)
                .ok_or_else(|| ConfigError::BadMac(iface.iface_id.clone(), mac.clone()))?;
        }
        if iface.rx_rate_limiter.is_some() || iface.tx_rate_limiter.is_some() {
            return Err(ConfigError::RateLimiter(format!(
                "network interface {:?}",
                iface.iface_id
            )));
        }
    }
    Ok(())
}

/// Whether `partuuid` is what the kernel's `root=PARTUUID=` takes: a UUID (GPT, 36
/// characters) or `SSSSSSSS-PP` (MBR), i.e. up to 36 hex digits and dashes, optionally
/// followed by `/PARTNROFF=N`. It becomes part of the kernel command line, so anything else
/// (a space above all) would change other kernel arguments.
pub fn valid_partuuid(partuuid: &str) -> bool {
    let is_offset = |n: &str| {
        let digits = n.strip_prefix('-').unwrap_or(n);
        (1..=9).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let (uuid, offset_ok) = match partuuid.split_once('/') {
        None => (partuuid, true),
        Some((uuid, rest)) => (uuid, rest.strip_prefix("PARTNROFF=").is_some_and(is_offset)),
    };
    offset_ok
        && (1..=36).contains(&uuid.len())
        && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Whether Linux accepts `name` for a network interface (the kernel's `dev_valid_name()`):
/// 1 to 15 bytes (IFNAMSIZ is 16 with the NUL), not `.` or `..`, and no `/`, `:`, NUL or
/// whitespace (`isspace()`: space, `\t`, `\n`, `\v`, `\f`, `\r`).
pub fn valid_ifname(name: &str) -> bool {
    let bad_byte = |b: u8| matches!(b, b'/' | b':' | b'\0' | b' ' | b'\t'..=b'\r');
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.bytes().any(bad_byte)
}

/// Parses `aa:bb:cc:dd:ee:ff` (hex, either case) into six bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        // from_str_radix alone would also take "+a".
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheType;

    fn minimal() -> VmConfig {
        VmConfig::from_json(r#"{"boot-source": {"kernel_image_path": "/k"}}"#).unwrap()
    }

    fn drive(id: &str, root: bool) -> DriveConfig {
        DriveConfig {
            drive_id: id.into(),
            path_on_host: "/d".into(),
            is_root_device: root,
            is_read_only: false,
            partuuid: None,
            cache_type: CacheType::Unsafe,
            io_engine: None,
            rate_limiter: None,
        }
    }

    #[test]
    fn minimal_config_gets_firecracker_defaults() {
        let config = minimal();
        assert_eq!(config.machine_config.vcpu_count, 1);
        assert_eq!(config.machine_config.mem_size_mib, 128);
        let boot = config.boot_source.as_ref().unwrap();
        assert_eq!(
            boot.boot_args_or_default(),
            crate::config::DEFAULT_BOOT_ARGS
        );
        config.validate().unwrap();
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err = VmConfig::from_json("{\n  \"boot-source\": {,}\n}").unwrap_err();
        assert!(err.to_string().contains("line 2 column"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = VmConfig::from_json(r#"{"boot-source": {"kernel_image_path": "/k", "x": 1}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
        let err = VmConfig::from_json(r#"{"sound": {}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `sound`"), "{err}");
    }

    #[test]
    fn vcpu_count_bounds() {
        let mut config = minimal();
        for (count, ok) in [(0, false), (1, true), (32, true), (33, false), (255, false)] {
            config.machine_config.vcpu_count = count;
            assert_eq!(config.validate().is_ok(), ok, "vcpu_count {count}");
        }
        config.machine_config.vcpu_count = 3;
        config.machine_config.smt = true;
        assert_eq!(config.validate(), Err(ConfigError::VcpuCountSmt(3)));
    }

    #[test]
    fn memory_bounds() {
        let mut config = minimal();
        config.machine_config.mem_size_mib = 0;
        assert_eq!(config.validate(), Err(ConfigError::MemoryZero));
        config.machine_config.mem_size_mib = usize::MAX / 2;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::MemoryTooLarge { .. })
        ));
    }

    #[test]
    fn command_line_length_is_bounded() {
        let mut config = minimal();
        config.boot_source.as_mut().unwrap().boot_args = Some("x".repeat(MAX_CMDLINE_LEN));
        assert!(matches!(
            config.validate(),
            Err(ConfigError::CmdlineTooLong { .. })
        ));
    }

    #[test]
    fn missing_boot_source_is_refused() {
        let config = VmConfig::from_json("{}").unwrap();
        assert_eq!(config.validate(), Err(ConfigError::MissingBootSource));
    }

    #[test]
    fn drives_need_unique_ids_and_one_root() {
        let mut config = minimal();
        config.drives = vec![drive("a", true), drive("a", false)];
        assert_eq!(
            config.validate(),
            Err(ConfigError::DuplicateDriveId("a".into()))
        );
        config.drives = vec![drive("a", true), drive("b", true)];
        assert_eq!(
            config.validate(),
            Err(ConfigError::TwoRootDevices("a".into(), "b".into()))
        );
        config.drives = vec![drive("a b", false)];
        assert!(matches!(config.validate(), Err(ConfigError::BadId(..))));
        config.drives = vec![drive("rootfs", true), drive("data", false)];
        config.validate().unwrap();
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("06:00:AC:10:00:02"),
            Some([6, 0, 0xac, 0x10, 0, 2])
        );
        for bad in [
            "",
            "06:00:AC:10:00",
            "06:00:AC:10:00:02:03",
            "6:00:AC:10:00:02",
            "zz:00:00:00:00:00",
            // Accepted before: u8::from_str_radix takes a leading '+'. Found reviewing with the
            // config_json target's MAC check (fuzz/regressions/config_json/mac-with-plus.json).
            "+6:00:AC:10:00:02",
            "06:00:AC:10:00:+2",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn network_interfaces_need_unique_ids_and_devices() {
        let iface = |id: &str, dev: &str| NetworkInterfaceConfig {
            iface_id: id.into(),
            host_dev_name: dev.into(),
            guest_mac: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        };
        let mut config = minimal();
        config.network_interfaces = vec![iface("eth0", "tap0"), iface("eth0", "tap1")];
        assert_eq!(
            config.validate(),
            Err(ConfigError::DuplicateIfaceId("eth0".into()))
        );
        config.network_interfaces = vec![iface("eth0", "tap0"), iface("eth1", "tap0")];
        assert_eq!(
            config.validate(),
            Err(ConfigError::DuplicateHostDev("tap0".into()))
        );
        config.network_interfaces = vec![iface("eth0", "a-very-long-tap-name")];
        assert!(matches!(
            config.validate(),
            Err(ConfigError::BadHostDevName(..))
        ));
    }

    /// Found by the `config_json` fuzz target: a partuuid holding "\r" and other bytes
    /// validated, and went into the kernel command line as several arguments.
    #[test]
    fn partuuids_are_single_kernel_arguments() {
        for good in [
            "0eaa91a0-01",
            "6B1B4A54-9A0A-4AE9-8F0A-1D7C0E7B1D2A",
            "0eaa91a0-01/PARTNROFF=1",
            "0eaa91a0-01/PARTNROFF=-1",
        ] {
            assert!(valid_partuuid(good), "{good:?}");
        }
        for bad in [
            "",
            "0eaa91a0-019to\\b)o\\\r9999999999999back",
            "0eaa91a0-01 init=/bin/sh",
            "0eaa91a0-01/",
            "0eaa91a0-01/PARTNROFF=",
            "0eaa91a0-01/PARTNROFF=x",
            "0eaa91a0-01/X=1",
            "6b1b4a54-9a0a-4ae9-8f0a-1d7c0e7b1d2a0",
            "\"0eaa91a0-01\"",
        ] {
            assert!(!valid_partuuid(bad), "{bad:?}");
        }
        let mut config = minimal();
        let mut root = drive("rootfs", true);
        root.partuuid = Some("0eaa91a0-01 init=/bin/sh".into());
        config.drives = vec![root];
        assert!(matches!(
            config.validate(),
            Err(ConfigError::BadPartuuid(..))
        ));
    }

    /// Found by the `config_json` fuzz target: "tap00:000:2" validated, but Linux refuses
    /// ':' in interface names (an alias separator), so the VM failed only at start.
    #[test]
    fn tap_names_follow_linux_dev_valid_name() {
        for good in ["tap0", "t", "tap-vm_1.2", "fifteen-chars-x", "..."] {
            assert!(valid_ifname(good), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "tap00:000:2",
            "tap/0",
            "tap 0",
            "tap\t0",
            "tap\n",
            "tap\x0b0",
            "tap\x0c0",
            "tap\r",
            "tap\x000",
            "sixteen-chars-xx",
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
        let mut config = minimal();
        config.network_interfaces = vec![NetworkInterfaceConfig {
            iface_id: "eth0".into(),
            host_dev_name: "tap00:000:2".into(),
            guest_mac: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }];
        assert!(matches!(
            config.validate(),
            Err(ConfigError::BadHostDevName(..))
        ));
    }

    #[test]
    fn firecracker_sections_show_as_null_and_are_refused_when_set() {
        let json = serde_json::to_value(minimal()).unwrap();
        for key in [
            "balloon",
            "cpu-config",
            "mmds-config",
            "vsock",
            "entropy",
            "metrics",
        ] {
            assert_eq!(json[key], serde_json::Value::Null, "{key}");
        }
        assert_eq!(json["pmem"], serde_json::json!([]));
        let mut config = VmConfig::from_json(&json.to_string()).unwrap();
        assert_eq!(config.validate(), Ok(()));
        config.vsock = Some(serde_json::json!({"guest_cid": 3, "uds_path": "/v.sock"}));
        assert_eq!(config.validate(), Err(ConfigError::Unsupported("vsock")));
    }

    #[test]
    fn config_round_trips_through_json() {
        let text = r#"{"boot-source":{"kernel_image_path":"/k","boot_args":"console=ttyS0"},
            "machine-config":{"vcpu_count":2,"mem_size_mib":256,"smt":false},
            "drives":[{"drive_id":"rootfs","path_on_host":"/r","is_root_device":true,
            "is_read_only":false,"cache_type":"Writeback"}]}"#;
        let config = VmConfig::from_json(text).unwrap();
        let again = VmConfig::from_json(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(config, again);
    }
}
