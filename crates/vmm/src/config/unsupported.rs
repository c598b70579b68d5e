//! Firecracker's sections for devices and features Ember does not have yet (balloon, MMDS,
//! pmem, ...). `GET /vm/config` shows each as null (or `[]`), as Firecracker shows what is
//! not configured, so clients that read every key keep working, and a config file may hold
//! them so; a section that asks for something is refused by name. A device that gets
//! implemented moves out of here into a file of its own.

use super::VmConfig;

/// A section that asks for something Ember cannot do yet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the {0:?} section is not supported by Ember yet")]
pub struct UnsupportedSection(pub &'static str);

/// Refuses the first unsupported section of `config` that is neither missing nor null.
pub(super) fn refuse_unsupported(config: &VmConfig) -> Result<(), UnsupportedSection> {
    let sections = [
        ("balloon", &config.balloon),
        ("cpu-config", &config.cpu_config),
        ("mmds-config", &config.mmds_config),
        ("memory-hotplug", &config.memory_hotplug),
    ];
    for (name, section) in sections {
        if section.as_ref().is_some_and(|value| !value.is_null()) {
            return Err(UnsupportedSection(name));
        }
    }
    if !config.pmem.is_empty() {
        return Err(UnsupportedSection("pmem"));
    }
    Ok(())
}
