//! virtio-block tests: a temp file as the disk, requests laid out by hand in guest memory,
//! and the device driven only through the transport's registers.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempfile::TempFile;

use super::*;
use crate::config::CacheType;
use crate::devices::virtio::test_utils::*;
use crate::devices::virtio::MmioStateError;

const SECTORS: u64 = 16;
const HEADER: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STATUS: u64 = 0x30000;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

/// The byte the test disk holds at `offset`.
fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

fn drive(file: &TempFile, read_only: bool, cache_type: CacheType) -> DriveConfig {
    DriveConfig {
        drive_id: "rootfs".into(),
        path_on_host: file.as_path().to_path_buf(),
        is_root_device: true,
        is_read_only: read_only,
        partuuid: None,
        cache_type,
        io_engine: None,
        rate_limiter: None,
    }
}

fn disk_file(len: u64) -> TempFile {
    let file = TempFile::new().unwrap();
    let bytes: Vec<u8> = (0..len).map(pattern).collect();
    std::fs::write(file.as_path(), bytes).unwrap();
    file
}

struct Setup {
    driver: TestDriver,
    metrics: Arc<BlockMetrics>,
    file: TempFile,
}

fn setup_with(read_only: bool, cache_type: CacheType) -> Setup {
    let file = disk_file(SECTORS * SECTOR_SIZE);
    let block = Block::new(&drive(&file, read_only, cache_type)).unwrap();
    let metrics = block.metrics();
    let mut driver = TestDriver::new(Box::new(block));
    driver.init();
    Setup {
        driver,
        metrics,
        file,
    }
}

fn setup() -> Setup {
    setup_with(false, CacheType::Unsafe)
}

fn file_bytes(file: &TempFile) -> Vec<u8> {
    std::fs::read(file.as_path()).unwrap()
}

impl Setup {
    fn header(&self, request_type: u32, sector: u64) {
        let mem = &self.driver.mem;
        mem.write_obj(request_type.to_le(), GuestAddress(HEADER))
            .unwrap();
        mem.write_obj(0u32, GuestAddress(HEADER + 4)).unwrap();
        mem.write_obj(sector.to_le(), GuestAddress(HEADER + 8))
            .unwrap();
    }

    /// Submits `descs` as one chain; returns the used length. The status byte is preset
    /// to 0xff so an untouched status is visible.
    fn submit(&mut self, descs: &[Desc]) -> u32 {
        let mem = &self.driver.mem;
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let before = self.driver.used_idx();
        let head = self.driver.add_chain(descs);
        self.driver.notify(0);
        assert_eq!(
            self.driver.used_idx(),
            before.wrapping_add(1),
            "chain not returned"
        );
        let (id, len) = self.driver.used_elem(before);
        assert_eq!(id, u32::from(head));
        len
    }

    /// Header + `data` + a 1-byte status: `(used length, status byte)`.
    fn request(&mut self, request_type: u32, sector: u64, data: &[Desc]) -> (u32, u8) {
        self.header(request_type, sector);
        let mut descs = vec![readable(HEADER, 16)];
        descs.extend_from_slice(data);
        descs.push(writable(STATUS, 1));
        let len = self.submit(&descs);
        (len, self.status())
    }

    fn status(&self) -> u8 {
        self.driver.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn guest_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.driver
            .mem
            .read_slice(&mut buf, GuestAddress(addr))
            .unwrap();
        buf
    }
}

#[test]
fn registers_and_config_space() {
    let s = setup();
    let d = &s.driver;
    assert_eq!(d.read(0x08), 2);
    let features = d.device_features();
    assert_eq!(features, 1 << 32 | 1 << 9 | 1 << 2);
    d.write(0x30, 0);
    assert_eq!(d.read(0x34), 256);
    let mut capacity = [0u8; 8];
    d.read_bytes(0x100, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), SECTORS);
    assert_eq!(d.read(0x10c), 254, "seg_max");
    assert_eq!(d.read(0x100), SECTORS as u32, "4-byte halves work too");
}

#[test]
fn read_copies_sectors_into_guest_memory() {
    let mut s = setup();
    let data = [writable(DATA, 512), writable(DATA + 0x1000, 1024)];
    let (len, status) = s.request(VIRTIO_BLK_T_IN, 2, &data);
    assert_eq!((len, status), (1536 + 1, VIRTIO_BLK_S_OK as u8));
    let expect = |from: u64, n: u64| (from..from + n).map(pattern).collect::<Vec<_>>();
    assert_eq!(s.guest_bytes(DATA, 512), expect(1024, 512));
    assert_eq!(s.guest_bytes(DATA + 0x1000, 1024), expect(1536, 1024));
    assert!(s.driver.irq_fired());
    assert_eq!(s.driver.read(0x60) & 1, 1, "used-buffer interrupt");
}

#[test]
fn write_reaches_the_backing_file() {
    let mut s = setup();
    s.driver
        .mem
        .write_slice(&[0xab; 512], GuestAddress(DATA))
        .unwrap();
    s.driver
        .mem
        .write_slice(&[0xcd; 512], GuestAddress(DATA + 0x1000))
        .unwrap();
    let data = [readable(DATA, 512), readable(DATA + 0x1000, 512)];
    let (len, status) = s.request(VIRTIO_BLK_T_OUT, 3, &data);
    assert_eq!((len, status), (1, VIRTIO_BLK_S_OK as u8));
    let bytes = file_bytes(&s.file);
    assert_eq!(&bytes[1536..2048], &[0xab; 512][..]);
    assert_eq!(&bytes[2048..2560], &[0xcd; 512][..]);
    assert_eq!(bytes[1535], pattern(1535));
    assert_eq!(bytes[2560], pattern(2560));
}

#[test]
fn flush_syncs_with_writeback_only() {
    let mut s = setup_with(false, CacheType::Writeback);
    assert_eq!(s.request(VIRTIO_BLK_T_FLUSH, 0, &[]), (1, 0));
    assert_eq!(s.metrics.synced_flushes.load(Ordering::SeqCst), 1);
    let mut s = setup_with(false, CacheType::Unsafe);
    assert_eq!(s.request(VIRTIO_BLK_T_FLUSH, 0, &[]), (1, 0));
    assert_eq!(s.metrics.synced_flushes.load(Ordering::SeqCst), 0);
}

#[test]
fn get_id_returns_the_padded_drive_id() {
    let mut s = setup();
    s.driver
        .mem
        .write_slice(&[0xee; 20], GuestAddress(DATA))
        .unwrap();
    let (len, status) = s.request(VIRTIO_BLK_T_GET_ID, 0, &[writable(DATA, 20)]);
    assert_eq!((len, status), (21, 0));
    let mut expect = b"rootfs".to_vec();
    expect.resize(20, 0);
    assert_eq!(s.guest_bytes(DATA, 20), expect);
    // Split across two buffers, and a buffer that is too short.
    let data = [writable(DATA, 4), writable(DATA + 0x100, 16)];
    assert_eq!(s.request(VIRTIO_BLK_T_GET_ID, 0, &data), (21, 0));
    assert_eq!(s.guest_bytes(DATA + 0x100, 2), b"fs");
    assert_eq!(
        s.request(VIRTIO_BLK_T_GET_ID, 0, &[writable(DATA, 19)]).1,
        IOERR
    );
}

#[test]
fn unsupported_type_reports_unsupp() {
    let mut s = setup();
    assert_eq!(s.request(99, 0, &[]), (1, VIRTIO_BLK_S_UNSUPP as u8));
    assert_eq!(s.metrics.failed_requests.load(Ordering::SeqCst), 1);
}

#[test]
fn requests_past_the_end_or_misaligned_fail() {
    let mut s = setup();
    let one = [writable(DATA, 512)];
    let two = [writable(DATA, 1024)];
    assert_eq!(s.request(VIRTIO_BLK_T_IN, SECTORS - 1, &one), (513, 0));
    assert_eq!(s.request(VIRTIO_BLK_T_IN, SECTORS, &one).1, IOERR);
    assert_eq!(s.request(VIRTIO_BLK_T_IN, SECTORS - 1, &two).1, IOERR);
    assert_eq!(s.request(VIRTIO_BLK_T_IN, u64::MAX, &one).1, IOERR);
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, u64::MAX / 512 + 1, &one).1,
        IOERR
    );
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, 0, &[writable(DATA, 100)]).1,
        IOERR
    );
    let out = [readable(DATA, 512)];
    assert_eq!(s.request(VIRTIO_BLK_T_OUT, u64::MAX, &out).1, IOERR);
    assert_eq!(file_bytes(&s.file).len() as u64, SECTORS * SECTOR_SIZE);
}

#[test]
fn wrong_direction_data_is_refused() {
    let mut s = setup();
    s.driver
        .mem
        .write_slice(&[0x11; 512], GuestAddress(DATA))
        .unwrap();
    let (len, status) = s.request(VIRTIO_BLK_T_IN, 0, &[readable(DATA, 512)]);
    assert_eq!((len, status), (1, IOERR));
    assert_eq!(s.guest_bytes(DATA, 512), vec![0x11; 512]);
    let (_, status) = s.request(VIRTIO_BLK_T_OUT, 0, &[writable(DATA, 512)]);
    assert_eq!(status, IOERR);
    assert_eq!(
        file_bytes(&s.file)[0..512],
        (0..512).map(pattern).collect::<Vec<_>>()
    );
}

#[test]
fn addresses_outside_ram_are_refused() {
    let mut s = setup();
    let straddling = [writable(MEM_SIZE - 256, 512)];
    assert_eq!(s.request(VIRTIO_BLK_T_IN, 0, &straddling), (1, IOERR));
    let wrapping = [writable(u64::MAX - 10, 512)];
    assert_eq!(s.request(VIRTIO_BLK_T_IN, 0, &wrapping), (1, IOERR));
    let far = [readable(1 << 40, 512)];
    assert_eq!(s.request(VIRTIO_BLK_T_OUT, 0, &far), (1, IOERR));
    // A header outside RAM: the status byte is still found and reports the error.
    let len = s.submit(&[readable(MEM_SIZE - 8, 16), writable(STATUS, 1)]);
    assert_eq!((len, s.status()), (1, IOERR));
    // A status byte outside RAM: nothing written, chain still returned.
    s.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(s.submit(&[readable(HEADER, 16), writable(MEM_SIZE, 1)]), 0);
}

#[test]
fn malformed_chains_are_returned_without_status() {
    let mut s = setup();
    s.header(VIRTIO_BLK_T_IN, 0);
    // Status descriptor of length 0, a readable status, no status at all.
    let chains: [&[Desc]; 3] = [
        &[
            readable(HEADER, 16),
            writable(DATA, 512),
            writable(STATUS, 0),
        ],
        &[
            readable(HEADER, 16),
            writable(DATA, 512),
            readable(STATUS, 1),
        ],
        &[readable(HEADER, 16)],
    ];
    for chain in chains {
        assert_eq!(s.submit(chain), 0);
        assert_eq!(s.status(), 0xff, "status untouched");
    }
    // A short or writable header is an error reported in the status byte.
    assert_eq!(s.submit(&[readable(HEADER, 8), writable(STATUS, 1)]), 1);
    assert_eq!(s.status(), IOERR);
    assert_eq!(s.submit(&[writable(HEADER, 16), writable(STATUS, 1)]), 1);
    assert_eq!(s.status(), IOERR);
    // An empty data descriptor.
    assert_eq!(s.request(VIRTIO_BLK_T_IN, 0, &[writable(DATA, 0)]).1, IOERR);
    // The device still works.
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, 0, &[writable(DATA, 512)]),
        (513, 0)
    );
}

#[test]
fn write_to_a_read_only_drive_fails() {
    let mut s = setup_with(true, CacheType::Unsafe);
    assert_ne!(s.driver.device_features() & 1 << 5, 0, "VIRTIO_BLK_F_RO");
    s.driver
        .mem
        .write_slice(&[0xab; 512], GuestAddress(DATA))
        .unwrap();
    let (len, status) = s.request(VIRTIO_BLK_T_OUT, 0, &[readable(DATA, 512)]);
    assert_eq!((len, status), (1, IOERR));
    assert_eq!(file_bytes(&s.file)[0], pattern(0));
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, 0, &[writable(DATA, 512)]),
        (513, 0)
    );
}

#[test]
fn reset_mid_operation_drops_pending_work() {
    let mut s = setup();
    s.header(VIRTIO_BLK_T_IN, 0);
    s.driver.add_chain(&[
        readable(HEADER, 16),
        writable(DATA, 512),
        writable(STATUS, 1),
    ]);
    // The notification is pending in the eventfd when the driver resets.
    s.driver.write(0x50, 0);
    s.driver.write(0x70, 0);
    s.driver.run_events();
    s.driver.notify(0);
    assert_eq!(s.driver.used_idx(), 0);
    assert!(!s.driver.transport.lock().unwrap().is_activated());
    // Re-initialising gives a fresh queue that works.
    s.driver
        .mem
        .write_obj(0u16, GuestAddress(AVAIL_RING + 2))
        .unwrap();
    s.driver
        .mem
        .write_obj(0u16, GuestAddress(USED_RING + 2))
        .unwrap();
    s.driver.init();
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, 0, &[writable(DATA, 512)]),
        (513, 0)
    );
}

#[test]
fn queue_outside_ram_at_driver_ok_needs_reset() {
    let file = disk_file(4096);
    let block = Block::new(&drive(&file, false, CacheType::Unsafe)).unwrap();
    let mut driver = TestDriver::new(Box::new(block));
    assert!(driver.negotiate(driver.device_features()));
    driver.setup_queue(0, 256, MEM_SIZE - 0x800, AVAIL_RING, USED_RING);
    driver.add_status(STATUS_DRIVER_OK);
    assert_ne!(driver.status() & STATUS_NEEDS_RESET, 0);
    assert_eq!(driver.read(0x60), 2);
    assert!(driver.irq_fired());
    driver.notify(0);
    assert_eq!(driver.used_idx(), 0);
}

#[test]
fn hostile_rings_do_not_hang_or_panic() {
    let mut s = setup();
    // A descriptor that chains to itself, then a head outside the descriptor table.
    s.header(VIRTIO_BLK_T_IN, 0);
    s.driver.write_desc(0, readable(HEADER, 16), Some(0));
    s.driver.push_avail(0);
    s.driver.push_avail(300);
    s.driver.notify(0);
    assert_eq!(
        s.driver.used_idx(),
        1,
        "the loop is returned, the bogus head cannot be"
    );
    assert_eq!(s.driver.used_elem(0), (0, 0));
    // An available index far ahead of the ring.
    s.driver.set_avail_idx(5000);
    s.driver.notify(0);
    assert_eq!(s.driver.used_idx(), 1);
    s.driver.fuzz_registers(3);
}

#[test]
fn overlong_indirect_chain_is_cut_off() {
    let mut s = setup();
    s.header(VIRTIO_BLK_T_IN, 0);
    s.driver
        .mem
        .write_slice(&[0x11; 512], GuestAddress(DATA))
        .unwrap();
    // An indirect table of 300 descriptors: more than header + seg_max + status.
    const TABLE: u64 = 0x40000;
    for i in 0..300u16 {
        let (addr, len, flags) = match i {
            0 => (HEADER, 16, 1),
            299 => (STATUS, 1, 2),
            _ => (DATA, 512, 3),
        };
        s.driver.write_raw_desc(TABLE, i, (addr, len, flags, i + 1));
    }
    s.driver
        .write_raw_desc(DESC_TABLE, 0, (TABLE, 300 * 16, 4, 0));
    s.driver
        .mem
        .write_obj(0xffu8, GuestAddress(STATUS))
        .unwrap();
    s.driver.push_avail(0);
    s.driver.notify(0);
    assert_eq!(s.driver.used_idx(), 1);
    assert_eq!(s.driver.used_elem(0), (0, 0));
    assert_eq!(s.guest_bytes(DATA, 512), vec![0x11; 512], "not executed");
    assert_eq!(s.status(), 0xff);
}

#[test]
fn one_interrupt_per_batch() {
    let mut s = setup();
    s.header(VIRTIO_BLK_T_IN, 0);
    for _ in 0..3 {
        s.driver.add_chain(&[
            readable(HEADER, 16),
            writable(DATA, 512),
            writable(STATUS, 1),
        ]);
    }
    s.driver.notify(0);
    assert_eq!(s.driver.used_idx(), 3);
    let transport = s.driver.transport.lock().unwrap();
    assert_eq!(transport.interrupt_event().read().unwrap(), 1);
}

#[test]
fn partial_last_sector_is_not_exposed() {
    let file = disk_file(1000);
    let block = Block::new(&drive(&file, false, CacheType::Unsafe)).unwrap();
    let mut config = [0u8; 8];
    block.read_config(0, &mut config);
    assert_eq!(u64::from_le_bytes(config), 1);
}

#[test]
fn open_errors_name_drive_path_and_cause() {
    let missing = std::path::PathBuf::from("/nonexistent/ember-disk.img");
    let file = disk_file(512);
    let mut config = drive(&file, false, CacheType::Unsafe);
    config.path_on_host = missing;
    let err = Block::new(&config).err().unwrap().to_string();
    assert!(
        err.contains("rootfs") && err.contains("/nonexistent/ember-disk.img"),
        "{err}"
    );
    assert!(err.contains("os error 2"), "{err}");

    let dir = std::env::temp_dir();
    for read_only in [false, true] {
        config.path_on_host = dir.clone();
        config.is_read_only = read_only;
        let err = Block::new(&config).err().unwrap().to_string();
        // Read-write: the OS refuses (EISDIR); read-only: the file kind check does.
        assert!(
            err.contains(&*dir.to_string_lossy())
                && (err.contains("os error 21") || err.contains("it is a directory")),
            "{err}"
        );
    }
    // No size, no offsets: never a disk, and refused without blocking on a FIFO's open.
    let fifo_dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let fifo = fifo_dir.as_path().join("fifo");
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    for (path, kind) in [
        (fifo, "a named pipe"),
        ("/dev/zero".into(), "a character device"),
    ] {
        for read_only in [false, true] {
            config.path_on_host = path.clone();
            config.is_read_only = read_only;
            let err = Block::new(&config).err().unwrap().to_string();
            assert!(err.contains(&format!("it is {kind}")), "{err}");
        }
    }

    let perms = std::fs::Permissions::from_mode(0o444);
    std::fs::set_permissions(file.as_path(), perms).unwrap();
    let mut config = drive(&file, false, CacheType::Unsafe);
    let err = Block::new(&config).err().unwrap().to_string();
    assert!(
        err.contains("rootfs") && err.contains("os error 13"),
        "{err}"
    );
    config.is_read_only = true;
    assert!(Block::new(&config).is_ok());
}

#[test]
fn new_backing_file_changes_capacity_and_missing_file_keeps_the_old_one() {
    let small = disk_file(SECTORS * SECTOR_SIZE);
    let mut block = Block::new(&drive(&small, false, CacheType::Unsafe)).unwrap();
    let capacity = |block: &Block| {
        let mut bytes = [0u8; 8];
        block.read_config(0, &mut bytes);
        u64::from_le_bytes(bytes)
    };
    assert_eq!(capacity(&block), SECTORS);
    let big = disk_file(4 * SECTORS * SECTOR_SIZE);
    block
        .update_backing_file(&drive(&big, false, CacheType::Unsafe))
        .unwrap();
    assert_eq!(capacity(&block), 4 * SECTORS);
    let mut missing = drive(&big, false, CacheType::Unsafe);
    missing.path_on_host = "/nonexistent/disk.img".into();
    assert!(block.update_backing_file(&missing).is_err());
    assert_eq!(capacity(&block), 4 * SECTORS);
}

#[test]
fn saved_state_restores_onto_a_new_device_that_goes_on() {
    let mut s = setup();
    let data = [writable(DATA, 512)];
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, 0, &data).1,
        VIRTIO_BLK_S_OK as u8
    );
    let state = s.driver.transport.lock().unwrap().save();
    assert!(state.activated);
    assert_eq!(
        (state.queues[0].next_avail, state.queues[0].next_used),
        (1, 1)
    );

    // A fresh device on the same disk and the same guest RAM, as in a restored VM.
    let block = Block::new(&drive(&s.file, false, CacheType::Unsafe)).unwrap();
    let mut driver = TestDriver::with_memory(s.driver.mem.clone(), Box::new(block));
    driver.continue_from(&s.driver);
    driver.transport.lock().unwrap().restore(&state).unwrap();
    assert_eq!(
        driver.transport.lock().unwrap().save(),
        state,
        "save, restore, save"
    );
    assert!(driver.irq_fired(), "the pending interrupt is raised again");

    let mut restored = Setup {
        driver,
        metrics: s.metrics.clone(),
        file: s.file,
    };
    let data = [writable(DATA, 512)];
    let (_, status) = restored.request(VIRTIO_BLK_T_IN, 3, &data);
    assert_eq!(status, VIRTIO_BLK_S_OK as u8);
    let expect: Vec<u8> = (1536..2048).map(pattern).collect();
    assert_eq!(restored.guest_bytes(DATA, 512), expect);
}

#[test]
fn state_of_another_kind_or_onto_a_used_device_is_refused() {
    let s = setup();
    let mut state = s.driver.transport.lock().unwrap().save();
    let mut transport = s.driver.transport.lock().unwrap();
    // The device in `s` has been set up by a driver: not fresh.
    assert!(matches!(
        transport.restore(&state),
        Err(MmioStateError::NotFresh)
    ));
    drop(transport);
    let block = Block::new(&drive(&s.file, false, CacheType::Unsafe)).unwrap();
    let fresh = TestDriver::new(Box::new(block));
    state.device_type = 1;
    let err = fresh.transport.lock().unwrap().restore(&state).unwrap_err();
    assert!(
        matches!(err, MmioStateError::DeviceType { saved: 1, .. }),
        "{err}"
    );
    state.device_type = VIRTIO_ID_BLOCK;
    state.config_space.push(0);
    let err = fresh.transport.lock().unwrap().restore(&state).unwrap_err();
    assert!(matches!(err, MmioStateError::ConfigLength { .. }), "{err}");
}
