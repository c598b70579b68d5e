//! The virtio-vsock packet: a 44-byte little-endian header, then (for RW) its data. TX
//! chains (guest -> host) are read into a header and a bounded data buffer; RX chains
//! (host -> guest) are checked whole before anything is taken from a host socket for them,
//! so a bad chain never loses a stream's bytes.

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::vstate::memory::GuestMemory;

pub const HDR_LEN: usize = 44;
/// The only socket type this device carries (SEQPACKET is not offered).
pub const TYPE_STREAM: u16 = 1;
/// The most data one packet may carry; Linux never sends more than 64 KiB at a time.
pub const MAX_PKT_DATA: usize = 64 << 10;

/// `flags` of a SHUTDOWN: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// `flags` of a SHUTDOWN: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// The operations of the stream protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Request,
    Response,
    Rst,
    Shutdown,
    Rw,
    CreditUpdate,
    CreditRequest,
}

impl Op {
    pub fn from_u16(value: u16) -> Option<Op> {
        Some(match value {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }

    pub fn to_u16(self) -> u16 {
        match self {
            Op::Request => 1,
            Op::Response => 2,
            Op::Rst => 3,
            Op::Shutdown => 4,
            Op::Rw => 5,
            Op::CreditUpdate => 6,
            Op::CreditRequest => 7,
        }
    }
}

/// `struct virtio_vsock_hdr`, in host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Header {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or_default());
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    pub fn op(&self) -> Option<Op> {
        Op::from_u16(self.op)
    }
}

/// A chain that is not a packet.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("the chain holds {0} bytes, less than a {HDR_LEN}-byte header")]
    TooShort(usize),
    #[error("the header declares {0} data bytes, more than {MAX_PKT_DATA}")]
    DataTooLong(u32),
    #[error("the header declares {declared} data bytes, the chain holds {got}")]
    DataMissing { declared: u32, got: usize },
    #[error("a TX descriptor is device-writable or an RX descriptor device-readable")]
    WrongDirection,
    #[error("descriptor {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("an RX chain has room for {0} bytes, less than a header")]
    NoRoom(usize),
}

/// Reads a guest TX chain: the header, and its `len` data bytes into `data` (cleared first).
pub fn read_tx_chain(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    data: &mut Vec<u8>,
) -> Result<Header, PacketError> {
    data.clear();
    let mut hdr_bytes = [0u8; HDR_LEN];
    let mut hdr_got = 0usize;
    let mut header: Option<Header> = None;
    for desc in chain {
        if desc.is_write_only() {
            return Err(PacketError::WrongDirection);
        }
        let outside = PacketError::OutsideMemory {
            addr: desc.addr().0,
            len: desc.len(),
        };
        let mut addr = desc.addr();
        let mut left = desc.len() as usize;
        if header.is_none() {
            let take = left.min(HDR_LEN - hdr_got);
            let dst = &mut hdr_bytes[hdr_got..hdr_got + take];
            mem.read_slice(dst, addr).map_err(|_| outside.clone())?;
            hdr_got += take;
            left -= take;
            addr = GuestAddress(addr.0.wrapping_add(take as u64));
            if hdr_got < HDR_LEN {
                continue;
            }
            let parsed = Header::from_bytes(&hdr_bytes);
            if parsed.len as usize > MAX_PKT_DATA {
                return Err(PacketError::DataTooLong(parsed.len));
            }
            header = Some(parsed);
        }
        let Some(parsed) = header else { continue };
        let want = parsed.len as usize - data.len();
        if want == 0 {
            break;
        }
        let take = left.min(want);
        if take == 0 {
            continue;
        }
        let start = data.len();
        data.resize(start + take, 0);
        mem.read_slice(&mut data[start..], addr)
            .map_err(|_| outside)?;
    }
    let header = header.ok_or(PacketError::TooShort(hdr_got))?;
    if data.len() < header.len as usize {
        return Err(PacketError::DataMissing {
            declared: header.len,
            got: data.len(),
        });
    }
    Ok(header)
}

/// The writable pieces of one RX chain, checked to lie in guest memory.
#[derive(Debug, Default)]
pub struct RxChain {
    segments: Vec<(GuestAddress, usize)>,
    total: usize,
}

impl RxChain {
    /// Checks `chain` and remembers where it goes; reuses `self`'s storage.
    pub fn load(
        &mut self,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> Result<(), PacketError> {
        self.segments.clear();
        self.total = 0;
        for desc in chain {
            if !desc.is_write_only() {
                return Err(PacketError::WrongDirection);
            }
            // Room past a header and the largest packet is never used: do not check it.
            let len = (desc.len() as usize).min(HDR_LEN + MAX_PKT_DATA - self.total);
            if len == 0 {
                continue;
            }
            if !mem.check_range(desc.addr(), len) {
                return Err(PacketError::OutsideMemory {
                    addr: desc.addr().0,
                    len: desc.len(),
                });
            }
            self.segments.push((desc.addr(), len));
            self.total += len;
        }
        if self.total < HDR_LEN {
            return Err(PacketError::NoRoom(self.total));
        }
        Ok(())
    }

    /// How many data bytes fit after the header.
    pub fn data_room(&self) -> usize {
        self.total.saturating_sub(HDR_LEN)
    }

    /// Writes `header` (its `len` set to `data.len()`) and `data`; returns the bytes written.
    pub fn write(&self, mem: &GuestMemory, header: &Header, data: &[u8]) -> u32 {
        let mut header = *header;
        let data = &data[..data.len().min(self.data_room())];
        // At most MAX_PKT_DATA, which fits.
        header.len = data.len() as u32;
        let bytes = header.to_bytes();
        let mut sources = [&bytes[..], data];
        let mut written = 0usize;
        for &(addr, len) in &self.segments {
            let mut at = 0usize;
            for source in sources.iter_mut() {
                let take = source.len().min(len - at);
                if take == 0 {
                    continue;
                }
                let dst = GuestAddress(addr.0.wrapping_add(at as u64));
                // The range was checked in `load`; a failure here would be a bug, and
                // the guest only sees a short packet.
                if mem.write_slice(&source[..take], dst).is_err() {
                    log::error!("virtio-vsock: checked RX segment {dst:#x?} not writable");
                }
                *source = &source[take..];
                at += take;
                written += take;
            }
        }
        written as u32
    }
}
