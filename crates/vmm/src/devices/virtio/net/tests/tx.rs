//! Guest -> TAP: valid frames arrive intact, malformed chains are dropped and returned,
//! and a full TAP leaves chains in the queue until EPOLLOUT.

use event_manager::EventSet;

use super::harness::*;
use crate::devices::virtio::net::tx::MAX_TX_LEN;
use crate::devices::virtio::net::{TX_INDEX, VNET_HDR_LEN};
use crate::devices::virtio::test_utils::{readable, writable, MEM_SIZE};
use crate::devices::virtio::VirtioDevice;

/// Queues `descs` on TX, notifies, and returns the used length of the chain.
fn send(s: &mut Setup, descs: &[crate::devices::virtio::test_utils::Desc]) -> (u32, u32) {
    let before = s.tx.used_idx(&s.mem);
    let head = s.tx.add_chain(&s.mem, descs);
    assert!(!s.net.process_queue(TX_INDEX));
    assert_eq!(
        s.tx.used_idx(&s.mem),
        before.wrapping_add(1),
        "chain not used"
    );
    let (id, len) = s.tx.used_elem(&s.mem, before);
    assert_eq!(id, u32::from(head));
    (id, len)
}

#[test]
fn single_descriptor_frame_reaches_the_tap() {
    let mut s = setup(None);
    let bytes = frame(1500, 1);
    s.write(BUFFERS, &bytes);
    let (_, len) = send(&mut s, &[readable(BUFFERS, bytes.len() as u32)]);
    assert_eq!(len, 0);
    assert_eq!(s.sent_frames(), vec![bytes]);
    assert_eq!(get(&s.metrics.tx_packets), 1);
    assert_eq!(get(&s.metrics.tx_bytes), 1500);
    assert_eq!(s.interrupts(), 1);
}

#[test]
fn multi_descriptor_frame_is_gathered_in_order() {
    let mut s = setup(None);
    let bytes = frame(3000, 2);
    // Header alone, then the frame in uneven pieces scattered in memory.
    let pieces = [
        (0x20000u64, 12usize),
        (0x30000, 100),
        (0x28000, 2000),
        (0x40000, 900),
    ];
    let mut descs = Vec::new();
    let mut at = 0;
    for (addr, len) in pieces {
        s.write(addr, &bytes[at..at + len]);
        descs.push(readable(addr, len as u32));
        at += len;
    }
    send(&mut s, &descs);
    assert_eq!(s.sent_frames(), vec![bytes]);
    assert_eq!(get(&s.metrics.tx_bytes), 3000);
}

#[test]
fn header_split_across_descriptors_is_fine() {
    let mut s = setup(None);
    let bytes = frame(60, 3);
    s.write(BUFFERS, &bytes);
    let b = BUFFERS;
    send(
        &mut s,
        &[readable(b, 5), readable(b + 5, 5), readable(b + 10, 62)],
    );
    assert_eq!(s.sent_frames(), vec![bytes]);
}

/// Each malformed chain is dropped, counted and returned; the next good one still goes.
fn assert_dropped(descs: &[crate::devices::virtio::test_utils::Desc]) {
    let mut s = setup(None);
    s.write(BUFFERS, &frame(100, 4));
    let (_, len) = send(&mut s, descs);
    assert_eq!(len, 0);
    assert!(s.sent_frames().is_empty());
    assert_eq!(get(&s.metrics.tx_dropped_malformed), 1);
    assert_eq!(get(&s.metrics.tx_packets), 0);
    send(&mut s, &[readable(BUFFERS, 112)]);
    assert_eq!(s.sent_frames().len(), 1);
}

#[test]
fn chain_shorter_than_the_header_is_dropped() {
    assert_dropped(&[readable(BUFFERS, (VNET_HDR_LEN - 1) as u32)]);
    assert_dropped(&[readable(BUFFERS, 4), readable(BUFFERS + 4, 4)]);
    assert_dropped(&[readable(BUFFERS, 0)]);
}

#[test]
fn chain_longer_than_a_gso_frame_is_dropped() {
    let half = (MAX_TX_LEN / 2 + 1) as u32;
    assert_dropped(&[readable(BUFFERS, half), readable(BUFFERS, half)]);
    assert_dropped(&[readable(BUFFERS, u32::MAX)]);
}

#[test]
fn chain_outside_guest_memory_is_dropped() {
    assert_dropped(&[readable(MEM_SIZE - 6, 12)]);
    assert_dropped(&[readable(BUFFERS, 12), readable(u64::MAX - 3, 100)]);
    assert_dropped(&[readable(MEM_SIZE + 0x1000, 100)]);
}

#[test]
fn device_writable_descriptor_is_dropped() {
    assert_dropped(&[writable(BUFFERS, 112)]);
    assert_dropped(&[readable(BUFFERS, 12), writable(BUFFERS + 12, 100)]);
}

#[test]
fn full_tap_keeps_chains_until_writable() {
    let mut s = setup(None);
    let bytes = frame(1000, 5);
    s.write(BUFFERS, &bytes);
    const FRAMES: usize = 200;
    for _ in 0..FRAMES {
        s.tx.add_chain(&s.mem, &[readable(BUFFERS, bytes.len() as u32)]);
    }
    let mut received = 0;
    let mut rounds = 0;
    s.net.process_queue(TX_INDEX);
    while received < FRAMES {
        rounds += 1;
        assert!(rounds < 1000, "TX never finished");
        let used = usize::from(s.tx.used_idx(&s.mem));
        let frames = s.sent_frames();
        assert!(frames.iter().all(|f| f == &bytes));
        received += frames.len();
        // Nothing is used that was not sent, nothing is lost.
        assert_eq!(used, received);
        // More notifications while blocked change nothing.
        s.net.process_queue(TX_INDEX);
        s.net.on_tap_event(EventSet::OUT);
    }
    assert!(
        get(&s.metrics.tx_blocked) > 0,
        "the socket pair never filled up"
    );
    assert_eq!(get(&s.metrics.tx_packets), FRAMES as u64);
    assert_eq!(get(&s.metrics.tx_dropped_tap_error), 0);
}

#[test]
fn tap_write_errors_drop_the_frame() {
    let mut s = setup(None);
    let bytes = frame(100, 6);
    s.write(BUFFERS, &bytes);
    s.peer.shutdown(std::net::Shutdown::Both).unwrap();
    drop(std::mem::replace(
        &mut s.peer,
        std::os::unix::net::UnixDatagram::unbound().unwrap(),
    ));
    send(&mut s, &[readable(BUFFERS, bytes.len() as u32)]);
    assert_eq!(get(&s.metrics.tx_dropped_tap_error), 1);
}

#[test]
fn bogus_head_index_does_not_panic() {
    let mut s = setup(None);
    s.tx.add_chain(&s.mem, &[readable(BUFFERS, 20)]);
    // Corrupt the avail ring entry: head index past the queue size.
    s.write(0x4000 + 0x1000 + 4, &999u16.to_le_bytes());
    s.net.process_queue(TX_INDEX);
    assert!(s.sent_frames().is_empty());
}

#[test]
fn event_idx_asks_for_the_next_kick_and_suppresses_interrupts() {
    let mut s = setup(None);
    s.write(BUFFERS, &frame(100, 7));
    for _ in 0..3 {
        s.tx.add_chain(&s.mem, &[readable(BUFFERS, 112)]);
    }
    // The driver wants an interrupt only once the 10th buffer is used.
    s.tx.set_used_event(&s.mem, 9);
    s.net.process_queue(TX_INDEX);
    assert_eq!(s.tx.used_idx(&s.mem), 3);
    assert_eq!(s.tx.avail_event(&s.mem), 3, "next kick not requested");
    assert_eq!(s.interrupts(), 0);
    s.tx.set_used_event(&s.mem, 3);
    s.tx.add_chain(&s.mem, &[readable(BUFFERS, 112)]);
    s.net.process_queue(TX_INDEX);
    assert_eq!(s.interrupts(), 1);
    assert_eq!(s.sent_frames().len(), 4);
}

#[test]
fn without_event_idx_kicks_are_off_only_while_busy() {
    let mut s = setup(Some(crate::devices::virtio::VIRTIO_F_VERSION_1));
    s.write(BUFFERS, &frame(100, 8));
    s.tx.add_chain(&s.mem, &[readable(BUFFERS, 112)]);
    s.net.process_queue(TX_INDEX);
    assert_eq!(
        s.tx.used_flags(&s.mem),
        0,
        "VRING_USED_F_NO_NOTIFY left set"
    );
}
