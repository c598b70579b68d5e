//! The bodies of `PUT /snapshot/create` and `PUT /snapshot/load`, in Firecracker's shapes,
//! and what Ember can do with them. A field asking for something Ember does not do yet is
//! refused by name, never ignored.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Full: all of guest memory; Diff: only pages dirtied since the last snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    Diff,
    #[default]
    Full,
}

/// `PUT /snapshot/create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotConfig {
    #[serde(default)]
    pub snapshot_type: SnapshotType,
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemBackendType {
    File,
    Uffd,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemBackend {
    pub backend_type: MemBackendType,
    pub backend_path: PathBuf,
}

/// One interface of the snapshot that gets another TAP on restore (a clone's own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// `PUT /snapshot/load`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSnapshotConfig {
    pub snapshot_path: PathBuf,
    /// Deprecated in Firecracker in favour of `mem_backend` (a File backend).
    #[serde(default)]
    pub mem_file_path: Option<PathBuf>,
    #[serde(default)]
    pub mem_backend: Option<MemBackend>,
    /// Deprecated in Firecracker in favour of `track_dirty_pages`.
    #[serde(default)]
    pub enable_diff_snapshots: bool,
    #[serde(default)]
    pub track_dirty_pages: bool,
    #[serde(default)]
    pub resume_vm: bool,
    #[serde(default)]
    pub network_overrides: Vec<NetworkOverride>,
    #[serde(default)]
    pub vsock_override: Option<serde_json::Value>,
    #[serde(default)]
    pub clock_realtime: bool,
    #[serde(default)]
    pub huge_pages: Option<String>,
}

/// A load request Ember can carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadSnapshotParams {
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
    pub resume_vm: bool,
    pub network_overrides: Vec<NetworkOverride>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotConfigError {
    #[error("Diff snapshots are not supported by Ember yet: use \"Full\"")]
    DiffNotSupported,
    #[error("give the memory file either as mem_backend or as mem_file_path, not both")]
    TwoMemoryFiles,
    #[error("no memory file: give mem_backend (or mem_file_path)")]
    NoMemoryFile,
    #[error("{0} is not supported by Ember yet")]
    NotSupported(&'static str),
}

impl CreateSnapshotConfig {
    pub fn validate(&self) -> Result<(), SnapshotConfigError> {
        match self.snapshot_type {
            SnapshotType::Full => Ok(()),
            SnapshotType::Diff => Err(SnapshotConfigError::DiffNotSupported),
        }
    }
}

impl LoadSnapshotConfig {
    /// What Ember does with this request, or the first field it cannot honour.
    pub fn validate(&self) -> Result<LoadSnapshotParams, SnapshotConfigError> {
        use SnapshotConfigError::NotSupported;
        let mem_file_path = match (&self.mem_backend, &self.mem_file_path) {
            (Some(_), Some(_)) => return Err(SnapshotConfigError::TwoMemoryFiles),
            (None, None) => return Err(SnapshotConfigError::NoMemoryFile),
            (None, Some(path)) => path.clone(),
            (Some(backend), None) if backend.backend_type == MemBackendType::Uffd => {
                return Err(NotSupported("the Uffd memory backend"))
            }
            (Some(backend), None) => backend.backend_path.clone(),
        };
        if self.track_dirty_pages || self.enable_diff_snapshots {
            return Err(NotSupported("dirty page tracking (track_dirty_pages)"));
        }
        if self.vsock_override.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(NotSupported("vsock_override"));
        }
        if self.clock_realtime {
            return Err(NotSupported("clock_realtime"));
        }
        if !matches!(
            self.huge_pages.as_deref(),
            None | Some("None") | Some("Snapshot")
        ) {
            return Err(NotSupported("huge_pages other than \"None\""));
        }
        Ok(LoadSnapshotParams {
            snapshot_path: self.snapshot_path.clone(),
            mem_file_path,
            resume_vm: self.resume_vm,
            network_overrides: self.network_overrides.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<LoadSnapshotParams, SnapshotConfigError> {
        serde_json::from_str::<LoadSnapshotConfig>(json)
            .unwrap()
            .validate()
    }

    #[test]
    fn the_memory_file_comes_from_one_place() {
        let file = r#"{"snapshot_path": "s", "mem_backend": {"backend_type": "File", "backend_path": "m"}}"#;
        assert_eq!(load(file).unwrap().mem_file_path, PathBuf::from("m"));
        let old = r#"{"snapshot_path": "s", "mem_file_path": "m", "resume_vm": true}"#;
        assert!(load(old).unwrap().resume_vm);
        let both = r#"{"snapshot_path": "s", "mem_file_path": "m", "mem_backend": {"backend_type": "File", "backend_path": "m"}}"#;
        assert_eq!(load(both), Err(SnapshotConfigError::TwoMemoryFiles));
        assert_eq!(
            load(r#"{"snapshot_path": "s"}"#),
            Err(SnapshotConfigError::NoMemoryFile)
        );
    }

    #[test]
    fn what_ember_cannot_do_is_refused_by_name() {
        let base = r#""snapshot_path": "s", "mem_file_path": "m""#;
        for (extra, name) in [
            (
                r#""mem_backend": {"backend_type": "Uffd", "backend_path": "u"}, "snapshot_path": "s""#,
                "Uffd",
            ),
            (
                &format!(r#"{base}, "track_dirty_pages": true"#),
                "track_dirty_pages",
            ),
            (
                &format!(r#"{base}, "vsock_override": {{"uds_path": "v"}}"#),
                "vsock_override",
            ),
            (
                &format!(r#"{base}, "clock_realtime": true"#),
                "clock_realtime",
            ),
            (&format!(r#"{base}, "huge_pages": "2M""#), "huge_pages"),
        ] {
            let err = load(&format!("{{{extra}}}")).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        let diff = CreateSnapshotConfig {
            snapshot_type: SnapshotType::Diff,
            snapshot_path: "s".into(),
            mem_file_path: "m".into(),
        };
        assert_eq!(diff.validate(), Err(SnapshotConfigError::DiffNotSupported));
    }
}
