//! Round trips of the vCPU and VM state on VMs with no guest running: built as the builder
//! builds them, saved, restored into a fresh VM, saved again.
//!
//! They need a KVM that lets this process create VMs and vCPUs (a PVM host's `/dev/kvm`
//! does; so does the lab's).

use super::kvm::open_kvm;
use super::memory::create_guest_memory;
use super::vcpu::configure_vcpu;
use super::vcpu_state::{msrs_to_save, VcpuState};
use super::vm::Vm;
use super::vm_state::VmState;
use crate::arch::x86_64::cpuid::CpuTopology;
use crate::arch::x86_64::regs::{BootProtocol, EntryPoint};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::GuestAddress;

const VCPUS: u8 = 2;

/// A VM with `VCPUS` vCPUs configured for a 64-bit Linux entry at 1 MiB.
fn configured_vm(kvm: &Kvm) -> (Vm, Vec<VcpuFd>) {
    let memory = create_guest_memory(64).unwrap();
    let vm = Vm::new(kvm, memory.clone()).unwrap();
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let topology = CpuTopology {
        vcpu_count: VCPUS,
        smt: false,
        tsc_deadline: false,
    };
    let entry = EntryPoint {
        address: GuestAddress(0x10_0000),
        protocol: BootProtocol::Linux64,
    };
    let vcpus = (0..VCPUS)
        .map(|index| {
            let fd = vm.create_vcpu(index).unwrap();
            let entry = (index == 0).then_some(entry);
            configure_vcpu(&fd, index, &cpuid, topology, &memory, entry).unwrap();
            fd
        })
        .collect();
    (vm, vcpus)
}

fn save(vm: &Vm, vcpus: &[VcpuFd], msrs: &[u32]) -> (VmState, Vec<VcpuState>) {
    let states = vcpus
        .iter()
        .map(|fd| VcpuState::save(fd, msrs).unwrap())
        .collect();
    (vm.save_state().unwrap(), states)
}

fn tsc(state: &VcpuState) -> u64 {
    let tsc = state.msrs.iter().find(|m| m.index == 0x10);
    tsc.expect("the TSC is saved").data
}

#[test]
fn vcpu_and_vm_state_survive_a_restore_into_a_fresh_vm() {
    let kvm = open_kvm().unwrap();
    let msrs = msrs_to_save(&kvm).unwrap();
    let (vm, vcpus) = configured_vm(&kvm);
    let (vm_state, vcpu_states) = save(&vm, &vcpus, &msrs);

    let (fresh_vm, fresh_vcpus) = configured_vm(&kvm);
    fresh_vm.restore_state(&vm_state).unwrap();
    for (fd, state) in fresh_vcpus.iter().zip(&vcpu_states) {
        state.restore(fd).unwrap();
    }
    let (vm_again, vcpus_again) = save(&fresh_vm, &fresh_vcpus, &msrs);

    assert_eq!(
        vm_again.without_clock_readings(),
        vm_state.without_clock_readings()
    );
    for (index, (again, first)) in vcpus_again.iter().zip(&vcpu_states).enumerate() {
        let (x, y) = (
            again.without_clock_readings(),
            first.without_clock_readings(),
        );
        let msrs: Vec<_> = x.msrs.iter().zip(&y.msrs).filter(|(m, n)| m != n).collect();
        assert!(msrs.is_empty(), "vCPU {index}: MSRs differ: {msrs:x?}");
        assert_eq!(x.msrs.len(), y.msrs.len(), "vCPU {index}");
        assert_eq!(
            again.without_clock_readings(),
            first.without_clock_readings(),
            "vCPU {index}"
        );
        // The TSC goes on from the saved value: never back.
        assert!(tsc(again) >= tsc(first), "vCPU {index}");
    }
    assert!(vm_again.clock.clock >= vm_state.clock.clock);
}

#[test]
fn the_boot_vcpu_state_is_the_one_the_builder_set() {
    let kvm = open_kvm().unwrap();
    let msrs = msrs_to_save(&kvm).unwrap();
    let (_vm, vcpus) = configured_vm(&kvm);
    let state = VcpuState::save(&vcpus[0], &msrs).unwrap();
    assert_eq!(state.regs.rip, 0x10_0000);
    assert_eq!(state.regs.rsi, crate::arch::x86_64::layout::ZERO_PAGE_START);
    assert!(!state.cpuid.is_empty());
    // SYSENTER_CS and LSTAR (set by the builder), the TSC and the KVM clock's system time
    // (MSR_KVM_SYSTEM_TIME_NEW) are among the saved MSRs.
    for index in [0x174, 0xc000_0082, 0x10, 0x4b56_4d01] {
        assert!(state.msrs.iter().any(|m| m.index == index), "{index:#x}");
    }
}

#[test]
fn states_survive_serde() {
    let kvm = open_kvm().unwrap();
    let msrs = msrs_to_save(&kvm).unwrap();
    let (vm, vcpus) = configured_vm(&kvm);
    let (vm_state, vcpu_states) = save(&vm, &vcpus, &msrs);
    let json = serde_json::to_string(&(&vm_state, &vcpu_states)).unwrap();
    let (vm_back, vcpus_back): (VmState, Vec<VcpuState>) = serde_json::from_str(&json).unwrap();
    assert_eq!(vm_back, vm_state);
    assert_eq!(vcpus_back, vcpu_states);
}

#[test]
fn msrs_the_vcpu_cannot_read_are_left_out() {
    let kvm = open_kvm().unwrap();
    let (_vm, vcpus) = configured_vm(&kvm);
    // No CPU has MSRs at 0xdead_beef: KVM_GET_MSRS stops there, and the rest is still read.
    let state = VcpuState::save(&vcpus[0], &[0x174, 0xdead_beef, 0x10]).unwrap();
    let saved: Vec<u32> = state.msrs.iter().map(|m| m.index).collect();
    assert_eq!(saved, [0x174, 0x10]);
}
