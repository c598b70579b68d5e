//! virtio-net tests: the device on a datagram socket pair standing in for the TAP (one
//! datagram = one frame, as on a TAP), rings laid out by hand in guest memory, and a real
//! TAP in a private network namespace when running as root.

mod harness;
mod limiter;
mod real_tap;
mod rx;
mod transport;
mod tx;
