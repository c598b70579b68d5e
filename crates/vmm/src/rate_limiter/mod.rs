//! Rate limiters for device queues: a bytes bucket and an operations bucket ([`bucket`]),
//! and a timerfd that tells the device when a throttled queue may go on.
//!
//! A device asks [`RateLimiter::consume`] before each request or frame. When a bucket is
//! short, the limiter arms its timer for the moment the tokens will be there and refuses
//! everything until it fires: the device leaves the request in its queue, returns to the
//! event loop (other devices go on), and resumes the queue on the timer's event. Nothing
//! polls: a throttled queue costs one timer expiry per wait.

pub mod bucket;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

use crate::config::RateLimiterConfig;
use bucket::TokenBucket;

/// The longest single wait armed; a longer one is re-armed when it fires.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Nanoseconds since a fixed origin; tests hand in one they move by hand.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The monotonic clock, in nanoseconds since its first use in this process.
pub fn monotonic_clock() -> Clock {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    Arc::new(move || u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

#[derive(Debug, thiserror::Error)]
pub enum RateLimiterError {
    #[error("cannot create the rate limiter's timerfd: {0}")]
    Timer(#[source] std::io::Error),
}

/// The limits of one queue, and the timer that ends a throttled spell.
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    blocked: bool,
    clock: Clock,
}

impl RateLimiter {
    /// A limiter with `config`'s buckets (none: unlimited until a PATCH sets some).
    pub fn new(config: Option<&RateLimiterConfig>) -> Result<RateLimiter, RateLimiterError> {
        Self::with_clock(config, monotonic_clock())
    }

    pub fn with_clock(
        config: Option<&RateLimiterConfig>,
        clock: Clock,
    ) -> Result<RateLimiter, RateLimiterError> {
        let timer = TimerFd::new().map_err(|e| RateLimiterError::Timer(e.into()))?;
        let mut limiter = RateLimiter {
            bandwidth: None,
            ops: None,
            timer,
            blocked: false,
            clock,
        };
        if let Some(config) = config {
            limiter.set_buckets(config);
        }
        Ok(limiter)
    }

    /// Takes `ops` operations and `bytes` bytes if both buckets have them; otherwise takes
    /// nothing, arms the timer and refuses everything until [`Self::on_timer`].
    pub fn consume(&mut self, ops: u64, bytes: u64) -> bool {
        if self.blocked {
            return false;
        }
        let now = (self.clock)();
        let buckets = [(&mut self.ops, ops), (&mut self.bandwidth, bytes)];
        let mut wait = 0;
        for (bucket, tokens) in buckets {
            if let Some(bucket) = bucket {
                wait = wait.max(bucket.wait_ns(tokens, now));
            }
        }
        if wait == 0 {
            self.take(ops, bytes, now);
            return true;
        }
        self.block_for(Duration::from_nanos(wait).min(MAX_WAIT))
    }

    fn take(&mut self, ops: u64, bytes: u64, now: u64) {
        if let Some(bucket) = &mut self.ops {
            bucket.take(ops, now);
        }
        if let Some(bucket) = &mut self.bandwidth {
            bucket.take(bytes, now);
        }
    }

    /// Arms the timer; returns false (throttled). If the timer cannot be armed nothing would
    /// resume the queue, so the request is let through instead.
    fn block_for(&mut self, wait: Duration) -> bool {
        // A zero duration would disarm the timer.
        let wait = wait.max(Duration::from_nanos(1));
        if let Err(e) = self.timer.reset(wait, None) {
            log::error!("rate limiter: cannot arm the timer, not limiting: {e}");
            return true;
        }
        self.blocked = true;
        false
    }

    /// Whether the queue waits for the timer.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The timer fired: the queue may go on. Disarming (instead of reading) also clears a
    /// stale readiness, so this never blocks.
    pub fn on_timer(&mut self) {
        if let Err(e) = self.timer.clear() {
            log::warn!("rate limiter: cannot disarm the timer: {e}");
        }
        self.blocked = false;
    }

    /// Makes the device come back through the timer at once: to yield after a batch, or
    /// after new limits while throttled.
    pub fn defer(&mut self) {
        self.block_for(Duration::ZERO);
    }

    /// Replaces the buckets `update` names with new, full ones; the others keep their state.
    /// A throttled queue is looked at again at once under the new limits.
    pub fn update(&mut self, update: &RateLimiterConfig) {
        self.set_buckets(update);
        if self.blocked {
            self.defer();
        }
    }

    fn set_buckets(&mut self, config: &RateLimiterConfig) {
        let now = (self.clock)();
        if let Some(bandwidth) = &config.bandwidth {
            self.bandwidth = TokenBucket::new(bandwidth, now);
        }
        if let Some(ops) = &config.ops {
            self.ops = TokenBucket::new(ops, now);
        }
    }
}

impl AsRawFd for RateLimiter {
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests;
