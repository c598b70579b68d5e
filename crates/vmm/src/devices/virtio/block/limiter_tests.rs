//! A rate-limited drive driven through the transport's registers: a refused request stays
//! in the queue, the limiter's timer (not a notification) resumes it, and new limits apply
//! at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempfile::TempFile;

use super::{Block, BlockMetrics, SECTOR_SIZE};
use crate::config::{CacheType, DriveConfig, RateLimiterConfig, TokenBucketConfig};
use crate::devices::virtio::test_utils::{readable, writable, TestDriver};
use crate::rate_limiter::{Clock, RateLimiter};

const MS: u64 = 1_000_000;
const HEADER: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STATUS: u64 = 0x30000;

fn bucket(size: u64, refill_time: u64) -> Option<TokenBucketConfig> {
    Some(TokenBucketConfig {
        size,
        one_time_burst: None,
        refill_time,
    })
}

struct Limited {
    driver: TestDriver,
    metrics: Arc<BlockMetrics>,
    now: Arc<AtomicU64>,
    /// Requests made available so far, for distinct header addresses.
    pending: u16,
    _file: TempFile,
}

/// A 64 KiB drive limited by `config` on a clock the test moves.
fn limited(config: RateLimiterConfig) -> Limited {
    let file = TempFile::new().unwrap();
    file.as_file().set_len(64 * 1024).unwrap();
    let drive = DriveConfig {
        drive_id: "data".into(),
        path_on_host: file.as_path().into(),
        is_root_device: false,
        is_read_only: false,
        partuuid: None,
        cache_type: CacheType::Unsafe,
        io_engine: None,
        rate_limiter: None,
    };
    let now = Arc::new(AtomicU64::new(0));
    let read = now.clone();
    let clock: Clock = Arc::new(move || read.load(Ordering::Relaxed));
    let mut block = Block::new(&drive).unwrap();
    block.set_rate_limiter(RateLimiter::with_clock(Some(&config), clock).unwrap());
    let metrics = block.metrics();
    let mut driver = TestDriver::new(Box::new(block));
    driver.init();
    Limited {
        driver,
        metrics,
        now,
        pending: 0,
        _file: file,
    }
}

impl Limited {
    /// Makes a request of `data_len` bytes (a read; a flush when 0) available.
    fn add_request(&mut self, data_len: u32) {
        let request_type = if data_len == 0 {
            VIRTIO_BLK_T_FLUSH
        } else {
            VIRTIO_BLK_T_IN
        };
        // Each request has its own header: they wait in the queue together.
        let header = HEADER + 16 * u64::from(self.pending);
        self.pending += 1;
        let mem = &self.driver.mem;
        mem.write_obj(request_type.to_le(), GuestAddress(header))
            .unwrap();
        mem.write_obj(0u64, GuestAddress(header + 8)).unwrap();
        let mut descs = vec![readable(header, 16)];
        if data_len > 0 {
            descs.push(writable(DATA, data_len));
        }
        descs.push(writable(STATUS, 1));
        self.driver.add_chain(&descs);
    }

    fn advance(&self, ms: u64) {
        self.now.fetch_add(ms * MS, Ordering::Relaxed);
    }

    fn throttled(&self) -> u64 {
        self.metrics.rate_limiter_throttled.load(Ordering::Relaxed)
    }
}

#[test]
fn a_throttled_queue_is_resumed_by_the_timer_not_by_notifications() {
    let mut l = limited(RateLimiterConfig {
        ops: bucket(2, 100),
        ..Default::default()
    });
    for _ in 0..5 {
        l.add_request(0);
    }
    l.driver.notify(0);
    assert_eq!(l.driver.used_idx(), 2);
    assert_eq!(l.throttled(), 1);
    // Guest kicks while throttled do nothing (and cost nothing).
    for _ in 0..100 {
        l.driver.notify(0);
    }
    assert_eq!((l.driver.used_idx(), l.throttled()), (2, 1));
    // The timer was armed for the one missing token: 50 ms on the limiter's clock.
    assert!(!l.driver.wait_events(20));
    l.advance(50);
    assert!(l.driver.wait_events(1000));
    assert_eq!(l.driver.used_idx(), 3);
    assert_eq!(l.throttled(), 2);
    l.advance(100);
    assert!(l.driver.wait_events(1000));
    assert_eq!(l.driver.used_idx(), 5);
    assert!(l.driver.irq_fired());
}

#[test]
fn bytes_are_charged_for_reads_and_new_limits_apply_at_once() {
    let sector = SECTOR_SIZE as u32;
    let mut l = limited(RateLimiterConfig {
        bandwidth: bucket(4 * u64::from(sector), 1000),
        ..Default::default()
    });
    l.add_request(4 * sector);
    l.add_request(sector);
    // Flushes cost no bytes, but wait their turn behind the throttled read.
    l.add_request(0);
    l.driver.notify(0);
    assert_eq!(l.driver.used_idx(), 1);
    // A looser limit: the waiting requests go on at once, with no clock moving.
    l.driver
        .transport
        .lock()
        .unwrap()
        .device_mut()
        .as_any_mut()
        .downcast_mut::<Block>()
        .unwrap()
        .update_rate_limiter(&RateLimiterConfig {
            bandwidth: bucket(0, 0),
            ..Default::default()
        });
    assert!(l.driver.wait_events(1000));
    assert_eq!(l.driver.used_idx(), 3);
}
