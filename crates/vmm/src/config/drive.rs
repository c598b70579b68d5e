//! `drives` (and the bodies of `PUT` and `PATCH /drives/{id}`): virtio-block devices backed
//! by host files.

use super::rate_limiter::{RateLimiterConfig, RateLimiterConfigError};
use super::valid_id;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;

/// A drive, or a set of drives, that cannot be attached.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DriveError {
    #[error("drive id {0:?} is invalid: use 1 to 64 characters from [A-Za-z0-9_-]")]
    BadId(String),
    #[error("drive_id {0:?} is used by more than one drive")]
    DuplicateId(String),
    #[error("drives {0:?} and {1:?} are both root devices; at most one may be")]
    TwoRootDevices(String, String),
    #[error("A root block device already exists!")]
    RootDeviceExists,
    #[error("drive {0:?}: io_engine {1:?} is not supported: only \"Sync\"")]
    IoEngine(String, String),
    #[error(
        "drive {0:?}: partuuid {1:?} is not a partition UUID like \"0eaa91a0-01\" or \
         \"6b1b4a54-9a0a-4ae9-8f0a-1d7c0e7b1d2a\" (optionally with \"/PARTNROFF=N\")"
    )]
    BadPartuuid(String, String),
    #[error("drive {0:?}: rate_limiter: {1}")]
    RateLimiter(String, #[source] RateLimiterConfigError),
}

/// How guest writes reach the backing file of a drive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    /// Flush requests are acknowledged without syncing the file (Firecracker's default).
    #[default]
    Unsafe,
    /// Flush requests `fsync` the backing file before they are acknowledged.
    Writeback,
}

/// One entry of `drives`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveConfig {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    pub is_root_device: bool,
    #[serde(default)]
    pub is_read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    #[serde(default)]
    pub cache_type: CacheType,
    /// Accepted for compatibility; only "Sync" is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<String>,
    /// Limits on the drive's requests (bytes and operations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// The body of `PATCH /drives/{id}` (Firecracker's `PartialDrive`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveUpdate {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
    /// New limits, effective at once; a bucket left out keeps its setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiterConfig>,
}

impl DriveConfig {
    /// Checks the fields of this drive other than its id, which [`validate_drives`] checks
    /// with the others.
    fn validate_fields(&self) -> Result<(), DriveError> {
        let id = &self.drive_id;
        if let Some(engine) = self.io_engine.as_deref().filter(|e| *e != "Sync") {
            return Err(DriveError::IoEngine(id.clone(), engine.into()));
        }
        if let Some(partuuid) = self.partuuid.as_deref().filter(|p| !valid_partuuid(p)) {
            return Err(DriveError::BadPartuuid(id.clone(), partuuid.into()));
        }
        validate_limiter(id, self.rate_limiter.as_ref())
    }
}

impl DriveUpdate {
    /// Refuses what a running drive cannot change.
    pub fn validate(&self) -> Result<(), DriveError> {
        validate_limiter(&self.drive_id, self.rate_limiter.as_ref())
    }

    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.path_on_host.is_none() && self.rate_limiter.is_none()
    }
}

fn validate_limiter(id: &str, limiter: Option<&RateLimiterConfig>) -> Result<(), DriveError> {
    let checked = limiter.map_or(Ok(()), RateLimiterConfig::validate);
    checked.map_err(|e| DriveError::RateLimiter(id.to_string(), e))
}

/// Validates every drive, unique ids and at most one root device.
pub fn validate_drives(drives: &[DriveConfig]) -> Result<(), DriveError> {
    let mut ids = HashSet::new();
    let mut root: Option<&str> = None;
    for drive in drives {
        if !valid_id(&drive.drive_id) {
            return Err(DriveError::BadId(drive.drive_id.clone()));
        }
        if !ids.insert(drive.drive_id.as_str()) {
            return Err(DriveError::DuplicateId(drive.drive_id.clone()));
        }
        if drive.is_root_device {
            if let Some(first) = root {
                let second = drive.drive_id.clone();
                return Err(DriveError::TwoRootDevices(first.into(), second));
            }
            root = Some(&drive.drive_id);
        }
        drive.validate_fields()?;
    }
    Ok(())
}

/// Refuses `drive` as a second root device: only the current root may stay root.
pub fn refuse_second_root(drives: &[DriveConfig], drive: &DriveConfig) -> Result<(), DriveError> {
    let existing = drives.iter().position(|d| d.drive_id == drive.drive_id);
    let root = drives.iter().position(|d| d.is_root_device);
    if drive.is_root_device && root.is_some() && root != existing {
        return Err(DriveError::RootDeviceExists);
    }
    Ok(())
}

/// `drives` with `drive` added, or in place of the one with its id, validated. The root drive
/// goes first so the guest sees it as `/dev/vda`, as Firecracker orders them.
pub fn with_drive(
    drives: &[DriveConfig],
    drive: &DriveConfig,
) -> Result<Vec<DriveConfig>, DriveError> {
    refuse_second_root(drives, drive)?;
    let mut candidate = drives.to_vec();
    let index = match drives.iter().position(|d| d.drive_id == drive.drive_id) {
        Some(index) => {
            candidate[index] = drive.clone();
            index
        }
        None => {
            candidate.push(drive.clone());
            candidate.len() - 1
        }
    };
    if drive.is_root_device {
        let root = candidate.remove(index);
        candidate.insert(0, root);
    }
    validate_drives(&candidate)?;
    Ok(candidate)
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
