//! Virtio devices: the virtio-mmio transport and the device backends behind it.
//!
//! Layout:
//! - [`device`]: the [`VirtioDevice`] trait every backend implements.
//! - [`core`]: [`VirtioCore`], the state every device shares (features, queues, config).
//! - [`interrupt`]: interrupt status plus the irqfd the transport raises.
//! - [`mmio`]: [`MmioTransport`], the virtio-mmio (version 2) register window.
//! - [`block`]: virtio-block; requests are parsed from descriptor chains in
//!   `block/request.rs` and reach the backing file in `block/backend.rs`.
//! - [`net`]: virtio-net over a host TAP; `net/tx.rs` and `net/rx.rs` move frames.
//! - [`rng`]: virtio-rng, buffers filled from the host's `getrandom(2)`.
//! - [`vsock`]: virtio-vsock with Firecracker's Unix-socket host side.
//!
//! The guest is hostile: nothing it writes to registers, rings or descriptors may panic the
//! VMM or make it touch memory outside guest RAM.

pub mod block;
pub mod core;
pub mod device;
pub mod interrupt;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod vsock;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod test_utils;

pub use self::core::VirtioCore;
pub use block::{Block, BlockError};
pub use device::{ActivateError, VirtioDevice};
pub use interrupt::{Interrupt, InterruptError};
pub use mmio::{
    mmio_cmdline_arg, MmioError, MmioState, MmioStateError, MmioTransport, MMIO_NOTIFY_OFFSET,
    MMIO_WINDOW_SIZE,
};
pub use net::{Net, NetError};
pub use rng::Rng;
pub use vsock::{Vsock, VsockError};

/// Feature bit every modern (virtio 1.x) device offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
