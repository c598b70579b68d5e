//! A small `log` backend: one line per record to stderr or to a log file, in Firecracker's
//! shape (`[id:thread]`, plus `:LEVEL` and `:file:line` when asked for).
//!
//! It lives here rather than in the binary so that the VMM thread can change it when
//! `PUT /logger` arrives, with the same rules as the `logger` section of a config file.

use crate::config::LoggerConfig;
use crate::host_file::{self, Access, FileKind, HostFileError};
use log::{LevelFilter, Log, Metadata, Record};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{OnceLock, RwLock};

/// Why the logger could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    #[error("cannot open log file {0}: {1}")]
    Open(String, HostFileError),
    #[error("the logger is already installed")]
    AlreadyInstalled,
    #[error("the logger is not installed")]
    NotInstalled,
}

/// What decides which records are written and how.
struct Settings {
    level: LevelFilter,
    show_level: bool,
    show_log_origin: bool,
    module: Option<String>,
    file: Option<File>,
}

struct Logger {
    instance_id: String,
    settings: RwLock<Settings>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

impl Settings {
    fn passes(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
            && self
                .module
                .as_deref()
                .is_none_or(|module| metadata.target().starts_with(module))
    }

    fn line(&self, instance_id: &str, record: &Record) -> String {
        let mut tag = format!(
            "{instance_id}:{}",
            std::thread::current().name().unwrap_or("-")
        );
        if self.show_level {
            tag += &format!(":{}", record.level());
        }
        if self.show_log_origin {
            let file = record.file().unwrap_or("?");
            tag += &format!(":{file}:{}", record.line().unwrap_or(0));
        }
        format!("[{tag}] {}\n", record.args())
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        read(&self.settings).passes(metadata)
    }

    fn log(&self, record: &Record) {
        let settings = read(&self.settings);
        if !settings.passes(record.metadata()) {
            return;
        }
        let line = settings.line(&self.instance_id, record);
        // One write per line, so lines from different threads never interleave.
        let _ = match settings.file.as_ref() {
            Some(mut file) => file.write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}

fn read(settings: &RwLock<Settings>) -> std::sync::RwLockReadGuard<'_, Settings> {
    settings.read().unwrap_or_else(|p| p.into_inner())
}

/// Opens a log file for appending. `create` only at startup: afterwards the VMM thread's
/// seccomp filter forbids creating files, so (as in Firecracker) the file must exist.
///
/// Opened like every file a client names ([`host_file`]): a FIFO without a reader opens at
/// once and is written without blocking, so a reader that stops reading costs log lines,
/// never a stuck thread.
fn open(path: &Path, create: bool) -> Result<File, LoggerError> {
    const LOG_KINDS: &[FileKind] = &[FileKind::Regular, FileKind::Fifo, FileKind::CharDevice];
    if create {
        // O_EXCL: an existing path, FIFOs included, is left alone and opened below.
        let _ = OpenOptions::new().append(true).create_new(true).open(path);
    }
    host_file::open(path, Access::Append, LOG_KINDS)
        .map(|(file, _)| file)
        .map_err(|e| LoggerError::Open(path.display().to_string(), e))
}

/// Installs the logger for instance `instance_id`, writing to stderr at Warning and
/// without level or origin, then applies `config` (the command-line flags) to it;
/// `config.log_path` may be created.
pub fn init(instance_id: &str, config: &LoggerConfig) -> Result<(), LoggerError> {
    let file = config
        .log_path
        .as_deref()
        .map(|path| open(path, true))
        .transpose()?;
    let settings = Settings {
        level: LevelFilter::Warn,
        show_level: false,
        show_log_origin: false,
        module: None,
        file,
    };
    let logger = Logger {
        instance_id: instance_id.to_string(),
        settings: RwLock::new(settings),
    };
    LOGGER
        .set(logger)
        .map_err(|_| LoggerError::AlreadyInstalled)?;
    let installed = LOGGER.get().ok_or(LoggerError::NotInstalled)?;
    log::set_logger(installed).map_err(|_| LoggerError::AlreadyInstalled)?;
    update(&LoggerConfig {
        log_path: None,
        ..config.clone()
    })
}

/// Changes the fields `config` gives (`PUT /logger`, a config file's `logger` section);
/// the others stay as they are. A new `log_path` must already exist.
pub fn update(config: &LoggerConfig) -> Result<(), LoggerError> {
    let logger = LOGGER.get().ok_or(LoggerError::NotInstalled)?;
    // Opened before taking the lock, so a failure changes nothing.
    let file = config
        .log_path
        .as_deref()
        .map(|path| open(path, false))
        .transpose()?;
    let mut settings = logger.settings.write().unwrap_or_else(|p| p.into_inner());
    if let Some(file) = file {
        settings.file = Some(file);
    }
    if let Some(level) = config.level {
        settings.level = level.filter();
    }
    settings.show_level = config.show_level.unwrap_or(settings.show_level);
    settings.show_log_origin = config.show_log_origin.unwrap_or(settings.show_log_origin);
    if let Some(module) = &config.module {
        settings.module = Some(module.clone()).filter(|m| !m.is_empty());
    }
    log::set_max_level(settings.level);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogLevel;

    fn settings() -> Settings {
        Settings {
            level: LevelFilter::Info,
            show_level: false,
            show_log_origin: false,
            module: None,
            file: None,
        }
    }

    fn record_line(settings: &Settings, target: &str) -> Option<String> {
        let metadata = Metadata::builder()
            .level(log::Level::Warn)
            .target(target)
            .build();
        settings.passes(&metadata).then(|| {
            let mut record = Record::builder();
            record
                .metadata(metadata)
                .file(Some("src/x.rs"))
                .line(Some(7));
            settings.line("vm0", &record.args(format_args!("hello")).build())
        })
    }

    #[test]
    fn lines_show_level_and_origin_only_when_asked() {
        let mut s = settings();
        let thread = std::thread::current().name().unwrap_or("-").to_string();
        let plain = record_line(&s, "vmm::x").unwrap();
        assert_eq!(plain, format!("[vm0:{thread}] hello\n"));
        s.show_level = true;
        s.show_log_origin = true;
        let full = record_line(&s, "vmm::x").unwrap();
        assert_eq!(full, format!("[vm0:{thread}:WARN:src/x.rs:7] hello\n"));
    }

    #[test]
    fn module_and_level_filter_records() {
        let mut s = settings();
        s.module = Some("vmm::controller".into());
        assert!(record_line(&s, "vmm::controller").is_some());
        assert!(record_line(&s, "vmm::controller::inner").is_some());
        assert!(record_line(&s, "ember::api").is_none());
        s.module = None;
        s.level = LevelFilter::Error;
        assert!(record_line(&s, "vmm::x").is_none());
    }

    #[test]
    fn level_names_parse_in_any_case() {
        assert_eq!("Warning".parse::<LogLevel>().unwrap(), LogLevel::Warning);
        assert_eq!("warn".parse::<LogLevel>().unwrap(), LogLevel::Warning);
        assert_eq!("INFO".parse::<LogLevel>().unwrap(), LogLevel::Info);
        assert_eq!("off".parse::<LogLevel>().unwrap(), LogLevel::Off);
        assert!("loud".parse::<LogLevel>().is_err());
        let config: LoggerConfig =
            serde_json::from_str(r#"{"level": "debug", "show_level": true}"#).unwrap();
        assert_eq!(config.level, Some(LogLevel::Debug));
        assert!(serde_json::from_str::<LoggerConfig>(r#"{"level": "loud"}"#).is_err());
        assert!(serde_json::from_str::<LoggerConfig>(r#"{"colour": true}"#).is_err());
    }
}
