//! Opening `/dev/kvm`, the capabilities Ember needs, and recognising a PVM host.

use kvm_ioctls::{Cap, Kvm};
use std::io::Read;
use std::path::Path;

/// Where the `kvm_pvm` module announces itself when it provides `/dev/kvm`.
const PVM_MODULE_PATH: &str = "/sys/module/kvm_pvm";
/// Capabilities a VM cannot boot without.
const REQUIRED_CAPS: [(Cap, &str); 5] = [
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
];

#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("cannot open /dev/kvm: {0} (is KVM enabled and do you have access to /dev/kvm?)")]
    Open(kvm_ioctls::Error),
    #[error("KVM API version {0} is not the supported version 12")]
    ApiVersion(i32),
    #[error("/dev/kvm lacks the required capability {0}")]
    MissingCap(&'static str),
    #[error(
        "this host's /dev/kvm is PVM (kvm_pvm), which boots only PVM-enabled guest kernels, and \
         {0} is not one: run Ember under tools/kvm-lab or on a host with VMX/SVM"
    )]
    PvmKernelRequired(String),
}

/// Opens `/dev/kvm` and checks that it can run an Ember VM.
pub fn open_kvm() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(KvmError::Open)?;
    let version = kvm.get_api_version();
    if version != kvm_bindings::KVM_API_VERSION as i32 {
        return Err(KvmError::ApiVersion(version));
    }
    for (cap, name) in REQUIRED_CAPS {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCap(name));
        }
    }
    Ok(kvm)
}

/// True when `/dev/kvm` is provided by PVM rather than hardware virtualisation.
pub fn host_is_pvm() -> bool {
    Path::new(PVM_MODULE_PATH).exists()
}

/// On a PVM host, refuses kernels that are not PVM-enabled, which would otherwise die with a
/// KVM internal error early in boot.
pub fn check_kernel_for_host(kernel: &Path) -> Result<(), KvmError> {
    if !host_is_pvm() || kernel_mentions_pvm(kernel) {
        return Ok(());
    }
    Err(KvmError::PvmKernelRequired(kernel.display().to_string()))
}

/// Names only a PVM-enabled guest kernel carries: its early PVM setup and its hypervisor
/// descriptor. (A bare `pvm_` is not enough: mm/vmalloc.c has `pvm_find_va_enclose_addr`.)
const PVM_GUEST_MARKERS: [&[u8]; 2] = [b"pvm_early_setup", b"x86_hyper_pvm"];

/// Scans the kernel image for PVM guest markers. (An unreadable file is left for the kernel
/// loader to report.)
fn kernel_mentions_pvm(kernel: &Path) -> bool {
    PVM_GUEST_MARKERS
        .iter()
        .any(|marker| match std::fs::File::open(kernel) {
            Ok(file) => contains_marker(file, marker),
            Err(_) => true,
        })
}

fn contains_marker(mut reader: impl Read, marker: &[u8]) -> bool {
    let mut buffer = vec![0u8; 1 << 16];
    let mut carried = 0;
    loop {
        let Ok(read) = reader.read(&mut buffer[carried..]) else {
            return false;
        };
        if read == 0 {
            return false;
        }
        let filled = carried + read;
        if buffer[..filled].windows(marker.len()).any(|w| w == marker) {
            return true;
        }
        // Keep the tail so a marker split across reads is still found.
        carried = (marker.len() - 1).min(filled);
        buffer.copy_within(filled - carried..filled, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out data a few bytes at a time, to split markers across reads.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(3).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn finds_markers_split_across_reads() {
        assert!(contains_marker(Trickle(b"xxxxpvm_init yyy"), b"pvm_"));
        assert!(!contains_marker(Trickle(b"xxxxpvxm_init yyy"), b"pvm_"));
        assert!(!contains_marker(Trickle(b""), b"pvm_"));
    }
}
