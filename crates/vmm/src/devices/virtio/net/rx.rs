//! TAP -> guest: a frame is read into a host buffer, then copied into the guest's receive
//! chains. Without `VIRTIO_NET_F_MRG_RXBUF` a frame must fit in one chain; with it, it may
//! span several and `num_buffers` in its header says how many.
//!
//! Nothing is dropped for lack of buffers: chains are taken from the queue ("reserved")
//! until the frame fits; if the queue runs dry first, the frame and the reserved chains are
//! kept and reading the TAP stops until the guest adds buffers.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::{NetMetrics, TapIo, MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::rate_limiter::RateLimiter;
use crate::vstate::memory::GuestMemory;

/// Host buffer size: the largest frame and its header, with room to spare so that a frame
/// filling the buffer exactly can be told from a truncated one.
const BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN + 64;
/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFFSET: usize = 10;

/// Why an RX chain was returned to the guest empty.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RxChainError {
    #[error("an RX descriptor is device-readable")]
    WrongDirection,
    #[error("RX descriptor {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("the RX chain has no room for the {VNET_HDR_LEN}-byte header")]
    TooShort,
}

/// Why an RX pass stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum RxStop {
    /// The TAP has nothing more to read.
    TapEmpty,
    /// A frame waits for receive buffers.
    NoBuffers,
    /// The batch limit was hit; frames may remain.
    Budget,
    /// The rate limiter holds the next frame until its timer fires.
    Throttled,
}

/// A receive chain taken from the queue and validated.
#[derive(Debug)]
struct RxChain {
    head: u16,
    segments: Vec<(GuestAddress, usize)>,
    capacity: usize,
}

/// What an RX pass reads from and counts in.
pub struct RxIo<'a> {
    pub tap: &'a dyn TapIo,
    pub metrics: &'a NetMetrics,
    pub limiter: &'a mut RateLimiter,
}

/// RX state between passes.
pub struct Rx {
    buf: Vec<u8>,
    /// Length of the frame (header included) in `buf` that waits for buffers.
    frame: Option<usize>,
    reserved: VecDeque<RxChain>,
    /// The TAP may have frames we have not read (an EPOLLIN edge not yet drained).
    pub tap_readable: bool,
    /// VIRTIO_NET_F_MRG_RXBUF was negotiated.
    pub mergeable: bool,
    /// The frame in `buf` was charged to the rate limiter (it waits for buffers only).
    charged: bool,
}

/// What became of the frame in the buffer.
enum Delivery {
    /// Written to the guest in this many chains.
    Used(usize),
    NoBuffers,
    Dropped,
}

impl Rx {
    pub fn new() -> Self {
        Rx {
            buf: vec![0; BUF_LEN],
            frame: None,
            reserved: VecDeque::new(),
            tap_readable: false,
            mergeable: false,
            charged: false,
        }
    }

    /// Forgets the frame and the reserved chains (device reset).
    pub fn reset(&mut self) {
        self.frame = None;
        self.reserved.clear();
        self.mergeable = false;
        self.charged = false;
    }

    /// Whether a pass could make progress once the guest adds buffers.
    pub fn has_work(&self) -> bool {
        self.tap_readable || self.frame.is_some()
    }

    /// Moves up to `budget` frames from the TAP to the guest, as `limiter` allows. Returns
    /// the number of chains put in the used ring and why it stopped.
    pub fn process(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
        io: RxIo,
        budget: usize,
    ) -> (usize, RxStop) {
        let mut used = 0;
        for _ in 0..budget {
            if !self.charged && io.limiter.is_blocked() {
                return (used, RxStop::Throttled);
            }
            if self.frame.is_none() {
                if !self.tap_readable {
                    return (used, RxStop::TapEmpty);
                }
                self.frame = self.read_frame(io.tap, io.metrics);
            }
            let Some(len) = self.frame else {
                continue;
            };
            if !self.charged && !self.charge(len, io.limiter, io.metrics) {
                return (used, RxStop::Throttled);
            }
            match self.deliver(queue, mem, io.metrics) {
                Delivery::Used(chains) => used += chains,
                Delivery::NoBuffers => {
                    io.metrics.rx_deferred.fetch_add(1, Ordering::Relaxed);
                    return (used, RxStop::NoBuffers);
                }
                Delivery::Dropped => {}
            }
            self.charged = false;
        }
        (used, RxStop::Budget)
    }

    /// Charges the frame of `len` bytes (vnet header excluded) to the limiter.
    fn charge(&mut self, len: usize, limiter: &mut RateLimiter, metrics: &NetMetrics) -> bool {
        let bytes = (len - VNET_HDR_LEN) as u64;
        self.charged = limiter.consume(1, bytes);
        if !self.charged {
            metrics.rx_throttled.fetch_add(1, Ordering::Relaxed);
        }
        self.charged
    }

    /// Reads one frame into `buf`; None when there is none (or it was dropped).
    fn read_frame(&mut self, tap: &dyn TapIo, metrics: &NetMetrics) -> Option<usize> {
        // SAFETY: the fd is the TAP's, open for the call; `buf` is valid for writes of its
        // length and the kernel keeps no reference to it.
        let ret = unsafe { libc::read(tap.as_raw_fd(), self.buf.as_mut_ptr().cast(), BUF_LEN) };
        let Ok(len) = usize::try_from(ret) else {
            let err = io::Error::last_os_error();
            self.tap_readable = false;
            if err.kind() != io::ErrorKind::WouldBlock {
                log::warn!("virtio-net: {}: cannot read the TAP: {err}", tap.name());
                metrics.rx_tap_errors.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        };
        if len < VNET_HDR_LEN {
            metrics.rx_dropped_short.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(len)
    }

    /// Tries to put the frame in `buf` into reserved chains.
    fn deliver(&mut self, queue: &mut Queue, mem: &GuestMemory, metrics: &NetMetrics) -> Delivery {
        let Some(len) = self.frame else {
            return Delivery::Dropped;
        };
        let chains = match self.reserve(queue, mem, metrics, len) {
            Ok(chains) => chains,
            Err(delivery) => {
                if let Delivery::Dropped = delivery {
                    self.frame = None;
                    metrics.rx_dropped_too_big.fetch_add(1, Ordering::Relaxed);
                }
                return delivery;
            }
        };
        self.frame = None;
        // Fits in u16: at most QUEUE_SIZE chains are reserved.
        let count = chains as u16;
        self.buf[NUM_BUFFERS_OFFSET..VNET_HDR_LEN].copy_from_slice(&count.to_le_bytes());
        self.write_chains(queue, mem, chains, len);
        metrics.rx_packets.fetch_add(1, Ordering::Relaxed);
        let frame = (len - VNET_HDR_LEN) as u64;
        metrics.rx_bytes.fetch_add(frame, Ordering::Relaxed);
        Delivery::Used(chains)
    }

    /// Reserves chains until `len` bytes fit; returns how many of the reserved chains the
    /// frame needs.
    fn reserve(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
        metrics: &NetMetrics,
        len: usize,
    ) -> Result<usize, Delivery> {
        loop {
            if let Some(chains) = self.chains_needed(len) {
                return Ok(chains);
            }
            let full = self.reserved.len() >= usize::from(queue.size());
            if full || (!self.mergeable && !self.reserved.is_empty()) {
                // More buffers will never come: the frame cannot fit.
                return Err(Delivery::Dropped);
            }
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                return Err(Delivery::NoBuffers);
            };
            let head = chain.head_index();
            match parse_chain(chain, mem) {
                Ok(chain) => self.reserved.push_back(chain),
                Err(e) => {
                    log::debug!("virtio-net: RX chain {head} returned empty: {e}");
                    metrics.rx_bad_chains.fetch_add(1, Ordering::Relaxed);
                    add_used(queue, mem, head, 0);
                }
            }
        }
    }

    /// How many reserved chains hold `len` bytes, if they all together do.
    fn chains_needed(&self, len: usize) -> Option<usize> {
        let mut room = 0;
        for (i, chain) in self.reserved.iter().enumerate() {
            room += chain.capacity;
            if room >= len {
                return Some(i + 1);
            }
        }
        None
    }

    /// Copies the frame into the first `chains` reserved chains and uses them.
    fn write_chains(&mut self, queue: &mut Queue, mem: &GuestMemory, chains: usize, len: usize) {
        let mut rest = &self.buf[..len];
        for chain in self.reserved.drain(..chains) {
            let mut written = 0;
            for &(addr, seg_len) in &chain.segments {
                if rest.is_empty() {
                    break;
                }
                let (part, tail) = rest.split_at(seg_len.min(rest.len()));
                // Checked against guest memory in `parse_chain`.
                if let Err(e) = mem.write_slice(part, addr) {
                    log::warn!("virtio-net: cannot write a frame to guest memory: {e}");
                }
                written += part.len();
                rest = tail;
            }
            // At most MAX_FRAME_LEN + header: fits in u32.
            add_used(queue, mem, chain.head, written as u32);
        }
    }
}

impl Default for Rx {
    fn default() -> Self {
        Rx::new()
    }
}

/// Checks an RX chain: device-writable descriptors in guest RAM, room for the header.
fn parse_chain(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
) -> Result<RxChain, RxChainError> {
    let head = chain.head_index();
    let mut segments = Vec::new();
    let mut capacity = 0usize;
    for desc in chain {
        if !desc.is_write_only() {
            return Err(RxChainError::WrongDirection);
        }
        let len = desc.len() as usize;
        if len == 0 {
            continue;
        }
        if !mem.check_range(desc.addr(), len) {
            let (addr, len) = (desc.addr().0, desc.len());
            return Err(RxChainError::OutsideMemory { addr, len });
        }
        // Bounded: a chain has at most QUEUE_SIZE descriptors of u32 lengths.
        capacity = capacity.saturating_add(len);
        segments.push((desc.addr(), len));
    }
    if capacity < VNET_HDR_LEN {
        return Err(RxChainError::TooShort);
    }
    Ok(RxChain {
        head,
        segments,
        capacity,
    })
}

fn add_used(queue: &mut Queue, mem: &GuestMemory, head: u16, len: u32) {
    if let Err(e) = queue.add_used(mem, head, len) {
        log::warn!("virtio-net: cannot return RX descriptor {head}: {e}");
    }
}
