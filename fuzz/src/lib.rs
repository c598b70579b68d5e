//! Ember's fuzz targets. Each target's logic is a `run(data)` function here; the files in
//! `fuzz_targets/` only hand libFuzzer's input to it. Keeping the logic in a library lets
//! `cargo test` (stable, no libFuzzer) replay every seed and every saved crash input, and
//! check that the generated seeds in `corpus/` are current.
//!
//! The structured targets (`virtio_block`, `mmio_registers`, `legacy_devices`,
//! `vsock_packets`) read their
//! input as a small byte program through [`input::Reader`]: a stream of opcodes with
//! little-endian operands, short reads padded with zeros, so every byte string is a valid
//! program and seeds can be written with [`input::Writer`] (see `seeds()` in each module).

pub mod api_request;
pub mod block_model;
pub mod config_json;
pub mod disk;
pub mod input;
pub mod legacy_devices;
pub mod mmio_registers;
pub mod snapshot_state;
pub mod virtio_block;
pub mod vsock_packets;

/// The seed inputs generated from code, per target: `(target, file name, bytes)`. The
/// `api_request` and `config_json` seeds are hand-written files instead.
pub fn generated_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    let targets: [SeedMaker; 4] = [
        ("virtio_block", virtio_block::seeds),
        ("mmio_registers", mmio_registers::seeds),
        ("legacy_devices", legacy_devices::seeds),
        ("vsock_packets", vsock_packets::seeds),
    ];
    for (target, make) in targets {
        for (name, bytes) in make() {
            seeds.push((target, name, bytes));
        }
    }
    seeds
}

/// Named seed inputs of one target.
pub type Seeds = Vec<(&'static str, Vec<u8>)>;

/// A target's name and the function making its generated seeds.
pub type SeedMaker = (&'static str, fn() -> Seeds);

/// A target's name and its `run`.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 6] = [
    ("virtio_block", virtio_block::run),
    ("mmio_registers", mmio_registers::run),
    ("api_request", api_request::run),
    ("config_json", config_json::run),
    ("legacy_devices", legacy_devices::run),
    ("vsock_packets", vsock_packets::run),
];

#[cfg(test)]
mod tests;
