use super::*;
use crate::config::{BootSourceError, CacheType, MachineConfigError, NetworkInterfaceError};
use crate::rpc::VmmAction::*;
use std::path::{Path, PathBuf};
use vmm_sys_util::tempdir::TempDir;

/// Real files for the configuration to name: PUT /boot-source and PUT /drives open them.
struct Files(TempDir);

impl Files {
    fn new() -> Self {
        let files = Files(TempDir::new().unwrap());
        let mut kernel = vec![0u8; 4096];
        kernel[..4].copy_from_slice(b"\x7fELF");
        std::fs::write(files.path("vmlinux"), kernel).unwrap();
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.as_path().join(name)
    }

    fn kernel(&self, args: &str) -> BootSourceConfig {
        BootSourceConfig {
            kernel_image_path: self.path("vmlinux"),
            boot_args: Some(args.into()),
            initrd_path: None,
        }
    }

    fn drive(&self, id: &str, root: bool) -> DriveConfig {
        let path = self.path(&format!("{id}.img"));
        std::fs::write(&path, [0u8; 512]).unwrap();
        drive_at(id, root, &path)
    }
}

/// The `fault_message` of `error` about `resource`.
fn about(resource: Resource, error: impl Into<VmmActionError>) -> String {
    error.into().about(resource).to_string()
}

fn drive_at(id: &str, root: bool, path: &Path) -> DriveConfig {
    DriveConfig {
        drive_id: id.into(),
        path_on_host: path.into(),
        is_root_device: root,
        is_read_only: false,
        partuuid: None,
        cache_type: CacheType::Unsafe,
        io_engine: None,
        rate_limiter: None,
    }
}

fn iface(id: &str, tap: &str, mac: Option<&str>) -> NetworkInterfaceConfig {
    NetworkInterfaceConfig {
        iface_id: id.into(),
        host_dev_name: tap.into(),
        guest_mac: mac.map(Into::into),
        mtu: None,
        rx_rate_limiter: None,
        tx_rate_limiter: None,
    }
}

fn apply(cfg: &mut VmResources, action: VmmAction) -> VmmResponse {
    cfg.apply(&action).expect("a pre-boot action")
}

fn drive_ids(cfg: &VmResources) -> Vec<&str> {
    cfg.config()
        .drives
        .iter()
        .map(|d| d.drive_id.as_str())
        .collect()
}

#[test]
fn get_machine_config_returns_defaults_before_any_put() {
    let mut cfg = VmResources::default();
    let got = apply(&mut cfg, GetMachineConfig).unwrap();
    assert_eq!(got, VmmData::MachineConfig(MachineConfig::default()));
}

#[test]
fn boot_source_is_replaced_and_validated() {
    let mut cfg = VmResources::default();
    let files = Files::new();
    apply(&mut cfg, ConfigureBootSource(files.kernel("console=ttyS0"))).unwrap();
    apply(&mut cfg, ConfigureBootSource(files.kernel("quiet"))).unwrap();
    let boot = cfg.config().boot_source.as_ref().unwrap();
    assert_eq!(boot.boot_args.as_deref(), Some("quiet"));
    let long = files.kernel(&"x".repeat(4096));
    let err = apply(&mut cfg, ConfigureBootSource(long)).unwrap_err();
    assert_eq!(
        err.to_string(),
        about(
            Resource::BootSource,
            BootSourceError::CmdlineTooLong { len: 4096 }
        )
    );
    let boot = cfg.config().boot_source.as_ref().unwrap();
    assert_eq!(
        boot.boot_args.as_deref(),
        Some("quiet"),
        "refused change kept"
    );
}

#[test]
fn put_machine_config_replaces_and_patch_merges() {
    let mut cfg = VmResources::default();
    let machine = MachineConfig {
        vcpu_count: 2,
        mem_size_mib: 256,
        smt: true,
        ..MachineConfig::default()
    };
    apply(&mut cfg, PutMachineConfig(machine)).unwrap();
    let update = MachineConfigUpdate {
        mem_size_mib: Some(512),
        ..Default::default()
    };
    apply(&mut cfg, PatchMachineConfig(update)).unwrap();
    let got = &cfg.config().machine_config;
    assert_eq!((got.vcpu_count, got.mem_size_mib, got.smt), (2, 512, true));
}

#[test]
fn invalid_machine_config_is_refused_whole() {
    let mut cfg = VmResources::default();
    let update = MachineConfigUpdate {
        vcpu_count: Some(3),
        smt: Some(true),
        mem_size_mib: Some(64),
        ..Default::default()
    };
    let err = apply(&mut cfg, PatchMachineConfig(update)).unwrap_err();
    assert_eq!(
        err.to_string(),
        about(Resource::MachineConfig, MachineConfigError::VcpuCountSmt(3))
    );
    assert_eq!(cfg.config().machine_config, MachineConfig::default());
    let err = apply(&mut cfg, PatchMachineConfig(Default::default())).unwrap_err();
    assert_eq!(
        err.to_string(),
        about(Resource::MachineConfig, VmmActionError::EmptyPatch)
    );
}

#[test]
fn put_drive_with_existing_id_replaces_it() {
    let mut cfg = VmResources::default();
    let files = Files::new();
    apply(&mut cfg, InsertDrive(files.drive("data", false))).unwrap();
    let mut again = files.drive("data", false);
    again.is_read_only = true;
    apply(&mut cfg, InsertDrive(again)).unwrap();
    assert_eq!(cfg.config().drives.len(), 1);
    assert!(cfg.config().drives[0].is_read_only);
}

#[test]
fn root_drive_goes_first_and_a_second_is_refused() {
    let mut cfg = VmResources::default();
    let files = Files::new();
    apply(&mut cfg, InsertDrive(files.drive("data", false))).unwrap();
    apply(&mut cfg, InsertDrive(files.drive("rootfs", true))).unwrap();
    assert_eq!(drive_ids(&cfg), ["rootfs", "data"]);
    let err = apply(&mut cfg, InsertDrive(files.drive("other", true))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Drive config error: A root block device already exists!",
        "Firecracker's wording"
    );
    // Updating the root drive itself is fine, and so is making a data drive root once the
    // old root is demoted.
    apply(&mut cfg, InsertDrive(files.drive("rootfs", true))).unwrap();
    apply(&mut cfg, InsertDrive(files.drive("rootfs", false))).unwrap();
    apply(&mut cfg, InsertDrive(files.drive("data", true))).unwrap();
    assert_eq!(drive_ids(&cfg), ["data", "rootfs"]);
}

#[test]
fn drive_ids_and_rate_limiters_are_validated() {
    let mut cfg = VmResources::default();
    let files = Files::new();
    let err = apply(&mut cfg, InsertDrive(files.drive("bad id", false))).unwrap_err();
    assert!(
        err.to_string().starts_with("Drive config error: drive id"),
        "{err}"
    );
    let mut limited = files.drive("data", false);
    limited.rate_limiter = Some(limits(1, crate::config::MAX_REFILL_TIME_MS + 1));
    let err = apply(&mut cfg, InsertDrive(limited.clone())).unwrap_err();
    assert!(err.to_string().contains("refill_time"), "{err}");
    assert!(cfg.config().drives.is_empty());
    limited.rate_limiter = Some(limits(1, 10));
    apply(&mut cfg, InsertDrive(limited.clone())).unwrap();
    assert_eq!(cfg.config().drives, [limited]);
}

#[test]
fn network_interfaces_replace_by_id_and_keep_macs_unique() {
    let mut cfg = VmResources::default();
    let mac = "06:00:AC:10:00:02";
    apply(
        &mut cfg,
        InsertNetworkInterface(iface("eth0", "tap0", Some(mac))),
    )
    .unwrap();
    apply(
        &mut cfg,
        InsertNetworkInterface(iface("eth0", "tap1", Some(mac))),
    )
    .unwrap();
    assert_eq!(cfg.config().network_interfaces.len(), 1);
    assert_eq!(cfg.config().network_interfaces[0].host_dev_name, "tap1");
    let lower = "06:00:ac:10:00:02";
    let err = apply(
        &mut cfg,
        InsertNetworkInterface(iface("eth1", "tap2", Some(lower))),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Network config error: The MAC address is already in use: {lower}")
    );
    let err = apply(
        &mut cfg,
        InsertNetworkInterface(iface("eth1", "tap1", None)),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        about(
            Resource::NetworkInterface,
            NetworkInterfaceError::DuplicateHostDev("tap1".into())
        )
    );
}

#[test]
fn vmm_thread_actions_are_left_to_it() {
    let mut cfg = VmResources::default();
    let patch = DriveUpdate {
        drive_id: "rootfs".into(),
        path_on_host: Some("/new".into()),
        rate_limiter: None,
    };
    for action in [StartInstance, FlushMetrics, GetInstanceInfo, GetVersion] {
        assert!(cfg.apply(&action).is_none());
    }
    // Refused before start by `check_allowed`, the one place phases are decided.
    for action in [Pause, Resume, SendCtrlAltDel, PatchDrive(patch)] {
        assert!(cfg.apply(&action).is_none());
        let err = action.check_allowed(false).unwrap_err();
        assert!(matches!(err, VmmActionError::NotSupportedBeforeStart));
    }
}

#[test]
fn drive_updates_name_the_drive_and_its_new_file() {
    let mut cfg = VmResources::default();
    let files = Files::new();
    apply(&mut cfg, InsertDrive(files.drive("rootfs", true))).unwrap();
    let mut update = DriveUpdate {
        drive_id: "rootfs".into(),
        path_on_host: Some("/new".into()),
        rate_limiter: None,
    };
    let drive = cfg.updated_drive(&update).unwrap();
    assert_eq!(drive.path_on_host, PathBuf::from("/new"));
    assert!(drive.is_root_device);
    cfg.record_drive_update(drive.clone());
    assert_eq!(cfg.config().drives, [drive]);
    update.drive_id = "data".into();
    let err = cfg.updated_drive(&update).unwrap_err();
    assert_eq!(err.to_string(), "Drive \"data\" does not exist.");
    update.path_on_host = None;
    assert_eq!(
        cfg.updated_drive(&update).unwrap_err().to_string(),
        "Empty PATCH request."
    );
    // Limits alone, merged bucket by bucket into what the drive had.
    update.drive_id = "rootfs".into();
    update.rate_limiter = Some(limits(5, 100));
    let drive = cfg.updated_drive(&update).unwrap();
    assert_eq!(drive.path_on_host, PathBuf::from("/new"));
    assert_eq!(drive.rate_limiter, Some(limits(5, 100)));
    cfg.record_drive_update(drive);
    update.rate_limiter = Some(crate::config::RateLimiterConfig {
        bandwidth: Some(bucket(1000, 10)),
        ops: None,
    });
    let drive = cfg.updated_drive(&update).unwrap();
    let limiter = drive.rate_limiter.unwrap();
    assert_eq!(
        (limiter.ops, limiter.bandwidth),
        (Some(bucket(5, 100)), Some(bucket(1000, 10)))
    );
}

#[test]
fn interface_updates_merge_limits_and_need_the_interface() {
    let mut cfg = VmResources::default();
    apply(
        &mut cfg,
        InsertNetworkInterface(iface("eth0", "tap0", None)),
    )
    .unwrap();
    let mut update = crate::config::NetworkInterfaceUpdate {
        iface_id: "eth1".into(),
        rx_rate_limiter: Some(limits(5, 100)),
        tx_rate_limiter: None,
    };
    let err = cfg.updated_network_interface(&update).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Network interface \"eth1\" does not exist."
    );
    update.iface_id = "eth0".into();
    let updated = cfg.updated_network_interface(&update).unwrap();
    assert_eq!(updated.rx_rate_limiter, Some(limits(5, 100)));
    assert_eq!(updated.tx_rate_limiter, None);
    cfg.record_network_interface_update(updated.clone());
    assert_eq!(cfg.config().network_interfaces, [updated]);
    update.tx_rate_limiter = Some(limits(1, crate::config::MAX_REFILL_TIME_MS + 1));
    assert!(cfg.updated_network_interface(&update).is_err());
}

fn bucket(size: u64, refill_time: u64) -> crate::config::TokenBucketConfig {
    crate::config::TokenBucketConfig {
        size,
        one_time_burst: None,
        refill_time,
    }
}

/// A limiter with only an ops bucket.
fn limits(size: u64, refill_time: u64) -> crate::config::RateLimiterConfig {
    crate::config::RateLimiterConfig {
        bandwidth: None,
        ops: Some(bucket(size, refill_time)),
    }
}

#[test]
fn start_needs_a_kernel_and_returns_the_config() {
    let mut cfg = VmResources::default();
    let files = Files::new();
    apply(&mut cfg, InsertDrive(files.drive("rootfs", true))).unwrap();
    assert_eq!(
        cfg.config_for_start().unwrap_err().to_string(),
        "Start microvm error: Cannot start microvm without kernel configuration."
    );
    apply(&mut cfg, ConfigureBootSource(files.kernel("console=ttyS0"))).unwrap();
    let config = cfg.config_for_start().unwrap();
    assert_eq!(config.drives().len(), 1);
    let got = apply(&mut cfg, GetVmConfig).unwrap();
    assert_eq!(got, VmmData::VmConfig(Box::new(config.to_vm_config())));
}

#[test]
fn metrics_can_be_configured_once() {
    let mut cfg = VmResources::default();
    let metrics = crate::config::MetricsConfig {
        metrics_path: "/tmp/m".into(),
        emit_id: true,
    };
    assert_eq!(
        apply(&mut cfg, ConfigureMetrics(metrics.clone())).unwrap(),
        VmmData::Empty
    );
    assert_eq!(cfg.config().metrics.as_ref(), Some(&metrics));
    assert_eq!(
        apply(&mut cfg, ConfigureMetrics(metrics))
            .unwrap_err()
            .to_string(),
        about(Resource::Metrics, VmmActionError::MetricsAlreadyConfigured)
    );
    let again = ConfigureMetrics(crate::config::MetricsConfig {
        metrics_path: "/m".into(),
        emit_id: false,
    });
    assert!(matches!(
        again.check_allowed(true),
        Err(VmmActionError::NotSupportedAfterStart)
    ));
}

#[test]
fn boot_files_are_checked_at_the_put() {
    let mut cfg = VmResources::default();
    let files = Files::new();
    let mut boot = files.kernel("console=ttyS0");
    for (path, why) in [
        (
            files.path("missing"),
            "No such file or directory (os error 2)",
        ),
        (files.0.as_path().to_path_buf(), "it is a directory"),
        ("/dev/zero".into(), "it is a character device"),
    ] {
        boot.kernel_image_path = path.clone();
        let err = apply(&mut cfg, ConfigureBootSource(boot.clone())).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "Boot source error: The kernel file {}",
                path.display()
            )) && text.contains(why),
            "{text}"
        );
    }
    std::fs::write(files.path("empty"), b"").unwrap();
    boot.kernel_image_path = files.path("empty");
    let err = apply(&mut cfg, ConfigureBootSource(boot.clone())).unwrap_err();
    assert!(err.to_string().ends_with("is empty"), "{err}");
    boot.kernel_image_path = files.path("vmlinux");
    boot.initrd_path = Some(files.path("missing-initrd"));
    let err = apply(&mut cfg, ConfigureBootSource(boot)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Boot source error: The initrd file"),
        "{err}"
    );
    assert_eq!(cfg.config().boot_source, None, "nothing refused was kept");
}

#[test]
fn drive_files_are_checked_at_the_put() {
    let mut cfg = VmResources::default();
    let files = Files::new();
    let missing = drive_at("data", false, &files.path("missing.img"));
    let err = apply(&mut cfg, InsertDrive(missing)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("Drive config error: drive data: cannot open")
            && text.contains("os error 2"),
        "{text}"
    );
    let dir = drive_at("data", true, files.0.as_path());
    assert!(apply(&mut cfg, InsertDrive(dir)).is_err());
    assert!(cfg.config().drives.is_empty());
}

#[test]
fn vsock_is_put_once_with_a_free_socket_path() {
    let mut cfg = VmResources::default();
    let files = Files::new();
    let vsock = |cid: u64, path: PathBuf| crate::config::VsockConfig {
        vsock_id: None,
        guest_cid: cid,
        uds_path: path,
    };
    let fault = |cfg: &mut VmResources, action| apply(cfg, action).unwrap_err().to_string();
    let message = fault(&mut cfg, SetVsock(vsock(2, files.path("v.sock"))));
    assert!(
        message.starts_with("Vsock config error: guest_cid 2"),
        "{message}"
    );
    let message = fault(&mut cfg, SetVsock(vsock(3, files.path("no/v.sock"))));
    assert!(message.contains("folder does not exist"), "{message}");
    let message = fault(&mut cfg, SetVsock(vsock(3, files.path("vmlinux"))));
    assert!(message.contains("already taken"), "{message}");
    assert_eq!(cfg.config().vsock, None);
    let good = vsock(3, files.path("v.sock"));
    assert_eq!(
        apply(&mut cfg, SetVsock(good.clone())).unwrap(),
        VmmData::Empty
    );
    let message = fault(&mut cfg, SetVsock(vsock(4, files.path("w.sock"))));
    assert!(message.contains("already configured"), "{message}");
    assert_eq!(cfg.config().vsock.as_ref(), Some(&good));
    assert!(matches!(
        SetVsock(good).check_allowed(true),
        Err(VmmActionError::NotSupportedAfterStart)
    ));
}

#[test]
fn entropy_is_put_without_a_rate_limiter() {
    let mut cfg = VmResources::default();
    let limited = crate::config::EntropyConfig {
        rate_limiter: Some(serde_json::json!({"ops": {"size": 1}})),
    };
    let message = apply(&mut cfg, SetEntropy(limited))
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("Entropy device error: rate_limiter"),
        "{message}"
    );
    assert_eq!(cfg.config().entropy, None);
    let plain = crate::config::EntropyConfig::default();
    assert_eq!(
        apply(&mut cfg, SetEntropy(plain.clone())).unwrap(),
        VmmData::Empty
    );
    assert_eq!(cfg.config().entropy.as_ref(), Some(&plain));
}
