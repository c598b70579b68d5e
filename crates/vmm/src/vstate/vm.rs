//! The KVM VM: guest memory slots, in-kernel interrupt controllers, eventfd wiring.

use super::memory::GuestMemory;
use crate::arch::x86_64::layout::{KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuFd, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot create the KVM VM: {0}")]
    Create(kvm_ioctls::Error),
    #[error("cannot set the KVM TSS / identity map address: {0}")]
    TssAddress(kvm_ioctls::Error),
    #[error("cannot create the in-kernel IRQ chip: {0}")]
    IrqChip(kvm_ioctls::Error),
    #[error("cannot create the in-kernel PIT: {0}")]
    Pit(kvm_ioctls::Error),
    #[error("cannot register guest memory slot {slot} at {addr:#x}: {source}")]
    MemorySlot {
        slot: u32,
        addr: u64,
        source: kvm_ioctls::Error,
    },
    #[error("cannot register an ioeventfd at {addr:#x}: {source}")]
    IoEvent {
        addr: u64,
        source: kvm_ioctls::Error,
    },
    #[error("cannot register an irqfd for IRQ {irq}: {source}")]
    IrqFd { irq: u32, source: kvm_ioctls::Error },
    #[error("cannot create vCPU {index}: {source}")]
    CreateVcpu {
        index: u8,
        source: kvm_ioctls::Error,
    },
}

/// One KVM VM with its guest memory registered.
pub struct Vm {
    fd: VmFd,
    memory: GuestMemory,
}

impl Vm {
    /// Creates the VM, its interrupt controllers and PIT, and maps `memory` into it.
    pub fn new(kvm: &Kvm, memory: GuestMemory) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(VmError::Create)?;
        fd.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(VmError::TssAddress)?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
            .map_err(VmError::TssAddress)?;
        fd.create_irq_chip().map_err(VmError::IrqChip)?;
        // A dummy speaker port keeps guests that probe port 0x61 away from userspace.
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(VmError::Pit)?;
        let vm = Vm { fd, memory };
        vm.register_memory()?;
        Ok(vm)
    }

    fn register_memory(&self) -> Result<(), VmError> {
        for (slot, region) in self.memory.iter().enumerate() {
            let slot = slot as u32;
            let addr = region.start_addr().raw_value();
            let host = self
                .memory
                .get_host_address(region.start_addr())
                .unwrap_or(std::ptr::null_mut());
            let slot_region = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: addr,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `host` is the start of a live mapping of `region.len()` bytes owned by
            // `self.memory`, which lives as long as the VM fd that uses it.
            unsafe { self.fd.set_user_memory_region(slot_region) }
                .map_err(|source| VmError::MemorySlot { slot, addr, source })?;
        }
        Ok(())
    }

    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Lets KVM signal `event` itself when the guest writes `datamatch` (32-bit) to `addr`.
    pub fn register_mmio_ioevent(
        &self,
        event: &EventFd,
        addr: u64,
        datamatch: u32,
    ) -> Result<(), VmError> {
        self.fd
            .register_ioevent(event, &IoEventAddress::Mmio(addr), datamatch)
            .map_err(|source| VmError::IoEvent { addr, source })
    }

    /// Raises IRQ `irq` in the guest whenever `event` is written.
    pub fn register_irqfd(&self, event: &EventFd, irq: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(event, irq)
            .map_err(|source| VmError::IrqFd { irq, source })
    }

    pub fn create_vcpu(&self, index: u8) -> Result<VcpuFd, VmError> {
        self.fd
            .create_vcpu(u64::from(index))
            .map_err(|source| VmError::CreateVcpu { index, source })
    }
}
