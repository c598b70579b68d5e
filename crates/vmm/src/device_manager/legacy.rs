//! Wiring the legacy PC devices: serial console, i8042, boot timer.

use super::{DeviceManagerError, Wiring};
use crate::arch::x86_64::layout::{BOOT_TIMER_SIZE, BOOT_TIMER_START, KEYBOARD_IRQ, SERIAL_IRQ};
use crate::devices::legacy::i8042::{I8042_PORT_BASE, I8042_PORT_LEN};
use crate::devices::legacy::serial::{SERIAL_PORT_BASE, SERIAL_PORT_LEN};
use crate::devices::legacy::{BootTimer, ResetRequest, SerialConsole, I8042};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vmm_sys_util::eventfd::EventFd;

/// Choices about the legacy devices.
pub struct LegacyOptions {
    /// Map Firecracker's boot timer device, measuring from `process_start`.
    pub boot_timer: bool,
    pub process_start: Instant,
}

/// Legacy devices and the fds that tie them to the loop.
pub(super) struct LegacyDevices {
    pub serial: Arc<Mutex<SerialConsole<std::io::Stdout>>>,
    pub i8042: Arc<Mutex<I8042>>,
    /// Wakes the VMM thread, and stops the asking vCPU, when the guest resets the CPU.
    pub reset_request: ResetRequest,
}

fn event_fd() -> Result<EventFd, DeviceManagerError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(DeviceManagerError::EventFd)
}

pub(super) fn attach(
    wiring: &mut Wiring,
    options: &LegacyOptions,
) -> Result<LegacyDevices, DeviceManagerError> {
    let serial_irq = event_fd()?;
    wiring.vm.register_irqfd(&serial_irq, SERIAL_IRQ)?;
    let serial = Arc::new(Mutex::new(SerialConsole::new(
        serial_irq,
        std::io::stdout(),
    )));
    wiring
        .pio_bus
        .insert(SERIAL_PORT_BASE, SERIAL_PORT_LEN, serial.clone())?;

    let keyboard_irq = event_fd()?;
    wiring.vm.register_irqfd(&keyboard_irq, KEYBOARD_IRQ)?;
    let reset_request = ResetRequest::new(event_fd()?);
    let i8042 = Arc::new(Mutex::new(I8042::new(reset_request.clone(), keyboard_irq)));
    wiring
        .pio_bus
        .insert(I8042_PORT_BASE, I8042_PORT_LEN, i8042.clone())?;

    if options.boot_timer {
        let timer = Arc::new(Mutex::new(BootTimer::new(options.process_start)));
        wiring
            .mmio_bus
            .insert(BOOT_TIMER_START, BOOT_TIMER_SIZE, timer)?;
    }
    Ok(LegacyDevices {
        serial,
        i8042,
        reset_request,
    })
}
