use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::config::TokenBucketConfig;

const MS: u64 = 1_000_000;

/// A clock the test moves, and the limiter reading it.
fn limiter(config: RateLimiterConfig) -> (Arc<AtomicU64>, RateLimiter) {
    let now = Arc::new(AtomicU64::new(0));
    let read = now.clone();
    let clock: Clock = Arc::new(move || read.load(Ordering::Relaxed));
    (now, RateLimiter::with_clock(Some(&config), clock).unwrap())
}

fn bucket(size: u64, refill_time: u64) -> Option<TokenBucketConfig> {
    Some(TokenBucketConfig {
        size,
        one_time_burst: None,
        refill_time,
    })
}

/// Whether the timerfd is readable within `ms` milliseconds.
fn fires_within(limiter: &RateLimiter, ms: i32) -> bool {
    let mut poll = libc::pollfd {
        fd: limiter.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the length of the call.
    unsafe { libc::poll(&mut poll, 1, ms) == 1 }
}

#[test]
fn both_buckets_must_have_the_tokens() {
    let (now, mut limiter) = limiter(RateLimiterConfig {
        bandwidth: bucket(1000, 1000),
        ops: bucket(2, 1000),
    });
    assert!(limiter.consume(1, 600));
    // Enough ops, not enough bytes: nothing is taken.
    assert!(!limiter.consume(1, 600));
    assert!(limiter.is_blocked());
    // Blocked until the timer fires, whatever the clock says.
    now.store(10_000 * MS, Ordering::Relaxed);
    assert!(!limiter.consume(0, 0));
    limiter.on_timer();
    assert!(limiter.consume(1, 600));
    assert!(limiter.consume(1, 400));
    assert!(!limiter.consume(1, 0));
}

#[test]
fn the_timer_fires_when_the_tokens_are_there() {
    let (_now, mut limiter) = limiter(RateLimiterConfig {
        ops: bucket(1, 30),
        ..Default::default()
    });
    assert!(limiter.consume(1, 0));
    assert!(!fires_within(&limiter, 0));
    assert!(!limiter.consume(1, 0));
    // The fake clock stands still: the wait armed is the whole 30 ms.
    assert!(!fires_within(&limiter, 5));
    assert!(fires_within(&limiter, 1000));
    limiter.on_timer();
    assert!(!fires_within(&limiter, 0), "on_timer leaves the fd quiet");
    assert!(!limiter.is_blocked());
}

#[test]
fn unlimited_until_a_patch_sets_limits_that_apply_at_once() {
    let (_now, mut limiter) = limiter(RateLimiterConfig::default());
    for _ in 0..1000 {
        assert!(limiter.consume(1, 1 << 20));
    }
    limiter.update(&RateLimiterConfig {
        ops: bucket(1, 60_000),
        ..Default::default()
    });
    assert!(limiter.consume(1, 0));
    assert!(!limiter.consume(1, 0));
    // A looser limit while throttled: the queue is looked at again at once.
    limiter.update(&RateLimiterConfig {
        ops: bucket(0, 0),
        ..Default::default()
    });
    assert!(fires_within(&limiter, 1000));
    limiter.on_timer();
    assert!(limiter.consume(1, 0));
}

#[test]
fn defer_comes_back_through_the_timer() {
    let (_now, mut limiter) = limiter(RateLimiterConfig::default());
    limiter.defer();
    assert!(limiter.is_blocked() && !limiter.consume(0, 0));
    assert!(fires_within(&limiter, 1000));
    limiter.on_timer();
    assert!(limiter.consume(0, 0));
}
