//! `entropy` (and the body of `PUT /entropy`): a virtio-rng device that hands the guest
//! bytes from the host's `getrandom(2)`.

use serde::{Deserialize, Serialize};

/// An entropy device that cannot be built as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntropyError {
    #[error("rate_limiter is not supported by Ember yet: leave it out or null")]
    RateLimiter,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyConfig {
    /// Firecracker's token buckets; refused until rate limiters exist, so that a client
    /// relying on one is not silently left unthrottled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<serde_json::Value>,
}

impl EntropyConfig {
    pub fn validate(&self) -> Result<(), EntropyError> {
        match &self.rate_limiter {
            Some(limiter) if !limiter.is_null() => Err(EntropyError::RateLimiter),
            _ => Ok(()),
        }
    }
}
