//! virtio-vsock tests: packets and chains, the connection state machine and its credit,
//! and the device end to end against real Unix sockets in a temporary folder, with rings
//! laid out by hand (the guest side) and hostile packets.

mod connection;
mod harness;
mod hostile;
mod packet;
mod streams;
