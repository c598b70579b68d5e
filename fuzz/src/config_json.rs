//! `config_json`: bytes as a `--config-file`: `VmConfig::from_json`, `validate()`, and a
//! serialize/parse round trip: every parsed config parses back with the same validation
//! result, and a valid one parses back equal to itself. (Invalid configs may differ in the
//! last bit of a float inside a rate limiter, the only place floats go and one `validate()`
//! refuses: serde_json parses without `float_roundtrip`, so "-5e+29" does not come back
//! exact; see `fuzz/regressions/config_json/float-in-refused-rate-limiter.json`.)
//! A valid config must also be accepted for `InstanceStart`, and
//! everything `validate()` accepts must be usable when the VM is built: the kernel command
//! line (boot args plus device and `root=` arguments) builds, the root drive's `root=`
//! argument is one argument, MAC addresses are `xx:xx:xx:xx:xx:xx` in hex, and TAP names are
//! names Linux accepts (`dev_valid_name`).

use vmm::config::{NetworkInterfaceConfig, VmConfig};
use vmm::rpc::VmResources;

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
    // Compared as the user reads them: the errors hold no float, unlike the configs.
    let refusal = |checked: &Result<_, vmm::config::ConfigError>| {
        checked.as_ref().err().map(ToString::to_string)
    };
    assert_eq!(
        refusal(&again.validate()),
        refusal(&valid),
        "validation changed after a round trip through {json}"
    );
    if let Ok(valid) = valid {
        assert_eq!(config, again, "round trip through {json}");
        let pretty = serde_json::to_string_pretty(&config).expect("serializes");
        assert_eq!(VmConfig::from_json(&pretty).ok().as_ref(), Some(&config));
        assert_eq!(
            valid.to_vm_config(),
            config,
            "validation changed the config"
        );
        let start = VmResources::new(valid).config_for_start();
        let start = start.unwrap_or_else(|e| panic!("a valid config cannot start: {e}"));
        assert_eq!(start.to_vm_config(), config);
        check_usable(&config);
    }
}

/// What the builder does with a validated config, minus files and KVM.
fn check_usable(config: &VmConfig) {
    let boot = config.boot_source.as_ref().expect("validated");
    let mut device_args = vec![vmm::devices::virtio::mmio_cmdline_arg(0xd000_0000, 5)];
    if let Some(root) = config.drives.iter().find(|d| d.is_root_device) {
        let arg = vmm::builder::root_cmdline_arg(root);
        assert_eq!(arg.split_whitespace().count(), 2, "root argument {arg:?}");
        device_args.push(arg);
    }
    let cmdline = vmm::loader::build_cmdline(boot.boot_args_or_default(), &device_args);
    if let Err(e) = cmdline {
        panic!("validated boot args {:?}: {e}", boot.boot_args_or_default());
    }
    config.network_interfaces.iter().for_each(check_iface);
}

fn check_iface(iface: &NetworkInterfaceConfig) {
    if let Some(mac) = &iface.guest_mac {
        let hex = |part: &str| part.len() == 2 && part.bytes().all(|b| b.is_ascii_hexdigit());
        let parts: Vec<&str> = mac.split(':').collect();
        assert!(
            parts.len() == 6 && parts.iter().all(|p| hex(p)),
            "MAC {mac:?}"
        );
    }
    // Linux's dev_valid_name(): 1..IFNAMSIZ-1 bytes, not "." or "..", no '/', ':' or space.
    let name = &iface.host_dev_name;
    let bad_byte = |b: u8| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace() || b == 0x0b;
    assert!(
        !name.is_empty()
            && name.len() < 16
            && name != "."
            && name != ".."
            && !name.bytes().any(bad_byte),
        "TAP name {name:?}"
    );
}
