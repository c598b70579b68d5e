//! `legacy_devices`: register sequences on the serial console (8250 UART), the i8042
//! controller and the boot timer, plus host input and Ctrl-Alt-Del from the VMM side.
//!
//! Input: up to [`MAX_OPS`] ops, each an opcode byte (mod 8); a device byte picks serial,
//! i8042 or boot timer (mod 3) for reads and writes:
//!
//! | op | operands | effect |
//! |---|---|---|
//! | 0 read | device, `u8` offset, `u8` size (mod 9) | port read |
//! | 1 write | device, `u8` offset, bytes (at most 8) | port write |
//! | 2 raw read | device, `u64` offset, `u8` size | read at any offset |
//! | 3 raw write | device, `u64` offset, bytes | write at any offset |
//! | 4 input | bytes (at most 128) | host input queued for the guest |
//! | 5 ctrl-alt-del | | the VMM types Ctrl-Alt-Del |
//! | 6 flush | | serial output flush |
//! | 7 drain | | the guest reads the i8042 until its buffer is empty |
//!
//! Checks: queued input never exceeds what was offered or the FIFO's free space; the i8042
//! status says "output full" exactly while bytes are waiting, and draining empties it
//! within its buffer capacity.

use vmm::devices::legacy::{BootTimer, ResetRequest, SerialConsole, I8042};
use vmm::devices::BusDevice;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::input::{Reader, Writer};

pub const MAX_OPS: usize = 256;
const I8042_DATA: u64 = 0;
const I8042_STATUS: u64 = 4;
/// More than the i8042's output buffer (32) can hold.
const DRAIN_LIMIT: usize = 64;

pub fn run(data: &[u8]) {
    let evt = || EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let mut serial = SerialConsole::new(evt(), std::io::sink());
    let mut i8042 = I8042::new(ResetRequest::new(evt()), evt());
    let mut timer = BootTimer::new(std::time::Instant::now());
    let mut r = Reader::new(data);
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let op = r.u8() % 8;
        match op {
            0..=3 => {
                let device: &mut dyn BusDevice = match r.u8() % 3 {
                    0 => &mut serial,
                    1 => &mut i8042,
                    _ => &mut timer,
                };
                let offset = if op < 2 { u64::from(r.u8()) } else { r.u64() };
                if op.is_multiple_of(2) {
                    let mut out = [0u8; 8];
                    device.read(offset, &mut out[..usize::from(r.u8() % 9)]);
                } else {
                    device.write(offset, r.bytes(8));
                }
            }
            4 => {
                let input = r.bytes(128);
                let room = serial.input_capacity();
                let queued = serial.queue_input(input);
                assert!(queued <= input.len() && queued <= room, "queued {queued}");
            }
            5 => {
                let _ = i8042.send_ctrl_alt_del();
            }
            6 => serial.flush(),
            _ => drain(&mut i8042),
        }
    }
    drain(&mut i8042);
}

fn port_read(dev: &mut I8042, offset: u64) -> u8 {
    let mut byte = [0u8];
    dev.read(offset, &mut byte);
    byte[0]
}

/// Reads the i8042's data port while its status says a byte waits.
fn drain(dev: &mut I8042) {
    for _ in 0..DRAIN_LIMIT {
        if port_read(dev, I8042_STATUS) & 1 == 0 {
            return;
        }
        port_read(dev, I8042_DATA);
    }
    panic!("the i8042 output buffer never emptied");
}

/// Hand-made inputs: a UART probe and console output, host input, and the i8042 probe,
/// keyboard reset and Ctrl-Alt-Del.
pub fn seeds() -> crate::Seeds {
    let write = |w: &mut Writer, device: u8, offset: u8, value: u8| {
        w.u8(1).u8(device).u8(offset).bytes(&[value]);
    };
    let read = |w: &mut Writer, device: u8, offset: u8| {
        w.u8(0).u8(device).u8(offset).u8(1);
    };
    let mut seeds = Vec::new();

    let mut w = Writer::new();
    // 8250 probe: scratch register, loopback, divisor latch, FIFO enable, then "hi\n".
    write(&mut w, 0, 7, 0x55);
    read(&mut w, 0, 7);
    write(&mut w, 0, 4, 0x10);
    read(&mut w, 0, 6);
    write(&mut w, 0, 4, 0x00);
    write(&mut w, 0, 3, 0x80);
    write(&mut w, 0, 0, 0x01);
    write(&mut w, 0, 1, 0x00);
    write(&mut w, 0, 3, 0x03);
    write(&mut w, 0, 2, 0xc7);
    write(&mut w, 0, 1, 0x01);
    for byte in b"hi\n" {
        write(&mut w, 0, 0, *byte);
    }
    read(&mut w, 0, 5);
    read(&mut w, 0, 2);
    w.u8(4).bytes(b"root\n");
    for _ in 0..6 {
        read(&mut w, 0, 0);
    }
    w.u8(6);
    seeds.push(("serial-probe-and-io", w.finish()));

    let mut w = Writer::new();
    for command in [0xaa, 0x20, 0x60] {
        write(&mut w, 1, 4, command);
        read(&mut w, 1, 4);
        read(&mut w, 1, 0);
    }
    write(&mut w, 1, 0, 0x45);
    write(&mut w, 1, 4, 0xab);
    write(&mut w, 1, 0, 0xff);
    write(&mut w, 1, 0, 0xf2);
    write(&mut w, 1, 4, 0xd2);
    write(&mut w, 1, 0, 0x1c);
    w.u8(5).u8(5).u8(7);
    write(&mut w, 2, 0, 123);
    seeds.push(("i8042-probe-keyboard-ctrl-alt-del", w.finish()));

    let mut w = Writer::new();
    w.u8(3).u8(1).u64(u64::MAX).bytes(&[1, 2, 3, 4]);
    w.u8(2).u8(0).u64(0x3f8).u8(8);
    w.u8(4).bytes(&[0x41; 128]);
    w.u8(4).bytes(b"overflow");
    for _ in 0..4 {
        w.u8(5);
    }
    seeds.push(("odd-accesses-and-overflow", w.finish()));
    seeds
}
