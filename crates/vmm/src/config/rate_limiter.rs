//! `rate_limiter` of a drive and `rx_rate_limiter`/`tx_rate_limiter` of an interface:
//! Firecracker's `RateLimiter`, a bytes bucket (`bandwidth`) and an operations bucket (`ops`).

use serde::{Deserialize, Serialize};

/// The longest `refill_time` taken: its nanoseconds must fit in 64 bits, as in Firecracker.
pub const MAX_REFILL_TIME_MS: u64 = u64::MAX / 1_000_000;

/// A rate limiter that cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimiterConfigError {
    #[error("{bucket} refill_time {ms} ms is longer than the {MAX_REFILL_TIME_MS} ms allowed")]
    RefillTimeTooLong { bucket: &'static str, ms: u64 },
}

/// One token bucket: `size` tokens refilled evenly over `refill_time` milliseconds, plus
/// `one_time_burst` tokens that are spent first and never come back. A `size` or a
/// `refill_time` of 0 means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    pub refill_time: u64,
}

impl TokenBucketConfig {
    /// Whether this bucket limits anything.
    pub fn is_limited(&self) -> bool {
        self.size != 0 && self.refill_time != 0
    }
}

/// A queue's limits. In a PATCH, a bucket left out keeps its current setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucketConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucketConfig>,
}

impl RateLimiterConfig {
    pub fn validate(&self) -> Result<(), RateLimiterConfigError> {
        let buckets = [("bandwidth", &self.bandwidth), ("ops", &self.ops)];
        for (bucket, config) in buckets {
            if let Some(config) = config.filter(|c| c.refill_time > MAX_REFILL_TIME_MS) {
                let ms = config.refill_time;
                return Err(RateLimiterConfigError::RefillTimeTooLong { bucket, ms });
            }
        }
        Ok(())
    }

    /// This configuration with the buckets `update` names replaced.
    pub fn merged(&self, update: &RateLimiterConfig) -> RateLimiterConfig {
        RateLimiterConfig {
            bandwidth: update.bandwidth.or(self.bandwidth),
            ops: update.ops.or(self.ops),
        }
    }
}

/// `config` with `update` applied (PATCH): a limiter appears if there was none.
pub fn merge_limiter(
    config: Option<RateLimiterConfig>,
    update: Option<RateLimiterConfig>,
) -> Option<RateLimiterConfig> {
    match (config, update) {
        (Some(config), Some(update)) => Some(config.merged(&update)),
        (config, update) => update.or(config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(size: u64, refill_time: u64) -> TokenBucketConfig {
        TokenBucketConfig {
            size,
            one_time_burst: None,
            refill_time,
        }
    }

    #[test]
    fn firecracker_bodies_parse_and_round_trip() {
        let text = r#"{"bandwidth":{"size":1000,"one_time_burst":10,"refill_time":100},"ops":{"size":5,"refill_time":1}}"#;
        let config: RateLimiterConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config.bandwidth.unwrap().one_time_burst, Some(10));
        assert_eq!(serde_json::to_string(&config).unwrap(), text);
        let bad = r#"{"bandwidth":{"size":1}}"#;
        assert!(serde_json::from_str::<RateLimiterConfig>(bad).is_err());
        let unknown = r#"{"iops":{"size":1,"refill_time":1}}"#;
        assert!(serde_json::from_str::<RateLimiterConfig>(unknown).is_err());
    }

    #[test]
    fn refill_times_past_u64_nanoseconds_are_refused() {
        let mut config = RateLimiterConfig {
            ops: Some(bucket(1, MAX_REFILL_TIME_MS)),
            ..Default::default()
        };
        assert_eq!(config.validate(), Ok(()));
        config.ops = Some(bucket(1, MAX_REFILL_TIME_MS + 1));
        assert!(config.validate().unwrap_err().to_string().contains("ops"));
        assert!(!bucket(0, 10).is_limited() && !bucket(10, 0).is_limited());
    }

    #[test]
    fn a_patch_replaces_only_the_buckets_it_names() {
        let old = RateLimiterConfig {
            bandwidth: Some(bucket(100, 10)),
            ops: Some(bucket(5, 10)),
        };
        let update = RateLimiterConfig {
            ops: Some(bucket(7, 20)),
            ..Default::default()
        };
        let merged = merge_limiter(Some(old), Some(update)).unwrap();
        assert_eq!(merged.bandwidth, Some(bucket(100, 10)));
        assert_eq!(merged.ops, Some(bucket(7, 20)));
        assert_eq!(merge_limiter(None, Some(update)), Some(update));
        assert_eq!(merge_limiter(Some(old), None), Some(old));
    }
}
