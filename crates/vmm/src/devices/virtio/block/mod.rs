//! virtio-block: a drive backed by a host file, one request queue.
//!
//! - `request.rs`: parsing and validating a request from a descriptor chain.
//! - `handler.rs`: executing a parsed request and reporting its status.
//! - `backend.rs`: the backing file and the I/O between it and guest memory.

pub mod backend;
pub mod handler;
#[cfg(test)]
mod limiter_tests;
pub mod request;
#[cfg(test)]
mod tests;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events};

use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::QueueT;

use super::core::VirtioCore;
use super::device::VirtioDevice;
use super::VIRTIO_F_VERSION_1;
use crate::config::{DriveConfig, RateLimiterConfig};
use crate::host_file::HostFileError;
use crate::rate_limiter::{RateLimiter, RateLimiterError};
use backend::DiskFile;
use handler::RequestHandler;

pub const SECTOR_SIZE: u64 = 512;
/// Size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request (config `seg_max`): the queue size minus header and status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Requests handled per notification before yielding to the other event sources.
const BATCH_LIMIT: usize = QUEUE_SIZE as usize;
/// `struct virtio_blk_config` up to `seg_max`: capacity (le64 @0), size_max (le32 @8, not
/// offered), seg_max (le32 @12).
const CONFIG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("drive {id}: cannot open {path}: {source}", path = path.display())]
    Open {
        id: String,
        path: PathBuf,
        #[source]
        source: HostFileError,
    },
    #[error("drive {id}: cannot get the size of {path}: {source}", path = path.display())]
    Size {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("drive {id}: {source}")]
    RateLimiter {
        id: String,
        #[source]
        source: RateLimiterError,
    },
    #[error(
        "drive {id}: {path} has no write permission but the drive is writable (os error 13)",
        path = path.display()
    )]
    ReadOnlyFile { id: String, path: PathBuf },
}

/// Opens a drive's backing file as the device would, and closes it again: what `PUT /drives`
/// checks at once, like Firecracker.
pub fn check_backing_file(config: &DriveConfig) -> Result<(), BlockError> {
    DiskFile::open(config).map(drop)
}

/// Counters a drive keeps; get them with [`Block::metrics`] before handing the device over.
#[derive(Debug, Default)]
pub struct BlockMetrics {
    /// Descriptor chains taken from the queue.
    pub requests: AtomicU64,
    /// Requests completed with a status other than OK (including malformed chains).
    pub failed_requests: AtomicU64,
    /// Flushes that reached `fdatasync` (cache type Writeback).
    pub synced_flushes: AtomicU64,
    /// Times the rate limiter stopped the queue until its timer.
    pub rate_limiter_throttled: AtomicU64,
}

impl BlockMetrics {
    /// The counters as a JSON object, for metrics lines.
    pub fn to_json(&self) -> serde_json::Value {
        let load = |counter: &AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        serde_json::json!({
            "requests": load(&self.requests),
            "failed_requests": load(&self.failed_requests),
            "synced_flushes": load(&self.synced_flushes),
            "rate_limiter_throttled": load(&self.rate_limiter_throttled),
        })
    }
}

/// A virtio-block device.
pub struct Block {
    core: VirtioCore,
    handler: RequestHandler,
    metrics: Arc<BlockMetrics>,
    limiter: RateLimiter,
}

impl Block {
    /// Opens the drive's backing file; errors name the drive, the path and the OS error.
    pub fn new(config: &DriveConfig) -> Result<Block, BlockError> {
        let disk = DiskFile::open(config)?;
        let mut avail_features =
            VIRTIO_F_VERSION_1 | 1 << VIRTIO_BLK_F_FLUSH | 1 << VIRTIO_BLK_F_SEG_MAX;
        if disk.read_only() {
            avail_features |= 1 << VIRTIO_BLK_F_RO;
        }
        let mut cfg = vec![0u8; CONFIG_LEN];
        cfg[0..8].copy_from_slice(&disk.nsectors().to_le_bytes());
        cfg[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        let metrics = Arc::new(BlockMetrics::default());
        let name = format!("virtio-blk {}", config.drive_id);
        let limiter = RateLimiter::new(config.rate_limiter.as_ref()).map_err(|source| {
            BlockError::RateLimiter {
                id: config.drive_id.clone(),
                source,
            }
        })?;
        Ok(Block {
            core: VirtioCore::new(name, VIRTIO_ID_BLOCK, &[QUEUE_SIZE], avail_features, cfg),
            handler: RequestHandler::new(&config.drive_id, disk, metrics.clone()),
            metrics,
            limiter,
        })
    }

    /// New limits (PATCH /drives), effective at once; buckets not named keep theirs.
    pub fn update_rate_limiter(&mut self, update: &RateLimiterConfig) {
        self.limiter.update(update);
    }

    /// The limiter, for tests to put on a clock they move.
    #[cfg(test)]
    pub(crate) fn set_rate_limiter(&mut self, limiter: RateLimiter) {
        self.limiter = limiter;
    }

    pub fn metrics(&self) -> Arc<BlockMetrics> {
        self.metrics.clone()
    }

    /// Swaps the backing file for `config.path_on_host` (PATCH /drives after boot) and
    /// updates the capacity; the caller tells the driver through a config-change interrupt.
    pub fn update_backing_file(&mut self, config: &DriveConfig) -> Result<(), BlockError> {
        let disk = DiskFile::open(config)?;
        self.core.config_mut()[0..8].copy_from_slice(&disk.nsectors().to_le_bytes());
        self.handler = RequestHandler::new(&config.drive_id, disk, self.metrics.clone());
        Ok(())
    }

    /// Handles available requests, then interrupts the guest once if any were used.
    /// Returns true when the batch limit was hit and requests may remain. A request the
    /// rate limiter refuses stays in the queue until the limiter's timer fires.
    fn process_requests(&mut self) -> bool {
        let Some(active) = self.core.active_mut() else {
            return false;
        };
        let (mem, queue) = (&active.mem, &mut active.queues[0]);
        let mut handled = 0;
        while handled < BATCH_LIMIT && !self.limiter.is_blocked() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let parsed = self.handler.parse(chain, mem);
            if !self.limiter.consume(1, parsed.bytes()) {
                // Parsed again when the timer fires: the guest may not rely on it as it is.
                queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                self.metrics
                    .rate_limiter_throttled
                    .fetch_add(1, Ordering::Relaxed);
                break;
            }
            let written = self.handler.finish(parsed, mem);
            if let Err(e) = queue.add_used(mem, head, written) {
                log::warn!("virtio-blk: cannot return descriptor {head}: {e}");
            }
            handled += 1;
        }
        if handled > 0 && queue.needs_notification(mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        handled == BATCH_LIMIT
    }

    /// The limiter's timer fired: go on with the queue.
    fn on_rate_limiter_timer(&mut self) {
        self.limiter.on_timer();
        if self.process_requests() {
            // Yield to the other event sources, and come back through the timer.
            self.limiter.defer();
        }
    }
}

impl VirtioDevice for Block {
    fn core(&self) -> &VirtioCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut VirtioCore {
        &mut self.core
    }

    fn process_queue(&mut self, index: usize) -> bool {
        if index != 0 {
            log::warn!("virtio-blk: notification for nonexistent queue {index}");
            return false;
        }
        self.process_requests()
    }

    fn metrics_json(&self) -> serde_json::Value {
        self.metrics.to_json()
    }

    fn init_events(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.limiter, EventSet::IN)) {
            log::error!(
                "{}: cannot watch the rate limiter timer: {e}",
                self.core.name()
            );
        }
    }

    fn remove_events(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.remove(Events::new(&self.limiter, EventSet::IN)) {
            log::error!(
                "{}: cannot stop watching the rate limiter: {e}",
                self.core.name()
            );
        }
    }

    fn process_event(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.limiter.as_raw_fd() {
            self.on_rate_limiter_timer();
        }
    }
}
