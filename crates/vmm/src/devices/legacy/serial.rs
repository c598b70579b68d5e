//! The 8250 UART at 0x3f8 (COM1), emulated by vm-superio, wired to the host's stdout/stdin.

use crate::devices::BusDevice;
use std::io::Write;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// COM1's I/O ports.
pub const SERIAL_PORT_BASE: u64 = 0x3f8;
pub const SERIAL_PORT_LEN: u64 = 8;

/// An eventfd registered as a KVM irqfd: triggering it raises the device's interrupt.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The guest's serial console: output goes to `W`, input is queued by the VMM thread.
pub struct SerialConsole<W: Write + Send> {
    uart: Serial<EventFdTrigger, NoEvents, W>,
}

impl<W: Write + Send> SerialConsole<W> {
    pub fn new(interrupt: EventFd, out: W) -> Self {
        SerialConsole {
            uart: Serial::new(EventFdTrigger(interrupt), out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit in the receive FIFO.
    pub fn queue_input(&mut self, input: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(input.len());
        match self.uart.enqueue_raw_bytes(&input[..room]) {
            Ok(queued) => queued,
            Err(e) => {
                log::warn!("serial input dropped: {e:?}");
                0
            }
        }
    }

    /// Free space in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

impl<W: Write + Send> BusDevice for SerialConsole<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The UART has byte-wide registers; wider or out-of-range accesses read as zero.
        match (data, u8::try_from(offset)) {
            ([byte], Ok(offset)) if u64::from(offset) < SERIAL_PORT_LEN => {
                *byte = self.uart.read(offset)
            }
            (data, _) => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (&[value], Ok(offset)) = (data, u8::try_from(offset)) else {
            return;
        };
        if u64::from(offset) < SERIAL_PORT_LEN {
            if let Err(e) = self.uart.write(offset, value) {
                log::warn!("serial write failed: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console() -> (SerialConsole<Vec<u8>>, EventFd) {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (
            SerialConsole::new(irq.try_clone().unwrap(), Vec::new()),
            irq,
        )
    }

    #[test]
    fn transmit_reaches_the_writer() {
        let (mut serial, _irq) = console();
        for byte in b"hi\n" {
            serial.write(0, &[*byte]);
        }
        assert_eq!(serial.uart.writer(), b"hi\n");
    }

    #[test]
    fn input_is_readable_and_raises_an_interrupt() {
        let (mut serial, irq) = console();
        serial.write(1, &[0x01]); // IER: received-data interrupt on
        assert_eq!(serial.queue_input(b"ok"), 2);
        assert_eq!(irq.read().unwrap(), 1);
        let mut byte = [0u8];
        serial.read(0, &mut byte);
        assert_eq!(&byte, b"o");
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let (mut serial, _irq) = console();
        let mut wide = [0xaau8; 4];
        serial.read(0, &mut wide);
        assert_eq!(wide, [0; 4]);
        serial.write(0, &[1, 2, 3, 4]);
        serial.write(u64::MAX, &[1]);
        serial.read(9, &mut wide[..1]);
        assert!(serial.uart.writer().is_empty());
    }
}
