//! virtio-rng (entropy): one queue of device-writable buffers, each filled with bytes from
//! the host's `getrandom(2)`.
//!
//! The guest decides how much it asks for, so each chain is filled up to [`MAX_FILL`] bytes
//! (the length reported tells the driver how much it got): a huge chain costs the VMM thread
//! no more than a small one.

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::Bytes;

use super::core::VirtioCore;
use super::device::VirtioDevice;
use super::VIRTIO_F_VERSION_1;
use crate::vstate::memory::GuestMemory;

pub const QUEUE_SIZE: u16 = 256;
/// The most bytes one chain gets; Linux asks for at most a few hundred at a time.
pub const MAX_FILL: usize = 64 << 10;
/// Chains served per notification before the transport is asked to call again.
const BATCH_LIMIT: usize = QUEUE_SIZE as usize;

/// Why a chain got no bytes.
#[derive(Debug, thiserror::Error)]
pub enum RngError {
    #[error("an entropy descriptor is device-readable")]
    WrongDirection,
    #[error("entropy descriptor {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory { addr: u64, len: u32 },
    #[error("getrandom failed: {0}")]
    GetRandom(#[source] std::io::Error),
}

#[derive(Debug, Default)]
pub struct RngMetrics {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    /// Chains returned empty: readable, outside guest RAM, or getrandom failed.
    pub bad_chains: AtomicU64,
}

/// A virtio-rng device.
pub struct Rng {
    core: VirtioCore,
    metrics: RngMetrics,
    /// Reused for every chain, so serving the guest allocates nothing.
    buffer: Vec<u8>,
}

impl Rng {
    pub fn new() -> Self {
        let core = VirtioCore::new(
            "virtio-rng".into(),
            VIRTIO_ID_RNG,
            &[QUEUE_SIZE],
            VIRTIO_F_VERSION_1,
            Vec::new(),
        );
        Rng {
            core,
            metrics: RngMetrics::default(),
            buffer: Vec::new(),
        }
    }
}

/// Fills one chain from `buffer`'s worth of random bytes at a time; returns the number of
/// bytes written.
fn fill_chain(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    buffer: &mut Vec<u8>,
) -> Result<u32, RngError> {
    let mut written = 0usize;
    for desc in chain {
        if !desc.is_write_only() {
            return Err(RngError::WrongDirection);
        }
        let len = (desc.len() as usize).min(MAX_FILL - written);
        if len == 0 {
            break;
        }
        buffer.resize(len, 0);
        fill_random(buffer)?;
        let outside = RngError::OutsideMemory {
            addr: desc.addr().0,
            len: desc.len(),
        };
        mem.write_slice(buffer, desc.addr()).map_err(|_| outside)?;
        written += len;
    }
    // At most MAX_FILL, which fits.
    Ok(written as u32)
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

/// Fills `buf` from the kernel's CSPRNG, looping over short reads (a signal can cut one).
pub fn fill_random(buf: &mut [u8]) -> Result<(), RngError> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes during the call.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(got) {
            Ok(n) => done += n,
            Err(_) => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(RngError::GetRandom(error));
                }
            }
        }
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn core(&self) -> &VirtioCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut VirtioCore {
        &mut self.core
    }

    fn process_queue(&mut self, _index: usize) -> bool {
        let Some(active) = self.core.active_mut() else {
            return false;
        };
        let (mem, queue) = (&active.mem, &mut active.queues[0]);
        let mut used = 0;
        let mut more = true;
        for _ in 0..BATCH_LIMIT {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                more = false;
                break;
            };
            let head = chain.head_index();
            let len = fill_chain(chain, mem, &mut self.buffer).unwrap_or_else(|e| {
                log::debug!("virtio-rng: chain {head} returned empty: {e}");
                self.metrics.bad_chains.fetch_add(1, Ordering::Relaxed);
                0
            });
            self.metrics.requests.fetch_add(1, Ordering::Relaxed);
            let bytes = &self.metrics.bytes;
            bytes.fetch_add(u64::from(len), Ordering::Relaxed);
            if let Err(e) = queue.add_used(mem, head, len) {
                log::warn!("virtio-rng: cannot return descriptor {head}: {e}");
            }
            used += 1;
        }
        if used > 0 && queue.needs_notification(mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        more
    }

    fn metrics_json(&self) -> serde_json::Value {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "requests": load(&self.metrics.requests),
            "bytes": load(&self.metrics.bytes),
            "bad_chains": load(&self.metrics.bad_chains),
        })
    }
}
