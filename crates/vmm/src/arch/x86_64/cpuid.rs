//! CPUID as each vCPU sees it: what KVM supports, with this vCPU's APIC id, a topology that
//! matches the VM's vCPU count, the hypervisor bit, and nothing the VMM does not back.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_THERMAL_POWER: u32 = 0x6;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZE_IDS: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC: u32 = 0x8000_001e;

const ECX_MONITOR: u32 = 1 << 3;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// The shape of the VM as CPUID describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTopology {
    pub vcpu_count: u8,
    /// Two threads per core when true.
    pub smt: bool,
    /// The in-kernel LAPIC can run its timer in TSC-deadline mode.
    pub tsc_deadline: bool,
}

impl CpuTopology {
    fn threads_per_core(&self) -> u32 {
        if self.smt && self.vcpu_count > 1 {
            2
        } else {
            1
        }
    }

    /// Bits of the APIC id that number threads inside a core, and CPUs inside the package.
    fn shifts(&self) -> (u32, u32) {
        let thread_shift = self.threads_per_core().trailing_zeros();
        let package_shift = u32::from(self.vcpu_count)
            .next_power_of_two()
            .trailing_zeros();
        (thread_shift, package_shift.max(thread_shift))
    }
}

/// Adjusts the KVM-supported `cpuid` for the vCPU with `cpu_index`.
pub fn normalize_cpuid(cpuid: &mut CpuId, cpu_index: u8, topology: CpuTopology) {
    for entry in cpuid.as_mut_slice().iter_mut() {
        normalize_entry(entry, u32::from(cpu_index), topology);
    }
}

fn normalize_entry(entry: &mut kvm_cpuid_entry2, apic_id: u32, topology: CpuTopology) {
    let count = u32::from(topology.vcpu_count);
    let (thread_shift, package_shift) = topology.shifts();
    match entry.function {
        LEAF_FEATURES => {
            // APIC id, logical processor count, CLFLUSH line size in 8-byte units.
            entry.ebx = (apic_id << 24) | (count << 16) | (8 << 8);
            entry.ecx |= ECX_HYPERVISOR;
            entry.ecx &= !ECX_MONITOR;
            if topology.tsc_deadline {
                entry.ecx |= ECX_TSC_DEADLINE;
            }
            if count > 1 {
                entry.edx |= EDX_HTT;
            } else {
                entry.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE_PARAMS => {
            let cores = (count / topology.threads_per_core()).max(1);
            entry.eax &= 0x3fff; // keep cache type/level; set sharing below
            entry.eax |= (cores - 1) << 26;
            entry.eax |= (topology.threads_per_core() - 1) << 14;
        }
        // Thermal and power management are not emulated.
        LEAF_THERMAL_POWER => (entry.eax, entry.ebx, entry.ecx, entry.edx) = (0, 0, 0, 0),
        LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
            normalize_topology_level(entry, apic_id, count, thread_shift, package_shift, topology)
        }
        LEAF_AMD_SIZE_IDS => {
            entry.ecx = (entry.ecx & !0xff) | (count - 1);
        }
        LEAF_AMD_EXT_APIC => {
            entry.eax = apic_id;
            entry.ebx = ((topology.threads_per_core() - 1) << 8) | (apic_id >> thread_shift);
            entry.ecx = 0;
        }
        _ => {}
    }
}

fn normalize_topology_level(
    entry: &mut kvm_cpuid_entry2,
    apic_id: u32,
    count: u32,
    thread_shift: u32,
    package_shift: u32,
    topology: CpuTopology,
) {
    entry.edx = apic_id;
    match entry.index {
        // SMT level
        0 => {
            entry.eax = thread_shift;
            entry.ebx = topology.threads_per_core();
            entry.ecx = 1 << 8;
        }
        // Core level: everything in one package
        1 => {
            entry.eax = package_shift;
            entry.ebx = count;
            entry.ecx = (2 << 8) | 1;
        }
        level => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = level & 0xff;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn cpuid() -> CpuId {
        CpuId::from_entries(&[
            leaf(1, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(6, 0),
        ])
        .unwrap()
    }

    const FOUR: CpuTopology = CpuTopology {
        vcpu_count: 4,
        smt: false,
        tsc_deadline: true,
    };

    #[test]
    fn leaf_1_carries_apic_id_count_and_hypervisor_bit() {
        let mut ids = cpuid();
        normalize_cpuid(&mut ids, 3, FOUR);
        let leaf1 = ids.as_slice()[0];
        assert_eq!(leaf1.ebx >> 24, 3);
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4);
        assert_ne!(leaf1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(leaf1.ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(leaf1.edx & EDX_HTT, 0);
    }

    #[test]
    fn topology_leaf_describes_the_package() {
        let mut ids = cpuid();
        normalize_cpuid(&mut ids, 2, FOUR);
        let smt = ids.as_slice()[1];
        let core = ids.as_slice()[2];
        let invalid = ids.as_slice()[3];
        assert_eq!((smt.eax, smt.ebx, smt.edx), (0, 1, 2));
        assert_eq!((core.eax, core.ebx, core.ecx >> 8), (2, 4, 2));
        assert_eq!((invalid.ebx, invalid.ecx >> 8), (0, 0));
    }

    #[test]
    fn smt_doubles_threads_per_core() {
        let mut ids = cpuid();
        normalize_cpuid(&mut ids, 1, CpuTopology { smt: true, ..FOUR });
        let smt = ids.as_slice()[1];
        assert_eq!((smt.eax, smt.ebx), (1, 2));
    }

    #[test]
    fn single_vcpu_has_no_htt() {
        let mut ids = cpuid();
        normalize_cpuid(
            &mut ids,
            0,
            CpuTopology {
                vcpu_count: 1,
                smt: false,
                tsc_deadline: false,
            },
        );
        assert_eq!(ids.as_slice()[0].edx & EDX_HTT, 0);
        assert_eq!(ids.as_slice()[4].eax, 0);
    }
}
