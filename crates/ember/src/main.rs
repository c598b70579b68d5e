//! `ember`: launch a microVM from a Firecracker-style JSON config, or configure one over a
//! Firecracker-compatible REST API on a Unix socket.

mod cli;

use clap::Parser;
use ember::api;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    // Taken first, so the boot timer measures from as close to process start as possible.
    let process_start = Instant::now();
    if let Err(err) = vmm::seccomp::prepare_allocator() {
        eprintln!("ember: {err}");
        return ExitCode::from(1);
    }
    let args = cli::Args::parse();
    match cli::run(args, process_start) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("ember: {message}");
            ExitCode::from(1)
        }
    }
}
