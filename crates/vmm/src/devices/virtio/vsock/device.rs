//! [`Vsock`] as a [`VirtioDevice`]: the TX queue feeds the muxer, the muxer fills the RX
//! queue, and the muxer's epoll and the resume eventfd come through the event loop.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use event_manager::{EventOps, EventSet, Events};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestMemoryBackend};

use super::muxer::{GuestPacketOutcome, HOST_CID};
use super::packet::{read_tx_chain, Header, TYPE_STREAM};
use super::{Vsock, BATCH_LIMIT, EVENT_INDEX, EVENT_TRANSPORT_RESET, RX_INDEX, TX_INDEX};
use crate::devices::virtio::core::VirtioCore;
use crate::devices::virtio::device::VirtioDevice;

impl Vsock {
    /// Takes the guest's packets. Returns true when the budget ran out.
    fn process_tx(&mut self) -> bool {
        let Some(active) = self.core.active_mut() else {
            return false;
        };
        let (mem, queue) = (&active.mem, &mut active.queues[TX_INDEX]);
        let mut used = 0;
        let mut more = true;
        for _ in 0..BATCH_LIMIT {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                more = false;
                break;
            };
            let head = chain.head_index();
            match read_tx_chain(chain, mem, &mut self.tx_data) {
                Ok(hdr) => {
                    let outcome = deliver(&mut self.muxer, self.guest_cid, &hdr, &self.tx_data);
                    let m = &self.metrics;
                    match outcome {
                        Some(GuestPacketOutcome::Handled) => {}
                        Some(GuestPacketOutcome::Reset) => {
                            m.resets.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            m.tx_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    m.tx_packets.fetch_add(1, Ordering::Relaxed);
                    m.tx_bytes.fetch_add(u64::from(hdr.len), Ordering::Relaxed);
                }
                Err(e) => {
                    log::debug!("virtio-vsock: TX chain {head} dropped: {e}");
                    self.metrics.tx_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Err(e) = queue.add_used(mem, head, 0) {
                log::warn!("virtio-vsock: cannot return TX descriptor {head}: {e}");
            }
            used += 1;
        }
        if used > 0 && queue.needs_notification(mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        more
    }

    /// Gives the guest what the host side has for it. Returns true when the budget ran out.
    fn process_rx(&mut self) -> bool {
        let Some(active) = self.core.active_mut() else {
            return false;
        };
        let (mem, queue) = (&active.mem, &mut active.queues[RX_INDEX]);
        let mut used = 0;
        let mut more = false;
        for n in 0..=BATCH_LIMIT {
            if !self.muxer.has_rx_work() {
                break;
            }
            if n == BATCH_LIMIT {
                more = true;
                break;
            }
            // No buffer: the guest's RX notification brings us back.
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            if let Err(e) = self.rx_chain.load(chain, mem) {
                log::debug!("virtio-vsock: RX chain {head} returned empty: {e}");
                self.metrics.rx_bad_chains.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = queue.add_used(mem, head, 0) {
                    log::warn!("virtio-vsock: cannot return RX descriptor {head}: {e}");
                }
                used += 1;
                continue;
            }
            let Some(hdr) = self.muxer.next_rx_packet(self.rx_chain.data_room()) else {
                // Nothing after all (a socket had no bytes): the chain goes back.
                queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                break;
            };
            let data = &self.muxer.rx_buf[..hdr.len as usize];
            let len = self.rx_chain.write(mem, &hdr, data);
            if let Err(e) = queue.add_used(mem, head, len) {
                log::warn!("virtio-vsock: cannot return RX descriptor {head}: {e}");
            }
            self.metrics.rx_packets.fetch_add(1, Ordering::Relaxed);
            let bytes = &self.metrics.rx_bytes;
            bytes.fetch_add(u64::from(hdr.len), Ordering::Relaxed);
            used += 1;
        }
        if used > 0 && queue.needs_notification(mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        more
    }

    /// Puts the owed transport reset in the guest's first event buffer, if it gave one.
    pub(super) fn deliver_transport_reset(&mut self) {
        if !self.reset_pending {
            return;
        }
        let Some(active) = self.core.active_mut() else {
            return;
        };
        let (mem, queue) = (&active.mem, &mut active.queues[EVENT_INDEX]);
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            return;
        };
        let head = chain.head_index();
        let event = EVENT_TRANSPORT_RESET.to_le_bytes();
        let mut len = 0;
        if let Some(desc) = chain.clone().next() {
            let fits = desc.is_write_only() && desc.len() as usize >= event.len();
            if fits && mem.check_range(desc.addr(), event.len()) {
                len = mem
                    .write_slice(&event, desc.addr())
                    .map_or(0, |()| event.len() as u32);
            }
        }
        self.reset_pending = false;
        if let Err(e) = queue.add_used(mem, head, len) {
            log::warn!("virtio-vsock: cannot return event descriptor {head}: {e}");
        }
        active.interrupt.signal_used_queue();
    }

    /// The muxer's epoll is readable: host sockets have news.
    pub fn on_host_events(&mut self) {
        self.muxer.process_host_events();
        let more = self.process_rx();
        self.after_pass(more);
    }

    fn kick_resume(&self) {
        if let Err(e) = self.resume.write(1) {
            log::error!("virtio-vsock: cannot write the resume eventfd: {e}");
        }
    }

    fn after_pass(&self, more: bool) {
        if more {
            self.kick_resume();
        }
    }
}

/// Passes a checked packet to the muxer; None when it is dropped as not for this device.
fn deliver(
    muxer: &mut super::muxer::Muxer,
    guest_cid: u64,
    hdr: &Header,
    data: &[u8],
) -> Option<GuestPacketOutcome> {
    // A guest that spoofs its source or writes to anyone but the host is ignored: there
    // is no one else to reach, and answering would let it forge RSTs for other CIDs.
    if hdr.src_cid != guest_cid || hdr.dst_cid != HOST_CID {
        log::debug!(
            "virtio-vsock: packet {} -> {} dropped: wrong CIDs",
            hdr.src_cid,
            hdr.dst_cid
        );
        return None;
    }
    if hdr.kind != TYPE_STREAM {
        // The guest's socket of another type hears that nothing is there.
        muxer.refuse(hdr);
        return Some(GuestPacketOutcome::Reset);
    }
    Some(muxer.handle_guest_packet(hdr, data))
}

impl VirtioDevice for Vsock {
    fn core(&self) -> &VirtioCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut VirtioCore {
        &mut self.core
    }

    fn process_queue(&mut self, index: usize) -> bool {
        match index {
            RX_INDEX => self.process_rx(),
            TX_INDEX => {
                let more = self.process_tx();
                // Answers (RESPONSE, RST, credit) may now be owed.
                more | self.process_rx()
            }
            EVENT_INDEX => {
                self.deliver_transport_reset();
                false
            }
            _ => false,
        }
    }

    fn reset_device(&mut self) {
        // The driver went away: its sockets are gone, so are the connections.
        self.muxer.reset_all();
        self.reset_pending = false;
    }

    fn metrics_json(&self) -> serde_json::Value {
        self.metrics.to_json()
    }

    fn init_events(&mut self, ops: &mut EventOps) {
        for fd in [self.muxer.epoll_fd(), self.resume.as_raw_fd()] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                log::error!("virtio-vsock: cannot watch fd {fd}: {e}");
            }
        }
    }

    fn remove_events(&mut self, ops: &mut EventOps) {
        for fd in [self.muxer.epoll_fd(), self.resume.as_raw_fd()] {
            if let Err(e) = ops.remove(Events::new_raw(fd, EventSet::IN)) {
                log::error!("virtio-vsock: cannot stop watching fd {fd}: {e}");
            }
        }
    }

    fn process_event(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.muxer.epoll_fd() {
            self.on_host_events();
            return;
        } else if events.fd() == self.resume.as_raw_fd() {
            let _ = self.resume.read();
            let more = self.process_tx();
            self.after_pass(more);
        } else {
            log::warn!("virtio-vsock: event on unknown fd {}", events.fd());
            return;
        }
        let more = self.process_rx();
        self.after_pass(more);
    }
}
