//! Why a vCPU's state could not be saved or restored (shared by `vcpu_state` and `msrs`).

#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    #[error("{0} failed: {1}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    #[error("cannot size an MSR or CPUID list: {0:?}")]
    List(vmm_sys_util::fam::Error),
    #[error("KVM did not accept MSR {index:#x} (after {written} of {wanted})")]
    PartialMsrs {
        index: u32,
        written: usize,
        wanted: usize,
    },
    #[error("a vCPU's state is saved or restored only while it is paused")]
    NotPaused,
}

impl From<vmm_sys_util::fam::Error> for VcpuStateError {
    fn from(e: vmm_sys_util::fam::Error) -> Self {
        VcpuStateError::List(e)
    }
}

/// Names the ioctl in the error, since every KVM failure is just an errno.
pub(super) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuStateError {
    move |e| VcpuStateError::Kvm(op, e)
}
