//! x86_64: guest physical layout, boot protocols, vCPU entry state, CPUID and the MP table.

pub mod boot_params;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
