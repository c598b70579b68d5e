//! `config_json`: bytes as a `--config-file`: `VmConfig::from_json`, `validate()`, and a
//! serialize/parse round trip that must give the same config back (for every config that
//! parses, valid or not). A valid config must also be accepted for `InstanceStart`.

use vmm::config::VmConfig;
use vmm::rpc::PrebootConfigurator;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = VmConfig::from_json(text) else {
        return;
    };
    let valid = config.validate();
    let json = serde_json::to_string(&config).expect("a parsed config serializes");
    let again = VmConfig::from_json(&json)
        .unwrap_or_else(|e| panic!("the serialized config {json} does not parse: {e}"));
    assert_eq!(config, again, "round trip through {json}");
    let pretty = serde_json::to_string_pretty(&config).expect("serializes");
    assert_eq!(VmConfig::from_json(&pretty).as_ref(), Ok(&config));
    assert_eq!(
        again.validate(),
        valid,
        "validation changed after a round trip"
    );
    if valid.is_ok() {
        let start = PrebootConfigurator::new(config.clone()).config_for_start();
        assert_eq!(start, Ok(config), "a valid config cannot start");
    }
}
