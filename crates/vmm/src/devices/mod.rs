//! Emulated devices: the bus they sit on, legacy PC devices and virtio devices.

pub mod bus;
pub mod legacy;
pub mod virtio;

pub use bus::{Bus, BusDevice, SharedBusDevice};

use event_manager::EventOps;

/// Something in the event loop that a paused VM must keep quiet: on `pause` it leaves the
/// loop (its fds are no longer watched, so it neither touches guest memory nor raises an
/// interrupt, and what arrives waits in the fds); on `resume` it comes back and picks up
/// what waited.
pub trait Pausable {
    fn pause(&mut self, ops: &mut EventOps);
    fn resume(&mut self, ops: &mut EventOps);
}
