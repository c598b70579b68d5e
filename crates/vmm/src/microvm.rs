//! A running microVM: its vCPU threads, the devices the VMM thread reaches, and how it ends.

use crate::device_manager::{lock, DeviceKind, DeviceManager, DeviceManagerError};
use crate::devices::virtio::Block;
use crate::event_loop::{StopWatcher, VmExit, VmmEventManager};
use crate::vstate::vcpu::{VcpuCommand, VcpuResponse, VcpuResponseKind};
use crate::vstate::vcpu_state::VcpuStateError;
use crate::vstate::vm::Vm;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

mod state;
pub use state::VcpusAndVmState;

/// How long to wait for a vCPU to acknowledge a command before kicking it again.
const KICK_RETRY: Duration = Duration::from_millis(10);
/// After this long without an answer, the vCPU is considered stuck.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the VM's end waits for each vCPU to leave the guest.
const PARK_TIMEOUT: Duration = Duration::from_secs(1);

/// The VMM thread's end of one vCPU thread.
pub struct VcpuHandle {
    pub thread: JoinHandle<()>,
    pub commands: Sender<VcpuCommand>,
}

#[derive(Debug, thiserror::Error)]
pub enum MicroVmError {
    #[error("vCPU {0} did not answer a {1} request")]
    VcpuUnresponsive(usize, &'static str),
    #[error("vCPU {0} has stopped")]
    VcpuGone(usize),
    #[error("vCPU {index}: {source}")]
    VcpuState { index: u8, source: VcpuStateError },
    #[error("vCPU {index} answered a {command} request with {answer}")]
    UnexpectedResponse {
        index: u8,
        command: &'static str,
        answer: &'static str,
    },
    #[error("the VM must be paused first")]
    NotPaused,
    #[error("the saved state has {saved} vCPUs, this VM {present}")]
    VcpuCount { saved: usize, present: usize },
    #[error(transparent)]
    VmState(#[from] crate::vstate::vm_state::VmStateError),
    #[error("the guest is not reading its keyboard: {0}")]
    Keyboard(String),
    #[error(transparent)]
    Devices(#[from] DeviceManagerError),
    #[error(transparent)]
    Drive(#[from] crate::devices::virtio::BlockError),
}

/// Lifecycle state as the API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    Running,
    Paused,
}

pub struct MicroVm {
    pub(crate) vm: Vm,
    pub(crate) vcpus: Vec<VcpuHandle>,
    pub(crate) responses: Receiver<VcpuResponse>,
    pub(crate) stop_watcher: Arc<Mutex<StopWatcher>>,
    pub(crate) devices: DeviceManager,
    pub(crate) state: VmState,
}

extern "C" fn on_vcpu_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// A no-op handler for the signal that kicks vCPU threads out of KVM_RUN (which then
/// returns EINTR). Without a handler the signal would kill the process.
pub fn install_vcpu_kick_handler() {
    if let Err(e) = register_signal_handler(SIGRTMIN(), on_vcpu_kick) {
        log::warn!("cannot install the vCPU kick handler: {e}; pausing will not work");
    }
}

impl MicroVm {
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    pub fn devices(&self) -> &DeviceManager {
        &self.devices
    }

    pub fn state(&self) -> VmState {
        self.state
    }

    /// Why the VM ended, once it has.
    pub fn exit(&self) -> Option<VmExit> {
        lock(&self.stop_watcher).exit.clone()
    }

    pub fn flush_console(&self) {
        if let Some(serial) = self.devices.serial() {
            lock(serial).flush();
        }
    }

    /// Stops the machine: every vCPU at its next exit (kicking it out of the guest), then
    /// every device, so that nothing touches guest memory or raises an interrupt until
    /// [`MicroVm::resume`].
    pub fn pause(&mut self, event_manager: &mut VmmEventManager) -> Result<(), MicroVmError> {
        self.command_all(|_| VcpuCommand::Pause)?;
        self.devices.pause(event_manager)?;
        self.state = VmState::Paused;
        self.test_hook_state_round_trip();
        Ok(())
    }

    /// Devices first, so that work that waited is in the guest's queues as it goes on.
    pub fn resume(&mut self, event_manager: &mut VmmEventManager) -> Result<(), MicroVmError> {
        self.devices.resume(event_manager)?;
        self.command_all(|_| VcpuCommand::Resume)?;
        self.state = VmState::Running;
        Ok(())
    }

    /// Takes every vCPU thread that still runs out of the guest and parks it, so that the
    /// process can exit with no vCPU inside KVM_RUN. Exiting with vCPUs in the guest leaves
    /// KVM to tear them down from the signal path; that is correct on hardware, but in the
    /// nested lab it was followed by frozen or hung guests (docs/lab.md). Best effort: a
    /// vCPU that does not answer within PARK_TIMEOUT is left as it is.
    pub fn park_vcpus(&mut self) {
        for (index, vcpu) in self.vcpus.iter().enumerate() {
            if vcpu.thread.is_finished() || vcpu.commands.send(VcpuCommand::Pause).is_err() {
                continue;
            }
            match self.wait_for_response(index, vcpu, "pause", PARK_TIMEOUT) {
                // The vCPU that stopped the VM ends its thread at once: nothing to park.
                Ok(_) | Err(MicroVmError::VcpuGone(_)) => {}
                Err(e) => log::warn!("{e} while stopping the VM"),
            }
        }
        self.state = VmState::Paused;
    }

    /// Sends `command(index)` to each vCPU in turn; their responses, in vCPU order. A vCPU
    /// that answers with an error ends it there.
    pub(crate) fn command_all(
        &self,
        command: impl Fn(usize) -> VcpuCommand,
    ) -> Result<Vec<VcpuResponse>, MicroVmError> {
        let mut responses = Vec::with_capacity(self.vcpus.len());
        for (index, vcpu) in self.vcpus.iter().enumerate() {
            let command = command(index);
            let name = command.name();
            if vcpu.commands.send(command).is_err() {
                return Err(MicroVmError::VcpuUnresponsive(index, name));
            }
            let response = self.wait_for_response(index, vcpu, name, COMMAND_TIMEOUT)?;
            if let VcpuResponseKind::Error(source) = response.kind {
                let index = response.index;
                return Err(MicroVmError::VcpuState { index, source });
            }
            responses.push(response);
        }
        Ok(responses)
    }

    /// A kick can land just before the thread enters KVM_RUN and be lost, so kick again
    /// until the thread answers. (A paused thread is not in KVM_RUN: the kick is a no-op.)
    fn wait_for_response(
        &self,
        index: usize,
        vcpu: &VcpuHandle,
        command: &'static str,
        timeout: Duration,
    ) -> Result<VcpuResponse, MicroVmError> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if vcpu.thread.is_finished() {
                return Err(MicroVmError::VcpuGone(index));
            }
            let _ = vcpu.thread.kill(SIGRTMIN());
            match self.responses.recv_timeout(KICK_RETRY) {
                Ok(response) if usize::from(response.index) == index => return Ok(response),
                // The late answer to a command that timed out earlier.
                Ok(stale) => log::warn!("dropping a late answer from vCPU {}", stale.index),
                Err(_) => {}
            }
        }
        Err(MicroVmError::VcpuUnresponsive(index, command))
    }

    /// Points drive `config.drive_id` at `config.path_on_host` and tells the guest its
    /// capacity may have changed.
    pub fn update_drive(&self, config: &crate::config::DriveConfig) -> Result<(), MicroVmError> {
        let id = &config.drive_id;
        self.devices
            .with_device(DeviceKind::Block, id, |block: &mut Block| {
                block.update_backing_file(config)
            })??;
        self.devices.notify_config_change(DeviceKind::Block, id)?;
        Ok(())
    }

    /// Device counters, by device kind then id, for a metrics line.
    pub fn device_metrics(&self) -> serde_json::Map<String, serde_json::Value> {
        self.devices.metrics()
    }

    /// Types Ctrl-Alt-Del on the guest's keyboard.
    pub fn send_ctrl_alt_del(&self) -> Result<(), MicroVmError> {
        let Some(i8042) = self.devices.i8042() else {
            return Err(MicroVmError::Keyboard("no i8042".into()));
        };
        lock(i8042)
            .send_ctrl_alt_del()
            .map_err(|e| MicroVmError::Keyboard(e.to_string()))
    }
}
