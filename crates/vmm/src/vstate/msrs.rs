//! Which MSRs a vCPU's saved state holds, and reading and writing them in the chunks KVM
//! takes (KVM_GET_MSRS/KVM_SET_MSRS handle at most KVM_MAX_MSR_ENTRIES at a time).

use super::state_error::{kvm, VcpuStateError};
use kvm_bindings::{kvm_msr_entry, Msrs, KVM_MAX_MSR_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};

/// Arms the LAPIC timer relative to the TSC, so it is written after MSR_IA32_TSC.
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// Hyper-V's synthetic MSRs. Ember's CPUID advertises no Hyper-V interface, so the guest
/// never uses them; yet KVM lists them and lets the host read them, and some are running
/// counters (the reference time counter, the vCPU's run time).
const HYPERV_MSRS: std::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_00ff;

/// The MSRs KVM can save and restore (KVM_GET_MSR_INDEX_LIST: the hardware MSRs it
/// virtualises and those it emulates, the KVM clock's among them), in restore order.
///
/// A listed MSR may still be unreadable on a given vCPU (its feature hidden from the guest's
/// CPUID); [`read_msrs`] leaves those out, so the list needs no table of exceptions.
pub fn msrs_to_save(kvm_fd: &Kvm) -> Result<Vec<u32>, VcpuStateError> {
    let list = kvm_fd
        .get_msr_index_list()
        .map_err(kvm("KVM_GET_MSR_INDEX_LIST"))?;
    let mut indices: Vec<u32> = list
        .as_slice()
        .iter()
        .copied()
        .filter(|index| !HYPERV_MSRS.contains(index))
        .collect();
    // KVM decides whether a deadline is already due from the TSC at the time of the write.
    if let Some(at) = indices.iter().position(|&i| i == MSR_IA32_TSC_DEADLINE) {
        let deadline = indices.remove(at);
        indices.push(deadline);
    }
    Ok(indices)
}

/// Reads the MSRs in `indices` that this vCPU can read, in that order.
pub(super) fn read_msrs(
    fd: &VcpuFd,
    indices: &[u32],
) -> Result<Vec<kvm_msr_entry>, VcpuStateError> {
    let mut saved = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries)?;
        let read = fd
            .get_msrs(&mut msrs)
            .map_err(kvm("KVM_GET_MSRS"))?
            .min(chunk.len());
        saved.extend_from_slice(&msrs.as_slice()[..read]);
        // KVM stops at the first MSR it cannot read: that one is skipped, the rest retried.
        rest = &rest[(read + 1).min(chunk.len())..];
    }
    Ok(saved)
}

/// Writes every entry, in order; an MSR KVM refuses is an error naming it.
pub(super) fn write_msrs(fd: &VcpuFd, entries: &[kvm_msr_entry]) -> Result<(), VcpuStateError> {
    for (at, chunk) in entries.chunks(KVM_MAX_MSR_ENTRIES).enumerate() {
        let msrs = Msrs::from_entries(chunk)?;
        let written = fd.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
        if written < chunk.len() {
            return Err(VcpuStateError::PartialMsrs {
                index: chunk[written].index,
                written: at * KVM_MAX_MSR_ENTRIES + written,
                wanted: entries.len(),
            });
        }
    }
    Ok(())
}
