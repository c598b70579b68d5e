#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ember_fuzz::vsock_packets::run(data));
