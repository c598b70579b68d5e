//! Transport tests with a dummy backend, driven only through register accesses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::devices::virtio::core::VirtioCore;
use crate::devices::virtio::test_utils::*;

/// How often each backend hook ran, shared with the test.
#[derive(Default)]
struct Calls {
    activate: AtomicUsize,
    reset: AtomicUsize,
    process: AtomicUsize,
}

struct Dummy {
    calls: Arc<Calls>,
    core: VirtioCore,
}

impl Dummy {
    fn new(calls: Arc<Calls>, config: [u8; 8], sizes: &[u16]) -> Self {
        let core = VirtioCore::new("dummy".into(), 42, sizes, 0b101, config.to_vec());
        Dummy { calls, core }
    }
}

impl VirtioDevice for Dummy {
    fn core(&self) -> &VirtioCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut VirtioCore {
        &mut self.core
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if let Some(r) = crate::devices::virtio::device::config_range(8, offset, data.len()) {
            self.core.config_mut()[r].copy_from_slice(data);
        }
    }
    fn activated(&mut self) {
        assert_eq!(self.core.active().unwrap().queues.len(), 2);
        self.calls.activate.fetch_add(1, Ordering::SeqCst);
    }
    fn reset_device(&mut self) {
        self.calls.reset.fetch_add(1, Ordering::SeqCst);
    }
    fn process_queue(&mut self, _index: usize) -> bool {
        self.calls.process.fetch_add(1, Ordering::SeqCst);
        false
    }
}

fn dummy() -> (TestDriver, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let device = Dummy::new(calls.clone(), [1, 2, 3, 4, 5, 6, 7, 8], &[QUEUE_SIZE, 16]);
    (TestDriver::new(Box::new(device)), calls)
}

/// Full handshake for the dummy's two queues.
fn activate(driver: &TestDriver) {
    assert!(driver.negotiate(VIRTIO_F_VERSION_1 | 0b101));
    driver.setup_queue(0, 256, DESC_TABLE, AVAIL_RING, USED_RING);
    driver.setup_queue(1, 16, 0x8000, 0x8200, 0x8400);
    driver.add_status(STATUS_DRIVER_OK);
}

use crate::devices::virtio::VIRTIO_F_VERSION_1;

#[test]
fn identification_registers() {
    let (driver, _) = dummy();
    assert_eq!(driver.read(0x00), 0x7472_6976);
    assert_eq!(driver.read(0x04), 2);
    assert_eq!(driver.read(0x08), 42);
    assert_eq!(driver.read(0x0c), 0);
    assert_eq!(driver.device_features(), VIRTIO_F_VERSION_1 | 0b101);
    driver.write(0x14, 2);
    assert_eq!(driver.read(0x10), 0);
    driver.write(0x30, 1);
    assert_eq!(driver.read(0x34), 16);
    driver.write(0x30, 2);
    assert_eq!(driver.read(0x34), 0);
}

#[test]
fn handshake_activates_once() {
    let (driver, calls) = dummy();
    activate(&driver);
    assert_eq!(driver.status(), 0xf);
    assert_eq!(calls.activate.load(Ordering::SeqCst), 1);
    driver.write(0x30, 1);
    assert_eq!(driver.read(0x44), 1);
    // Writing DRIVER_OK again is a no-op.
    driver.add_status(STATUS_DRIVER_OK);
    assert_eq!(calls.activate.load(Ordering::SeqCst), 1);
}

#[test]
fn features_ok_needs_version_1_and_offered_bits_only() {
    let (driver, _) = dummy();
    assert!(!driver.negotiate(0b101));
    assert!(!driver.negotiate(VIRTIO_F_VERSION_1 | 0b111));
    assert!(!driver.negotiate(VIRTIO_F_VERSION_1 | 1 << 40));
    // A nonzero write to a feature page the device does not have.
    driver.write(0x70, 0);
    driver.add_status(STATUS_ACK);
    driver.add_status(STATUS_DRIVER);
    driver.write_driver_features(VIRTIO_F_VERSION_1);
    driver.write(0x24, 5);
    driver.write(0x20, 1);
    driver.add_status(STATUS_FEATURES_OK);
    assert_eq!(driver.status() & STATUS_FEATURES_OK, 0);
    assert!(driver.negotiate(VIRTIO_F_VERSION_1 | 0b100));
}

#[test]
fn out_of_order_status_and_late_writes_are_ignored() {
    let (driver, calls) = dummy();
    driver.write(0x70, STATUS_DRIVER);
    assert_eq!(driver.status(), 0);
    driver.write(0x70, STATUS_ACK | STATUS_DRIVER | STATUS_DRIVER_OK);
    assert_eq!(driver.status(), 0);
    driver.add_status(STATUS_ACK);
    // Skipping FEATURES_OK (a legacy driver) does not activate.
    driver.add_status(STATUS_DRIVER);
    driver.add_status(STATUS_DRIVER_OK);
    assert_eq!(driver.status(), STATUS_ACK | STATUS_DRIVER);
    // Queue registers before FEATURES_OK are ignored.
    driver.setup_queue(0, 8, 0x8000, 0x8200, 0x8400);
    assert_eq!(driver.read(0x44), 0);
    activate(&driver);
    // Feature writes after FEATURES_OK, queue writes after DRIVER_OK are ignored.
    driver.write_driver_features(0);
    driver.write(0x30, 0);
    driver.write(0x44, 0);
    assert_eq!(driver.read(0x44), 1);
    // Clearing a bit is not a valid transition; FAILED always is.
    driver.write(0x70, STATUS_ACK);
    assert_eq!(driver.status(), 0xf);
    driver.add_status(0x80);
    assert_eq!(driver.status(), 0x8f);
    assert_eq!(calls.activate.load(Ordering::SeqCst), 1);
}

#[test]
fn reset_clears_state_and_resets_backend() {
    let (driver, calls) = dummy();
    activate(&driver);
    let resets = calls.reset.load(Ordering::SeqCst);
    driver.write(0x70, 0);
    assert_eq!(driver.status(), 0);
    assert_eq!(calls.reset.load(Ordering::SeqCst), resets + 1);
    assert!(!driver.transport.lock().unwrap().is_activated());
    driver.write(0x30, 0);
    assert_eq!(driver.read(0x44), 0);
    activate(&driver);
    assert_eq!(calls.activate.load(Ordering::SeqCst), 2);
}

#[test]
fn queue_outside_ram_needs_reset() {
    let (mut driver, calls) = dummy();
    assert!(driver.negotiate(VIRTIO_F_VERSION_1));
    driver.setup_queue(0, 256, DESC_TABLE, AVAIL_RING, USED_RING);
    driver.setup_queue(1, 16, MEM_SIZE - 0x10, 0x8200, 0x8400);
    driver.add_status(STATUS_DRIVER_OK);
    assert_ne!(driver.status() & STATUS_NEEDS_RESET, 0);
    assert_eq!(driver.read(0x60), 2, "config-change interrupt");
    assert!(driver.irq_fired());
    assert_eq!(calls.activate.load(Ordering::SeqCst), 0);
    driver.notify(0);
    assert_eq!(calls.process.load(Ordering::SeqCst), 0);
    // Acknowledge, reset, and the device works again.
    driver.write(0x64, 2);
    assert_eq!(driver.read(0x60), 0);
    activate(&driver);
    assert_eq!(calls.activate.load(Ordering::SeqCst), 1);
}

#[test]
fn bad_queue_sizes_and_unready_queues_need_reset() {
    for (size, ready) in [(0, 1), (3, 1), (512, 1), (0x1_0000, 1), (16, 0)] {
        let (driver, calls) = dummy();
        assert!(driver.negotiate(VIRTIO_F_VERSION_1));
        driver.setup_queue(0, 256, DESC_TABLE, AVAIL_RING, USED_RING);
        driver.setup_queue(1, 16, 0x8000, 0x8200, 0x8400);
        driver.write(0x38, size);
        driver.write(0x44, ready);
        driver.add_status(STATUS_DRIVER_OK);
        assert_ne!(driver.status() & STATUS_NEEDS_RESET, 0, "size {size}");
        assert_eq!(calls.activate.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn notifications_before_activation_are_drained() {
    let (mut driver, calls) = dummy();
    driver.notify(0);
    driver.notify(1);
    driver.notify(7);
    assert_eq!(calls.process.load(Ordering::SeqCst), 0);
    let transport = driver.transport.lock().unwrap();
    assert!(transport.queue_events()[0].read().is_err(), "drained");
    drop(transport);
    activate(&driver);
    driver.notify(1);
    assert_eq!(calls.process.load(Ordering::SeqCst), 1);
}

#[test]
fn config_space_any_size_inside_bounds() {
    let (driver, _) = dummy();
    let mut byte = [0u8; 1];
    driver.read_bytes(0x103, &mut byte);
    assert_eq!(byte, [4]);
    let mut word = [0u8; 8];
    driver.read_bytes(0x100, &mut word);
    assert_eq!(word, [1, 2, 3, 4, 5, 6, 7, 8]);
    driver.read_bytes(0x104, &mut word);
    assert_eq!(word, [0; 8], "crosses the end: ignored");
    // Config writes before DRIVER are ignored; after, reach the device.
    driver.write_bytes(0x100, &[9]);
    driver.read_bytes(0x100, &mut byte);
    assert_eq!(byte, [1]);
    driver.add_status(STATUS_ACK);
    driver.add_status(STATUS_DRIVER);
    driver.write_bytes(0x100, &[9, 9]);
    driver.read_bytes(0x100, &mut byte);
    assert_eq!(byte, [9]);
}

#[test]
fn non_32_bit_register_accesses_are_ignored() {
    let (driver, _) = dummy();
    let mut half = [0xffu8; 2];
    driver.read_bytes(0x00, &mut half);
    assert_eq!(half, [0, 0]);
    driver.write_bytes(0x70, &[1, 0]);
    driver.write_bytes(0x70, &[1]);
    driver.write_bytes(0x70, &1u64.to_le_bytes());
    assert_eq!(driver.status(), 0);
}

#[test]
fn interrupt_ack_clears_bits() {
    let (driver, _) = dummy();
    let transport = driver.transport.lock().unwrap();
    transport.interrupt.signal_used_queue();
    transport.interrupt.signal_config_change();
    drop(transport);
    assert_eq!(driver.read(0x60), 3);
    driver.write(0x64, 1);
    assert_eq!(driver.read(0x60), 2);
}

#[test]
fn garbage_at_every_offset_and_size_never_panics() {
    let (mut driver, _) = dummy();
    driver.fuzz_registers(1);
    activate(&driver);
    driver.fuzz_registers(2);
}

#[test]
fn cmdline_arg_format() {
    assert_eq!(
        mmio_cmdline_arg(0xd000_0000, 5),
        "virtio_mmio.device=4K@0xd0000000:5"
    );
}

#[test]
fn transport_needs_queues() {
    let device = Dummy::new(Arc::default(), [0; 8], &[]);
    let result = MmioTransport::new(guest_memory(), Box::new(device));
    assert!(matches!(result, Err(MmioError::NoQueues)));
}
