//! The host file behind a drive and the I/O between it and guest memory.
//!
//! Data moves with positional reads and writes (`pread64`/`pwrite64`) straight between the
//! file and guest memory, with no bounce buffer and no reliance on the file cursor.

use std::fs::File;
use std::io::{self, ErrorKind, Seek, SeekFrom};
use std::os::fd::AsRawFd;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    Bytes, GuestMemoryError, ReadVolatile, VolatileMemoryError, VolatileSlice, WriteVolatile,
};

use super::request::Segment;
use super::{BlockError, SECTOR_SIZE};
use crate::config::{CacheType, DriveConfig};
use crate::host_file::{self, Access, FileKind};
use crate::vstate::memory::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum DiskIoError {
    #[error("transfer between the disk file and guest memory failed: {0}")]
    Transfer(#[source] GuestMemoryError),
    #[error("fdatasync of the disk file failed: {0}")]
    Sync(#[source] io::Error),
}

/// An open backing file.
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    nsectors: u64,
    read_only: bool,
    cache_type: CacheType,
}

/// What can back a drive: a disk image or a host block device (a FIFO or `/dev/zero` has no
/// size and cannot be written at an offset).
const DISK_KINDS: &[FileKind] = &[FileKind::Regular, FileKind::BlockDevice];

impl DiskFile {
    /// Opens `config.path_on_host` read-write, or read-only for a read-only drive.
    pub fn open(config: &DriveConfig) -> Result<Self, BlockError> {
        let (id, path) = (config.drive_id.clone(), config.path_on_host.clone());
        let read_only = config.is_read_only;
        let access = if read_only {
            Access::Read
        } else {
            Access::ReadWrite
        };
        let opened = host_file::open(&path, access, DISK_KINDS);
        let (file, _) = opened.map_err(|source| BlockError::Open {
            id: id.clone(),
            path: path.clone(),
            source,
        })?;
        // Opening for writing succeeds for root even without write permission.
        let readonly_file = file.metadata().is_ok_and(|m| m.permissions().readonly());
        if !read_only && readonly_file {
            return Err(BlockError::ReadOnlyFile { id, path });
        }
        // Seeking works for block devices too, whose metadata length is 0.
        let len = (&file).seek(SeekFrom::End(0));
        let len = len.map_err(|source| BlockError::Size {
            id: id.clone(),
            path: path.clone(),
            source,
        })?;
        if len % SECTOR_SIZE != 0 {
            log::warn!(
                "drive {id}: {} is {len} bytes, not a multiple of {SECTOR_SIZE}; \
                 the last {} bytes are not exposed to the guest",
                path.display(),
                len % SECTOR_SIZE
            );
        }
        Ok(DiskFile {
            file,
            nsectors: len / SECTOR_SIZE,
            read_only,
            cache_type: config.cache_type,
        })
    }

    /// Disk size in 512-byte sectors.
    pub fn nsectors(&self) -> u64 {
        self.nsectors
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Reads from the file at byte `offset` into the guest buffers `data`, in order.
    pub fn read_into(
        &self,
        mem: &GuestMemory,
        offset: u64,
        data: &[Segment],
    ) -> Result<(), DiskIoError> {
        let mut file = FileAt {
            file: &self.file,
            offset,
        };
        for seg in data {
            mem.read_exact_volatile_from(seg.addr, &mut file, seg.len as usize)
                .map_err(DiskIoError::Transfer)?;
        }
        Ok(())
    }

    /// Writes the guest buffers `data`, in order, to the file at byte `offset`.
    pub fn write_from(
        &self,
        mem: &GuestMemory,
        offset: u64,
        data: &[Segment],
    ) -> Result<(), DiskIoError> {
        let mut file = FileAt {
            file: &self.file,
            offset,
        };
        for seg in data {
            mem.write_all_volatile_to(seg.addr, &mut file, seg.len as usize)
                .map_err(DiskIoError::Transfer)?;
        }
        Ok(())
    }

    /// Makes completed writes durable when the cache type asks for it. Returns whether the
    /// file was synced (`Unsafe` acknowledges flushes without syncing, like Firecracker).
    pub fn flush(&self) -> Result<bool, DiskIoError> {
        match self.cache_type {
            CacheType::Unsafe => Ok(false),
            CacheType::Writeback => self
                .file
                .sync_data()
                .map(|()| true)
                .map_err(DiskIoError::Sync),
        }
    }
}

/// A file seen through positional I/O starting at `offset`, advancing as bytes move.
struct FileAt<'a> {
    file: &'a File,
    offset: u64,
}

impl FileAt<'_> {
    fn file_offset(&self) -> io::Result<libc::off64_t> {
        libc::off64_t::try_from(self.offset).map_err(|_| io::Error::from(ErrorKind::InvalidInput))
    }

    /// One `pread64` into `buf`.
    fn pread<B: BitmapSlice>(&mut self, buf: &VolatileSlice<B>) -> io::Result<usize> {
        let offset = self.file_offset()?;
        let guard = buf.ptr_guard_mut();
        // SAFETY: the fd belongs to `self.file`, open and borrowed for this whole call.
        // `guard` maps `guard.len()` bytes of guest memory that stay valid for writes while
        // the guard lives (VolatileSlice invariant); pread64 writes at most that many bytes
        // and keeps no reference to the buffer.
        let ret = unsafe {
            libc::pread64(
                self.file.as_raw_fd(),
                guard.as_ptr().cast(),
                guard.len(),
                offset,
            )
        };
        let Ok(n) = usize::try_from(ret) else {
            let err = io::Error::last_os_error();
            // We do not know what was written: mark it all dirty.
            buf.bitmap().mark_dirty(0, buf.len());
            return Err(err);
        };
        buf.bitmap().mark_dirty(0, n);
        self.offset += n as u64;
        Ok(n)
    }

    /// One `pwrite64` from `buf`.
    fn pwrite<B: BitmapSlice>(&mut self, buf: &VolatileSlice<B>) -> io::Result<usize> {
        let offset = self.file_offset()?;
        let guard = buf.ptr_guard();
        // SAFETY: the fd belongs to `self.file`, open and borrowed for this whole call.
        // `guard` maps `guard.len()` bytes of guest memory valid for reads while the guard
        // lives; pwrite64 reads at most that many bytes and keeps no reference to them.
        let ret = unsafe {
            libc::pwrite64(
                self.file.as_raw_fd(),
                guard.as_ptr().cast(),
                guard.len(),
                offset,
            )
        };
        let n = usize::try_from(ret).map_err(|_| io::Error::last_os_error())?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Repeats `op` on the rest of `buf` until it is done, `op` returns 0 (end of file) or fails
/// with anything but EINTR. Returns the bytes moved.
fn fill<B: BitmapSlice>(
    buf: &VolatileSlice<B>,
    mut op: impl FnMut(&VolatileSlice<B>) -> io::Result<usize>,
) -> Result<usize, VolatileMemoryError> {
    let mut done = 0;
    while done < buf.len() {
        match op(&buf.offset(done)?) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(VolatileMemoryError::IOError(e)),
        }
    }
    Ok(done)
}

impl ReadVolatile for FileAt<'_> {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        fill(buf, |rest| self.pread(rest))
    }
}

impl WriteVolatile for FileAt<'_> {
    fn write_volatile<B: BitmapSlice>(
        &mut self,
        buf: &VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        fill(buf, |rest| self.pwrite(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestAddress, GuestMemoryBackend};
    use vmm_sys_util::tempfile::TempFile;

    fn disk(len: usize) -> (TempFile, DiskFile) {
        let tmp = TempFile::new().unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        std::fs::write(tmp.as_path(), bytes).unwrap();
        let config = DriveConfig {
            drive_id: "d".into(),
            path_on_host: tmp.as_path().into(),
            is_root_device: false,
            is_read_only: false,
            partuuid: None,
            cache_type: CacheType::Writeback,
            io_engine: None,
            rate_limiter: None,
        };
        let disk = DiskFile::open(&config).unwrap();
        (tmp, disk)
    }

    #[test]
    fn segments_crossing_memory_regions() {
        let (_tmp, disk) = disk(8192);
        let ranges = [(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)];
        let mem = GuestMemory::from_ranges(&ranges).unwrap();
        assert_eq!(mem.num_regions(), 2);
        let seg = Segment {
            addr: GuestAddress(0x800),
            len: 0x1000,
        };
        disk.read_into(&mem, 512, &[seg]).unwrap();
        let mut buf = vec![0u8; 0x1000];
        mem.read_slice(&mut buf, GuestAddress(0x800)).unwrap();
        assert!(buf
            .iter()
            .enumerate()
            .all(|(i, &b)| b == ((i + 512) % 253) as u8));
        disk.write_from(&mem, 0, &[seg]).unwrap();
        assert!(disk.flush().unwrap());
    }

    #[test]
    fn reading_past_a_shrunk_file_fails() {
        let (tmp, disk) = disk(4096);
        std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.as_path())
            .unwrap()
            .set_len(1000)
            .unwrap();
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        let seg = Segment {
            addr: GuestAddress(0),
            len: 1024,
        };
        assert!(disk.read_into(&mem, 512, &[seg]).is_err());
    }
}
