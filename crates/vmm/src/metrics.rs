//! Metrics: counters the devices and the VMM thread keep, written as one JSON line to the
//! configured file or named pipe on each `FlushMetrics` (and when the VM ends).

use crate::host_file::{self, Access, FileKind, HostFileError};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Where metrics lines go.
pub struct MetricsSink {
    file: File,
    instance_id: Option<String>,
}

impl MetricsSink {
    /// Opens `path`, which must exist (a file, a FIFO or a character device such as
    /// `/dev/null`), for appending. Like Firecracker, Ember does not create it: the VMM
    /// thread's seccomp filter forbids creating files. A FIFO is opened read-write and
    /// non-blocking, so that neither a missing reader nor a full pipe ever blocks the VMM
    /// thread: a line that does not fit fails its flush instead.
    pub fn open(path: &Path, instance_id: Option<String>) -> Result<Self, HostFileError> {
        const SINK_KINDS: &[FileKind] = &[FileKind::Regular, FileKind::Fifo, FileKind::CharDevice];
        let (file, _) = host_file::open(path, Access::Append, SINK_KINDS)?;
        Ok(MetricsSink { file, instance_id })
    }

    /// Writes one line: a timestamp, the id if asked for, then `sections`.
    pub fn write_line(&mut self, sections: Map<String, Value>) -> std::io::Result<()> {
        let mut line = Map::new();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        line.insert("utc_timestamp_ms".into(), json!(now_ms));
        if let Some(id) = &self.instance_id {
            line.insert("id".into(), json!(id));
        }
        line.extend(sections);
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // One write per line, so a reader of a FIFO never sees half a line.
        self.file.write_all(text.as_bytes())
    }
}

/// Counters of the VMM thread itself.
pub struct VmmCounters {
    pub started: Instant,
    pub api_requests: AtomicU64,
    pub api_failures: AtomicU64,
}

impl Default for VmmCounters {
    fn default() -> Self {
        VmmCounters {
            started: Instant::now(),
            api_requests: AtomicU64::new(0),
            api_failures: AtomicU64::new(0),
        }
    }
}

impl VmmCounters {
    pub fn to_json(&self) -> Value {
        json!({
            "uptime_ms": self.started.elapsed().as_millis() as u64,
            "api_requests": self.api_requests.load(Ordering::Relaxed),
            "api_failures": self.api_failures.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::tempfile::TempFile;

    #[test]
    fn lines_are_json_with_timestamp_and_optional_id() {
        let file = TempFile::new().unwrap();
        let mut sink = MetricsSink::open(file.as_path(), Some("vm7".into())).unwrap();
        let mut sections = Map::new();
        sections.insert("vmm".into(), VmmCounters::default().to_json());
        sink.write_line(sections.clone()).unwrap();
        sink.write_line(sections).unwrap();
        let text = std::fs::read_to_string(file.as_path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["id"], "vm7");
        assert!(lines[1]["utc_timestamp_ms"].as_u64().unwrap() > 0);
        assert_eq!(lines[1]["vmm"]["api_requests"], 0);
    }
}
