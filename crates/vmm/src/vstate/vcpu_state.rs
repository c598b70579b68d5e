//! A vCPU's whole KVM state as plain serde data: saved from a vCPU that is out of KVM_RUN,
//! and put back onto the same vCPU or onto a fresh one of a VM built the same way.
//!
//! The kvm-bindings structs serialize themselves (its `serde` feature); the few that are not
//! `Clone`/`PartialEq` get thin wrappers here.

use super::msrs::{read_msrs, write_msrs};
use super::state_error::kvm;
pub use super::state_error::VcpuStateError;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

pub use super::msrs::msrs_to_save;

/// The LAPIC's current-count register: a reading of a running timer, not state.
const APIC_TMCCT: usize = 0x390;
pub(super) const MSR_IA32_TSC: u32 = 0x10;

/// The 4 KiB area KVM_GET_XSAVE fills: x87/SSE (so no separate KVM_GET_FPU is needed: it
/// would be a subset of this) and every XSAVE component the guest's XCR0 enables. Ember
/// never asks for dynamically enabled components (AMX), so 4 KiB is always enough.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct XsaveArea(pub kvm_xsave);

impl Clone for XsaveArea {
    fn clone(&self) -> Self {
        XsaveArea(kvm_xsave {
            region: self.0.region,
            ..Default::default()
        })
    }
}

impl PartialEq for XsaveArea {
    fn eq(&self, other: &Self) -> bool {
        self.0.region == other.0.region
    }
}

/// Everything KVM holds for one x86 vCPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// KVM's saveable MSRs that this vCPU can read (see [`msrs_to_save`]), TSC and KVM clock
    /// MSRs among them, in the order they are restored.
    pub msrs: Vec<kvm_msr_entry>,
    /// The guest TSC rate, when KVM reports it (KVM_CAP_GET_TSC_KHZ).
    pub tsc_khz: Option<u32>,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: XsaveArea,
    pub xcrs: kvm_xcrs,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub mp_state: kvm_mp_state,
    pub events: kvm_vcpu_events,
}

impl VcpuState {
    /// Reads the state of `fd`, which must be out of KVM_RUN (its thread paused), and stay
    /// so, or the parts would come from different instants.
    pub fn save(fd: &VcpuFd, msr_indices: &[u32]) -> Result<Self, VcpuStateError> {
        // First: reading the MP state makes KVM act on INIT/SIPI the LAPIC has latched, which
        // changes the registers and the LAPIC read below.
        let mp_state = fd.get_mp_state().map_err(kvm("KVM_GET_MP_STATE"))?;
        let regs = fd.get_regs().map_err(kvm("KVM_GET_REGS"))?;
        let sregs = fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        let xsave = XsaveArea(fd.get_xsave().map_err(kvm("KVM_GET_XSAVE"))?);
        let xcrs = fd.get_xcrs().map_err(kvm("KVM_GET_XCRS"))?;
        let debugregs = fd.get_debug_regs().map_err(kvm("KVM_GET_DEBUGREGS"))?;
        let lapic = fd.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
        let msrs = read_msrs(fd, msr_indices)?;
        // Without KVM_CAP_GET_TSC_KHZ the state still restores on this host.
        let tsc_khz = fd.get_tsc_khz().ok();
        let cpuid = fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec();
        // Last: the pending exception/interrupt/NMI as the reads above left them.
        let events = fd.get_vcpu_events().map_err(kvm("KVM_GET_VCPU_EVENTS"))?;
        Ok(VcpuState {
            cpuid,
            msrs,
            tsc_khz,
            regs,
            sregs,
            xsave,
            xcrs,
            debugregs,
            lapic,
            mp_state,
            events,
        })
    }

    /// Puts this state onto `fd`, out of KVM_RUN. Each step says why it comes where it does.
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), VcpuStateError> {
        // CPUID first: KVM checks XCR0, XSAVE components and many MSRs against it.
        self.restore_cpuid(fd)?;
        // Before the TSC MSR, whose value is in guest TSC ticks.
        self.restore_tsc_khz(fd)?;
        // The mode (CR0/CR4/EFER, segments) before the registers that live in it; SREGS also
        // carries the APIC base, which the LAPIC state below needs in place.
        fd.set_sregs(&self.sregs).map_err(kvm("KVM_SET_SREGS"))?;
        fd.set_regs(&self.regs).map_err(kvm("KVM_SET_REGS"))?;
        // XCR0 says which XSAVE components are live.
        fd.set_xcrs(&self.xcrs).map_err(kvm("KVM_SET_XCRS"))?;
        // SAFETY: the area is a whole `kvm_xsave`, and Ember never enables dynamic XSAVE
        // features (arch_prctl ARCH_REQ_XCOMP_GUEST_PERM), so KVM reads only its 4 KiB.
        unsafe { fd.set_xsave(&self.xsave.0) }.map_err(kvm("KVM_SET_XSAVE"))?;
        fd.set_debug_regs(&self.debugregs)
            .map_err(kvm("KVM_SET_DEBUGREGS"))?;
        // Before the MSRs: a TSC-deadline write only arms the timer of a LAPIC in that mode.
        fd.set_lapic(&self.lapic).map_err(kvm("KVM_SET_LAPIC"))?;
        write_msrs(fd, &self.msrs)?;
        fd.set_mp_state(self.mp_state)
            .map_err(kvm("KVM_SET_MP_STATE"))?;
        // Last: KVM_SET_REGS and KVM_SET_SREGS drop or rewrite pending exceptions and
        // interrupts, and the MP state may latch an INIT; the events put back what was pending.
        fd.set_vcpu_events(&self.events)
            .map_err(kvm("KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }

    /// KVM refuses a CPUID change once the vCPU has run, so restoring onto the same vCPU
    /// sets it only if it differs (it never does there); a fresh vCPU has none yet.
    fn restore_cpuid(&self, fd: &VcpuFd) -> Result<(), VcpuStateError> {
        let current = fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("KVM_GET_CPUID2"))?;
        if current.as_slice() == self.cpuid.as_slice() {
            return Ok(());
        }
        let cpuid = CpuId::from_entries(&self.cpuid)?;
        fd.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))
    }

    /// Only a different rate is set: KVM needs TSC scaling for that, which the same host
    /// does not need (and KVM itself accepts rates within its tolerance of the host's).
    fn restore_tsc_khz(&self, fd: &VcpuFd) -> Result<(), VcpuStateError> {
        let Some(khz) = self.tsc_khz else {
            return Ok(());
        };
        if fd.get_tsc_khz().ok() == Some(khz) {
            return Ok(());
        }
        fd.set_tsc_khz(khz).map_err(kvm("KVM_SET_TSC_KHZ"))
    }

    /// This state without the readings of running clocks (the TSC, the LAPIC timer's
    /// current count), which differ between any two saves: what a round trip must keep.
    pub fn without_clock_readings(&self) -> Self {
        let mut state = self.clone();
        for msr in state.msrs.iter_mut() {
            if msr.index == MSR_IA32_TSC {
                msr.data = 0;
            }
        }
        state.lapic.regs[APIC_TMCCT..APIC_TMCCT + 4].fill(0);
        state
    }
}
