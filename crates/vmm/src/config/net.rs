//! `network-interfaces` (and the bodies of `PUT` and `PATCH /network-interfaces/{id}`):
//! virtio-net devices backed by host TAP devices.

use super::rate_limiter::{RateLimiterConfig, RateLimiterConfigError};
use super::valid_id;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The smallest MTU taken: IPv4's minimum, as in Firecracker (the largest is u16's).
pub const MIN_MTU: u16 = 68;

/// An interface, or a set of interfaces, that cannot be attached.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkInterfaceError {
    #[error("network interface id {0:?} is invalid: use 1 to 64 characters from [A-Za-z0-9_-]")]
    BadId(String),
    #[error("iface_id {0:?} is used by more than one network interface")]
    DuplicateId(String),
    #[error("host_dev_name {0:?} is used by more than one network interface")]
    DuplicateHostDev(String),
    #[error("network interface {0:?}: host_dev_name {1:?} is not a valid interface name")]
    BadHostDevName(String, String),
    #[error(
        "network interface {0:?}: guest_mac {1:?} is not a MAC address like 06:00:AC:10:00:02"
    )]
    BadMac(String, String),
    #[error("The MAC address is already in use: {0}")]
    GuestMacInUse(String),
    #[error("network interface {0:?}: {1}")]
    RateLimiter(String, #[source] RateLimiterConfigError),
    #[error("network interface {0:?}: mtu {1} is out of range: use {MIN_MTU} to 65535")]
    BadMtu(String, u16),
}

/// One entry of `network-interfaces`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceConfig {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// The MTU the guest's driver is told to use (VIRTIO_NET_F_MTU); none: its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Limits on frames delivered to the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// Limits on frames the guest sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

/// The body of `PATCH /network-interfaces/{id}` (Firecracker's `PartialNetworkInterface`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceUpdate {
    pub iface_id: String,
    /// New limits, effective at once; a bucket left out keeps its setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

impl NetworkInterfaceUpdate {
    pub fn validate(&self) -> Result<(), NetworkInterfaceError> {
        validate_limiters(
            &self.iface_id,
            [&self.rx_rate_limiter, &self.tx_rate_limiter],
        )
    }
}

fn validate_limiters(
    id: &str,
    limiters: [&Option<RateLimiterConfig>; 2],
) -> Result<(), NetworkInterfaceError> {
    for limiter in limiters.into_iter().flatten() {
        let error = |e| NetworkInterfaceError::RateLimiter(id.to_string(), e);
        limiter.validate().map_err(error)?;
    }
    Ok(())
}

/// Validates every interface, unique ids and unique TAP devices.
pub fn validate_network_interfaces(
    ifaces: &[NetworkInterfaceConfig],
) -> Result<(), NetworkInterfaceError> {
    let mut ids = HashSet::new();
    let mut devs = HashSet::new();
    for iface in ifaces {
        let id = &iface.iface_id;
        if !valid_id(id) {
            return Err(NetworkInterfaceError::BadId(id.clone()));
        }
        if !ids.insert(id.as_str()) {
            return Err(NetworkInterfaceError::DuplicateId(id.clone()));
        }
        let dev = &iface.host_dev_name;
        if !valid_ifname(dev) {
            return Err(NetworkInterfaceError::BadHostDevName(
                id.clone(),
                dev.clone(),
            ));
        }
        if !devs.insert(dev.as_str()) {
            return Err(NetworkInterfaceError::DuplicateHostDev(dev.clone()));
        }
        if let Some(mac) = &iface.guest_mac {
            parse_mac(mac).ok_or_else(|| NetworkInterfaceError::BadMac(id.clone(), mac.clone()))?;
        }
        if let Some(mtu) = iface.mtu.filter(|mtu| *mtu < MIN_MTU) {
            return Err(NetworkInterfaceError::BadMtu(id.clone(), mtu));
        }
        validate_limiters(id, [&iface.rx_rate_limiter, &iface.tx_rate_limiter])?;
    }
    Ok(())
}

/// `ifaces` with `iface` added, or in place of the one with its id, validated. A MAC address
/// another interface has (in any case) is refused.
pub fn with_network_interface(
    ifaces: &[NetworkInterfaceConfig],
    iface: &NetworkInterfaceConfig,
) -> Result<Vec<NetworkInterfaceConfig>, NetworkInterfaceError> {
    if let Some(mac) = &iface.guest_mac {
        let taken = ifaces.iter().any(|other| {
            other.iface_id != iface.iface_id
                && other
                    .guest_mac
                    .as_ref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(mac))
        });
        if taken {
            return Err(NetworkInterfaceError::GuestMacInUse(mac.clone()));
        }
    }
    let mut candidate = ifaces.to_vec();
    match ifaces.iter().position(|i| i.iface_id == iface.iface_id) {
        Some(index) => candidate[index] = iface.clone(),
        None => candidate.push(iface.clone()),
    }
    validate_network_interfaces(&candidate)?;
    Ok(candidate)
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
