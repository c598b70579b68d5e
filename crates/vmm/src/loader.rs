//! Loading the guest's kernel (ELF vmlinux or bzImage), initrd and command line with
//! linux-loader, and deciding how the kernel is entered.

use crate::arch::x86_64::boot_params::InitrdRegion;
use crate::arch::x86_64::layout::{CMDLINE_START, HIMEM_START, MMIO_GAP_START};
use crate::arch::x86_64::regs::{BootProtocol, EntryPoint};
use crate::config::MAX_CMDLINE_LEN;
use crate::host_file::{self, HostFileError};
use crate::vstate::memory::GuestMemory;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::{Elf, Error as ElfError, PvhBootCapability};
use linux_loader::loader::{self, BzImage, KernelLoader, KernelLoaderResult};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// The 64-bit entry point of a bzImage sits 0x200 bytes into its protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Kernels without a setup header (ELF) accept an initrd anywhere below 2 GiB.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;
const PAGE_SIZE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("The kernel file {path} cannot be opened: {source}")]
    OpenKernel {
        path: PathBuf,
        source: HostFileError,
    },
    #[error("The kernel file {path} cannot be read: {source}")]
    ReadKernel {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("The kernel file {path} is empty")]
    EmptyKernel { path: PathBuf },
    #[error("The kernel file {path} is not a kernel: it is neither an ELF vmlinux nor a bzImage")]
    NotAKernelHeader { path: PathBuf },
    #[error("{path} is not a kernel: neither an ELF vmlinux nor a bzImage ({elf}; {bzimage})")]
    NotAKernel {
        path: PathBuf,
        elf: loader::Error,
        bzimage: loader::Error,
    },
    #[error("cannot load ELF kernel {path}: {source}")]
    Elf {
        path: PathBuf,
        source: loader::Error,
    },
    #[error("The initrd file {path} cannot be opened: {source}")]
    OpenInitrd {
        path: PathBuf,
        source: HostFileError,
    },
    #[error("The initrd file {path} is empty")]
    EmptyInitrd { path: PathBuf },
    #[error("initrd {path} ({size} bytes) does not fit in guest memory below {limit:#x} after the kernel")]
    InitrdTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot copy initrd {path} into guest memory: {source}")]
    ReadInitrd {
        path: PathBuf,
        source: vm_memory::GuestMemoryError,
    },
    #[error("invalid kernel command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    #[error("cannot write the kernel command line to guest memory: {0}")]
    WriteCmdline(loader::Error),
}

/// What loading the kernel produced.
pub struct LoadedKernel {
    pub entry: EntryPoint,
    /// The bzImage's setup header (None for ELF).
    pub setup_header: Option<setup_header>,
    /// First guest address after the kernel image.
    pub end: u64,
}

/// Where a bzImage's setup header says "HdrS".
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;

/// Opens the kernel at `path` and checks, from its first bytes only, that it looks like an
/// ELF or a bzImage: what `PUT /boot-source` checks at once, and the start again (the file
/// may have changed in between).
pub fn open_kernel(path: &Path) -> Result<File, LoaderError> {
    let file = host_file::open_regular(path).map_err(|source| LoaderError::OpenKernel {
        path: path.into(),
        source,
    })?;
    let read_error = |source| LoaderError::ReadKernel {
        path: path.into(),
        source,
    };
    if file.metadata().map_err(read_error)?.len() == 0 {
        return Err(LoaderError::EmptyKernel { path: path.into() });
    }
    let mut elf_magic = [0u8; 4];
    let mut bzimage_magic = [0u8; 4];
    let is_elf = file.read_exact_at(&mut elf_magic, 0).is_ok() && elf_magic == *b"\x7fELF";
    let is_bzimage = file
        .read_exact_at(&mut bzimage_magic, BZIMAGE_MAGIC_OFFSET)
        .is_ok()
        && bzimage_magic == *b"HdrS";
    if !is_elf && !is_bzimage {
        return Err(LoaderError::NotAKernelHeader { path: path.into() });
    }
    Ok(file)
}

/// Opens the initrd at `path`: a regular file that is not empty.
pub fn open_initrd(path: &Path) -> Result<File, LoaderError> {
    let file = host_file::open_regular(path).map_err(|source| LoaderError::OpenInitrd {
        path: path.into(),
        source,
    })?;
    match file.metadata() {
        Ok(meta) if meta.len() == 0 => Err(LoaderError::EmptyInitrd { path: path.into() }),
        Ok(_) => Ok(file),
        Err(source) => Err(LoaderError::OpenInitrd {
            path: path.into(),
            source: HostFileError::Stat(source),
        }),
    }
}

/// Loads the kernel `file` (opened by [`open_kernel`] from `path`): ELF first (PVH entry when
/// the kernel has the note), then bzImage.
pub fn load_kernel(
    memory: &GuestMemory,
    path: &Path,
    mut file: File,
) -> Result<LoadedKernel, LoaderError> {
    let himem = Some(GuestAddress(HIMEM_START));
    match Elf::load(memory, None, &mut file, himem) {
        Ok(result) => Ok(elf_kernel(result)),
        Err(loader::Error::Elf(ElfError::InvalidElfMagicNumber)) => {
            match BzImage::load(memory, None, &mut file, himem) {
                Ok(result) => Ok(bzimage_kernel(result)),
                Err(bzimage) => Err(LoaderError::NotAKernel {
                    path: path.into(),
                    elf: loader::Error::Elf(ElfError::InvalidElfMagicNumber),
                    bzimage,
                }),
            }
        }
        Err(source) => Err(LoaderError::Elf {
            path: path.into(),
            source,
        }),
    }
}

fn elf_kernel(result: KernelLoaderResult) -> LoadedKernel {
    let entry = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(address) => EntryPoint {
            address,
            protocol: BootProtocol::Pvh,
        },
        _ => EntryPoint {
            address: result.kernel_load,
            protocol: BootProtocol::Linux64,
        },
    };
    LoadedKernel {
        entry,
        setup_header: None,
        end: result.kernel_end,
    }
}

fn bzimage_kernel(result: KernelLoaderResult) -> LoadedKernel {
    let address = GuestAddress(result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET);
    LoadedKernel {
        entry: EntryPoint {
            address,
            protocol: BootProtocol::Linux64,
        },
        setup_header: result.setup_header,
        end: result.kernel_end,
    }
}

/// Copies the initrd at `path` as high as the kernel allows, page aligned, above the kernel.
pub fn load_initrd(
    memory: &GuestMemory,
    path: &Path,
    kernel: &LoadedKernel,
) -> Result<InitrdRegion, LoaderError> {
    let mut file = open_initrd(path)?;
    let size = file.metadata().map_err(|source| LoaderError::OpenInitrd {
        path: path.into(),
        source: HostFileError::Stat(source),
    })?;
    let size = size.len();
    let addr_max = kernel
        .setup_header
        .map_or(DEFAULT_INITRD_ADDR_MAX, |header| {
            u64::from(header.initrd_addr_max)
        });
    let low_ram_end = memory.last_addr().0.min(MMIO_GAP_START - 1);
    let limit = low_ram_end.min(addr_max) + 1;
    let too_large = || LoaderError::InitrdTooLarge {
        path: path.into(),
        size,
        limit,
    };
    let start = limit.checked_sub(size).ok_or_else(too_large)? & !(PAGE_SIZE - 1);
    if start < kernel.end || size > usize::MAX as u64 {
        return Err(too_large());
    }
    let address = GuestAddress(start);
    memory
        .read_exact_volatile_from(address, &mut file, size as usize)
        .map_err(|source| LoaderError::ReadInitrd {
            path: path.into(),
            source,
        })?;
    Ok(InitrdRegion { address, size })
}

/// Builds the command line from the user's boot args plus `extra` device parameters.
pub fn build_cmdline(boot_args: &str, extra: &[String]) -> Result<Cmdline, LoaderError> {
    let mut cmdline =
        Cmdline::try_from(boot_args, MAX_CMDLINE_LEN).map_err(LoaderError::Cmdline)?;
    for arg in extra {
        cmdline.insert_str(arg).map_err(LoaderError::Cmdline)?;
    }
    Ok(cmdline)
}

/// Writes the command line where the boot parameters say it is; returns its length.
pub fn write_cmdline(memory: &GuestMemory, cmdline: &Cmdline) -> Result<usize, LoaderError> {
    loader::load_cmdline(memory, GuestAddress(CMDLINE_START), cmdline)
        .map_err(LoaderError::WriteCmdline)?;
    let text = cmdline.as_cstring().map_err(LoaderError::Cmdline)?;
    Ok(text.as_bytes().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::create_guest_memory;
    use std::io::Write;
    use vmm_sys_util::tempfile::TempFile;

    fn file_with(bytes: &[u8]) -> TempFile {
        let file = TempFile::new().unwrap();
        file.as_file().write_all(bytes).unwrap();
        file
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let memory = create_guest_memory(16).unwrap();
        let file = file_with(&[0x42; 8192]);
        let err = open_kernel(file.as_path()).err().unwrap();
        assert!(matches!(err, LoaderError::NotAKernelHeader { .. }), "{err}");
        assert!(err.to_string().contains("is not a kernel"));
        // The magic alone does not make a kernel: the loader still refuses it.
        let mut elf_magic = vec![0u8; 8192];
        elf_magic[..4].copy_from_slice(b"\x7fELF");
        let file = file_with(&elf_magic);
        let kernel = open_kernel(file.as_path()).unwrap();
        assert!(load_kernel(&memory, file.as_path(), kernel).is_err());
    }

    #[test]
    fn missing_empty_and_odd_kernels_are_refused_by_name() {
        let err = open_kernel(Path::new("/nonexistent/vmlinux"))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "The kernel file /nonexistent/vmlinux cannot be opened: \
             No such file or directory (os error 2)"
        );
        let empty = TempFile::new().unwrap();
        let err = open_kernel(empty.as_path()).err().unwrap();
        assert!(matches!(err, LoaderError::EmptyKernel { .. }), "{err}");
        let err = open_kernel(Path::new("/dev/zero")).err().unwrap();
        assert!(err
            .to_string()
            .ends_with("it is a character device, not a regular file"));
        let err = open_kernel(Path::new("/")).err().unwrap();
        assert!(err
            .to_string()
            .ends_with("it is a directory, not a regular file"));
        let err = open_initrd(empty.as_path()).err().unwrap();
        assert!(matches!(err, LoaderError::EmptyInitrd { .. }), "{err}");
    }

    #[test]
    fn a_bzimage_header_is_recognised() {
        let mut bytes = vec![0u8; 1024];
        bytes[0x202..0x206].copy_from_slice(b"HdrS");
        let file = file_with(&bytes);
        assert!(open_kernel(file.as_path()).is_ok());
    }

    fn fake_kernel(end: u64) -> LoadedKernel {
        let entry = EntryPoint {
            address: GuestAddress(HIMEM_START),
            protocol: BootProtocol::Linux64,
        };
        LoadedKernel {
            entry,
            setup_header: None,
            end,
        }
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let memory = create_guest_memory(16).unwrap();
        let file = file_with(&[7u8; 5000]);
        let initrd = load_initrd(&memory, file.as_path(), &fake_kernel(0x20_0000)).unwrap();
        assert_eq!(initrd.address.0 % PAGE_SIZE, 0);
        assert!(initrd.address.0 + initrd.size <= 16 << 20);
        assert!(initrd.address.0 > (15 << 20));
        let byte: u8 = memory
            .read_obj(GuestAddress(initrd.address.0 + 4999))
            .unwrap();
        assert_eq!(byte, 7);
    }

    #[test]
    fn initrd_that_would_overlap_the_kernel_is_refused() {
        let memory = create_guest_memory(16).unwrap();
        let file = file_with(&[0u8; 4 << 20]);
        let err = load_initrd(&memory, file.as_path(), &fake_kernel(14 << 20)).unwrap_err();
        assert!(matches!(err, LoaderError::InitrdTooLarge { .. }), "{err}");
    }

    #[test]
    fn cmdline_gets_device_args_and_rejects_overflow() {
        let cmdline = build_cmdline(
            "console=ttyS0",
            &["virtio_mmio.device=4K@0xd0000000:5".into()],
        )
        .unwrap();
        assert_eq!(
            cmdline.as_cstring().unwrap().to_str().unwrap(),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5"
        );
        assert!(build_cmdline(&"x".repeat(MAX_CMDLINE_LEN), &[]).is_err());
    }
}
