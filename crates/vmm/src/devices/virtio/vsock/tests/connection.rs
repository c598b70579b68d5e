//! The connection state machine and its credit accounting on its own, over a socket pair.

use std::io::Read;
use std::os::unix::net::UnixStream;

use crate::devices::virtio::vsock::connection::{
    ConnError, ConnKey, Connection, Outgoing, State, CONN_BUF,
};
use crate::devices::virtio::vsock::packet::{Op, SHUTDOWN_RCV, SHUTDOWN_SEND};

const KEY: ConnKey = ConnKey {
    local_port: 1 << 30,
    peer_port: 52,
};

fn pair() -> (UnixStream, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    (ours, theirs)
}

#[test]
fn peer_credit_is_what_the_guest_has_room_for_and_never_wraps_into_plenty() {
    let (ours, _theirs) = pair();
    let mut conn = Connection::guest_initiated(KEY, ours, 1000, 0);
    assert_eq!(conn.peer_credit(), 1000);
    // Consumed more than was ever sent: in flight "wraps" to nearly 2^32, no credit.
    conn.set_peer_credit(1000, 10);
    assert_eq!(conn.peer_credit(), 0);
    conn.set_peer_credit(0, 0);
    assert_eq!(conn.peer_credit(), 0);
    conn.set_peer_credit(u32::MAX, 0);
    assert_eq!(conn.peer_credit(), u32::MAX);
}

#[test]
fn host_bytes_are_sent_only_within_credit_then_credit_is_asked_once() {
    let (ours, mut theirs) = pair();
    let mut conn = Connection::guest_initiated(KEY, ours, 10, 0);
    let mut buf = vec![0u8; 4096];
    let first = conn.next_outgoing(4096, &mut buf).unwrap();
    assert_eq!(first, Some(Outgoing::Control(Op::Response, 0)));
    std::io::Write::write_all(&mut theirs, &[9u8; 100]).unwrap();
    conn.readable = true;
    assert_eq!(
        conn.next_outgoing(4096, &mut buf).unwrap(),
        Some(Outgoing::Data(10))
    );
    let ask = conn.next_outgoing(4096, &mut buf).unwrap();
    assert_eq!(ask, Some(Outgoing::Control(Op::CreditRequest, 0)));
    assert_eq!(conn.next_outgoing(4096, &mut buf).unwrap(), None);
    assert!(!conn.has_rx_work());
    conn.set_peer_credit(10, 10);
    assert_eq!(
        conn.next_outgoing(3, &mut buf).unwrap(),
        Some(Outgoing::Data(3))
    );
}

#[test]
fn guest_data_past_its_credit_is_refused_and_nothing_is_kept() {
    let (ours, _theirs) = pair();
    let mut conn = Connection::guest_initiated(KEY, ours, 0, 0);
    // Nobody reads the other end: the kernel buffer fills, then Ember's.
    let chunk = vec![1u8; 32 << 10];
    let mut held = 0;
    loop {
        match conn.on_data(&chunk) {
            Ok(()) => held = conn.bytes_waiting_for_host(),
            Err(ConnError::CreditExceeded { sent, room }) => {
                assert_eq!(sent, chunk.len());
                assert!(room < chunk.len());
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(held <= CONN_BUF as usize);
}

#[test]
fn states_refuse_what_does_not_belong_to_them() {
    let (ours, _theirs) = pair();
    let mut conn = Connection::host_initiated(KEY, ours);
    assert_eq!(conn.state, State::HostConnecting);
    assert!(matches!(
        conn.on_data(b"x"),
        Err(ConnError::UnexpectedOp(Op::Rw))
    ));
    let mut buf = vec![0u8; 64];
    let request = conn.next_outgoing(64, &mut buf).unwrap();
    assert_eq!(request, Some(Outgoing::Control(Op::Request, 0)));
    conn.on_response().unwrap();
    assert_eq!(conn.state, State::Established);
    assert!(matches!(
        conn.on_response(),
        Err(ConnError::UnexpectedOp(Op::Response))
    ));
}

#[test]
fn shutdowns_close_one_side_then_the_connection() {
    let (ours, mut theirs) = pair();
    let mut conn = Connection::guest_initiated(KEY, ours, 4096, 0);
    conn.on_data(b"bye").unwrap();
    conn.on_shutdown(SHUTDOWN_SEND).unwrap();
    let mut got = Vec::new();
    theirs.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye");
    assert!(matches!(
        conn.on_data(b"more"),
        Err(ConnError::DataAfterShutdown)
    ));
    assert!(matches!(
        conn.on_shutdown(SHUTDOWN_RCV),
        Err(ConnError::Closed)
    ));
}

#[test]
fn the_host_end_of_file_becomes_a_send_shutdown() {
    let (ours, theirs) = pair();
    let mut conn = Connection::guest_initiated(KEY, ours, 4096, 0);
    let mut buf = vec![0u8; 64];
    conn.next_outgoing(64, &mut buf).unwrap();
    drop(theirs);
    conn.readable = true;
    let next = conn.next_outgoing(64, &mut buf).unwrap();
    assert_eq!(next, Some(Outgoing::Control(Op::Shutdown, SHUTDOWN_SEND)));
    assert!(!conn.has_rx_work());
}
