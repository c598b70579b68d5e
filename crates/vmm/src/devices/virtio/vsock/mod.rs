//! virtio-vsock with Firecracker's host side: stream sockets between the guest and host
//! programs, carried over Unix sockets.
//!
//! - Host-initiated: a program connects to `uds_path` and writes `CONNECT <port>\n`; once
//!   a guest listener on `<port>` accepts, it reads `OK <host_port>\n` and the socket is
//!   the stream. If nothing listens, the guest resets and the socket is closed.
//! - Guest-initiated: a guest connect to CID 2, port `P` is a connect to the Unix socket
//!   `<uds_path>_<P>`; refused (RST) when nothing listens there.
//!
//! Files: `packet.rs` (the header and reading/writing chains), `connection.rs` (one
//! stream: state, credit, shutdown), `muxer.rs` (host sockets and the connection table),
//! `device.rs` (the queues). Three queues: RX (host -> guest), TX (guest -> host), and the
//! event queue, used only for the transport reset a restored snapshot needs
//! ([`Vsock::send_transport_reset`]).

pub mod connection;
mod device;
pub mod muxer;
pub mod packet;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::core::VirtioCore;
use super::VIRTIO_F_VERSION_1;
use crate::config::VsockConfig;
use muxer::Muxer;
use packet::RxChain;

pub const QUEUE_SIZE: u16 = 256;
pub const RX_INDEX: usize = 0;
pub const TX_INDEX: usize = 1;
pub const EVENT_INDEX: usize = 2;
/// Chains handled per queue per pass before yielding to other event sources.
const BATCH_LIMIT: usize = QUEUE_SIZE as usize;
/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`: the guest drops every connection (its peer's
/// state is gone, as after a snapshot restore).
pub const EVENT_TRANSPORT_RESET: u32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock: cannot listen on uds_path {path:?}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vsock: cannot set up the listening socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("vsock: cannot create its epoll: {0}")]
    Epoll(#[source] std::io::Error),
    #[error("vsock: cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

#[derive(Debug, Default)]
pub struct VsockMetrics {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// TX chains that were not packets, or had CIDs or a type this device does not carry.
    pub tx_dropped: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// RX chains that could not hold a packet (returned empty).
    pub rx_bad_chains: AtomicU64,
    /// Connections ended or refused with a RST, either way.
    pub resets: AtomicU64,
}

impl VsockMetrics {
    fn to_json(&self) -> serde_json::Value {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "tx_packets": load(&self.tx_packets),
            "tx_bytes": load(&self.tx_bytes),
            "tx_dropped": load(&self.tx_dropped),
            "rx_packets": load(&self.rx_packets),
            "rx_bytes": load(&self.rx_bytes),
            "rx_bad_chains": load(&self.rx_bad_chains),
            "resets": load(&self.resets),
        })
    }
}

/// A virtio-vsock device.
pub struct Vsock {
    core: VirtioCore,
    guest_cid: u64,
    muxer: Muxer,
    metrics: VsockMetrics,
    /// The data of the TX packet being handled (at most one packet's worth).
    tx_data: Vec<u8>,
    rx_chain: RxChain,
    /// A transport reset is owed to the guest and waits for an event buffer.
    reset_pending: bool,
    /// Written when a pass stopped on its budget outside `process_queue`.
    resume: EventFd,
}

impl Vsock {
    /// Binds `uds_path`; the config was validated (CID range, path length).
    pub fn new(config: &VsockConfig) -> Result<Vsock, VsockError> {
        let muxer = Muxer::new(config.guest_cid, &config.uds_path)?;
        let resume = EventFd::new(EFD_NONBLOCK).map_err(VsockError::EventFd)?;
        let core = VirtioCore::new(
            "virtio-vsock".into(),
            VIRTIO_ID_VSOCK,
            &[QUEUE_SIZE; 3],
            VIRTIO_F_VERSION_1,
            config.guest_cid.to_le_bytes().to_vec(),
        );
        Ok(Vsock {
            core,
            guest_cid: config.guest_cid,
            muxer,
            metrics: VsockMetrics::default(),
            tx_data: Vec::new(),
            rx_chain: RxChain::default(),
            reset_pending: false,
            resume,
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The host side, for tests and metrics.
    pub fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    /// The hook for snapshot restore: every host connection is gone, so drop them all and
    /// tell the guest (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue), which then
    /// resets its sockets. Whoever restores a VM with a vsock device calls this once the
    /// device is active again; if the guest has no event buffer yet, the event goes out
    /// when it posts one.
    pub fn send_transport_reset(&mut self) {
        self.muxer.reset_all();
        self.reset_pending = true;
        self.deliver_transport_reset();
    }
}
