//! Ember's VMM library: build and run one KVM microVM.

pub mod arch;
pub mod config;
pub mod devices;
pub mod rpc;
pub mod vstate;
