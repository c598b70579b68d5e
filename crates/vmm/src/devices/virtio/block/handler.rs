//! Executing a parsed virtio-blk request against the backing file and writing its status.

use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemoryError};

use super::backend::{DiskFile, DiskIoError};
use super::request::{ParseError, Request, RequestType};
use super::{BlockMetrics, QUEUE_SIZE, SECTOR_SIZE};
use crate::vstate::memory::GuestMemory;

const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;
/// Header + `seg_max` data descriptors + status.
const MAX_DESCS: usize = QUEUE_SIZE as usize;

/// Why a well-formed request still failed (status IOERR).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("data length {0} is not a multiple of 512")]
    Misaligned(u32),
    #[error("sectors {sector}+{len} bytes are past the end of the disk")]
    OutOfRange { sector: u64, len: u32 },
    #[error("write to a read-only drive")]
    ReadOnly,
    #[error("GET_ID buffer of {0} bytes is shorter than 20")]
    IdBufferTooShort(u32),
    #[error("cannot write the drive id to guest memory: {0}")]
    GuestMemory(#[source] GuestMemoryError),
    #[error(transparent)]
    Io(#[from] DiskIoError),
}

/// A chain parsed, well formed or not.
pub struct Parsed(Result<Request, ParseError>);

impl Parsed {
    /// The bytes a rate limiter charges: the data of reads and writes, nothing otherwise
    /// (a malformed request costs one operation only).
    pub fn bytes(&self) -> u64 {
        match &self.0 {
            Ok(req) if matches!(req.request_type, RequestType::In | RequestType::Out) => {
                u64::from(req.data_len)
            }
            _ => 0,
        }
    }
}

/// Everything a request needs besides guest memory: the disk and the drive id.
pub struct RequestHandler {
    id: [u8; ID_BYTES],
    disk: DiskFile,
    metrics: Arc<BlockMetrics>,
}

impl RequestHandler {
    /// `drive_id` is returned by GET_ID, truncated or zero padded to 20 bytes.
    pub fn new(drive_id: &str, disk: DiskFile, metrics: Arc<BlockMetrics>) -> Self {
        let mut id = [0u8; ID_BYTES];
        let len = drive_id.len().min(ID_BYTES);
        id[..len].copy_from_slice(&drive_id.as_bytes()[..len]);
        RequestHandler { id, disk, metrics }
    }

    /// Parses one chain; what [`Self::finish`] then executes.
    pub fn parse<M>(&self, chain: DescriptorChain<M>, mem: &GuestMemory) -> Parsed
    where
        M: Deref,
        M::Target: vm_memory::GuestMemory,
    {
        Parsed(Request::parse(chain, mem, MAX_DESCS))
    }

    /// Executes a parsed chain and writes its status byte when it can be located.
    /// Returns the number of bytes written into the chain's buffers, for the used ring.
    pub fn finish(&self, parsed: Parsed, mem: &GuestMemory) -> u32 {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let (status_addr, status, written) = match parsed.0 {
            Ok(req) => {
                let (status, written) = self.execute(&req, mem);
                (Some(req.status), status, written)
            }
            Err(e) => {
                log::warn!("virtio-blk: malformed request: {}", e.error);
                (e.status, VIRTIO_BLK_S_IOERR, 0)
            }
        };
        if status != VIRTIO_BLK_S_OK {
            self.metrics.failed_requests.fetch_add(1, Ordering::Relaxed);
        }
        let Some(addr) = status_addr else {
            return 0;
        };
        // Status values are 0..=2.
        match mem.write_obj(status as u8, addr) {
            Ok(()) => written.saturating_add(1),
            Err(e) => {
                log::warn!("virtio-blk: cannot write the request status: {e}");
                0
            }
        }
    }

    /// Runs a well-formed request: `(status, bytes written into data buffers)`.
    fn execute(&self, req: &Request, mem: &GuestMemory) -> (u32, u32) {
        let result = match req.request_type {
            RequestType::In => self.read(req, mem).map(|()| req.data_len),
            RequestType::Out => self.write(req, mem).map(|()| 0),
            RequestType::Flush => self.flush().map(|()| 0),
            RequestType::GetId => self.get_id(req, mem),
            RequestType::Unsupported(t) => {
                log::debug!("virtio-blk: unsupported request type {t}");
                return (VIRTIO_BLK_S_UNSUPP, 0);
            }
        };
        match result {
            Ok(written) => (VIRTIO_BLK_S_OK, written),
            Err(e) => {
                log::debug!("virtio-blk: {:?} request failed: {e}", req.request_type);
                (VIRTIO_BLK_S_IOERR, 0)
            }
        }
    }

    /// The byte offset of a read or write, after checking length and range.
    fn disk_offset(&self, req: &Request) -> Result<u64, ExecuteError> {
        let len = u64::from(req.data_len);
        if len % SECTOR_SIZE != 0 {
            return Err(ExecuteError::Misaligned(req.data_len));
        }
        let out_of_range = || ExecuteError::OutOfRange {
            sector: req.sector,
            len: req.data_len,
        };
        let end = req.sector.checked_add(len / SECTOR_SIZE);
        let end = end.ok_or_else(out_of_range)?;
        if end > self.disk.nsectors() {
            return Err(out_of_range());
        }
        req.sector.checked_mul(SECTOR_SIZE).ok_or_else(out_of_range)
    }

    fn read(&self, req: &Request, mem: &GuestMemory) -> Result<(), ExecuteError> {
        let offset = self.disk_offset(req)?;
        Ok(self.disk.read_into(mem, offset, &req.data)?)
    }

    fn write(&self, req: &Request, mem: &GuestMemory) -> Result<(), ExecuteError> {
        if self.disk.read_only() {
            return Err(ExecuteError::ReadOnly);
        }
        let offset = self.disk_offset(req)?;
        Ok(self.disk.write_from(mem, offset, &req.data)?)
    }

    fn flush(&self) -> Result<(), ExecuteError> {
        if self.disk.flush()? {
            self.metrics.synced_flushes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes the 20-byte id across the data buffers; returns 20.
    fn get_id(&self, req: &Request, mem: &GuestMemory) -> Result<u32, ExecuteError> {
        if (req.data_len as usize) < ID_BYTES {
            return Err(ExecuteError::IdBufferTooShort(req.data_len));
        }
        let mut rest = &self.id[..];
        for seg in &req.data {
            let n = rest.len().min(seg.len as usize);
            let (chunk, tail) = rest.split_at(n);
            mem.write_slice(chunk, seg.addr)
                .map_err(ExecuteError::GuestMemory)?;
            rest = tail;
        }
        Ok(ID_BYTES as u32)
    }
}
