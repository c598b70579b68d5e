//! A model of virtio-block semantics for the `virtio_block` target's well-formed runs: a
//! shadow copy of the disk and, for each request chain the harness laid out, the status,
//! used length and buffer contents the virtio spec (and Ember's documented choices) call
//! for.

use crate::disk::pattern_bytes;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
/// What GET_ID returns for the fuzz drive (`disk::drive`): the id, zero padded to 20 bytes.
pub const DRIVE_ID: [u8; 20] = *b"fuzz\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// Where the harness put one request chain.
#[derive(Clone, Debug)]
pub struct Layout {
    pub head: u16,
    pub request_type: u32,
    pub sector: u64,
    /// `(addr, len, device-writable)` of each data buffer.
    pub data: Vec<(u64, u32, bool)>,
    /// The status byte's address when it is a device-writable descriptor (the only kind
    /// the device can answer through).
    pub status: Option<u64>,
}

/// What the device must do with one chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The status byte written, if the chain has a usable status descriptor.
    pub status: Option<u8>,
    /// The used element's length.
    pub used_len: u32,
    /// The bytes each data buffer must hold afterwards (for successful IN and GET_ID).
    pub data: Option<Vec<Vec<u8>>>,
}

pub struct Model {
    pub disk: Vec<u8>,
    pub read_only: bool,
}

impl Model {
    pub fn new(len: u64, read_only: bool) -> Self {
        Model {
            disk: pattern_bytes(len),
            read_only,
        }
    }

    fn nsectors(&self) -> u64 {
        self.disk.len() as u64 / 512
    }

    /// The byte range of a read or write of `len` bytes at `sector`, if it is aligned and
    /// on the disk.
    fn range(&self, sector: u64, len: u64) -> Option<std::ops::Range<usize>> {
        if !len.is_multiple_of(512) {
            return None;
        }
        let end = sector.checked_add(len / 512)?;
        (end <= self.nsectors()).then(|| (sector * 512) as usize..(end * 512) as usize)
    }

    /// Runs `chain` against the model; `read_guest` gives what an OUT buffer holds.
    pub fn apply(&mut self, chain: &Layout, read_guest: impl Fn(u64, u32) -> Vec<u8>) -> Outcome {
        let Some(_) = chain.status else {
            // No status descriptor: nothing can be reported, so nothing is done.
            return Outcome {
                status: None,
                used_len: 0,
                data: None,
            };
        };
        let fail = |status| Outcome {
            status: Some(status),
            used_len: 1,
            data: None,
        };
        let total: u64 = chain.data.iter().map(|d| u64::from(d.1)).sum();
        let all = |writable: bool| chain.data.iter().all(|d| d.2 == writable && d.1 > 0);
        match chain.request_type {
            T_IN => {
                let Some(range) = self.range(chain.sector, total).filter(|_| all(true)) else {
                    return fail(S_IOERR);
                };
                let mut bytes = &self.disk[range];
                let data = chain
                    .data
                    .iter()
                    .map(|d| {
                        let (head, tail) = bytes.split_at(d.1 as usize);
                        bytes = tail;
                        head.to_vec()
                    })
                    .collect();
                Outcome {
                    status: Some(S_OK),
                    used_len: total as u32 + 1,
                    data: Some(data),
                }
            }
            T_OUT => {
                let range = self.range(chain.sector, total).filter(|_| all(false));
                let Some(range) = range.filter(|_| !self.read_only) else {
                    return fail(S_IOERR);
                };
                let mut at = range.start;
                for &(addr, len, _) in &chain.data {
                    let bytes = read_guest(addr, len);
                    self.disk[at..at + bytes.len()].copy_from_slice(&bytes);
                    at += bytes.len();
                }
                fail(S_OK)
            }
            T_FLUSH => fail(S_OK),
            T_GET_ID => {
                if !all(true) || total < DRIVE_ID.len() as u64 {
                    return fail(S_IOERR);
                }
                let mut id = &DRIVE_ID[..];
                let data = chain
                    .data
                    .iter()
                    .map(|d| {
                        let n = id.len().min(d.1 as usize);
                        let (head, tail) = id.split_at(n);
                        id = tail;
                        head.to_vec()
                    })
                    .collect();
                Outcome {
                    status: Some(S_OK),
                    used_len: DRIVE_ID.len() as u32 + 1,
                    data: Some(data),
                }
            }
            _ => fail(S_UNSUPP),
        }
    }
}
