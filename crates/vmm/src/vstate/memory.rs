//! Guest memory: anonymous mappings laid out around the x86 MMIO gap.

/// Guest RAM as the VMM sees it. Cloning is cheap (the regions are reference counted).
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;
