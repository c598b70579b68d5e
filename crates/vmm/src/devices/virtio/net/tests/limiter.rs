//! Rate-limited RX (behind the transport, resumed by the limiter's timer through the event
//! loop) and TX (a refused frame stays in the queue; new limits let it go).

use std::time::{Duration, Instant};

use super::harness::*;
use crate::config::{RateLimiterConfig, TokenBucketConfig};
use crate::devices::virtio::net::{Net, TX_INDEX};
use crate::devices::virtio::test_utils::*;
use crate::devices::virtio::VirtioDevice;

/// One operation per `refill_time` ms.
fn one_op_per(refill_time: u64) -> Option<RateLimiterConfig> {
    Some(RateLimiterConfig {
        ops: Some(TokenBucketConfig {
            size: 1,
            one_time_burst: None,
            refill_time,
        }),
        bandwidth: None,
    })
}

#[test]
fn throttled_rx_is_resumed_by_the_timer() {
    let (tap, peer, _) = fake_tap();
    let mut net = Net::with_tap("eth0", MAC, Box::new(tap)).unwrap();
    let metrics = net.metrics();
    net.update_rate_limiters(one_op_per(50), None);
    let mut driver = TestDriver::new(Box::new(net));
    assert!(driver.negotiate(driver.device_features()));
    driver.setup_queue(0, 256, DESC_TABLE, AVAIL_RING, USED_RING);
    driver.setup_queue(1, 256, 0x8000, 0xa000, 0xb000);
    driver.add_status(STATUS_DRIVER_OK);
    for i in 0..3 {
        driver.add_chain(&[writable(0x10000 + 0x1000 * i, 2048)]);
    }
    for seed in 0..3 {
        peer.send(&frame(100, seed)).unwrap();
    }
    let start = Instant::now();
    driver.notify(0);
    assert_eq!(driver.used_idx(), 1);
    assert_eq!(get(&metrics.rx_throttled), 1);
    // Guest kicks do not get past the limiter.
    driver.notify(0);
    assert_eq!(driver.used_idx(), 1);
    while driver.used_idx() < 3 && start.elapsed() < Duration::from_secs(5) {
        driver.wait_events(1000);
    }
    assert_eq!(driver.used_idx(), 3);
    assert!(start.elapsed() >= Duration::from_millis(95), "too fast");
    assert_eq!(get(&metrics.rx_packets), 3);
}

#[test]
fn throttled_tx_waits_in_the_queue_until_new_limits() {
    let mut s = setup(None);
    s.net.update_rate_limiters(None, one_op_per(60_000));
    let bytes = frame(100, 1);
    s.write(BUFFERS, &bytes);
    for _ in 0..3 {
        s.tx.add_chain(&s.mem, &[readable(BUFFERS, bytes.len() as u32)]);
    }
    assert!(!s.net.process_queue(TX_INDEX));
    assert_eq!(s.tx.used_idx(&s.mem), 1);
    assert_eq!(get(&s.metrics.tx_throttled), 1);
    assert!(!s.net.process_queue(TX_INDEX));
    assert_eq!(s.tx.used_idx(&s.mem), 1, "a kick passed the limiter");
    let unlimited = RateLimiterConfig {
        ops: Some(TokenBucketConfig::default()),
        bandwidth: None,
    };
    s.net.update_rate_limiters(None, Some(unlimited));
    // What the event loop does when the timer the update armed fires.
    s.net.on_limiter_timer(TX_INDEX);
    assert_eq!(s.tx.used_idx(&s.mem), 3);
    assert_eq!(s.sent_frames().len(), 3);
}
