//! `boot-source` (and the body of `PUT /boot-source`): the kernel, its command line and an
//! optional initrd.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Boot arguments used when the user gives none (Firecracker's defaults).
pub const DEFAULT_BOOT_ARGS: &str = "reboot=k panic=1 pci=off nomodule 8250.nr_uarts=0 \
i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// The x86_64 kernel's `COMMAND_LINE_SIZE` including the trailing NUL.
pub const MAX_CMDLINE_LEN: usize = 2048;

/// A boot source that cannot boot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootSourceError {
    #[error("boot_args is {len} bytes long; the kernel accepts at most {max}", max = MAX_CMDLINE_LEN - 1)]
    CmdlineTooLong { len: usize },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSourceConfig {
    pub kernel_image_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
}

impl BootSourceConfig {
    /// The command line the guest gets before devices append theirs.
    pub fn boot_args_or_default(&self) -> &str {
        self.boot_args.as_deref().unwrap_or(DEFAULT_BOOT_ARGS)
    }

    /// Checks what needs no file: the files themselves are opened by `PUT /boot-source`
    /// and by the builder.
    pub fn validate(&self) -> Result<(), BootSourceError> {
        let len = self.boot_args_or_default().len();
        // Devices append their own parameters later; this catches the user's share early.
        if len >= MAX_CMDLINE_LEN {
            return Err(BootSourceError::CmdlineTooLong { len });
        }
        Ok(())
    }
}
