//! KVM state: the VM, its vCPUs and guest memory.

pub mod kvm;
pub mod memory;
mod msrs;
mod state_error;
pub mod vcpu;
pub mod vcpu_state;
pub mod vm;
pub mod vm_state;

#[cfg(test)]
mod state_tests;
