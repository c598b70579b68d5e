//! Connections end to end: both directions, credit, shutdown and reset, many at once.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::harness::*;
use crate::devices::virtio::vsock::connection::CONN_BUF;
use crate::devices::virtio::vsock::packet::{Header, Op, SHUTDOWN_RCV, SHUTDOWN_SEND};
use vm_memory::{Bytes, GuestAddress};

const BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

fn listen(uds: &Path, port: u32) -> UnixListener {
    let mut path = uds.as_os_str().to_owned();
    path.push(format!("_{port}"));
    UnixListener::bind(path).unwrap()
}

/// A guest-initiated connection from guest port `src` to host port `port`, accepted.
fn guest_connect(s: &mut Setup, listener: &UnixListener, src: u32, port: u32) -> UnixStream {
    s.send(guest_hdr(Op::Request, src, port), &[]);
    let packets = s.exchange();
    assert_eq!(ops(&packets), [Some(Op::Response)], "{packets:?}");
    let hdr = packets[0].0;
    assert_eq!(
        (hdr.src_port, hdr.dst_port, hdr.buf_alloc),
        (port, src, CONN_BUF)
    );
    let (stream, _) = listener.accept().unwrap();
    timed(stream)
}

/// A test that waits for bytes that never come fails instead of hanging.
fn timed(stream: UnixStream) -> UnixStream {
    let limit = Some(std::time::Duration::from_secs(10));
    stream.set_read_timeout(limit).unwrap();
    stream
}

/// A host-initiated connection to guest port `port`; returns the host stream and port.
fn host_connect(s: &mut Setup, port: u32) -> (UnixStream, u32) {
    let mut client = timed(UnixStream::connect(&s.uds).unwrap());
    client
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .unwrap();
    let packets = s.exchange();
    assert_eq!(ops(&packets), [Some(Op::Request)], "{packets:?}");
    let local = packets[0].0.src_port;
    assert_eq!(packets[0].0.dst_port, port);
    s.send(guest_hdr(Op::Response, port, local), &[]);
    let mut ok = vec![0u8; format!("OK {local}\n").len()];
    client.read_exact(&mut ok).unwrap();
    assert_eq!(String::from_utf8(ok).unwrap(), format!("OK {local}\n"));
    (client, local)
}

fn data_of(packets: &[(Header, Vec<u8>)]) -> Vec<u8> {
    packets
        .iter()
        .filter(|(h, _)| h.op() == Some(Op::Rw))
        .flat_map(|(_, d)| d.clone())
        .collect()
}

#[test]
fn guest_initiated_stream_carries_both_ways_and_closes() {
    let mut s = setup();
    let listener = listen(&s.uds, 5000);
    let mut host = guest_connect(&mut s, &listener, 1234, 5000);
    s.send(guest_hdr(Op::Rw, 1234, 5000), b"hello");
    let mut got = [0u8; 5];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    host.write_all(b"world").unwrap();
    let packets = s.exchange();
    assert_eq!(data_of(&packets), b"world");
    s.send(guest_hdr(Op::Shutdown, 1234, 5000).with_flags(BOTH), &[]);
    assert_eq!(ops(&s.exchange()), [Some(Op::Rst)]);
    assert_eq!(host.read(&mut got).unwrap(), 0);
    assert_eq!(s.vsock.muxer().connection_count(), 0);
}

#[test]
fn guest_connect_without_a_host_listener_is_reset() {
    let mut s = setup();
    s.send(guest_hdr(Op::Request, 1234, 6000), &[]);
    let packets = s.exchange();
    assert_eq!(ops(&packets), [Some(Op::Rst)]);
    assert!(s.interrupted());
    assert_eq!(s.vsock.muxer().connection_count(), 0);
}

#[test]
fn host_initiated_stream_gets_ok_and_data_after_the_line_is_kept() {
    let mut s = setup();
    let mut client = timed(UnixStream::connect(&s.uds).unwrap());
    // The line and the first bytes in one write: the bytes must not be eaten.
    client.write_all(b"CONNECT 52\nearly").unwrap();
    let packets = s.exchange();
    assert_eq!(ops(&packets), [Some(Op::Request)]);
    let local = packets[0].0.src_port;
    s.send(guest_hdr(Op::Response, 52, local), &[]);
    let mut ok = [0u8; 64];
    let n = client.read(&mut ok).unwrap();
    assert_eq!(&ok[..n], format!("OK {local}\n").as_bytes());
    assert_eq!(data_of(&s.exchange()), b"early");
    s.send(guest_hdr(Op::Rw, 52, local), b"reply");
    let mut got = [0u8; 5];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"reply");
}

#[test]
fn host_connect_to_a_port_without_a_guest_listener_is_closed() {
    let mut s = setup();
    let mut client = timed(UnixStream::connect(&s.uds).unwrap());
    client.write_all(b"CONNECT 99\n").unwrap();
    let packets = s.exchange();
    let local = packets[0].0.src_port;
    s.send(guest_hdr(Op::Rst, 99, local), &[]);
    let mut buf = [0u8; 8];
    assert_eq!(client.read(&mut buf).unwrap(), 0);
    assert_eq!(s.vsock.muxer().connection_count(), 0);
}

#[test]
fn host_half_close_lets_the_guest_still_send() {
    let mut s = setup();
    let (mut client, local) = host_connect(&mut s, 80);
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let packets = s.exchange();
    assert_eq!(data_of(&packets), b"request");
    let last = packets.last().unwrap().0;
    assert_eq!((last.op(), last.flags), (Some(Op::Shutdown), SHUTDOWN_SEND));
    s.send(guest_hdr(Op::Rw, 80, local), b"response");
    s.send(guest_hdr(Op::Shutdown, 80, local).with_flags(BOTH), &[]);
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"response");
}

#[test]
fn guest_half_close_shuts_the_host_socket_for_writing_only() {
    let mut s = setup();
    let listener = listen(&s.uds, 7);
    let mut host = guest_connect(&mut s, &listener, 40, 7);
    s.send(guest_hdr(Op::Rw, 40, 7), b"last words");
    s.send(
        guest_hdr(Op::Shutdown, 40, 7).with_flags(SHUTDOWN_SEND),
        &[],
    );
    let mut got = Vec::new();
    host.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"last words");
    host.write_all(b"answer").unwrap();
    assert_eq!(data_of(&s.exchange()), b"answer");
}

#[test]
fn a_host_reader_that_stops_stalls_the_guest_at_its_credit() {
    let mut s = setup();
    let listener = listen(&s.uds, 9);
    let host = guest_connect(&mut s, &listener, 41, 9);
    // Fill the host socket's kernel buffer, then Ember's CONN_BUF, within credit.
    let chunk = vec![7u8; 16 << 10];
    let mut sent = 0usize;
    while s.vsock.muxer().buffered_bytes() + chunk.len() <= CONN_BUF as usize {
        s.send(guest_hdr(Op::Rw, 41, 9), &chunk);
        sent += chunk.len();
        assert!(sent < 64 << 20, "the host socket never filled");
    }
    assert_eq!(s.vsock.muxer().connection_count(), 1);
    assert!(s.vsock.muxer().buffered_bytes() <= CONN_BUF as usize);
    // Past the credit: the connection is reset, its buffer freed.
    s.send(guest_hdr(Op::Rw, 41, 9), &chunk);
    let packets = s.exchange();
    assert!(
        ops(&packets).contains(&Some(Op::Rst)),
        "{:?}",
        ops(&packets)
    );
    assert_eq!(s.vsock.muxer().connection_count(), 0);
    assert_eq!(s.vsock.muxer().buffered_bytes(), 0);
    drop(host);
}

#[test]
fn credit_updates_follow_what_reached_the_host() {
    let mut s = setup();
    let listener = listen(&s.uds, 10);
    let mut host = guest_connect(&mut s, &listener, 42, 10);
    let chunk = vec![1u8; 8 << 10];
    for _ in 0..3 {
        s.send(guest_hdr(Op::Rw, 42, 10), &chunk);
    }
    let packets = s.exchange();
    let update = packets
        .iter()
        .find(|(h, _)| h.op() == Some(Op::CreditUpdate));
    // Sent once a quarter of the buffer went through, without waiting for more.
    assert!(
        update.is_some_and(|(h, _)| h.fwd_cnt == 16 << 10),
        "{packets:?}"
    );
    let mut got = vec![0u8; 24 << 10];
    host.read_exact(&mut got).unwrap();
    s.send(guest_hdr(Op::CreditRequest, 42, 10), &[]);
    let packets = s.exchange();
    assert_eq!(ops(&packets), [Some(Op::CreditUpdate)]);
    assert_eq!(packets[0].0.fwd_cnt, 24 << 10);
}

#[test]
fn host_to_guest_bytes_wait_for_the_guest_credit() {
    let mut s = setup();
    let listener = listen(&s.uds, 11);
    s.send(guest_hdr(Op::Request, 43, 11).with_credit(100, 0), &[]);
    s.exchange();
    let mut host = timed(listener.accept().unwrap().0);
    host.write_all(&[5u8; 1000]).unwrap();
    let packets = s.exchange();
    assert_eq!(data_of(&packets).len(), 100);
    assert_eq!(ops(&packets).last(), Some(&Some(Op::CreditRequest)));
    // Asked once only, however often the host side is polled.
    assert!(s.exchange().is_empty());
    s.send(
        guest_hdr(Op::CreditUpdate, 43, 11).with_credit(100, 100),
        &[],
    );
    assert_eq!(data_of(&s.exchange()).len(), 100);
    s.send(
        guest_hdr(Op::CreditUpdate, 43, 11).with_credit(4096, 200),
        &[],
    );
    assert_eq!(data_of(&s.exchange()).len(), 800);
}

#[test]
fn many_connections_keep_their_bytes_apart() {
    let mut s = setup();
    let listener = listen(&s.uds, 12);
    let mut hosts = Vec::new();
    for n in 0..40u32 {
        hosts.push(guest_connect(&mut s, &listener, 2000 + n, 12));
    }
    for (n, host) in hosts.iter_mut().enumerate() {
        host.write_all(format!("payload {n};").as_bytes()).unwrap();
        s.send(
            guest_hdr(Op::Rw, 2000 + n as u32, 12),
            format!("up {n}").as_bytes(),
        );
    }
    let mut packets = Vec::new();
    for _ in 0..8 {
        packets.extend(s.exchange());
    }
    for (n, host) in hosts.iter_mut().enumerate() {
        let port = 2000 + n as u32;
        let down: Vec<u8> = packets
            .iter()
            .filter(|(h, _)| h.dst_port == port && h.op() == Some(Op::Rw))
            .flat_map(|(_, d)| d.clone())
            .collect();
        assert_eq!(down, format!("payload {n};").as_bytes());
        let mut up = vec![0u8; format!("up {n}").len()];
        host.read_exact(&mut up).unwrap();
        assert_eq!(up, format!("up {n}").as_bytes());
    }
    assert_eq!(s.vsock.muxer().connection_count(), 40);
}

#[test]
fn a_host_socket_closing_mid_stream_ends_the_connection() {
    let mut s = setup();
    let listener = listen(&s.uds, 13);
    let host = guest_connect(&mut s, &listener, 44, 13);
    drop(host);
    let packets = s.exchange();
    assert_eq!(ops(&packets), [Some(Op::Shutdown)]);
    // The guest writes into the closed socket: reset.
    s.send(guest_hdr(Op::Rw, 44, 13), b"anyone?");
    assert!(ops(&s.exchange()).contains(&Some(Op::Rst)));
    assert_eq!(s.vsock.muxer().connection_count(), 0);
}

#[test]
fn transport_reset_drops_connections_and_tells_the_guest() {
    let mut s = setup();
    let listener = listen(&s.uds, 14);
    let mut host = guest_connect(&mut s, &listener, 45, 14);
    s.vsock.send_transport_reset();
    assert_eq!(s.vsock.muxer().connection_count(), 0);
    let mut buf = [0u8; 4];
    assert_eq!(host.read(&mut buf).unwrap(), 0);
    // No event buffer yet: the event waits for one.
    s.mem
        .write_obj(0xffff_ffffu32, GuestAddress(0x90000))
        .unwrap();
    s.give_event_buffer(0x90000);
    assert_eq!(s.ev.used_idx(&s.mem), 1);
    assert_eq!(s.ev.used_elem(&s.mem, 0).1, 4);
    assert_eq!(s.mem.read_obj::<u32>(GuestAddress(0x90000)).unwrap(), 0);
    // Only once.
    s.give_event_buffer(0x90010);
    assert_eq!(s.ev.used_idx(&s.mem), 1);
}
