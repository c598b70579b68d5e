//! TAP -> guest: frames land in guest buffers with a correct header, wait (and block
//! further reads) while the guest has no buffers, and span buffers with MRG_RXBUF.

use event_manager::EventSet;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;

use super::harness::*;
use crate::devices::virtio::net::{RX_INDEX, VNET_HDR_LEN};
use crate::devices::virtio::test_utils::{readable, writable};
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio::VIRTIO_F_VERSION_1;

const MRG: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;

/// The header as the TAP delivers it: `num_buffers` is left as garbage on purpose.
fn tap_frame(len: usize, seed: u8) -> Vec<u8> {
    let mut bytes = frame(len, seed);
    bytes[10] = 0xee;
    bytes[11] = 0xee;
    bytes
}

/// The frame as the guest must see it.
fn with_num_buffers(mut bytes: Vec<u8>, n: u16) -> Vec<u8> {
    bytes[10..12].copy_from_slice(&n.to_le_bytes());
    bytes
}

fn inject(s: &Setup, bytes: &[u8]) {
    s.peer.send(bytes).unwrap();
}

#[test]
fn frame_lands_in_one_buffer() {
    let mut s = setup(None);
    let bytes = tap_frame(1500, 1);
    s.rx.add_chain(&s.mem, &[writable(BUFFERS, 2048)]);
    inject(&s, &bytes);
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(s.rx.used_idx(&s.mem), 1);
    assert_eq!(s.rx.used_elem(&s.mem, 0), (0, bytes.len() as u32));
    assert_eq!(s.read(BUFFERS, bytes.len()), with_num_buffers(bytes, 1));
    assert_eq!(get(&s.metrics.rx_packets), 1);
    assert_eq!(get(&s.metrics.rx_bytes), 1500);
    assert_eq!(s.interrupts(), 1);
}

#[test]
fn frame_spreads_over_the_descriptors_of_one_chain() {
    let mut s = setup(Some(VIRTIO_F_VERSION_1));
    // No receive offloads accepted: the TAP must hand over only finished frames.
    assert_eq!(s.offload.load(std::sync::atomic::Ordering::SeqCst), 0);
    let bytes = tap_frame(3000, 2);
    let (a, b) = (BUFFERS, BUFFERS + 0x8000);
    s.rx.add_chain(&s.mem, &[writable(a, 12), writable(b, 4000)]);
    inject(&s, &bytes);
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(s.rx.used_elem(&s.mem, 0).1, 3012);
    let mut got = s.read(a, 12);
    got.extend(s.read(b, 3000));
    assert_eq!(got, with_num_buffers(bytes, 1));
}

#[test]
fn one_interrupt_per_batch() {
    let mut s = setup(None);
    for i in 0..3 {
        s.rx.add_chain(&s.mem, &[writable(BUFFERS + i * 0x1000, 2048)]);
        inject(&s, &tap_frame(100, i as u8));
    }
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(s.rx.used_idx(&s.mem), 3);
    assert_eq!(s.interrupts(), 1);
}

#[test]
fn no_buffers_defers_reading_without_loss() {
    let mut s = setup(None);
    let frames: Vec<_> = (0..3).map(|i| tap_frame(200 + i, i as u8)).collect();
    for f in &frames {
        inject(&s, f);
    }
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(s.rx.used_idx(&s.mem), 0);
    assert_eq!(get(&s.metrics.rx_deferred), 1);
    assert_eq!(s.interrupts(), 0);
    // More EPOLLIN edges while deferred change nothing.
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(s.rx.used_idx(&s.mem), 0);
    // The guest adds buffers: everything arrives, in order.
    for i in 0..3 {
        s.rx.add_chain(&s.mem, &[writable(BUFFERS + i * 0x1000, 2048)]);
    }
    assert!(!s.net.process_queue(RX_INDEX));
    assert_eq!(s.rx.used_idx(&s.mem), 3);
    for (i, f) in frames.into_iter().enumerate() {
        let got = s.read(BUFFERS + i as u64 * 0x1000, f.len());
        assert_eq!(got, with_num_buffers(f, 1));
    }
    assert_eq!(get(&s.metrics.rx_packets), 3);
    assert_eq!(get(&s.metrics.rx_dropped_too_big), 0);
}

#[test]
fn deferral_holds_unread_frames_in_the_tap() {
    let mut s = setup(None);
    for i in 0..2 {
        inject(&s, &tap_frame(64, i));
    }
    s.net.on_tap_event(EventSet::IN);
    // One frame was read into the host buffer; the second must still be queued in the
    // socket: prove it by draining it from the device's end.
    s.rx.add_chain(&s.mem, &[writable(BUFFERS, 2048)]);
    s.net.process_queue(RX_INDEX);
    assert_eq!(s.rx.used_idx(&s.mem), 1);
    assert_eq!(get(&s.metrics.rx_deferred), 2);
    s.rx.add_chain(&s.mem, &[writable(BUFFERS + 0x1000, 2048)]);
    s.net.process_queue(RX_INDEX);
    assert_eq!(s.rx.used_idx(&s.mem), 2);
    assert_eq!(s.read(BUFFERS + 0x1000 + 12, 1), vec![1]);
}

#[test]
fn frame_bigger_than_the_buffer_is_dropped_and_the_buffer_kept() {
    let mut s = setup(Some(VIRTIO_F_VERSION_1));
    s.rx.add_chain(&s.mem, &[writable(BUFFERS, 1000)]);
    inject(&s, &tap_frame(2000, 1));
    let small = tap_frame(500, 2);
    inject(&s, &small);
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(get(&s.metrics.rx_dropped_too_big), 1);
    assert_eq!(s.rx.used_idx(&s.mem), 1);
    assert_eq!(s.rx.used_elem(&s.mem, 0).1, small.len() as u32);
    assert_eq!(s.read(BUFFERS, small.len()), with_num_buffers(small, 1));
}

#[test]
fn mergeable_frame_spans_chains_and_counts_them() {
    let mut s = setup(None);
    assert!(s.net.rx.mergeable);
    for i in 0..4 {
        s.rx.add_chain(&s.mem, &[writable(BUFFERS + i * 0x1000, 1000)]);
    }
    let bytes = tap_frame(2500, 3);
    inject(&s, &bytes);
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(s.rx.used_idx(&s.mem), 3);
    let lens: Vec<u32> = (0..3).map(|n| s.rx.used_elem(&s.mem, n).1).collect();
    assert_eq!(lens, vec![1000, 1000, 512]);
    let mut got = Vec::new();
    for (i, len) in lens.iter().enumerate() {
        got.extend(s.read(BUFFERS + i as u64 * 0x1000, *len as usize));
    }
    assert_eq!(got, with_num_buffers(bytes, 3));
    // The fourth buffer is still the device's, for the next frame.
    let next = tap_frame(10, 4);
    inject(&s, &next);
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(s.rx.used_elem(&s.mem, 3), (3, next.len() as u32));
    assert_eq!(
        s.read(BUFFERS + 0x3000, next.len()),
        with_num_buffers(next, 1)
    );
}

#[test]
fn mergeable_frame_waits_for_enough_buffers() {
    let mut s = setup(Some(VIRTIO_F_VERSION_1 | MRG));
    s.rx.add_chain(&s.mem, &[writable(BUFFERS, 1000)]);
    let bytes = tap_frame(2500, 5);
    inject(&s, &bytes);
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(s.rx.used_idx(&s.mem), 0);
    assert_eq!(get(&s.metrics.rx_deferred), 1);
    s.rx.add_chain(&s.mem, &[writable(BUFFERS + 0x1000, 1000)]);
    s.net.process_queue(RX_INDEX);
    assert_eq!(s.rx.used_idx(&s.mem), 0);
    s.rx.add_chain(&s.mem, &[writable(BUFFERS + 0x2000, 1000)]);
    s.net.process_queue(RX_INDEX);
    assert_eq!(s.rx.used_idx(&s.mem), 3);
    assert_eq!(s.read(BUFFERS + 10, 2), vec![3, 0]);
    assert_eq!(get(&s.metrics.rx_packets), 1);
}

#[test]
fn bad_rx_chains_are_returned_empty() {
    let mut s = setup(None);
    s.rx.add_chain(&s.mem, &[readable(BUFFERS, 2048)]);
    s.rx.add_chain(&s.mem, &[writable(u64::MAX - 100, 2048)]);
    s.rx.add_chain(&s.mem, &[writable(BUFFERS, 8)]);
    s.rx.add_chain(&s.mem, &[writable(BUFFERS + 0x1000, 2048)]);
    let bytes = tap_frame(100, 6);
    inject(&s, &bytes);
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(get(&s.metrics.rx_bad_chains), 3);
    assert_eq!(s.rx.used_idx(&s.mem), 4);
    for n in 0..3 {
        assert_eq!(s.rx.used_elem(&s.mem, n), (u32::from(n), 0));
    }
    assert_eq!(s.rx.used_elem(&s.mem, 3), (3, bytes.len() as u32));
    assert_eq!(
        s.read(BUFFERS + 0x1000, bytes.len()),
        with_num_buffers(bytes, 1)
    );
}

#[test]
fn short_tap_reads_are_dropped() {
    let mut s = setup(None);
    s.rx.add_chain(&s.mem, &[writable(BUFFERS, 2048)]);
    inject(&s, &[0u8; VNET_HDR_LEN - 1]);
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(get(&s.metrics.rx_dropped_short), 1);
    assert_eq!(s.rx.used_idx(&s.mem), 0);
}

#[test]
fn rx_before_activation_is_picked_up_later() {
    let mut s = setup(None);
    s.net.reset();
    inject(&s, &tap_frame(100, 7));
    s.net.on_tap_event(EventSet::IN);
    let interrupt = s.interrupt.clone();
    s.net.set_acked_features(s.net.avail_features());
    let queues = vec![s.rx.queue(true), s.tx.queue(true)];
    s.net.activate(s.mem.clone(), queues, interrupt).unwrap();
    s.rx.add_chain(&s.mem, &[writable(BUFFERS, 2048)]);
    s.net.process_queue(RX_INDEX);
    assert_eq!(s.rx.used_idx(&s.mem), 1);
}

#[test]
fn rx_kicks_are_wanted_only_while_waiting_for_buffers() {
    let mut s = setup(Some(VIRTIO_F_VERSION_1));
    inject(&s, &tap_frame(100, 8));
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(s.rx.used_flags(&s.mem), 0, "deferred but kicks are off");
    s.rx.add_chain(&s.mem, &[writable(BUFFERS, 2048)]);
    s.net.process_queue(RX_INDEX);
    assert_eq!(s.rx.used_idx(&s.mem), 1);
    assert_eq!(s.rx.used_flags(&s.mem), 1, "TAP drained but kicks still on");
}

#[test]
fn gso_sized_frame_spans_many_mergeable_buffers() {
    let mut s = setup(None);
    for i in 0..50 {
        s.rx.add_chain(&s.mem, &[writable(BUFFERS + i * 0x800, 1536)]);
    }
    let bytes = tap_frame(65000, 9);
    inject(&s, &bytes);
    s.net.on_tap_event(EventSet::IN);
    let chains = bytes.len().div_ceil(1536);
    assert_eq!(usize::from(s.rx.used_idx(&s.mem)), chains);
    let mut got = Vec::new();
    for n in 0..chains as u16 {
        let (id, len) = s.rx.used_elem(&s.mem, n);
        got.extend(s.read(BUFFERS + u64::from(id) * 0x800, len as usize));
    }
    assert_eq!(got, with_num_buffers(bytes, chains as u16));
}

#[test]
fn mergeable_frame_larger_than_the_whole_queue_is_dropped() {
    let mut s = setup(None);
    for i in 0..u64::from(SIZE) {
        s.rx.add_chain(&s.mem, &[writable(BUFFERS + i * 16, 16)]);
    }
    inject(&s, &tap_frame(5000, 1));
    let small = tap_frame(4, 2);
    inject(&s, &small);
    s.net.on_tap_event(EventSet::IN);
    assert_eq!(get(&s.metrics.rx_dropped_too_big), 1);
    // The buffers were kept for the next frame.
    assert_eq!(s.rx.used_idx(&s.mem), 1);
    assert_eq!(s.read(BUFFERS, small.len()), with_num_buffers(small, 1));
}
