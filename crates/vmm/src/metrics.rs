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
    /// How long Ember took to start, when its launcher said when it began.
    pub startup: StartupTimes,
}

impl Default for VmmCounters {
    fn default() -> Self {
        VmmCounters {
            started: Instant::now(),
            api_requests: AtomicU64::new(0),
            api_failures: AtomicU64::new(0),
            startup: StartupTimes::default(),
        }
    }
}

/// Firecracker's `api_server` start-up metrics. A launcher (Firecracker's jailer, say)
/// passes the monotonic clock and its CPU clock from when it began (`--start-time-us`,
/// `--start-time-cpu-us`, and `--parent-cpu-time-us` for CPU time its parent spent);
/// measured once, when the API is up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartupTimes {
    pub process_startup_time_us: Option<u64>,
    pub process_startup_time_cpu_us: Option<u64>,
}

impl StartupTimes {
    /// The times from the launcher's stamps until now.
    pub fn measure(start_us: Option<u64>, start_cpu_us: Option<u64>, parent_cpu_us: u64) -> Self {
        let cpu_now = clock_us(libc::CLOCK_PROCESS_CPUTIME_ID) + parent_cpu_us;
        StartupTimes {
            process_startup_time_us: start_us
                .map(|start| clock_us(libc::CLOCK_MONOTONIC).saturating_sub(start)),
            process_startup_time_cpu_us: start_cpu_us.map(|start| cpu_now.saturating_sub(start)),
        }
    }

    /// The `api_server` section, when a start time was given.
    pub fn to_json(&self) -> Option<Value> {
        if *self == StartupTimes::default() {
            return None;
        }
        Some(json!({
            "process_startup_time_us": self.process_startup_time_us.unwrap_or(0),
            "process_startup_time_cpu_us": self.process_startup_time_cpu_us.unwrap_or(0),
        }))
    }
}

/// `clock` in microseconds.
fn clock_us(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill; the clocks passed exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut now) };
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
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

    #[test]
    fn startup_times_count_from_the_launchers_stamps() {
        assert_eq!(StartupTimes::measure(None, None, 5).to_json(), None);
        let now = clock_us(libc::CLOCK_MONOTONIC);
        let times = StartupTimes::measure(Some(now - 1_000), Some(0), 7);
        assert!(times.process_startup_time_us.unwrap() >= 1_000);
        assert!(times.process_startup_time_cpu_us.unwrap() >= 7);
        let json = times.to_json().unwrap();
        assert!(json["process_startup_time_us"].as_u64().unwrap() >= 1_000);
    }
}
