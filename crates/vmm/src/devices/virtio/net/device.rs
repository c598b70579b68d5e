//! [`Net`] as a [`VirtioDevice`]: negotiation, config space, queues and TAP events.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, EventSet, Events};
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::{Queue, QueueT};

use super::rx::{RxIo, RxStop};
use super::tx::{TxIo, TxStop};
use super::{tap_offloads, Net, BATCH_LIMIT, RX_INDEX, TX_INDEX};
use crate::devices::virtio::core::VirtioCore;
use crate::devices::virtio::device::VirtioDevice;
use crate::devices::virtio::interrupt::Interrupt;
use crate::vstate::memory::GuestMemory;

impl Net {
    /// Moves frames from the TAP to the guest. Returns true when the batch limit was hit.
    ///
    /// Guest notifications on the RX queue are only wanted while a frame waits for buffers.
    pub(super) fn process_rx(&mut self) -> bool {
        let Some(active) = self.core.active_mut() else {
            return false;
        };
        let (mem, queue) = (&active.mem, &mut active.queues[RX_INDEX]);
        let mut total = 0;
        let mut more = false;
        for _ in 0..RECHECKS {
            let budget = BATCH_LIMIT - total;
            let io = RxIo {
                tap: self.tap.as_ref(),
                metrics: &self.metrics,
                limiter: &mut self.rx_limiter,
            };
            let (used, stop) = self.rx.process(queue, mem, io, budget);
            total += used;
            match stop {
                RxStop::NoBuffers if rearm(queue, mem) => continue,
                RxStop::NoBuffers => {}
                RxStop::TapEmpty => quiet(queue, mem),
                // The limiter's timer resumes RX.
                RxStop::Throttled => {}
                RxStop::Budget => more = true,
            }
            break;
        }
        if total > 0 {
            notify(queue, mem, &active.interrupt);
        }
        more
    }

    /// Sends the guest's frames to the TAP. Returns true when the batch limit was hit.
    pub(super) fn process_tx(&mut self) -> bool {
        let Some(active) = self.core.active_mut() else {
            return false;
        };
        let (mem, queue) = (&active.mem, &mut active.queues[TX_INDEX]);
        let mut total = 0;
        let mut more = false;
        for _ in 0..RECHECKS {
            quiet(queue, mem);
            let budget = BATCH_LIMIT - total;
            let io = TxIo {
                tap: self.tap.as_ref(),
                metrics: &self.metrics,
                limiter: &mut self.tx_limiter,
            };
            let (used, stop) = self.tx.process(queue, mem, io, budget);
            total += used;
            match stop {
                TxStop::Empty if rearm(queue, mem) => continue,
                // Blocked: EPOLLOUT resumes the queue, which re-enables notifications;
                // Throttled: the limiter's timer does.
                TxStop::Empty | TxStop::Blocked | TxStop::Throttled => {}
                TxStop::Budget => more = true,
            }
            break;
        }
        if total > 0 {
            notify(queue, mem, &active.interrupt);
        }
        more
    }

    /// The TAP became readable and/or writable.
    pub(super) fn on_tap_event(&mut self, events: EventSet) {
        let mut more = false;
        if events.intersects(EventSet::IN | EventSet::ERROR | EventSet::HANG_UP) {
            self.rx.tap_readable = true;
            more |= self.process_rx();
        }
        if events.contains(EventSet::OUT) && self.tx.blocked {
            self.tx.blocked = false;
            more |= self.process_tx();
        }
        if more {
            self.kick_resume();
        }
    }

    /// A rate limiter's timer fired: go on with its queue.
    pub(super) fn on_limiter_timer(&mut self, index: usize) {
        let more = if index == RX_INDEX {
            self.rx_limiter.on_timer();
            self.process_rx()
        } else {
            self.tx_limiter.on_timer();
            self.process_tx()
        };
        if more {
            self.kick_resume();
        }
    }

    /// The resume eventfd fired: continue where a batch limit stopped.
    pub(super) fn on_resume(&mut self) {
        let _ = self.resume.read();
        let more = self.process_rx() | self.process_tx();
        if more {
            self.kick_resume();
        }
    }

    fn kick_resume(&self) {
        if let Err(e) = self.resume.write(1) {
            log::error!(
                "virtio-net: {}: cannot write the resume eventfd: {e}",
                self.id
            );
        }
    }
}

/// How many times a pass looks again when the driver added buffers while notifications
/// were off, before leaving the rest to the next notification.
const RECHECKS: usize = 8;

/// Asks the driver to notify on new buffers; true if some arrived in the meantime.
fn rearm(queue: &mut Queue, mem: &GuestMemory) -> bool {
    queue.enable_notification(mem).unwrap_or_else(|e| {
        log::warn!("virtio-net: cannot enable queue notifications: {e}");
        false
    })
}

/// Tells the driver not to notify (the device is busy or does not need buffers).
fn quiet(queue: &mut Queue, mem: &GuestMemory) {
    if let Err(e) = queue.disable_notification(mem) {
        log::warn!("virtio-net: cannot disable queue notifications: {e}");
    }
}

/// Raises the used-buffer interrupt if the driver wants one.
fn notify(queue: &mut Queue, mem: &GuestMemory, interrupt: &Interrupt) {
    if queue.needs_notification(mem).unwrap_or(true) {
        interrupt.signal_used_queue();
    }
}

impl VirtioDevice for Net {
    fn core(&self) -> &VirtioCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut VirtioCore {
        &mut self.core
    }

    fn features_acked(&mut self) {
        self.rx.mergeable = self.core.has_feature(VIRTIO_NET_F_MRG_RXBUF);
        if let Err(e) = self
            .tap
            .set_offload(tap_offloads(self.core.acked_features()))
        {
            log::error!("virtio-net: {}: {e}", self.id);
        }
    }

    fn activated(&mut self) {
        // Frames may have queued up before the driver was ready; the edge is gone, so
        // look as soon as the guest posts buffers.
        self.rx.tap_readable = true;
    }

    fn reset_device(&mut self) {
        self.rx.reset();
        self.tx.blocked = false;
        if let Err(e) = self.tap.set_offload(0) {
            log::warn!("virtio-net: {}: {e}", self.id);
        }
    }

    fn metrics_json(&self) -> serde_json::Value {
        self.metrics.to_json()
    }

    fn process_queue(&mut self, index: usize) -> bool {
        match index {
            RX_INDEX if self.rx.has_work() => self.process_rx(),
            RX_INDEX => false,
            TX_INDEX => self.process_tx(),
            _ => {
                log::warn!("virtio-net: {}: notification for queue {index}", self.id);
                false
            }
        }
    }

    fn init_events(&mut self, ops: &mut EventOps) {
        let tap = EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED;
        for (fd, set) in self.watched_fds(tap) {
            if let Err(e) = ops.add(Events::new_raw(fd, set)) {
                log::error!("virtio-net: {}: cannot watch fd {fd}: {e}", self.id);
            }
        }
    }

    fn remove_events(&mut self, ops: &mut EventOps) {
        for (fd, _) in self.watched_fds(EventSet::IN) {
            if let Err(e) = ops.remove(Events::new_raw(fd, EventSet::IN)) {
                log::error!("virtio-net: {}: cannot stop watching fd {fd}: {e}", self.id);
            }
        }
    }

    fn process_event(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.tap.as_raw_fd() {
            self.on_tap_event(events.event_set());
        } else if fd == self.resume.as_raw_fd() {
            self.on_resume();
        } else if fd == self.rx_limiter.as_raw_fd() {
            self.on_limiter_timer(RX_INDEX);
        } else if fd == self.tx_limiter.as_raw_fd() {
            self.on_limiter_timer(TX_INDEX);
        } else {
            log::warn!("virtio-net: {}: event on unknown fd {fd}", self.id);
        }
    }
}

impl Net {
    /// The fds the event loop watches for this device; the TAP with `tap_events`.
    fn watched_fds(&self, tap_events: EventSet) -> [(i32, EventSet); 4] {
        [
            (self.tap.as_raw_fd(), tap_events),
            (self.resume.as_raw_fd(), EventSet::IN),
            (self.rx_limiter.as_raw_fd(), EventSet::IN),
            (self.tx_limiter.as_raw_fd(), EventSet::IN),
        ]
    }
}
