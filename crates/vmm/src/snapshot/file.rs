//! The state file: a fixed header (magic number, format version, payload length, CRC32 of
//! the payload) followed by the payload, the saved state as JSON.
//!
//! JSON rather than a binary encoding: the state is small (tens of KiB per vCPU at most),
//! written and read once per snapshot, and a human can inspect it; the header makes a wrong,
//! newer, truncated or corrupted file an error before any field is trusted.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: [u8; 8] = *b"EMBERSNP";
/// The version of the state file written by this build; files of other versions are refused.
pub const FORMAT_VERSION: u16 = 1;
const HEADER_LEN: usize = 24;
/// The largest payload read: a state file is far smaller; a larger length is corruption.
const MAX_PAYLOAD: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot create the snapshot file {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write the snapshot file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the snapshot file {path}: {source}")]
    Open {
        path: String,
        source: crate::host_file::HostFileError,
    },
    #[error("cannot read the snapshot file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an Ember snapshot file (wrong magic number)")]
    Magic { path: String },
    #[error("{path} is a version {found} snapshot; this Ember reads version {FORMAT_VERSION}")]
    Version { path: String, found: u16 },
    #[error(
        "{path} is truncated: the header promises {promised} bytes of state, {found} are there"
    )]
    Truncated {
        path: String,
        promised: u64,
        found: u64,
    },
    #[error("{path} is corrupted: its checksum does not match")]
    Checksum { path: String },
    #[error("{path}: the saved state cannot be read: {source}")]
    Decode {
        path: String,
        source: serde_json::Error,
    },
    #[error("cannot encode the state: {0}")]
    Encode(serde_json::Error),
}

/// Writes `state` to a new file at `path` (replacing one that is there).
pub fn write_state<T: Serialize>(path: &Path, state: &T) -> Result<(), StateFileError> {
    let name = || path.display().to_string();
    let bytes = encode_state(state)?;
    let mut file = std::fs::File::create(path).map_err(|source| StateFileError::Create {
        path: name(),
        source,
    })?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_data())
        .map_err(|source| StateFileError::Write {
            path: name(),
            source,
        })
}

/// Reads the state saved at `path`, refusing anything but an intact file of this version.
pub fn read_state<T: DeserializeOwned>(path: &Path) -> Result<T, StateFileError> {
    let name = || path.display().to_string();
    let file = crate::host_file::open_regular(path).map_err(|source| StateFileError::Open {
        path: name(),
        source,
    })?;
    let mut bytes = Vec::new();
    (&file)
        .take(HEADER_LEN as u64 + MAX_PAYLOAD)
        .read_to_end(&mut bytes)
        .map_err(|source| StateFileError::Read {
            path: name(),
            source,
        })?;
    decode_state(&bytes, &name())
}

/// The state in `bytes`, the whole of a state file called `name` (for errors): the header
/// checked first (magic, version, length, checksum), then the payload decoded.
pub fn decode_state<T: DeserializeOwned>(bytes: &[u8], name: &str) -> Result<T, StateFileError> {
    let path = || name.to_string();
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(StateFileError::Magic { path: path() });
    }
    if bytes.len() < HEADER_LEN {
        return Err(StateFileError::Truncated {
            path: path(),
            promised: HEADER_LEN as u64,
            found: bytes.len() as u64,
        });
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    let found = u16::from_le_bytes([header[8], header[9]]);
    if found != FORMAT_VERSION {
        return Err(StateFileError::Version {
            path: path(),
            found,
        });
    }
    let promised = u64::from_le_bytes(header[12..20].try_into().unwrap_or_default());
    let checksum = u32::from_le_bytes(header[20..24].try_into().unwrap_or_default());
    if payload.len() as u64 != promised {
        return Err(StateFileError::Truncated {
            path: path(),
            promised,
            found: payload.len() as u64,
        });
    }
    if crc32fast::hash(payload) != checksum {
        return Err(StateFileError::Checksum { path: path() });
    }
    serde_json::from_slice(payload).map_err(|source| StateFileError::Decode {
        path: path(),
        source,
    })
}

/// The bytes of a state file holding `state` (what [`write_state`] writes).
pub fn encode_state<T: Serialize>(state: &T) -> Result<Vec<u8>, StateFileError> {
    let payload = serde_json::to_vec(state).map_err(StateFileError::Encode)?;
    Ok(frame_payload(&payload))
}

/// `payload` behind a valid header: a state file as far as the header can tell.
pub fn frame_payload(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::tempdir::TempDir;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        a: u32,
        b: Vec<String>,
    }

    fn sample() -> Sample {
        Sample {
            a: 7,
            b: vec!["x".into(), "y".into()],
        }
    }

    #[test]
    fn state_round_trips() {
        let dir = TempDir::new().unwrap();
        let path = dir.as_path().join("vm.snap");
        write_state(&path, &sample()).unwrap();
        assert_eq!(read_state::<Sample>(&path).unwrap(), sample());
    }

    #[test]
    fn damaged_files_are_refused_by_name() {
        let dir = TempDir::new().unwrap();
        let path = dir.as_path().join("vm.snap");
        write_state(&path, &sample()).unwrap();
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"NOTASNAP".iter().chain(&good[8..]).copied().collect(),
                "wrong magic",
            ),
            (
                good[..8]
                    .iter()
                    .chain(&[9u8, 0])
                    .chain(&good[10..])
                    .copied()
                    .collect(),
                "version 9 snapshot",
            ),
            (good[..good.len() - 3].to_vec(), "truncated"),
            (good[..HEADER_LEN - 2].to_vec(), "truncated"),
            (vec![], "wrong magic"),
            (
                {
                    let mut flipped = good.clone();
                    *flipped.last_mut().unwrap() ^= 1;
                    flipped
                },
                "checksum",
            ),
        ];
        for (bytes, why) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let err = read_state::<Sample>(&path).unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
        let missing = read_state::<Sample>(&dir.as_path().join("none")).unwrap_err();
        assert!(missing.to_string().contains("No such file"), "{missing}");
    }

    #[test]
    fn a_payload_of_another_shape_is_a_decode_error() {
        let dir = TempDir::new().unwrap();
        let path = dir.as_path().join("vm.snap");
        write_state(&path, &vec![1, 2, 3]).unwrap();
        let err = read_state::<Sample>(&path).unwrap_err();
        assert!(matches!(err, StateFileError::Decode { .. }), "{err}");
    }
}
