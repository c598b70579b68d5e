//! The virtio devices a configuration asks for, attached through the device manager.

use super::BuildError;
use crate::config::{DriveConfig, EntropyConfig, NetworkInterfaceConfig, VsockConfig};
use crate::device_manager::{DeviceKind, DeviceManager, Wiring};
use crate::devices::virtio::{Block, Net, Rng, Vsock};

/// The `root=` argument for the root drive (it is attached first, so it is `/dev/vda`).
pub fn root_cmdline_arg(drive: &DriveConfig) -> String {
    let mode = if drive.is_read_only { "ro" } else { "rw" };
    match &drive.partuuid {
        Some(partuuid) => format!("root=PARTUUID={partuuid} {mode}"),
        None => format!("root=/dev/vda {mode}"),
    }
}

/// Attaches every drive, the root drive first, and adds its `root=` argument.
pub fn attach_drives(
    devices: &mut DeviceManager,
    wiring: &mut Wiring,
    drives: &[DriveConfig],
) -> Result<(), BuildError> {
    let mut ordered: Vec<&DriveConfig> = drives.iter().filter(|d| d.is_root_device).collect();
    ordered.extend(drives.iter().filter(|d| !d.is_root_device));
    for drive in ordered {
        let block = Block::new(drive).map_err(|e| BuildError::Virtio(e.to_string()))?;
        devices.attach_virtio(wiring, DeviceKind::Block, &drive.drive_id, Box::new(block))?;
    }
    if let Some(root) = drives.iter().find(|d| d.is_root_device) {
        devices.push_cmdline_arg(root_cmdline_arg(root));
    }
    Ok(())
}

/// Attaches every network interface, in configuration order (`eth0`, `eth1`, ...).
pub fn attach_network_interfaces(
    devices: &mut DeviceManager,
    wiring: &mut Wiring,
    ifaces: &[NetworkInterfaceConfig],
) -> Result<(), BuildError> {
    for iface in ifaces {
        let net = Net::new(iface).map_err(|e| BuildError::Virtio(e.to_string()))?;
        devices.attach_virtio(wiring, DeviceKind::Net, &iface.iface_id, Box::new(net))?;
    }
    Ok(())
}

/// Attaches the entropy device, if one is configured (its rate limiter was refused at
/// validation, so there is nothing to build from the config yet).
pub fn attach_entropy(
    devices: &mut DeviceManager,
    wiring: &mut Wiring,
    entropy: Option<&EntropyConfig>,
) -> Result<(), BuildError> {
    if entropy.is_some() {
        devices.attach_virtio(wiring, DeviceKind::Rng, "rng", Box::new(Rng::new()))?;
    }
    Ok(())
}

/// Attaches the vsock device, if one is configured; binds its `uds_path` now.
pub fn attach_vsock(
    devices: &mut DeviceManager,
    wiring: &mut Wiring,
    vsock: Option<&VsockConfig>,
) -> Result<(), BuildError> {
    if let Some(config) = vsock {
        let device = Vsock::new(config).map_err(|e| BuildError::Virtio(e.to_string()))?;
        devices.attach_virtio(wiring, DeviceKind::Vsock, "vsock", Box::new(device))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_argument_follows_drive_settings() {
        let mut drive: DriveConfig = serde_json::from_str(
            r#"{"drive_id":"rootfs","path_on_host":"/r","is_root_device":true,"is_read_only":true}"#,
        )
        .unwrap();
        assert_eq!(root_cmdline_arg(&drive), "root=/dev/vda ro");
        drive.partuuid = Some("1234-01".into());
        drive.is_read_only = false;
        assert_eq!(root_cmdline_arg(&drive), "root=PARTUUID=1234-01 rw");
    }
}
