//! `ember-jailer`: runs the Ember monitor as an unprivileged, chrooted, namespaced,
//! cgroup-limited process, with Firecracker's jailer flags (README, "The jailer").

mod args;
mod cgroup;
mod fs;
mod launch;
mod namespaces;
mod privileges;
mod undo;
mod validate;

use clap::error::ErrorKind;
use clap::Parser;
use launch::{LaunchError, Stamps};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use undo::Undo;
use validate::{Jail, ValidateError};

#[derive(Debug, thiserror::Error)]
enum JailerError {
    #[error(transparent)]
    Validate(#[from] ValidateError),
    #[error(transparent)]
    Fs(#[from] fs::FsError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Ns(#[from] namespaces::NsError),
    #[error(transparent)]
    Privileges(#[from] privileges::PrivError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("cannot open /dev/null: {0}")]
    DevNull(std::io::Error),
}

fn main() -> ExitCode {
    let stamps = Stamps {
        start_us: launch::clock_us(nix::time::ClockId::CLOCK_MONOTONIC),
    };
    let args = match args::Args::try_parse() {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&first_line(&e.to_string())),
    };
    match run(args, stamps) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("ember-jailer: {message}");
    ExitCode::from(1)
}

/// clap's first line, without its `error: ` prefix; the usage lines after it are noise in
/// an orchestrator's log.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

fn run(args: args::Args, stamps: Stamps) -> Result<u8, JailerError> {
    privileges::close_stray_fds()?;
    let jail = validate::validate(args)?;
    let mut undo = Undo::default();
    let dev_null = match prepare(&jail, &mut undo) {
        Ok(dev_null) => dev_null,
        Err(e) => {
            undo.run();
            return Err(e);
        }
    };
    // From here on the host's paths are out of reach: the jail is the monitor's.
    undo.commit();
    namespaces::enter_jail(&jail.root)?;
    Ok(launch::launch(&jail, stamps, dev_null)?)
}

/// Everything done on the host's side of the jail, each step known to `undo`.
fn prepare(jail: &Jail, undo: &mut Undo) -> Result<Option<OwnedFd>, JailerError> {
    let files = fs::JailFiles {
        root: &jail.root,
        exec_src: &jail.exec_src,
        exec_name: &jail.exec_name,
        uid: jail.uid,
        gid: jail.gid,
    };
    files.build(undo)?;
    jail.cgroups.apply(undo)?;
    if let Some(netns) = &jail.netns {
        namespaces::join_netns(netns)?;
    }
    // The jail has no /dev/null; a daemon's stdio needs one.
    let dev_null = jail
        .daemonize
        .then(|| File::options().read(true).write(true).open("/dev/null"))
        .transpose()
        .map_err(JailerError::DevNull)?;
    Ok(dev_null.map(OwnedFd::from))
}
