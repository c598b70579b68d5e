//! Ember's VMM library: build and run one KVM microVM.

pub mod arch;
pub mod builder;
pub mod config;
pub mod controller;
pub mod device_manager;
pub mod devices;
pub mod event_loop;
pub mod host_file;
pub mod loader;
pub mod logger;
pub mod metrics;
pub mod microvm;
pub mod rate_limiter;
pub mod rpc;
pub mod seccomp;
pub mod snapshot;
pub mod vstate;
