//! The VM-wide KVM state (in-kernel PICs and IOAPIC, PIT, KVM clock) as plain serde data.

use super::vm::Vm;
use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum VmStateError {
    #[error("{0} failed: {1}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
}

fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmStateError {
    move |e| VmStateError::Kvm(op, e)
}

/// One in-kernel interrupt controller's state (`chip_id` says which).
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IrqChip(pub kvm_irqchip);

impl IrqChip {
    fn bytes(&self) -> [std::os::raw::c_char; 512] {
        // SAFETY: every variant of the union is plain integers, `dummy` spans all of it, and
        // KVM (or zeroed `Default`, or deserialisation) wrote every byte, so any bytes are valid.
        unsafe { self.0.chip.dummy }
    }
}

impl PartialEq for IrqChip {
    fn eq(&self, other: &Self) -> bool {
        self.0.chip_id == other.0.chip_id && self.bytes() == other.bytes()
    }
}

impl std::fmt::Debug for IrqChip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IrqChip({})", self.0.chip_id)
    }
}

/// Everything KVM holds for the VM itself, outside its vCPUs and memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: IrqChip,
    pub pic_slave: IrqChip,
    pub ioapic: IrqChip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

impl Vm {
    /// Reads the VM's state; its vCPUs should be paused so that nothing changes it meanwhile.
    pub fn save_state(&self) -> Result<VmState, VmStateError> {
        Ok(VmState {
            pic_master: self.irqchip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: self.irqchip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: self.irqchip(KVM_IRQCHIP_IOAPIC)?,
            pit: self.fd().get_pit2().map_err(kvm("KVM_GET_PIT2"))?,
            clock: self.fd().get_clock().map_err(kvm("KVM_GET_CLOCK"))?,
        })
    }

    /// Puts `state` back, before the vCPUs' own state: an IOAPIC or PIC restored after them
    /// could deliver its pending lines into LAPICs that already hold their saved state.
    pub fn restore_state(&self, state: &VmState) -> Result<(), VmStateError> {
        // The PIT first: reloading its counters can raise IRQ 0, and the interrupt
        // controllers restored after it then hold exactly their saved lines.
        self.fd()
            .set_pit2(&state.pit)
            .map_err(kvm("KVM_SET_PIT2"))?;
        // The guest's clock goes on from the value saved, not from the wall clock: the time
        // it was stopped is invisible, as for a paused VM. No flags: KVM_GET_CLOCK's report
        // flags (TSC_STABLE, HOST_TSC) are refused by older kernels' KVM_SET_CLOCK, and
        // REALTIME would make the clock jump forward by the time since the save.
        let clock = kvm_clock_data {
            clock: state.clock.clock,
            ..Default::default()
        };
        self.fd().set_clock(&clock).map_err(kvm("KVM_SET_CLOCK"))?;
        for chip in [&state.pic_master, &state.pic_slave, &state.ioapic] {
            self.fd()
                .set_irqchip(&chip.0)
                .map_err(kvm("KVM_SET_IRQCHIP"))?;
        }
        Ok(())
    }

    fn irqchip(&self, chip_id: u32) -> Result<IrqChip, VmStateError> {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        self.fd()
            .get_irqchip(&mut chip)
            .map_err(kvm("KVM_GET_IRQCHIP"))?;
        Ok(IrqChip(chip))
    }
}

impl VmState {
    /// This state without readings of running clocks (the KVM clock, the PIT counters' load
    /// times), which differ between any two saves: what a round trip must keep.
    pub fn without_clock_readings(&self) -> Self {
        let mut state = self.clone();
        state.clock = kvm_clock_data::default();
        for channel in state.pit.channels.iter_mut() {
            channel.count_load_time = 0;
        }
        state
    }
}
