//! Whether this host's CPU can run a snapshot's guest: every feature bit the guest was shown
//! must be one this host's KVM can offer, or the restored guest would use an instruction the
//! CPU lacks.

use kvm_bindings::kvm_cpuid_entry2;

/// (leaf, subleaf) pairs whose registers are feature bit masks.
const FEATURE_LEAVES: [(u32, u32); 4] = [(1, 0), (7, 0), (7, 1), (0x8000_0001, 0)];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "this host's CPU lacks features the snapshot's guest was given: CPUID leaf {leaf:#x} \
     subleaf {subleaf} {register} bits {missing:#x}"
)]
pub struct MissingCpuFeatures {
    pub leaf: u32,
    pub subleaf: u32,
    pub register: &'static str,
    pub missing: u32,
}

/// Checks the guest's CPUID (`saved`) against what this host's KVM supports (`host`).
pub fn check_cpu_features(
    saved: &[kvm_cpuid_entry2],
    host: &[kvm_cpuid_entry2],
) -> Result<(), MissingCpuFeatures> {
    let find = |entries: &[kvm_cpuid_entry2], leaf: u32, subleaf: u32| {
        entries
            .iter()
            .find(|e| e.function == leaf && (e.index == subleaf || subleaf == 0))
            .copied()
    };
    for (leaf, subleaf) in FEATURE_LEAVES {
        let Some(guest) = find(saved, leaf, subleaf) else {
            continue;
        };
        let host = find(host, leaf, subleaf).unwrap_or_default();
        for (register, g, h) in [
            ("ebx", guest.ebx, host.ebx),
            ("ecx", guest.ecx, host.ecx),
            ("edx", guest.edx, host.edx),
        ] {
            // Leaf 1 EBX holds the APIC id and counts, not features.
            if leaf == 1 && register == "ebx" {
                continue;
            }
            let ignored = not_host_features(leaf, subleaf, register);
            let missing = g & !h & !ignored;
            if missing != 0 {
                return Err(MissingCpuFeatures {
                    leaf,
                    subleaf,
                    register,
                    missing,
                });
            }
        }
    }
    Ok(())
}

/// Bits of a saved guest CPUID that are not host features: KVM updates some as the guest
/// runs (OSXSAVE and OSPKE follow its CR4, APIC its APIC-base MSR, MONITOR its MISC_ENABLE),
/// Ember sets one (running under a hypervisor) and one describes topology (HTT).
fn not_host_features(leaf: u32, subleaf: u32, register: &str) -> u32 {
    match (leaf, subleaf, register) {
        (1, _, "ecx") => (1 << 31) | (1 << 27) | (1 << 3),
        (1, _, "edx") => (1 << 28) | (1 << 9),
        (7, 0, "ecx") => 1 << 4,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ecx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn a_guest_feature_the_host_lacks_is_named() {
        let host = [entry(1, 0, 0b0111, 0xff), entry(7, 0, 0, 0)];
        let fits = [entry(1, 0, 0b0101 | 1 << 31, 0x0f)];
        assert_eq!(check_cpu_features(&fits, &host), Ok(()));
        let too_much = [entry(1, 0, 0b0101, 0x0f), entry(7, 0, 0b1000, 0)];
        let err = check_cpu_features(&too_much, &host).unwrap_err();
        assert_eq!((err.leaf, err.register, err.missing), (7, "ecx", 0b1000));
    }
}
