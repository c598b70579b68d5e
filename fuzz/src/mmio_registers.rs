//! `mmio_registers`: arbitrary register accesses on a virtio-block `MmioTransport`,
//! interleaved with queue notifications, guest memory writes and full handshakes.
//!
//! Input: up to [`MAX_OPS`] ops, each an opcode byte (mod 7):
//!
//! | op | operands | effect |
//! |---|---|---|
//! | 0 read | offset, `u8` size (mod 9) | register or config read |
//! | 1 write | offset, `u8` size (mod 9), `u64` value | register or config write |
//! | 2 notify | `u32` queue | QueueNotify write, then the event loop runs |
//! | 3 handshake | | a correct reset-to-DRIVER_OK sequence (must activate) |
//! | 4 poke | `u16` address, `u64` value | guest memory write in the first 64 KiB (the rings) |
//! | 5 config change | | the VMM announces a config change (drive resized) |
//! | 6 status | `u8` value | a 32-bit Status write |
//!
//! An offset is a `u8` kind (0: raw `u64`; 1: `u8` into config space; else `u8` register
//! offset). After every op: the identification registers and the capacity in config space
//! read right, an active device has
//! DRIVER_OK, a Status of 0 means not active, a reset clears Status and InterruptStatus.

use vm_memory::{Bytes, GuestAddress};
use vmm::config::CacheType;
use vmm::devices::virtio::test_utils::TestDriver;
use vmm::devices::virtio::Block;

use crate::disk;
use crate::input::{Reader, Writer};

pub const MAX_OPS: usize = 256;
const MAGIC: u32 = 0x7472_6976;
const BLOCK_ID: u32 = 2;
const DRIVER_OK: u32 = 4;
const DISK_SECTORS: u64 = 8;

pub fn run(data: &[u8]) {
    let file = disk::disk_file(DISK_SECTORS * 512);
    let block = Block::new(&disk::drive(&file, false, CacheType::Unsafe)).expect("open the disk");
    let mut driver = TestDriver::new(Box::new(block));
    let mut r = Reader::new(data);
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        match r.u8() % 7 {
            0 => {
                let offset = read_offset(&mut r);
                let size = usize::from(r.u8() % 9);
                let mut out = [0u8; 8];
                driver.read_bytes(offset, &mut out[..size]);
            }
            1 => {
                let offset = read_offset(&mut r);
                let size = usize::from(r.u8() % 9);
                let value = r.u64().to_le_bytes();
                driver.write_bytes(offset, &value[..size]);
            }
            2 => driver.notify(r.u32()),
            3 => driver.init(),
            4 => {
                let addr = u64::from(r.u16());
                driver
                    .mem
                    .write_obj(r.u64(), GuestAddress(addr))
                    .expect("the first 64 KiB are guest memory");
            }
            5 => driver.transport.lock().unwrap().notify_config_change(),
            _ => {
                let value = u32::from(r.u8());
                driver.write(0x70, value);
                if value == 0 {
                    assert_eq!(driver.status(), 0, "status after reset");
                    assert_eq!(driver.read(0x60), 0, "interrupt status after reset");
                }
            }
        }
        check(&driver);
    }
    driver.run_events();
}

fn read_offset(r: &mut Reader) -> u64 {
    match r.u8() {
        0 => r.u64(),
        1 => 0x100 + u64::from(r.u8()),
        _ => u64::from(r.u8()),
    }
}

fn check(driver: &TestDriver) {
    assert_eq!(driver.read(0x00), MAGIC);
    assert_eq!(driver.read(0x04), 2);
    assert_eq!(driver.read(0x08), BLOCK_ID);
    let mut capacity = [0u8; 8];
    driver.read_bytes(0x100, &mut capacity);
    assert_eq!(
        u64::from_le_bytes(capacity),
        DISK_SECTORS,
        "config capacity"
    );
    let status = driver.status();
    let active = driver.transport.lock().unwrap().is_activated();
    if active {
        assert!(status & DRIVER_OK != 0, "active in status {status:#x}");
    }
    if status == 0 {
        assert!(!active, "active with status 0");
    }
}

/// Hand-made inputs: the Linux driver's probe and handshake register by register, a
/// notification with a request in the rings, and a few out-of-order sequences.
pub fn seeds() -> crate::Seeds {
    let reg_write = |w: &mut Writer, offset: u8, value: u32| {
        w.u8(1).u8(2).u8(offset).u8(4).u64(u64::from(value));
    };
    let reg_read = |w: &mut Writer, offset: u8| {
        w.u8(0).u8(2).u8(offset).u8(4);
    };
    let mut seeds = Vec::new();

    let mut w = Writer::new();
    for offset in [0x00, 0x04, 0x08, 0x0c] {
        reg_read(&mut w, offset);
    }
    reg_write(&mut w, 0x70, 0);
    reg_write(&mut w, 0x70, 1);
    reg_write(&mut w, 0x70, 3);
    reg_write(&mut w, 0x14, 0);
    reg_read(&mut w, 0x10);
    reg_write(&mut w, 0x14, 1);
    reg_read(&mut w, 0x10);
    reg_write(&mut w, 0x24, 0);
    reg_write(&mut w, 0x20, 0x240);
    reg_write(&mut w, 0x24, 1);
    reg_write(&mut w, 0x20, 1);
    reg_write(&mut w, 0x70, 0xb);
    reg_read(&mut w, 0x70);
    reg_write(&mut w, 0x30, 0);
    reg_read(&mut w, 0x34);
    reg_write(&mut w, 0x38, 16);
    for (offset, value) in [(0x80, 0x1000), (0x84, 0), (0x90, 0x3000), (0x94, 0)] {
        reg_write(&mut w, offset, value);
    }
    reg_write(&mut w, 0xa0, 0x4000);
    reg_write(&mut w, 0xa4, 0);
    reg_write(&mut w, 0x44, 1);
    reg_write(&mut w, 0x70, 0xf);
    reg_read(&mut w, 0xfc);
    w.u8(0).u8(1).u8(0).u8(8);
    w.u8(2).u32(0);
    reg_read(&mut w, 0x60);
    reg_write(&mut w, 0x64, 1);
    seeds.push(("linux-probe-and-handshake", w.finish()));

    let mut w = Writer::new();
    w.u8(3);
    // Descriptor 0: a 16-byte header at 0x8000; avail ring entry 0 -> head 0, idx 1.
    w.u8(4).u16(0x1000).u64(0x8000);
    w.u8(4).u16(0x1008).u64(16);
    w.u8(4).u16(0x3002).u64(1);
    w.u8(2).u32(0);
    w.u8(5);
    w.u8(6).u8(0);
    seeds.push(("handshake-notify-reset", w.finish()));

    let mut w = Writer::new();
    w.u8(6).u8(1).u8(6).u8(4).u8(6).u8(0x80);
    reg_write(&mut w, 0x38, 3);
    w.u8(3);
    reg_write(&mut w, 0x30, 7);
    reg_write(&mut w, 0x44, 1);
    w.u8(1).u8(0).u64(0xffff_ffff_ffff_fffc).u8(4).u64(1);
    w.u8(1).u8(1).u8(0).u8(8).u64(u64::MAX);
    w.u8(2).u32(u32::MAX);
    seeds.push(("out-of-order", w.finish()));
    seeds
}
