//! Legacy PC devices: serial console, i8042 (reset and Ctrl-Alt-Del), boot timer.

pub mod boot_timer;
pub mod i8042;
pub mod serial;

pub use boot_timer::BootTimer;
pub use i8042::{I8042State, ResetRequest, I8042};
pub use serial::{EventFdTrigger, SerialConsole, SerialConsoleState, SerialStateError};
