//! virtio-rng through the register-level test driver: what a guest driver sees.

use super::*;
use crate::devices::virtio::test_utils::{readable, writable, TestDriver, MEM_SIZE};
use vm_memory::GuestAddress;

const BUF: u64 = 0x10000;

fn driver() -> TestDriver {
    let mut driver = TestDriver::new(Box::new(Rng::new()));
    assert_eq!(driver.read(0x08), VIRTIO_ID_RNG);
    driver.init();
    driver
}

fn guest_bytes(driver: &TestDriver, addr: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    driver
        .mem
        .read_slice(&mut bytes, GuestAddress(addr))
        .unwrap();
    bytes
}

#[test]
fn buffers_are_filled_with_fresh_bytes() {
    let mut driver = driver();
    driver.add_chain(&[writable(BUF, 512), writable(BUF + 0x1000, 512)]);
    driver.add_chain(&[writable(BUF + 0x2000, 1024)]);
    driver.notify(0);
    assert_eq!(driver.used_idx(), 2);
    assert_eq!(driver.used_elem(0), (0, 1024));
    assert_eq!(driver.used_elem(1), (2, 1024));
    assert!(driver.irq_fired());
    let first = guest_bytes(&driver, BUF, 512);
    let second = guest_bytes(&driver, BUF + 0x1000, 512);
    let third = guest_bytes(&driver, BUF + 0x2000, 1024);
    assert!(first.iter().any(|&b| b != 0));
    assert_ne!(first, second);
    assert_ne!(&third[..512], &first[..]);
}

#[test]
fn a_huge_chain_gets_at_most_max_fill() {
    let mut driver = driver();
    driver.add_chain(&[writable(BUF, (MAX_FILL + 4096) as u32)]);
    driver.notify(0);
    assert_eq!(driver.used_elem(0).1, MAX_FILL as u32);
}

#[test]
fn hostile_chains_come_back_empty() {
    let mut driver = driver();
    driver.add_chain(&[readable(BUF, 64)]);
    driver.add_chain(&[writable(MEM_SIZE - 16, 64)]);
    driver.add_chain(&[writable(u64::MAX - 8, 64)]);
    driver.push_avail(QUEUE_SIZE + 7);
    driver.add_chain(&[writable(BUF, 0)]);
    driver.notify(0);
    for n in 0..3 {
        assert_eq!(driver.used_elem(n).1, 0, "chain {n}");
    }
    let metrics = driver.transport.lock().unwrap().device_mut().metrics_json();
    assert!(metrics["bad_chains"].as_u64().unwrap() >= 3, "{metrics}");
}

#[test]
fn register_fuzzing_does_not_panic() {
    let mut driver = driver();
    driver.add_chain(&[writable(BUF, 64)]);
    driver.fuzz_registers(13);
}
