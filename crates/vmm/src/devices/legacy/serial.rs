//! The 8250 UART at 0x3f8 (COM1), emulated by vm-superio, wired to the host's stdout/stdin.

use crate::devices::BusDevice;
use serde::{Deserialize, Serialize};
use std::io::Write;
use vm_superio::serial::{NoEvents, SerialState};
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

    /// The UART's registers and unread input.
    pub fn save(&self) -> SerialConsoleState {
        SerialConsoleState::from(self.uart.state())
    }

    /// Puts `state` back, writing the guest's output to `out` from now on; a pending
    /// interrupt is raised again.
    pub fn restore(&mut self, state: &SerialConsoleState, out: W) -> Result<(), SerialStateError> {
        let trigger = self.uart.interrupt_evt().0.try_clone();
        let trigger = EventFdTrigger(trigger.map_err(SerialStateError::EventFd)?);
        let uart = Serial::from_state(&state.clone().into(), trigger, NoEvents, out);
        self.uart = uart.map_err(|e| SerialStateError::Invalid(format!("{e:?}")))?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SerialStateError {
    #[error("cannot clone the serial interrupt eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("the saved serial state cannot be restored: {0}")]
    Invalid(String),
}

/// vm-superio's `SerialState`, which has no serde of its own, field by field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialConsoleState {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

impl From<SerialState> for SerialConsoleState {
    fn from(s: SerialState) -> Self {
        SerialConsoleState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<SerialConsoleState> for SerialState {
    fn from(s: SerialConsoleState) -> Self {
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
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
    fn state_round_trips_with_registers_and_unread_input() {
        let (mut serial, _) = console();
        serial.write(3, &[0x80]); // DLAB on: the divisor latch is reachable
        serial.write(0, &[0x0c]);
        serial.write(3, &[0x03]); // 8N1
        serial.write(1, &[0x01]); // receive interrupts
        assert_eq!(serial.queue_input(b"hi"), 2);
        let state = serial.save();
        assert_eq!(state.in_buffer, b"hi");
        let (mut restored, irq) = console();
        restored.restore(&state, Vec::new()).unwrap();
        assert_eq!(restored.save(), state);
        assert!(
            irq.read().is_ok(),
            "the pending receive interrupt is raised again"
        );
        let mut byte = [0u8];
        restored.read(0, &mut byte);
        assert_eq!(byte[0], b'h');
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
