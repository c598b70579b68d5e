//! The header format, the CONNECT line, and chains that are not packets.

use super::harness::*;
use crate::devices::virtio::test_utils::{readable, writable};
use crate::devices::virtio::vsock::muxer::parse_connect;
use crate::devices::virtio::vsock::packet::{Header, Op, HDR_LEN, MAX_PKT_DATA};
use crate::devices::virtio::vsock::TX_INDEX;
use crate::devices::virtio::VirtioDevice;
use vm_memory::{Bytes, GuestAddress};

fn tx_dropped(s: &Setup) -> u64 {
    s.vsock.metrics_json()["tx_dropped"].as_u64().unwrap()
}

#[test]
fn headers_round_trip_little_endian() {
    let hdr = Header {
        src_cid: 0x0102_0304_0506_0708,
        dst_cid: 2,
        src_port: 0xdead_beef,
        dst_port: 80,
        len: 5,
        kind: 1,
        op: 5,
        flags: 3,
        buf_alloc: 65536,
        fwd_cnt: 7,
    };
    let bytes = hdr.to_bytes();
    assert_eq!(bytes[0], 0x08);
    assert_eq!(&bytes[16..20], &0xdead_beefu32.to_le_bytes());
    assert_eq!(Header::from_bytes(&bytes), hdr);
    assert_eq!(hdr.op(), Some(Op::Rw));
    for op in 1..=7u16 {
        assert_eq!(Op::from_u16(op).unwrap().to_u16(), op);
    }
    assert_eq!(Op::from_u16(0), None);
    assert_eq!(Op::from_u16(8), None);
}

#[test]
fn connect_lines_are_parsed_strictly() {
    assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
    assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
    assert_eq!(parse_connect(b"CONNECT 4294967295"), Some(u32::MAX));
    for bad in [
        &b"CONNECT 4294967296"[..],
        b"CONNECT -1",
        b"CONNECT +5",
        b"CONNECT ",
        b"CONNECT",
        b"connect 5",
        b"CONNECT  5",
        b"CONNECT 5 6",
        b"\xff\xfe",
        b"",
    ] {
        assert_eq!(
            parse_connect(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_header_split_over_descriptors_is_read() {
    let mut s = setup();
    let hdr = guest_hdr(Op::Request, 1000, 7);
    let bytes = hdr.to_bytes();
    s.mem
        .write_slice(&bytes[..10], GuestAddress(0x20000))
        .unwrap();
    s.mem
        .write_slice(&bytes[10..], GuestAddress(0x21000))
        .unwrap();
    let descs = [
        readable(0x20000, 10),
        readable(0x21000, (HDR_LEN - 10) as u32),
    ];
    s.tx.add_chain(&s.mem, &descs);
    s.vsock.process_queue(TX_INDEX);
    assert_eq!(tx_dropped(&s), 0);
    // Nothing listens on port 7: the guest hears a RST for exactly its ports.
    let packets = s.exchange();
    assert_eq!(ops(&packets), [Some(Op::Rst)]);
    assert_eq!((packets[0].0.dst_port, packets[0].0.src_port), (1000, 7));
    assert_eq!((packets[0].0.src_cid, packets[0].0.dst_cid), (2, GUEST_CID));
}

#[test]
fn chains_that_are_not_packets_are_dropped() {
    let mut s = setup();
    // Shorter than a header.
    s.send_raw(&[0u8; 20], &[]);
    assert_eq!(tx_dropped(&s), 1);
    // A length past what the chain holds.
    let mut hdr = guest_hdr(Op::Rw, 1, 2);
    hdr.len = 100;
    s.send_raw(&hdr.to_bytes(), &[1u8; 10]);
    assert_eq!(tx_dropped(&s), 2);
    // A length past the largest packet.
    hdr.len = MAX_PKT_DATA as u32 + 1;
    s.send_raw(&hdr.to_bytes(), &[]);
    hdr.len = u32::MAX;
    s.send_raw(&hdr.to_bytes(), &[]);
    assert_eq!(tx_dropped(&s), 4);
    // A device-writable TX descriptor, and one outside guest memory.
    s.tx.add_chain(&s.mem, &[writable(0x20000, HDR_LEN as u32)]);
    s.tx.add_chain(&s.mem, &[readable(u64::MAX - 8, HDR_LEN as u32)]);
    s.tx.add_chain(&s.mem, &[readable(0xff000, 0x2000)]);
    s.vsock.process_queue(TX_INDEX);
    assert_eq!(tx_dropped(&s), 7);
    // Every chain went back to the guest, none produced a packet.
    assert_eq!(s.tx.used_idx(&s.mem), 7);
    assert!(s.exchange().is_empty());
}

#[test]
fn rx_chains_too_small_or_outside_memory_come_back_empty() {
    let mut s = setup();
    s.send(guest_hdr(Op::Request, 1000, 7), &[]);
    s.rx.add_chain(&s.mem, &[writable(0x30000, 16)]);
    s.rx.add_chain(&s.mem, &[readable(0x30000, 64)]);
    s.rx.add_chain(&s.mem, &[writable(0xfffff, 64)]);
    s.vsock
        .process_queue(crate::devices::virtio::vsock::RX_INDEX);
    assert_eq!(s.rx.used_idx(&s.mem), 3);
    for n in 0..3 {
        assert_eq!(s.rx.used_elem(&s.mem, n).1, 0);
    }
    assert_eq!(s.vsock.metrics_json()["rx_bad_chains"], 3);
    // The RST is still owed and goes into the next good buffer, split or not.
    s.rx.add_chain(&s.mem, &[writable(0x30000, 20), writable(0x31000, 24)]);
    s.vsock
        .process_queue(crate::devices::virtio::vsock::RX_INDEX);
    let (_, len) = s.rx.used_elem(&s.mem, 3);
    assert_eq!(len, HDR_LEN as u32);
    let mut bytes = [0u8; HDR_LEN];
    s.mem
        .read_slice(&mut bytes[..20], GuestAddress(0x30000))
        .unwrap();
    s.mem
        .read_slice(&mut bytes[20..], GuestAddress(0x31000))
        .unwrap();
    assert_eq!(Header::from_bytes(&bytes).op(), Some(Op::Rst));
}
