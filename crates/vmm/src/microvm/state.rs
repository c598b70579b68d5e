//! Saving a paused microVM's vCPU and VM (KVM) state, and putting it back.
//!
//! Guest memory and device state are not part of it: with them, the same calls restore a
//! VM into a freshly built one (the snapshot work builds on this).

use super::{MicroVm, MicroVmError, VmState};
use crate::vstate::vcpu::{VcpuCommand, VcpuResponse, VcpuResponseKind};
use crate::vstate::vcpu_state::VcpuState;
use serde::{Deserialize, Serialize};

/// Env variable of the debug-build test hook, see [`MicroVm::test_hook_state_round_trip`].
pub const STATE_ROUND_TRIP_HOOK: &str = "EMBER_TEST_STATE_ROUND_TRIP";
/// A timer that fires between the restore and the second save changes the LAPIC: try again.
#[cfg(debug_assertions)]
const ROUND_TRIP_ATTEMPTS: usize = 3;

/// The KVM state of every vCPU (in vCPU order) and of the VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VcpusAndVmState {
    pub vcpus: Vec<VcpuState>,
    pub vm: crate::vstate::vm_state::VmState,
}

impl VcpusAndVmState {
    /// Without readings of running clocks: what a save, restore, save round trip keeps.
    pub fn without_clock_readings(&self) -> Self {
        VcpusAndVmState {
            vcpus: self
                .vcpus
                .iter()
                .map(VcpuState::without_clock_readings)
                .collect(),
            vm: self.vm.without_clock_readings(),
        }
    }
}

impl MicroVm {
    /// Saves every vCPU's state, then the VM's. The VM must be paused.
    pub fn save_vcpus_and_vm(&self) -> Result<VcpusAndVmState, MicroVmError> {
        self.require_paused()?;
        let responses = self.command_all(|_| VcpuCommand::SaveState)?;
        let vcpus = responses
            .into_iter()
            .map(|response| match response.kind {
                VcpuResponseKind::Saved(state) => Ok(*state),
                _ => Err(unexpected(response, "save state")),
            })
            .collect::<Result<_, _>>()?;
        let vm = self.vm.save_state()?;
        Ok(VcpusAndVmState { vcpus, vm })
    }

    /// Puts `state` onto this paused VM, which has as many vCPUs: the VM's first (see
    /// [`crate::vstate::vm::Vm::restore_state`]), then each vCPU's, on its own thread.
    pub fn restore_vcpus_and_vm(&self, state: &VcpusAndVmState) -> Result<(), MicroVmError> {
        self.require_paused()?;
        if state.vcpus.len() != self.vcpus.len() {
            return Err(MicroVmError::VcpuCount {
                saved: state.vcpus.len(),
                present: self.vcpus.len(),
            });
        }
        self.vm.restore_state(&state.vm)?;
        let restore =
            |index: usize| VcpuCommand::RestoreState(Box::new(state.vcpus[index].clone()));
        for response in self.command_all(restore)? {
            if !matches!(response.kind, VcpuResponseKind::Restored) {
                return Err(unexpected(response, "restore state"));
            }
        }
        Ok(())
    }

    fn require_paused(&self) -> Result<(), MicroVmError> {
        match self.state {
            VmState::Paused => Ok(()),
            VmState::Running => Err(MicroVmError::NotPaused),
        }
    }

    /// Debug builds only, for the lab test `tests/state.rs`: with [`STATE_ROUND_TRIP_HOOK`]
    /// set, each pause saves the state, restores it onto the same VM and saves it again,
    /// and logs whether the two saves match (clock readings aside). Release builds ignore
    /// the variable.
    pub(super) fn test_hook_state_round_trip(&self) {
        #[cfg(debug_assertions)]
        if std::env::var_os(STATE_ROUND_TRIP_HOOK).is_some() {
            match self.state_round_trip() {
                Ok(attempt) => log::info!("state round trip: equal (attempt {attempt})"),
                Err(e) => log::error!("state round trip: {e}"),
            }
        }
    }

    #[cfg(debug_assertions)]
    fn state_round_trip(&self) -> Result<usize, String> {
        for attempt in 1..=ROUND_TRIP_ATTEMPTS {
            let saved = self.save_vcpus_and_vm().map_err(|e| e.to_string())?;
            self.restore_vcpus_and_vm(&saved)
                .map_err(|e| e.to_string())?;
            let again = self.save_vcpus_and_vm().map_err(|e| e.to_string())?;
            let (saved, again) = (
                saved.without_clock_readings(),
                again.without_clock_readings(),
            );
            if saved == again {
                return Ok(attempt);
            }
            log::warn!(
                "state round trip attempt {attempt}: {}",
                differences(&saved, &again)
            );
        }
        Err(format!("differs after {ROUND_TRIP_ATTEMPTS} attempts"))
    }
}

/// Which parts of two states differ, for the test hook's log.
#[cfg(debug_assertions)]
fn differences(a: &VcpusAndVmState, b: &VcpusAndVmState) -> String {
    let mut parts = Vec::new();
    if a.vm != b.vm {
        parts.push(format!("VM state differs: {:?} vs {:?}", a.vm, b.vm));
    }
    for (index, (x, y)) in a.vcpus.iter().zip(&b.vcpus).enumerate() {
        let fields = [
            ("cpuid", x.cpuid == y.cpuid),
            ("msrs", x.msrs == y.msrs),
            ("tsc_khz", x.tsc_khz == y.tsc_khz),
            ("regs", x.regs == y.regs),
            ("sregs", x.sregs == y.sregs),
            ("xsave", x.xsave == y.xsave),
            ("xcrs", x.xcrs == y.xcrs),
            ("debugregs", x.debugregs == y.debugregs),
            ("lapic", x.lapic == y.lapic),
            ("mp_state", x.mp_state == y.mp_state),
            ("events", x.events == y.events),
        ];
        for (name, _) in fields.iter().filter(|(_, same)| !same) {
            parts.push(format!("vCPU {index} {name}"));
        }
        let msrs = x.msrs.iter().zip(&y.msrs).filter(|(m, n)| m != n);
        parts.extend(
            msrs.map(|(m, n)| format!("MSR {:#x}: {:#x} vs {:#x}", m.index, m.data, n.data)),
        );
    }
    parts.join(", ")
}

fn unexpected(response: VcpuResponse, command: &'static str) -> MicroVmError {
    MicroVmError::UnexpectedResponse {
        index: response.index,
        command,
        answer: response.kind.name(),
    }
}
