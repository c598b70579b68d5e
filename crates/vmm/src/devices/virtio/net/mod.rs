//! virtio-net: a network interface backed by a host TAP device, one RX and one TX queue.
//!
//! - `tap.rs`: opening the TAP and the [`TapIo`] seam the tests replace.
//! - `tx.rs`: guest -> TAP, one `writev` per frame straight from guest memory.
//! - `rx.rs`: TAP -> guest, one `read` per frame into a host buffer, then copied into one
//!   or (with `VIRTIO_NET_F_MRG_RXBUF`) several guest buffers.
//! - `device.rs`: the [`VirtioDevice`](super::VirtioDevice) impl and event handling.
//!
//! The TAP fd is registered edge-triggered for `EPOLLIN | EPOLLOUT`. Frames stay in the TAP
//! (or in the one-frame host buffer) while the guest has no receive buffers; the RX queue
//! notification resumes reading. A TX write that would block leaves the chain in the queue
//! until `EPOLLOUT`.

mod device;
pub mod rx;
pub mod tap;
#[cfg(test)]
mod tests;
pub mod tx;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    virtio_net_hdr_v1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::core::VirtioCore;
use super::VIRTIO_F_VERSION_1;
use crate::config::{parse_mac, NetworkInterfaceConfig, RateLimiterConfig};
use crate::rate_limiter::{RateLimiter, RateLimiterError};
use rx::Rx;
pub use tap::{Tap, TapError, TapIo};
use tx::Tx;

/// The `virtio_net_hdr_v1` in front of every frame (VERSION_1 always has `num_buffers`).
pub const VNET_HDR_LEN: usize = std::mem::size_of::<virtio_net_hdr_v1>();
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
pub const RX_INDEX: usize = 0;
pub const TX_INDEX: usize = 1;
/// The largest frame (without the vnet header): a 64 KiB GSO packet, its Ethernet header
/// and a VLAN tag.
pub const MAX_FRAME_LEN: usize = 65536 + 14 + 4;
/// Frames handled per queue per call before yielding to the other event sources.
const BATCH_LIMIT: usize = QUEUE_SIZE as usize;
/// `struct virtio_net_config` up to `status`: mac[6], le16 status.
const CONFIG_LEN: usize = 8;
/// ... and up to `mtu` when VIRTIO_NET_F_MTU is offered: le16 max_virtqueue_pairs, le16 mtu.
const CONFIG_LEN_MTU: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network interface {id:?}: {source}")]
    Tap {
        id: String,
        #[source]
        source: TapError,
    },
    #[error("network interface {id:?}: guest_mac {mac:?} is not a MAC address")]
    BadMac { id: String, mac: String },
    #[error("network interface {id:?}: {source}")]
    RateLimiter {
        id: String,
        #[source]
        source: RateLimiterError,
    },
    #[error("network interface {id:?}: cannot create an eventfd: {source}")]
    EventFd {
        id: String,
        #[source]
        source: std::io::Error,
    },
}

/// Counters an interface keeps; get them with [`Net::metrics`] before handing it over.
#[derive(Debug, Default)]
pub struct NetMetrics {
    pub rx_packets: AtomicU64,
    /// Frame bytes delivered to the guest, vnet header excluded.
    pub rx_bytes: AtomicU64,
    /// Frames bigger than the guest's buffers can ever hold.
    pub rx_dropped_too_big: AtomicU64,
    /// Frames the TAP returned shorter than the vnet header.
    pub rx_dropped_short: AtomicU64,
    /// RX chains that were not device-writable or not in guest RAM (returned empty).
    pub rx_bad_chains: AtomicU64,
    /// Times reading stopped because the guest had no (or too few) receive buffers.
    pub rx_deferred: AtomicU64,
    /// TAP read errors other than EAGAIN.
    pub rx_tap_errors: AtomicU64,
    pub tx_packets: AtomicU64,
    /// Frame bytes sent to the TAP, vnet header excluded.
    pub tx_bytes: AtomicU64,
    /// TX chains shorter than the header, longer than the largest frame, device-writable
    /// or outside guest RAM.
    pub tx_dropped_malformed: AtomicU64,
    /// Frames the TAP refused (EINVAL for a bad GSO header, EIO when the link is down...).
    pub tx_dropped_tap_error: AtomicU64,
    /// Times TX stopped on EAGAIN to wait for EPOLLOUT.
    pub tx_blocked: AtomicU64,
    /// Times the RX rate limiter held a frame until its timer.
    pub rx_throttled: AtomicU64,
    /// Times the TX rate limiter held a frame until its timer.
    pub tx_throttled: AtomicU64,
}

impl NetMetrics {
    /// The counters as a JSON object, for metrics lines.
    pub fn to_json(&self) -> serde_json::Value {
        let load = |counter: &AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        serde_json::json!({
            "rx_packets": load(&self.rx_packets),
            "rx_bytes": load(&self.rx_bytes),
            "rx_dropped_too_big": load(&self.rx_dropped_too_big),
            "rx_dropped_short": load(&self.rx_dropped_short),
            "rx_bad_chains": load(&self.rx_bad_chains),
            "rx_deferred": load(&self.rx_deferred),
            "rx_tap_errors": load(&self.rx_tap_errors),
            "tx_packets": load(&self.tx_packets),
            "tx_bytes": load(&self.tx_bytes),
            "tx_dropped_malformed": load(&self.tx_dropped_malformed),
            "tx_dropped_tap_error": load(&self.tx_dropped_tap_error),
            "tx_blocked": load(&self.tx_blocked),
            "rx_rate_limiter_throttled": load(&self.rx_throttled),
            "tx_rate_limiter_throttled": load(&self.tx_throttled)
        })
    }
}

/// A virtio-net device.
pub struct Net {
    id: String,
    core: VirtioCore,
    tap: Box<dyn TapIo>,
    metrics: Arc<NetMetrics>,
    rx: Rx,
    tx: Tx,
    rx_limiter: RateLimiter,
    tx_limiter: RateLimiter,
    /// Written when a batch limit was hit outside `process_queue`, to come back later.
    resume: EventFd,
}

impl Net {
    /// Opens the interface's TAP; errors name the interface, the TAP and the OS error.
    pub fn new(config: &NetworkInterfaceConfig) -> Result<Net, NetError> {
        let id = config.iface_id.clone();
        let mac = match &config.guest_mac {
            Some(text) => parse_mac(text).ok_or_else(|| NetError::BadMac {
                id: id.clone(),
                mac: text.clone(),
            })?,
            None => random_mac(),
        };
        let tap = Tap::open(&config.host_dev_name).map_err(|source| NetError::Tap {
            id: id.clone(),
            source,
        })?;
        let mut net = Net::build(&id, mac, Box::new(tap), config.mtu)?;
        net.update_rate_limiters(config.rx_rate_limiter, config.tx_rate_limiter);
        Ok(net)
    }

    /// New limits (PATCH /network-interfaces), effective at once; buckets not named keep
    /// theirs.
    pub fn update_rate_limiters(
        &mut self,
        rx: Option<RateLimiterConfig>,
        tx: Option<RateLimiterConfig>,
    ) {
        if let Some(rx) = rx {
            self.rx_limiter.update(&rx);
        }
        if let Some(tx) = tx {
            self.tx_limiter.update(&tx);
        }
    }

    /// A device on an already open backend.
    pub fn with_tap(id: &str, mac: [u8; 6], tap: Box<dyn TapIo>) -> Result<Net, NetError> {
        Net::build(id, mac, tap, None)
    }

    /// A device on an already open backend that tells the guest its MTU, if given.
    pub fn build(
        id: &str,
        mac: [u8; 6],
        tap: Box<dyn TapIo>,
        mtu: Option<u16>,
    ) -> Result<Net, NetError> {
        let resume = EventFd::new(EFD_NONBLOCK).map_err(|source| NetError::EventFd {
            id: id.to_string(),
            source,
        })?;
        let limiter = || {
            RateLimiter::new(None).map_err(|source| NetError::RateLimiter {
                id: id.to_string(),
                source,
            })
        };
        let (config, features) = config_space(mac, mtu);
        let name = format!("virtio-net {id}");
        let core = VirtioCore::new(name, VIRTIO_ID_NET, &[QUEUE_SIZE; 2], features, config);
        Ok(Net {
            id: id.to_string(),
            core,
            tap,
            metrics: Arc::new(NetMetrics::default()),
            rx: Rx::new(),
            tx: Tx::default(),
            rx_limiter: limiter()?,
            tx_limiter: limiter()?,
            resume,
        })
    }

    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.core.config()[..6]);
        mac
    }
}

/// The config space and the features offered: the MTU field and VIRTIO_NET_F_MTU only
/// when an MTU is set.
fn config_space(mac: [u8; 6], mtu: Option<u16>) -> (Vec<u8>, u64) {
    let mut config = vec![0u8; CONFIG_LEN];
    config[..6].copy_from_slice(&mac);
    config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
    let Some(mtu) = mtu else {
        return (config, avail_features());
    };
    config.resize(CONFIG_LEN_MTU, 0);
    // One queue pair; the field only means something with VIRTIO_NET_F_MQ.
    config[8..10].copy_from_slice(&1u16.to_le_bytes());
    config[10..12].copy_from_slice(&mtu.to_le_bytes());
    (config, avail_features() | 1 << VIRTIO_NET_F_MTU)
}

fn avail_features() -> u64 {
    let bits = [
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_GUEST_UFO,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_HOST_UFO,
        VIRTIO_NET_F_MRG_RXBUF,
    ];
    let ring = VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX;
    bits.iter().fold(ring, |f, bit| f | 1 << bit)
}

/// The `TUN_F_*` offloads matching the receive offloads the driver accepted: the TAP may
/// then hand us partially checksummed and GSO frames, which the guest can take.
pub fn tap_offloads(acked: u64) -> u32 {
    let has = |bit: u32| acked & (1 << bit) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    for (bit, flag) in [
        (VIRTIO_NET_F_GUEST_TSO4, libc::TUN_F_TSO4),
        (VIRTIO_NET_F_GUEST_TSO6, libc::TUN_F_TSO6),
        (VIRTIO_NET_F_GUEST_UFO, libc::TUN_F_UFO),
    ] {
        if has(bit) {
            flags |= flag;
        }
    }
    flags
}

/// A random locally administered unicast address, `06:xx:xx:xx:xx:xx`.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0x06u8, 0, 0, 0, 0, 0];
    let mut random = [0u8; 5];
    // SAFETY: `random` is valid for writes of its length for the duration of the call.
    let got = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    if usize::try_from(got).ok() != Some(random.len()) {
        // Practically unreachable (getrandom blocks only before the pool is seeded); fall
        // back on the clock and the pid rather than fail the boot.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        random.copy_from_slice(&seed.to_le_bytes()[..5]);
    }
    mac[1..].copy_from_slice(&random);
    mac
}
