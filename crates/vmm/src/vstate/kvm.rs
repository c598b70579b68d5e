//! Opening `/dev/kvm`, the capabilities Ember needs, and recognising a PVM host.

use kvm_ioctls::{Cap, Kvm};
use std::fs::File;
use std::os::unix::fs::FileExt;
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
/// KVM internal error early in boot. `kernel` is the image at `path`, already opened and
/// checked to be a regular file.
pub fn check_kernel_for_host(path: &Path, kernel: &File) -> Result<(), KvmError> {
    if !host_is_pvm() || kernel_mentions_pvm(kernel) {
        return Ok(());
    }
    Err(KvmError::PvmKernelRequired(path.display().to_string()))
}

/// Names only a PVM-enabled guest kernel carries: its early PVM setup and its hypervisor
/// descriptor. (A bare `pvm_` is not enough: mm/vmalloc.c has `pvm_find_va_enclose_addr`.)
const PVM_GUEST_MARKERS: [&[u8]; 2] = [b"pvm_early_setup", b"x86_hyper_pvm"];
/// ELF section type of a symbol table.
const SHT_SYMTAB: u32 = 2;
/// The largest symbol string table read; a vmlinux's is a few MiB.
const MAX_STRTAB_BYTES: u64 = 64 << 20;

/// Looks for the PVM guest markers among the symbol names of an ELF vmlinux.
///
/// Only the symbol string table is read (found through the section headers), never the
/// whole file: a client may name a huge or sparse file. A kernel without one (a bzImage,
/// whose kernel is compressed, or a stripped vmlinux) cannot be told to be PVM-enabled.
fn kernel_mentions_pvm(kernel: &File) -> bool {
    match symbol_names(kernel) {
        Ok(Some(names)) => PVM_GUEST_MARKERS
            .iter()
            .any(|marker| names.windows(marker.len()).any(|w| w == *marker)),
        Ok(None) | Err(_) => false,
    }
}

/// The bytes of an ELF64 file's symbol string table, if it has one.
fn symbol_names(file: &File) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0)?;
    if header[..5] != *b"\x7fELF\x02" {
        return Ok(None);
    }
    let sh_offset = u64_at(&header, 0x28);
    let (entry_size, count) = (u16_at(&header, 0x3a), u16_at(&header, 0x3c));
    if entry_size < 64 {
        return Ok(None);
    }
    let section = |index: u64| -> std::io::Result<[u8; 64]> {
        let mut entry = [0u8; 64];
        let at = index
            .checked_mul(entry_size)
            .and_then(|o| o.checked_add(sh_offset))
            .ok_or(std::io::ErrorKind::InvalidData)?;
        file.read_exact_at(&mut entry, at)?;
        Ok(entry)
    };
    for index in 0..count {
        let symtab = section(index)?;
        if u32_at(&symtab, 4) != SHT_SYMTAB {
            continue;
        }
        let strtab = section(u64::from(u32_at(&symtab, 40)))?;
        let (offset, size) = (u64_at(&strtab, 24), u64_at(&strtab, 32));
        let mut names = vec![0u8; size.min(MAX_STRTAB_BYTES) as usize];
        file.read_exact_at(&mut names, offset)?;
        return Ok(Some(names));
    }
    Ok(None)
}

fn u16_at(bytes: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vmm_sys_util::tempfile::TempFile;

    /// A minimal ELF64 file: a header, three section headers (null, symtab, strtab) and the
    /// string table `names`.
    fn elf_with_symbol_names(names: &[u8]) -> TempFile {
        let mut bytes = vec![0u8; 64 + 3 * 64];
        bytes[..5].copy_from_slice(b"\x7fELF\x02");
        bytes[0x28..0x30].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        bytes[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        let symtab = 64 + 64;
        bytes[symtab + 4..symtab + 8].copy_from_slice(&2u32.to_le_bytes());
        bytes[symtab + 40..symtab + 44].copy_from_slice(&2u32.to_le_bytes());
        let strtab = 64 + 2 * 64;
        bytes[strtab + 24..strtab + 32].copy_from_slice(&(256u64).to_le_bytes());
        bytes[strtab + 32..strtab + 40].copy_from_slice(&(names.len() as u64).to_le_bytes());
        bytes.extend_from_slice(names);
        let file = TempFile::new().unwrap();
        file.as_file().write_all(&bytes).unwrap();
        file
    }

    #[test]
    fn finds_markers_in_the_symbol_names_only() {
        let pvm = elf_with_symbol_names(b"\0start_kernel\0pvm_early_setup\0");
        assert!(kernel_mentions_pvm(pvm.as_file()));
        let plain = elf_with_symbol_names(b"\0start_kernel\0pvm_find_va_enclose_addr\0");
        assert!(!kernel_mentions_pvm(plain.as_file()));
    }

    #[test]
    fn files_without_a_symbol_table_are_not_pvm() {
        let garbage = TempFile::new().unwrap();
        garbage.as_file().write_all(&[0xff; 300]).unwrap();
        assert!(!kernel_mentions_pvm(garbage.as_file()));
        let empty = TempFile::new().unwrap();
        assert!(!kernel_mentions_pvm(empty.as_file()));
    }

    #[test]
    fn a_huge_sparse_file_is_not_read_through() {
        let sparse = elf_with_symbol_names(b"\0x86_hyper_pvm\0");
        sparse.as_file().set_len(1 << 40).unwrap();
        let started = std::time::Instant::now();
        assert!(kernel_mentions_pvm(sparse.as_file()));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
