//! A token bucket on an explicit clock (nanoseconds from any fixed origin), so tests can
//! move time by hand.
//!
//! Ember's bucket starts full (`size` tokens) with its `one_time_burst` on top, so the first
//! `size + one_time_burst` tokens pass at once; afterwards tokens come back evenly, `size`
//! per `refill_time`, up to `size`. Unlike Firecracker's, the refill is continuous from the
//! start: an idle bucket is never topped up whole a second time, so no burst above
//! `size + one_time_burst` ever passes. A request larger than the bucket passes when the
//! bucket is full and leaves it in debt, so the long-run rate holds whatever the sizes.

use crate::config::TokenBucketConfig;

const NANOS_PER_MS: u128 = 1_000_000;

/// One bucket; see the module comment for its rules.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    size: u64,
    refill_ns: u128,
    one_time_burst: u64,
    /// Tokens available; negative while a request larger than the bucket is paid back.
    budget: i128,
    /// When the budget was last brought up to date. Time that did not yet make a whole
    /// token is carried over, so slow refills do not lose tokens to rounding.
    last_update: u64,
}

impl TokenBucket {
    /// A full bucket at time `now`; None for a bucket that limits nothing (size or
    /// refill_time 0), as in Firecracker.
    pub fn new(config: &TokenBucketConfig, now: u64) -> Option<TokenBucket> {
        if !config.is_limited() {
            return None;
        }
        Some(TokenBucket {
            size: config.size,
            refill_ns: u128::from(config.refill_time) * NANOS_PER_MS,
            one_time_burst: config.one_time_burst.unwrap_or(0),
            budget: i128::from(config.size),
            last_update: now,
        })
    }

    /// Tokens available now (the one-time burst included).
    pub fn available(&mut self, now: u64) -> i128 {
        self.refill(now);
        self.budget + i128::from(self.one_time_burst)
    }

    /// Whether `tokens` can be taken now.
    pub fn can_take(&mut self, tokens: u64, now: u64) -> bool {
        self.available(now) >= i128::from(tokens.min(self.size))
    }

    /// Takes `tokens` (the one-time burst first); the caller checked [`Self::can_take`].
    pub fn take(&mut self, tokens: u64, now: u64) {
        self.refill(now);
        let from_burst = tokens.min(self.one_time_burst);
        self.one_time_burst -= from_burst;
        self.budget -= i128::from(tokens - from_burst);
    }

    /// Nanoseconds from `now` until `tokens` can be taken (0 if they can now).
    pub fn wait_ns(&mut self, tokens: u64, now: u64) -> u64 {
        let missing = i128::from(tokens.min(self.size)) - self.available(now);
        let Ok(missing) = u128::try_from(missing) else {
            return 0;
        };
        if missing == 0 {
            return 0;
        }
        let size = u128::from(self.size);
        // Time for the missing tokens, less the part of a token already accrued.
        let needed = missing.saturating_mul(self.refill_ns).div_ceil(size);
        let accrued = u128::from(now.saturating_sub(self.last_update));
        u64::try_from(needed.saturating_sub(accrued).max(1)).unwrap_or(u64::MAX)
    }

    fn refill(&mut self, now: u64) {
        let elapsed = u128::from(now.saturating_sub(self.last_update));
        let size = u128::from(self.size);
        // elapsed and size are both below 2^64, so the product fits.
        let tokens = elapsed * size / self.refill_ns;
        let full = i128::from(self.size);
        let room = u128::try_from(full - self.budget).unwrap_or(0);
        if tokens >= room {
            self.budget = full;
            self.last_update = now;
            return;
        }
        // tokens < room <= 2^65, and tokens * refill_ns <= elapsed * size < 2^128.
        let used_ns = (tokens * self.refill_ns).div_ceil(size);
        self.last_update += u64::try_from(used_ns).unwrap_or(u64::MAX);
        self.budget += tokens as i128;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn bucket(size: u64, burst: Option<u64>, refill_time: u64) -> TokenBucket {
        let config = TokenBucketConfig {
            size,
            one_time_burst: burst,
            refill_time,
        };
        TokenBucket::new(&config, 0).unwrap()
    }

    #[test]
    fn starts_full_then_refills_evenly() {
        let mut b = bucket(1000, None, 100);
        assert!(b.can_take(1000, 0));
        b.take(1000, 0);
        assert!(!b.can_take(1, 0));
        assert_eq!(b.wait_ns(500, 0), 50 * MS);
        assert_eq!(b.available(10 * MS), 100);
        assert_eq!(b.available(100 * MS), 1000);
        // Never more than one bucket, however long it idles.
        assert_eq!(b.available(10_000 * MS), 1000);
    }

    #[test]
    fn one_time_burst_is_spent_first_and_never_refilled() {
        let mut b = bucket(100, Some(50), 10);
        assert_eq!(b.available(0), 150);
        b.take(120, 0);
        assert_eq!(b.available(0), 30);
        assert_eq!(b.available(1000 * MS), 100);
    }

    #[test]
    fn a_request_larger_than_the_bucket_waits_for_a_full_one_then_pays_back() {
        let mut b = bucket(100, None, 10);
        b.take(50, 0);
        assert!(!b.can_take(300, 0));
        assert_eq!(b.wait_ns(300, 0), 5 * MS);
        assert!(b.can_take(300, 5 * MS));
        b.take(300, 5 * MS);
        assert_eq!(b.available(5 * MS), -200);
        assert_eq!(b.wait_ns(1, 5 * MS), 20 * MS + MS / 10);
        assert!(b.can_take(1, 25 * MS + MS / 10));
    }

    #[test]
    fn fractions_of_a_token_are_carried_over() {
        // 3 tokens per 10 ms: a token every 3.33 ms.
        let mut b = bucket(3, None, 10);
        b.take(3, 0);
        let mut got = 0;
        let mut now = 0;
        // A nanosecond at most is rounded away per token (never given away), so 101 ms.
        while now < 101 * MS {
            now += MS;
            if b.can_take(1, now) {
                b.take(1, now);
                got += 1;
            }
        }
        assert_eq!(got, 30);
    }

    #[test]
    fn extreme_values_neither_overflow_nor_panic() {
        let mut b = bucket(u64::MAX, Some(u64::MAX), crate::config::MAX_REFILL_TIME_MS);
        b.take(u64::MAX, 0);
        b.take(u64::MAX, 0);
        b.take(u64::MAX, 0);
        assert!(b.wait_ns(u64::MAX, 0) > 0);
        assert!(b.available(u64::MAX) >= 0);
        let mut small = bucket(1, None, 1);
        small.take(u64::MAX, 0);
        assert_eq!(small.wait_ns(1, 0), u64::MAX);
        assert!(small.available(u64::MAX) < 0);
        assert!(TokenBucket::new(&TokenBucketConfig::default(), 0).is_none());
    }
}
