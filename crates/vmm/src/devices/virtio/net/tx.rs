//! Guest -> TAP: each TX chain (vnet header + frame, all device-readable) is written to the
//! TAP with one `writev` whose iovecs point straight into guest memory.

use std::io;
use std::sync::atomic::Ordering;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::volatile_memory::PtrGuard;
use vm_memory::GuestMemoryBackend;

use super::{NetMetrics, TapIo, MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::rate_limiter::RateLimiter;
use crate::vstate::memory::GuestMemory;

/// The longest chain accepted: the vnet header and the largest frame.
pub const MAX_TX_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
/// More iovecs than this cannot go in one `writev`.
const IOV_MAX: usize = 1024;

/// Why a TX chain was dropped without reaching the TAP.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TxChainError {
    #[error("the chain holds {0} bytes, less than the {VNET_HDR_LEN}-byte vnet header")]
    TooShort(usize),
    #[error("the chain holds more than {MAX_TX_LEN} bytes")]
    TooLong,
    #[error("a TX descriptor is device-writable")]
    WrongDirection,
    #[error("TX descriptor {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("the chain spans more than {IOV_MAX} memory segments")]
    TooManySegments,
}

/// Why a TX pass stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum TxStop {
    /// The queue is empty.
    Empty,
    /// The TAP would block: wait for EPOLLOUT.
    Blocked,
    /// The batch limit was hit; chains may remain.
    Budget,
    /// The rate limiter holds the next frame until its timer fires.
    Throttled,
}

/// TX state between passes.
#[derive(Debug, Default)]
pub struct Tx {
    /// A write returned EAGAIN; nothing is sent until the TAP is writable again.
    pub blocked: bool,
}

/// One frame's pieces of guest memory: the guards keep the pointers in `iovecs` valid.
#[derive(Default)]
struct Gathered {
    guards: Vec<PtrGuard>,
    iovecs: Vec<libc::iovec>,
}

/// What a TX pass writes to and counts in.
pub struct TxIo<'a> {
    pub tap: &'a dyn TapIo,
    pub metrics: &'a NetMetrics,
    pub limiter: &'a mut RateLimiter,
}

/// What became of one chain.
enum Sent {
    /// Sent or dropped: the chain is used.
    Done,
    /// Left in the queue.
    Stopped(TxStop),
}

impl Tx {
    /// Sends up to `budget` frames. Returns the number of chains put in the used ring.
    pub fn process(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemory,
        mut io: TxIo,
        budget: usize,
    ) -> (usize, TxStop) {
        if self.blocked {
            return (0, TxStop::Blocked);
        }
        let mut gathered = Gathered::default();
        let mut used = 0;
        for _ in 0..budget {
            if io.limiter.is_blocked() {
                return (used, TxStop::Throttled);
            }
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                return (used, TxStop::Empty);
            };
            let head = chain.head_index();
            if let Sent::Stopped(stop) = send_chain(chain, mem, &mut io, &mut gathered) {
                // Leave the chain in the queue until EPOLLOUT or the limiter's timer.
                queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                self.blocked = stop == TxStop::Blocked;
                return (used, stop);
            }
            if let Err(e) = queue.add_used(mem, head, 0) {
                log::warn!("virtio-net: cannot return TX descriptor {head}: {e}");
            }
            used += 1;
        }
        (used, TxStop::Budget)
    }
}

/// Sends or drops one chain, unless the limiter refuses it or the TAP would block.
fn send_chain(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    io: &mut TxIo,
    gathered: &mut Gathered,
) -> Sent {
    let (tap, metrics) = (io.tap, io.metrics);
    gathered.guards.clear();
    gathered.iovecs.clear();
    let len = match gather(chain, mem, gathered) {
        Ok(len) => len,
        Err(e) => {
            log::debug!("virtio-net: {}: TX chain dropped: {e}", tap.name());
            metrics.tx_dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return Sent::Done;
        }
    };
    let frame = (len - VNET_HDR_LEN) as u64;
    if !io.limiter.consume(1, frame) {
        metrics.tx_throttled.fetch_add(1, Ordering::Relaxed);
        return Sent::Stopped(TxStop::Throttled);
    }
    match writev(tap, &gathered.iovecs) {
        Ok(_) => {
            metrics.tx_packets.fetch_add(1, Ordering::Relaxed);
            metrics.tx_bytes.fetch_add(frame, Ordering::Relaxed);
            Sent::Done
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            metrics.tx_blocked.fetch_add(1, Ordering::Relaxed);
            Sent::Stopped(TxStop::Blocked)
        }
        Err(e) => {
            log::debug!(
                "virtio-net: {}: TAP refused a {len}-byte frame: {e}",
                tap.name()
            );
            metrics.tx_dropped_tap_error.fetch_add(1, Ordering::Relaxed);
            Sent::Done
        }
    }
}

/// Collects the chain's descriptors as iovecs; returns the total length.
fn gather(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    out: &mut Gathered,
) -> Result<usize, TxChainError> {
    let mut total = 0usize;
    for desc in chain {
        if desc.is_write_only() {
            return Err(TxChainError::WrongDirection);
        }
        let len = desc.len() as usize;
        total = total.saturating_add(len);
        if total > MAX_TX_LEN {
            return Err(TxChainError::TooLong);
        }
        let outside = || TxChainError::OutsideMemory {
            addr: desc.addr().0,
            len: desc.len(),
        };
        for slice in mem.get_slices(desc.addr(), len) {
            let guard = slice.map_err(|_| outside())?.ptr_guard();
            if out.iovecs.len() == IOV_MAX {
                return Err(TxChainError::TooManySegments);
            }
            out.iovecs.push(libc::iovec {
                iov_base: guard.as_ptr() as *mut libc::c_void,
                iov_len: guard.len(),
            });
            out.guards.push(guard);
        }
    }
    if total < VNET_HDR_LEN {
        return Err(TxChainError::TooShort(total));
    }
    Ok(total)
}

fn writev(tap: &dyn TapIo, iovecs: &[libc::iovec]) -> io::Result<usize> {
    // At most IOV_MAX entries, checked in `gather`.
    let count = iovecs.len() as libc::c_int;
    // SAFETY: the fd is the TAP's, open for the call. Each iovec points into guest memory
    // that stays mapped while the matching PtrGuard (held by the caller) lives, and is
    // only read; the kernel keeps no reference after the call.
    let ret = unsafe { libc::writev(tap.as_raw_fd(), iovecs.as_ptr(), count) };
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}
