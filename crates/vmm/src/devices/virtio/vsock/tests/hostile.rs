//! What a hostile guest or host client may try: spoofed CIDs, wrong types, packets for
//! connections that do not exist, lying credit, floods, and clients that never finish.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};

use super::harness::*;
use crate::devices::virtio::test_utils::{
    writable, TestDriver, AVAIL_RING, DESC_TABLE, STATUS_DRIVER_OK, USED_RING,
};
use crate::devices::virtio::vsock::muxer::{MAX_HANDSHAKES, MAX_PENDING_RESETS};
use crate::devices::virtio::vsock::packet::Op;
use crate::devices::virtio::vsock::Vsock;
use crate::devices::virtio::VirtioDevice;

#[test]
fn spoofed_cids_are_dropped_without_an_answer() {
    let mut s = setup();
    let mut spoofed = guest_hdr(Op::Request, 1, 5000);
    spoofed.src_cid = 7;
    s.send(spoofed, &[]);
    let mut elsewhere = guest_hdr(Op::Request, 1, 5000);
    elsewhere.dst_cid = 9;
    s.send(elsewhere, &[]);
    elsewhere.dst_cid = u64::MAX;
    s.send(elsewhere, &[]);
    assert!(s.exchange().is_empty());
    assert_eq!(s.vsock.metrics_json()["tx_dropped"], 3);
}

#[test]
fn other_socket_types_and_unknown_ops_are_reset() {
    let mut s = setup();
    let mut seqpacket = guest_hdr(Op::Request, 1, 5000);
    seqpacket.kind = 2;
    s.send(seqpacket, &[]);
    assert_eq!(ops(&s.exchange()), [Some(Op::Rst)]);
    let mut nonsense = guest_hdr(Op::Rw, 1, 5000);
    nonsense.op = 99;
    s.send(nonsense, &[]);
    assert_eq!(ops(&s.exchange()), [Some(Op::Rst)]);
    // A RST for nothing gets no answer (no RST storms).
    s.send(guest_hdr(Op::Rst, 1, 5000), &[]);
    assert!(s.exchange().is_empty());
}

#[test]
fn an_established_connection_refuses_out_of_order_ops() {
    let mut s = setup();
    let _listener = {
        let mut path = s.uds.as_os_str().to_owned();
        path.push("_5001");
        UnixListener::bind(path).unwrap()
    };
    s.send(guest_hdr(Op::Request, 3, 5001), &[]);
    assert_eq!(ops(&s.exchange()), [Some(Op::Response)]);
    // A RESPONSE to a connection the guest itself asked for.
    s.send(guest_hdr(Op::Response, 3, 5001), &[]);
    assert_eq!(ops(&s.exchange()), [Some(Op::Rst)]);
    assert_eq!(s.vsock.muxer().connection_count(), 0);
}

#[test]
fn a_flood_of_packets_for_unknown_connections_owes_boundedly_many_resets() {
    let mut s = setup();
    for port in 0..(MAX_PENDING_RESETS as u32 * 3) {
        s.send(guest_hdr(Op::Rw, port, 1), b"x");
    }
    assert!(s.vsock.muxer().pending_resets() <= MAX_PENDING_RESETS);
    let mut total = 0;
    for _ in 0..(MAX_PENDING_RESETS / 16 + 2) {
        total += s.exchange().len();
    }
    assert_eq!(total, MAX_PENDING_RESETS);
}

#[test]
fn lying_credit_never_sends_more_than_the_guest_can_hold() {
    let mut s = setup();
    let mut path = s.uds.as_os_str().to_owned();
    path.push("_5002");
    let listener = UnixListener::bind(path).unwrap();
    // It claims to have consumed bytes that were never sent: no credit at all.
    s.send(guest_hdr(Op::Request, 4, 5002).with_credit(1000, 500), &[]);
    assert_eq!(ops(&s.exchange()), [Some(Op::Response)]);
    let (mut host, _) = listener.accept().unwrap();
    host.write_all(&[1u8; 4000]).unwrap();
    let packets = s.exchange();
    assert!(
        !ops(&packets).contains(&Some(Op::Rw)),
        "{:?}",
        ops(&packets)
    );
    // A huge buffer is only as good as the RX buffers it posts: 4 KiB per packet.
    s.send(
        guest_hdr(Op::CreditUpdate, 4, 5002).with_credit(u32::MAX, 0),
        &[],
    );
    let packets = s.exchange();
    assert!(packets
        .iter()
        .all(|(h, d)| d.len() == h.len as usize && d.len() <= 4096));
    let sum: usize = packets.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(sum, 4000);
}

#[test]
fn host_clients_that_never_finish_their_line_are_bounded() {
    let mut s = setup();
    let mut clients = Vec::new();
    for _ in 0..(MAX_HANDSHAKES + 20) {
        let mut client = UnixStream::connect(&s.uds).unwrap();
        client.write_all(b"CONN").unwrap();
        clients.push(client);
        s.poll_host();
    }
    assert!(s.vsock.muxer().handshake_count() <= MAX_HANDSHAKES);
    // Garbage and overlong lines are dropped at once.
    let mut bad = UnixStream::connect(&s.uds).unwrap();
    bad.write_all(&[b'9'; 100]).unwrap();
    let mut worse = UnixStream::connect(&s.uds).unwrap();
    worse.write_all(b"HELLO 5\n").unwrap();
    s.poll_host();
    assert_eq!(s.vsock.muxer().connection_count(), 0);
    assert!(s.exchange().is_empty());
}

#[test]
fn register_fuzzing_through_the_transport_does_not_panic() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let config = crate::config::VsockConfig {
        vsock_id: None,
        guest_cid: 3,
        uds_path: dir.as_path().join("v.sock"),
    };
    let mut driver = TestDriver::new(Box::new(Vsock::new(&config).unwrap()));
    assert_eq!(driver.read(0x08), 19);
    let mut cid = [0u8; 8];
    driver.read_bytes(0x100, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 3);
    assert!(driver.negotiate(driver.device_features()));
    driver.setup_queue(0, 256, DESC_TABLE, AVAIL_RING, USED_RING);
    driver.setup_queue(1, 256, 0x5000, 0x7000, 0x8000);
    driver.setup_queue(2, 256, 0x9000, 0xb000, 0xc000);
    driver.add_status(STATUS_DRIVER_OK);
    assert!(driver.transport.lock().unwrap().is_activated());
    driver.add_chain(&[writable(0x10000, 64)]);
    driver.notify(0);
    driver.fuzz_registers(19);
}

#[test]
fn a_taken_socket_path_is_refused() {
    let s = setup();
    let config = crate::config::VsockConfig {
        vsock_id: None,
        guest_cid: 3,
        uds_path: s.uds.clone(),
    };
    let error = Vsock::new(&config).err().unwrap().to_string();
    assert!(error.contains("cannot listen on uds_path"), "{error}");
    // The device that bound it removes its socket file when it goes, and only that.
    let uds = s.uds.clone();
    drop(s);
    assert!(!uds.exists());
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let config = crate::config::VsockConfig {
        vsock_id: None,
        guest_cid: 3,
        uds_path: dir.as_path().join("v.sock"),
    };
    let vsock = Vsock::new(&config).unwrap();
    std::fs::remove_file(&config.uds_path).unwrap();
    std::fs::write(&config.uds_path, b"someone else's").unwrap();
    drop(vsock);
    assert!(config.uds_path.exists());
}
