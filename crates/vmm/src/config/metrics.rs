//! `metrics` (and the body of `PUT /metrics`): where `FlushMetrics` writes one JSON line of
//! counters. Nothing to validate before the file is opened.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A file (appended to) or a named pipe.
    pub metrics_path: PathBuf,
    /// Put the instance id (`--id`) in every line as `"id"`.
    #[serde(default)]
    pub emit_id: bool,
}
