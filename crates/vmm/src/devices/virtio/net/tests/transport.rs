//! virtio-net behind the virtio-mmio transport: identity, features, config space, and
//! activation with its two queues.

use std::sync::atomic::Ordering;

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::*;

use super::harness::*;
use crate::config::NetworkInterfaceConfig;
use crate::devices::virtio::net::{random_mac, tap_offloads, Net, NetError};
use crate::devices::virtio::test_utils::*;
use crate::devices::virtio::VIRTIO_F_VERSION_1;

fn driver() -> (TestDriver, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    let (tap, _peer, offload) = fake_tap();
    let net = Net::with_tap("eth0", MAC, Box::new(tap)).unwrap();
    (TestDriver::new(Box::new(net)), offload)
}

#[test]
fn identity_features_and_config_space() {
    let (driver, _) = driver();
    assert_eq!(driver.read(0x08), VIRTIO_ID_NET);
    let features = driver.device_features();
    for bit in [
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_MRG_RXBUF,
    ] {
        assert!(features & 1 << bit != 0, "feature {bit} not offered");
    }
    assert!(features & VIRTIO_F_VERSION_1 != 0);
    assert!(features & 1 << VIRTIO_NET_F_CTRL_VQ == 0);
    let mut config = [0u8; 8];
    driver.read_bytes(0x100, &mut config);
    assert_eq!(config[..6], MAC);
    assert_eq!(
        u16::from_le_bytes([config[6], config[7]]),
        VIRTIO_NET_S_LINK_UP as u16
    );
    // Out of range and read-only.
    let mut beyond = [0xffu8; 4];
    driver.read_bytes(0x106, &mut beyond);
    assert_eq!(beyond, [0; 4]);
    driver.write_bytes(0x100, &[0xff; 6]);
    driver.read_bytes(0x100, &mut config[..6]);
    assert_eq!(config[..6], MAC);
}

#[test]
fn activation_needs_both_queues_and_sets_offloads() {
    let (mut driver, offload) = driver();
    let features = driver.device_features();
    assert!(driver.negotiate(features));
    driver.setup_queue(0, 256, DESC_TABLE, AVAIL_RING, USED_RING);
    driver.add_status(STATUS_DRIVER_OK);
    assert!(!driver.transport.lock().unwrap().is_activated());
    assert!(driver.negotiate(features));
    driver.setup_queue(0, 256, DESC_TABLE, AVAIL_RING, USED_RING);
    driver.setup_queue(1, 256, 0x8000, 0xa000, 0xb000);
    driver.add_status(STATUS_DRIVER_OK);
    assert!(driver.transport.lock().unwrap().is_activated());
    let want = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_UFO;
    assert_eq!(offload.load(Ordering::SeqCst), want);
    driver.fuzz_registers(7);
    // Reset turns the offloads off again.
    driver.write(0x70, 0);
    assert_eq!(offload.load(Ordering::SeqCst), 0);
}

#[test]
fn offloads_follow_the_accepted_receive_features() {
    let f = |bits: &[u32]| bits.iter().fold(0u64, |f, b| f | 1 << b);
    assert_eq!(tap_offloads(0), 0);
    // TSO without checksum offload is meaningless to the TAP.
    assert_eq!(tap_offloads(f(&[VIRTIO_NET_F_GUEST_TSO4])), 0);
    assert_eq!(
        tap_offloads(f(&[VIRTIO_NET_F_GUEST_CSUM])),
        libc::TUN_F_CSUM
    );
    let csum_tso4 = f(&[VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4]);
    assert_eq!(tap_offloads(csum_tso4), libc::TUN_F_CSUM | libc::TUN_F_TSO4);
    // Transmit offloads do not concern the TAP's receive side.
    assert_eq!(
        tap_offloads(f(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4])),
        0
    );
}

#[test]
fn generated_macs_are_local_unicast_and_differ() {
    let a = random_mac();
    assert_eq!(a[0], 0x06);
    let others: Vec<_> = (0..8).map(|_| random_mac()).collect();
    assert!(others.iter().any(|m| *m != a));
}

#[test]
fn configuration_errors_name_the_interface() {
    let mut config = NetworkInterfaceConfig {
        iface_id: "eth7".into(),
        host_dev_name: "ember-nope0".into(),
        guest_mac: Some("06:00:00:00:00:01".into()),
        mtu: None,
        rx_rate_limiter: None,
        tx_rate_limiter: None,
    };
    let err = Net::new(&config).err().unwrap();
    assert!(matches!(err, NetError::Tap { .. }));
    let text = err.to_string();
    assert!(
        text.contains("\"eth7\"") && text.contains("\"ember-nope0\""),
        "{text}"
    );
    config.guest_mac = Some("not-a-mac".into());
    let err = Net::new(&config).err().unwrap();
    assert!(err.to_string().contains("not-a-mac"), "{err}");
}

#[test]
fn saved_state_restores_features_offloads_and_queues() {
    let (driver, _) = driver();
    let features = driver.device_features();
    assert!(driver.negotiate(features));
    driver.setup_queue(0, 256, DESC_TABLE, AVAIL_RING, USED_RING);
    driver.setup_queue(1, 256, 0x8000, 0xa000, 0xb000);
    driver.add_status(STATUS_DRIVER_OK);
    let state = driver.transport.lock().unwrap().save();
    assert!(state.activated);

    let (tap, _peer, offload) = fake_tap();
    let net = Net::with_tap("eth0", MAC, Box::new(tap)).unwrap();
    let restored = TestDriver::with_memory(driver.mem.clone(), Box::new(net));
    restored.transport.lock().unwrap().restore(&state).unwrap();
    assert_eq!(restored.transport.lock().unwrap().save(), state);
    assert!(restored.transport.lock().unwrap().is_activated());
    assert_ne!(
        offload.load(Ordering::SeqCst),
        0,
        "offloads follow the restored features"
    );
    let mut config = [0u8; 6];
    restored.read_bytes(0x100, &mut config);
    assert_eq!(config, MAC);
}

#[test]
fn an_mtu_is_offered_with_its_config_field_only_when_set() {
    let (tap, _peer, _) = fake_tap();
    let net = Net::build("eth0", MAC, Box::new(tap), Some(9000)).unwrap();
    let with_mtu = TestDriver::new(Box::new(net));
    assert!(with_mtu.device_features() & 1 << VIRTIO_NET_F_MTU != 0);
    let mut config = [0u8; 12];
    with_mtu.read_bytes(0x100, &mut config);
    assert_eq!(config[..6], MAC);
    assert_eq!(u16::from_le_bytes([config[10], config[11]]), 9000);
    let (plain, _) = driver();
    assert!(plain.device_features() & 1 << VIRTIO_NET_F_MTU == 0);
}
