//! Parsing one virtio-blk request out of a descriptor chain.
//!
//! Expected layout (what Linux sends): a device-readable header descriptor of at least 16
//! bytes (`le32 type, le32 reserved, le64 sector`), zero or more data descriptors whose
//! direction matches the request type, and a final device-writable status descriptor of at
//! least 1 byte. Everything is validated before any I/O happens; a chain that fails still
//! reports where its status byte is, if that can be determined, so the error can be
//! returned to the guest.

use std::ops::Deref;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use crate::vstate::memory::GuestMemory;

/// Length of the request header the device reads.
pub const HEADER_LEN: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(value: u32) -> Self {
        match value {
            VIRTIO_BLK_T_IN => RequestType::In,
            VIRTIO_BLK_T_OUT => RequestType::Out,
            VIRTIO_BLK_T_FLUSH => RequestType::Flush,
            VIRTIO_BLK_T_GET_ID => RequestType::GetId,
            other => RequestType::Unsupported(other),
        }
    }
}

impl RequestType {
    /// Whether data descriptors must be device-writable (`Some(true)`) or device-readable
    /// (`Some(false)`); `None` when the data is never accessed.
    fn data_writable(self) -> Option<bool> {
        match self {
            RequestType::In | RequestType::GetId => Some(true),
            RequestType::Out => Some(false),
            RequestType::Flush | RequestType::Unsupported(_) => None,
        }
    }
}

/// One data buffer in guest memory, already checked to lie inside guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A well-formed request.
#[derive(Debug)]
pub struct Request {
    pub request_type: RequestType,
    pub sector: u64,
    pub data: Vec<Segment>,
    /// Sum of the data segment lengths.
    pub data_len: u32,
    /// The status byte, checked to lie inside guest RAM.
    pub status: GuestAddress,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the descriptor chain is empty (head index out of range?)")]
    EmptyChain,
    #[error("the descriptor chain has more than {0} descriptors")]
    TooLong(usize),
    #[error("the header descriptor is device-writable")]
    HeaderWritable,
    #[error("the header descriptor is {0} bytes, shorter than 16")]
    HeaderTooShort(u32),
    #[error("the header at {0:#x} is outside guest memory")]
    HeaderOutsideMemory(u64),
    #[error("no status descriptor (the last must be device-writable, at least 1 byte, in RAM)")]
    NoStatus,
    #[error("a data descriptor of a {0:?} request has the wrong direction")]
    WrongDirection(RequestType),
    #[error("a data descriptor is empty")]
    EmptyData,
    #[error("data descriptor {addr:#x}+{len:#x} is outside guest memory")]
    DataOutsideMemory { addr: u64, len: u32 },
    #[error("the data descriptors add up to more than 4 GiB")]
    DataTooLong,
}

/// A chain that could not be parsed, and its status byte if one could be located.
#[derive(Debug)]
pub struct ParseError {
    pub error: RequestError,
    pub status: Option<GuestAddress>,
}

impl Request {
    /// Parses `chain`, reading the header from `mem`. Chains longer than `max_descs`
    /// descriptors are refused.
    pub fn parse<M>(
        mut chain: DescriptorChain<M>,
        mem: &GuestMemory,
        max_descs: usize,
    ) -> Result<Request, ParseError>
    where
        M: Deref,
        M::Target: vm_memory::GuestMemory,
    {
        let no_status = |error| ParseError {
            error,
            status: None,
        };
        let header_desc = chain.next().ok_or(no_status(RequestError::EmptyChain))?;
        let header = read_header(&header_desc, mem);
        let request_type = header.as_ref().ok().map(|h| h.0);
        let mut body = Body::default();
        let mut last = None;
        for (count, desc) in (2..).zip(chain) {
            if count > max_descs {
                return Err(no_status(RequestError::TooLong(max_descs)));
            }
            if let Some(data) = last.replace(desc) {
                body.add(&data, request_type, mem);
            }
        }
        let status = last.filter(|d| is_status(d, mem)).map(|d| d.addr());
        let fail = |error| ParseError { error, status };
        let (request_type, sector) = header.map_err(fail)?;
        if let Some(error) = body.error {
            return Err(fail(error));
        }
        let status = status.ok_or(no_status(RequestError::NoStatus))?;
        Ok(Request {
            request_type,
            sector,
            data: body.segments,
            data_len: body.len,
            status,
        })
    }
}

/// Reads and checks the header: `(type, sector)`.
fn read_header(desc: &Descriptor, mem: &GuestMemory) -> Result<(RequestType, u64), RequestError> {
    if desc.is_write_only() {
        return Err(RequestError::HeaderWritable);
    }
    if desc.len() < HEADER_LEN {
        return Err(RequestError::HeaderTooShort(desc.len()));
    }
    let outside = || RequestError::HeaderOutsideMemory(desc.addr().raw_value());
    let request_type: u32 = mem.read_obj(desc.addr()).map_err(|_| outside())?;
    let sector_addr = desc.addr().checked_add(8).ok_or_else(outside)?;
    let sector: u64 = mem.read_obj(sector_addr).map_err(|_| outside())?;
    Ok((u32::from_le(request_type).into(), u64::from_le(sector)))
}

fn is_status(desc: &Descriptor, mem: &GuestMemory) -> bool {
    desc.is_write_only() && desc.len() >= 1 && mem.check_range(desc.addr(), 1)
}

/// The data descriptors seen so far and the first problem with any of them.
#[derive(Default)]
struct Body {
    segments: Vec<Segment>,
    len: u32,
    error: Option<RequestError>,
}

impl Body {
    fn add(&mut self, desc: &Descriptor, request_type: Option<RequestType>, mem: &GuestMemory) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.try_add(desc, request_type, mem) {
            self.error = Some(e);
        }
    }

    fn try_add(
        &mut self,
        desc: &Descriptor,
        request_type: Option<RequestType>,
        mem: &GuestMemory,
    ) -> Result<(), RequestError> {
        // Without a valid header the request fails anyway; data of flushes and unsupported
        // requests is never accessed, so its shape does not matter.
        let Some(kind) = request_type else {
            return Ok(());
        };
        let Some(writable) = kind.data_writable() else {
            return Ok(());
        };
        if desc.is_write_only() != writable {
            return Err(RequestError::WrongDirection(kind));
        }
        let (addr, len) = (desc.addr(), desc.len());
        if len == 0 {
            return Err(RequestError::EmptyData);
        }
        let in_ram = usize::try_from(len).is_ok_and(|l| mem.check_range(addr, l));
        if !in_ram {
            let addr = addr.raw_value();
            return Err(RequestError::DataOutsideMemory { addr, len });
        }
        self.len = self.len.checked_add(len).ok_or(RequestError::DataTooLong)?;
        self.segments.push(Segment { addr, len });
        Ok(())
    }
}
