//! A small `log` backend: one line per record to stderr or to `--log-path`.

use log::{LevelFilter, Log, Metadata, Record};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

struct Logger {
    instance_id: String,
    level: LevelFilter,
    file: Option<Mutex<File>>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "[{}:{}:{}] {}\n",
            self.instance_id,
            std::thread::current().name().unwrap_or("-"),
            record.level(),
            record.args()
        );
        match &self.file {
            Some(file) => {
                let _ = file
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Parses Firecracker's level names (Error, Warning, Info, Debug, Trace, Off), any case.
pub fn parse_level(text: &str) -> Result<LevelFilter, String> {
    match text.to_ascii_lowercase().as_str() {
        "off" => Ok(LevelFilter::Off),
        "error" => Ok(LevelFilter::Error),
        "warn" | "warning" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err(format!(
            "unknown log level {text:?}: use Error, Warning, Info, Debug, Trace or Off"
        )),
    }
}

/// Installs the logger; `log_path` (a file or FIFO) is opened for appending.
pub fn init(instance_id: &str, level: LevelFilter, log_path: Option<&Path>) -> Result<(), String> {
    let file = match log_path {
        Some(path) => Some(Mutex::new(
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let logger = Logger {
        instance_id: instance_id.to_string(),
        level,
        file,
    };
    log::set_logger(Box::leak(Box::new(logger))).map_err(|e| e.to_string())?;
    log::set_max_level(level);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecracker_level_names_parse() {
        assert_eq!(parse_level("Warning"), Ok(LevelFilter::Warn));
        assert_eq!(parse_level("info"), Ok(LevelFilter::Info));
        assert_eq!(parse_level("Off"), Ok(LevelFilter::Off));
        assert!(parse_level("loud").is_err());
    }
}
