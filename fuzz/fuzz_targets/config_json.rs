#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ember_fuzz::config_json::run(data));
