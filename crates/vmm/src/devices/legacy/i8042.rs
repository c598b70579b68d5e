//! The i8042 keyboard controller at ports 0x60/0x64: enough of it for the guest's driver to
//! probe quickly, for `reboot=k` (the reset command, 0xfe) to stop the VM, and for the VMM to
//! type Ctrl-Alt-Del so the guest shuts down cleanly.
//!
//! Written here rather than taken from vm-superio: its i8042 models only the reset command,
//! so the guest driver's probe waits for replies that never come, and no keys can be sent.

use crate::devices::BusDevice;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// Port 0x60 (data) is offset 0; port 0x64 (status/command) is offset 4.
pub const I8042_PORT_BASE: u64 = 0x60;
pub const I8042_PORT_LEN: u64 = 5;
const DATA: u64 = 0;
const COMMAND: u64 = 4;

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
const STATUS_KEYBOARD_UNLOCKED: u8 = 0x10;

/// Controller configuration: keyboard interrupt on, POST passed. No scancode translation:
/// the guest keyboard driver sees set 2 codes.
const CONFIG_KEYBOARD_INTERRUPT: u8 = 0x01;
const CONFIG_DEFAULT: u8 = CONFIG_KEYBOARD_INTERRUPT | 0x04;

const CMD_READ_CONFIG: u8 = 0x20;
const CMD_WRITE_CONFIG: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_CONTROLLER: u8 = 0xaa;
const CMD_TEST_KEYBOARD_PORT: u8 = 0xab;
const CMD_DISABLE_KEYBOARD: u8 = 0xad;
const CMD_ENABLE_KEYBOARD: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KEYBOARD_OUTPUT: u8 = 0xd2;
const CMD_RESET_CPU: u8 = 0xfe;

const KEYBOARD_ACK: u8 = 0xfa;
const KEYBOARD_RESET: u8 = 0xff;
const KEYBOARD_GET_ID: u8 = 0xf2;
const KEYBOARD_SELF_TEST_OK: u8 = 0xaa;

/// Set 2 make and break codes: Left Ctrl, Left Alt, Delete (extended).
const CTRL_ALT_DEL_SCANCODES: [u8; 10] =
    [0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0];
const CTRL_BREAK_TAIL: u8 = 0x14;
/// A real controller's buffer is one byte; a little more lets a whole key sequence queue up.
const OUTPUT_CAPACITY: usize = 32;

/// The guest's reset request, seen by both sides that must act on it: the VMM thread wakes
/// on `event`; the vCPU that wrote the command checks `requested` right after the port write
/// and stops there. Without that check the vCPU runs on while the VMM thread wakes up, and
/// Linux's reboot code falls through to its next methods (the BIOS vector, then a triple
/// fault), which would end a clean reboot as a crash.
#[derive(Clone)]
pub struct ResetRequest {
    event: Arc<EventFd>,
    requested: Arc<AtomicBool>,
}

impl ResetRequest {
    pub fn new(event: EventFd) -> Self {
        ResetRequest {
            event: Arc::new(event),
            requested: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Records the request and wakes the VMM thread.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
        if let Err(e) = self.event.write(1) {
            log::error!("i8042: cannot signal the guest's reset: {e}");
        }
    }

    /// The eventfd the VMM thread's event loop watches.
    pub fn event(&self) -> &EventFd {
        &self.event
    }

    /// Whether the guest has asked for a reset (it never un-asks).
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }
}

/// What an [`I8042`] saves: everything but its fds.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    pub output: Vec<u8>,
    pub config: u8,
    pub output_port: u8,
    pub status_extra: u8,
    pub pending_command: Option<u8>,
}

pub struct I8042 {
    reset: ResetRequest,
    keyboard_interrupt: EventFd,
    output: VecDeque<u8>,
    config: u8,
    output_port: u8,
    status_extra: u8,
    /// A controller command (0x60, 0xd1, 0xd2) waiting for its data byte.
    pending_command: Option<u8>,
}

impl I8042 {
    /// `reset` is written when the guest resets the CPU; `keyboard_interrupt` raises IRQ 1.
    pub fn new(reset: ResetRequest, keyboard_interrupt: EventFd) -> Self {
        I8042 {
            reset,
            keyboard_interrupt,
            output: VecDeque::with_capacity(OUTPUT_CAPACITY),
            config: CONFIG_DEFAULT,
            output_port: 0x01,
            status_extra: 0,
            pending_command: None,
        }
    }

    /// The controller's registers and unread output.
    pub fn save(&self) -> I8042State {
        I8042State {
            output: self.output.iter().copied().collect(),
            config: self.config,
            output_port: self.output_port,
            status_extra: self.status_extra,
            pending_command: self.pending_command,
        }
    }

    /// Puts `state` back; output beyond the controller's buffer is refused.
    pub fn restore(&mut self, state: &I8042State) -> Result<(), I8042Error> {
        if state.output.len() > OUTPUT_CAPACITY {
            return Err(I8042Error::OutputBufferFull);
        }
        self.output = state.output.iter().copied().collect();
        self.config = state.config;
        self.output_port = state.output_port;
        self.status_extra = state.status_extra;
        self.pending_command = state.pending_command;
        if !self.output.is_empty() {
            self.raise_keyboard_interrupt();
        }
        Ok(())
    }

    /// Types Ctrl-Alt-Del; the guest kernel turns it into a clean shutdown request.
    pub fn send_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        let free = OUTPUT_CAPACITY - self.output.len();
        if free < CTRL_ALT_DEL_SCANCODES.len() + 1 {
            return Err(I8042Error::OutputBufferFull);
        }
        for code in CTRL_ALT_DEL_SCANCODES.iter().chain([&CTRL_BREAK_TAIL]) {
            self.output.push_back(*code);
        }
        self.raise_keyboard_interrupt();
        Ok(())
    }

    fn status(&self) -> u8 {
        let full = if self.output.is_empty() {
            0
        } else {
            STATUS_OUTPUT_FULL
        };
        full | STATUS_SYSTEM_FLAG | STATUS_KEYBOARD_UNLOCKED | self.status_extra
    }

    fn push(&mut self, byte: u8) {
        if self.output.len() < OUTPUT_CAPACITY {
            self.output.push_back(byte);
            self.raise_keyboard_interrupt();
        }
    }

    fn raise_keyboard_interrupt(&self) {
        if self.config & CONFIG_KEYBOARD_INTERRUPT != 0 {
            if let Err(e) = self.keyboard_interrupt.write(1) {
                log::warn!("i8042: cannot raise IRQ 1: {e}");
            }
        }
    }

    fn read_data(&mut self) -> u8 {
        let byte = self.output.pop_front().unwrap_or(0);
        if !self.output.is_empty() {
            self.raise_keyboard_interrupt();
        }
        byte
    }

    fn write_command(&mut self, command: u8) {
        self.status_extra = STATUS_LAST_WAS_COMMAND;
        match command {
            CMD_READ_CONFIG => self.push(self.config),
            CMD_WRITE_CONFIG | CMD_WRITE_OUTPUT_PORT | CMD_WRITE_KEYBOARD_OUTPUT => {
                self.pending_command = Some(command)
            }
            CMD_TEST_CONTROLLER => self.push(0x55),
            CMD_TEST_KEYBOARD_PORT => self.push(0x00),
            CMD_READ_OUTPUT_PORT => self.push(self.output_port),
            CMD_DISABLE_KEYBOARD | CMD_ENABLE_KEYBOARD | CMD_DISABLE_AUX | CMD_ENABLE_AUX => {}
            CMD_RESET_CPU => self.reset.request(),
            other => log::debug!("i8042: ignoring controller command {other:#x}"),
        }
    }

    fn write_data(&mut self, value: u8) {
        self.status_extra = 0;
        match self.pending_command.take() {
            Some(CMD_WRITE_CONFIG) => self.config = value,
            Some(CMD_WRITE_OUTPUT_PORT) => self.output_port = value,
            Some(CMD_WRITE_KEYBOARD_OUTPUT) => self.push(value),
            _ => self.keyboard_command(value),
        }
    }

    /// Bytes written to port 0x60 without a pending controller command go to the keyboard.
    fn keyboard_command(&mut self, command: u8) {
        self.push(KEYBOARD_ACK);
        match command {
            KEYBOARD_RESET => self.push(KEYBOARD_SELF_TEST_OK),
            KEYBOARD_GET_ID => {
                self.push(0xab);
                self.push(0x83);
            }
            _ => {}
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum I8042Error {
    #[error("the i8042 output buffer is full: the guest is not reading its keyboard")]
    OutputBufferFull,
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA => self.read_data(),
            COMMAND => self.status(),
            _ => 0,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            DATA => self.write_data(value),
            COMMAND => self.write_command(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The controller, its reset eventfd and its IRQ 1 eventfd.
    fn controller() -> (I8042, EventFd, EventFd) {
        let (dev, _, reset, irq) = controller_with_request();
        (dev, reset, irq)
    }

    #[test]
    fn state_round_trips_and_refuses_overlong_output() {
        let (mut dev, _, _) = controller();
        dev.write(4, &[CMD_WRITE_CONFIG]); // waits for its data byte
        dev.send_ctrl_alt_del().unwrap();
        let state = dev.save();
        assert_eq!(state.pending_command, Some(CMD_WRITE_CONFIG));
        let (mut restored, _, irq) = controller();
        restored.restore(&state).unwrap();
        assert_eq!(restored.save(), state);
        assert!(irq.read().is_ok(), "unread output raises IRQ 1 again");
        let mut too_long = state;
        too_long.output = vec![0; OUTPUT_CAPACITY + 1];
        assert!(restored.restore(&too_long).is_err());
    }

    fn controller_with_request() -> (I8042, ResetRequest, EventFd, EventFd) {
        let reset = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let request = ResetRequest::new(reset.try_clone().unwrap());
        (
            I8042::new(request.clone(), irq.try_clone().unwrap()),
            request,
            reset,
            irq,
        )
    }

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut byte = [0u8];
        dev.read(offset, &mut byte);
        byte[0]
    }

    #[test]
    fn reset_command_signals_the_vmm_and_the_vcpu() {
        let (mut dev, request, reset, _) = controller_with_request();
        assert!(!request.is_requested());
        dev.write(COMMAND, &[CMD_RESET_CPU]);
        assert_eq!(reset.read().unwrap(), 1);
        assert!(
            request.is_requested(),
            "the writing vCPU must see it at once"
        );
    }

    #[test]
    fn other_commands_do_not_request_a_reset() {
        let (mut dev, request, reset, _) = controller_with_request();
        for command in 0..=0xfdu8 {
            dev.write(COMMAND, &[command]);
            dev.write(DATA, &[command]);
        }
        assert!(!request.is_requested());
        assert!(reset.read().is_err(), "no wake-up either");
    }

    #[test]
    fn probe_sequence_gets_answers() {
        let (mut dev, _, _) = controller();
        dev.write(COMMAND, &[CMD_TEST_CONTROLLER]);
        assert_eq!(read(&mut dev, COMMAND) & STATUS_OUTPUT_FULL, 1);
        assert_eq!(read(&mut dev, DATA), 0x55);
        dev.write(COMMAND, &[CMD_READ_CONFIG]);
        assert_eq!(read(&mut dev, DATA), CONFIG_DEFAULT);
        dev.write(COMMAND, &[CMD_WRITE_CONFIG]);
        dev.write(DATA, &[0x00]);
        dev.write(COMMAND, &[CMD_READ_CONFIG]);
        assert_eq!(read(&mut dev, DATA), 0x00);
        assert_eq!(read(&mut dev, COMMAND) & STATUS_OUTPUT_FULL, 0);
    }

    #[test]
    fn keyboard_reset_acks_and_passes_self_test() {
        let (mut dev, _, irq) = controller();
        dev.write(DATA, &[KEYBOARD_RESET]);
        assert!(irq.read().unwrap() >= 1);
        assert_eq!(read(&mut dev, DATA), KEYBOARD_ACK);
        assert_eq!(read(&mut dev, DATA), KEYBOARD_SELF_TEST_OK);
    }

    #[test]
    fn ctrl_alt_del_queues_scancodes_and_interrupts() {
        let (mut dev, _, irq) = controller();
        dev.send_ctrl_alt_del().unwrap();
        assert_eq!(irq.read().unwrap(), 1);
        let codes: Vec<u8> = (0..11).map(|_| read(&mut dev, DATA)).collect();
        assert_eq!(&codes[..4], &[0x14, 0x11, 0xe0, 0x71]);
        assert_eq!(read(&mut dev, COMMAND) & STATUS_OUTPUT_FULL, 0);
        dev.send_ctrl_alt_del().unwrap();
        dev.send_ctrl_alt_del().unwrap();
        assert_eq!(dev.send_ctrl_alt_del(), Err(I8042Error::OutputBufferFull));
    }

    #[test]
    fn garbage_never_panics_or_overflows() {
        let (mut dev, _, _) = controller();
        for offset in 0..8u64 {
            for value in 0..=255u8 {
                if !(offset == COMMAND && value == CMD_RESET_CPU) {
                    dev.write(offset, &[value]);
                }
                let mut wide = [0u8; 4];
                dev.read(offset, &mut wide);
                dev.write(offset, &[]);
            }
        }
        assert!(dev.output.len() <= OUTPUT_CAPACITY);
    }
}
