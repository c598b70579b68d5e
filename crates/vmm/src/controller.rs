//! The VMM thread: serves API requests (configure, start, pause, ...) between turns of the
//! event loop, builds the VM on InstanceStart and runs it until it ends.
//!
//! API requests arrive on a channel; the API thread writes an eventfd the loop watches, so a
//! request wakes the loop without any lock shared with the API thread.

use crate::builder::{build_microvm, BuildOptions};
use crate::config::MetricsConfig;
use crate::device_manager::DeviceKind;
use crate::devices::virtio::{Block, Net};
use crate::event_loop::{SignalWatcher, VmExit, VmmEventManager};
use crate::metrics::{MetricsSink, StartupTimes, VmmCounters};
use crate::microvm::{MicroVm, VmState};
use crate::rpc::{
    ApiRequest, InstanceInfo, InstanceState, VmResources, VmmAction, VmmActionError, VmmData,
    VmmResponse, VMM_VERSION,
};
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;

/// Drains the API's wake-up eventfd; the requests themselves are read after each loop turn.
struct ApiWakeup(EventFd);

impl MutEventSubscriber for ApiWakeup {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.0, EventSet::IN)) {
            log::error!("cannot watch the API eventfd: {e:?}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.0.read();
    }
}

pub struct VmmController {
    instance_id: String,
    options: BuildOptions,
    resources: VmResources,
    microvm: Option<MicroVm>,
    requests: Option<Receiver<ApiRequest>>,
    metrics: Option<MetricsSink>,
    counters: VmmCounters,
    signals: Option<Arc<Mutex<SignalWatcher>>>,
}

impl VmmController {
    pub fn new(instance_id: &str, options: BuildOptions, resources: VmResources) -> Self {
        VmmController {
            instance_id: instance_id.to_string(),
            options,
            resources,
            microvm: None,
            requests: None,
            metrics: None,
            counters: VmmCounters::default(),
            signals: None,
        }
    }

    /// Records how long start-up took (see [`StartupTimes`]) for the metrics.
    pub fn set_startup_times(&mut self, times: StartupTimes) {
        self.counters.startup = times;
    }

    /// Makes SIGTERM and SIGINT end [`VmmController::run`] (exit code 0) whether or not a VM
    /// runs. Call it before the API socket exists, so no signal can leave the socket behind.
    pub fn watch_stop_signals(
        &mut self,
        event_manager: &mut VmmEventManager,
    ) -> std::io::Result<()> {
        let watcher = Arc::new(Mutex::new(SignalWatcher::install()?));
        event_manager.add_subscriber(watcher.clone());
        self.signals = Some(watcher);
        Ok(())
    }

    /// Serves requests from `requests`; `wake` is written by the API thread after each send.
    pub fn attach_api(
        &mut self,
        event_manager: &mut VmmEventManager,
        requests: Receiver<ApiRequest>,
        wake: EventFd,
    ) {
        event_manager.add_subscriber(Arc::new(Mutex::new(ApiWakeup(wake))));
        self.requests = Some(requests);
    }

    /// Opens the metrics file named by `config`.
    fn open_metrics(&mut self, config: &MetricsConfig) -> Result<(), VmmActionError> {
        let id = config.emit_id.then(|| self.instance_id.clone());
        let sink = MetricsSink::open(&config.metrics_path, id).map_err(|source| {
            VmmActionError::MetricsFile {
                path: config.metrics_path.clone(),
                source,
            }
        })?;
        self.metrics = Some(sink);
        Ok(())
    }

    /// Writes a metrics line (FlushMetrics, and once more when the VM ends).
    fn flush_metrics(&mut self) -> Result<(), VmmActionError> {
        let sink = self
            .metrics
            .as_mut()
            .ok_or(VmmActionError::MetricsNotConfigured)?;
        let mut sections = self
            .microvm
            .as_ref()
            .map(MicroVm::device_metrics)
            .unwrap_or_default();
        sections.insert("vmm".into(), self.counters.to_json());
        if let Some(startup) = self.counters.startup.to_json() {
            sections.insert("api_server".into(), startup);
        }
        sink.write_line(sections)
            .map_err(VmmActionError::MetricsWrite)
    }

    /// Boots the configured VM (InstanceStart).
    pub fn start(&mut self, event_manager: &mut VmmEventManager) -> Result<(), VmmActionError> {
        let config = self.resources.config_for_start()?;
        if let (Some(metrics), None) = (config.metrics(), &self.metrics) {
            self.open_metrics(&metrics.clone())?;
        }
        let microvm = build_microvm(&config, event_manager, &self.options)?;
        self.microvm = Some(microvm);
        Ok(())
    }

    /// Runs the loop until the VM ends, a stop signal arrives, or (before boot) the API
    /// goes away.
    pub fn run(&mut self, event_manager: &mut VmmEventManager) -> VmExit {
        loop {
            if let Some(exit) = self.pending_exit() {
                self.wind_down();
                return exit;
            }
            if let Err(e) = event_manager.run() {
                return VmExit::Error(format!("event loop failed: {e:?}"));
            }
            if let Err(exit) = self.serve_requests(event_manager) {
                return exit;
            }
        }
    }

    /// Why the loop must end, if it must: the VM's own end first, then a stop signal.
    fn pending_exit(&self) -> Option<VmExit> {
        let vm_exit = self.microvm.as_ref().and_then(MicroVm::exit);
        vm_exit.or_else(|| {
            let signals = self.signals.as_ref()?;
            let watcher = signals.lock().unwrap_or_else(|p| p.into_inner());
            watcher.exit.clone()
        })
    }

    /// Leaves the VM (if any) with no vCPU in the guest and its console flushed, and writes
    /// the last metrics line.
    fn wind_down(&mut self) {
        if let Some(microvm) = &mut self.microvm {
            microvm.park_vcpus();
            microvm.flush_console();
        }
        if self.metrics.is_some() {
            if let Err(e) = self.flush_metrics() {
                log::warn!("{e}");
            }
        }
    }

    fn serve_requests(&mut self, event_manager: &mut VmmEventManager) -> Result<(), VmExit> {
        loop {
            let Some(requests) = &self.requests else {
                return Ok(());
            };
            match requests.try_recv() {
                Ok((action, reply)) => {
                    let response = self.handle(action, event_manager);
                    self.counters.api_requests.fetch_add(1, Ordering::Relaxed);
                    if response.is_err() {
                        self.counters.api_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    // A client that hung up does not need its answer.
                    let _ = reply.send(response);
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) if self.microvm.is_some() => {
                    self.requests = None;
                    return Ok(());
                }
                Err(TryRecvError::Disconnected) => {
                    return Err(VmExit::Error(
                        "the API thread stopped before the VM started".into(),
                    ))
                }
            }
        }
    }

    fn state(&self) -> InstanceState {
        match self.microvm.as_ref().map(MicroVm::state) {
            None => InstanceState::NotStarted,
            Some(VmState::Running) => InstanceState::Running,
            Some(VmState::Paused) => InstanceState::Paused,
        }
    }

    /// Serves one action.
    pub fn handle(
        &mut self,
        action: VmmAction,
        event_manager: &mut VmmEventManager,
    ) -> VmmResponse {
        action.check_allowed(self.microvm.is_some())?;
        let resource = action.resource();
        let answer = self.serve_allowed(action, event_manager);
        match resource {
            Some(resource) => answer.map_err(|e| e.about(resource)),
            None => answer,
        }
    }

    fn serve_allowed(
        &mut self,
        action: VmmAction,
        event_manager: &mut VmmEventManager,
    ) -> VmmResponse {
        match action {
            VmmAction::GetInstanceInfo => Ok(VmmData::InstanceInfo(InstanceInfo::new(
                &self.instance_id,
                self.state(),
            ))),
            VmmAction::GetVersion => Ok(VmmData::Version(VMM_VERSION.to_string())),
            VmmAction::FlushMetrics => self.flush_metrics().map(|()| VmmData::Empty),
            VmmAction::ConfigureMetrics(metrics) => {
                if self.resources.config().metrics.is_some() {
                    return Err(VmmActionError::MetricsAlreadyConfigured);
                }
                self.open_metrics(&metrics)?;
                self.resources
                    .apply(&VmmAction::ConfigureMetrics(metrics))
                    .unwrap_or(Ok(VmmData::Empty))
            }
            VmmAction::StartInstance => self.start(event_manager).map(|()| VmmData::Empty),
            VmmAction::CreateSnapshot(params) => {
                let microvm = self
                    .microvm
                    .as_ref()
                    .ok_or(VmmActionError::NotSupportedBeforeStart)?;
                crate::snapshot::create_snapshot(microvm, self.resources.config(), &params)?;
                Ok(VmmData::Empty)
            }
            VmmAction::LoadSnapshot(params) => {
                self.load_snapshot(&params, event_manager)?;
                Ok(VmmData::Empty)
            }
            VmmAction::ConfigureLogger(config) => {
                crate::logger::update(&config)?;
                Ok(VmmData::Empty)
            }
            VmmAction::Pause
            | VmmAction::Resume
            | VmmAction::SendCtrlAltDel
            | VmmAction::PatchDrive(_)
            | VmmAction::PatchNetworkInterface(_) => self.handle_runtime(action, event_manager),
            other => self.resources.apply(&other).unwrap_or(Ok(VmmData::Empty)),
        }
    }

    /// Builds the VM from a snapshot (only before any VM-shaping configuration), and resumes
    /// it if asked. A failed load leaves the process as it was, able to take another.
    fn load_snapshot(
        &mut self,
        config: &crate::config::LoadSnapshotConfig,
        event_manager: &mut VmmEventManager,
    ) -> Result<(), VmmActionError> {
        if self.resources.vm_configured() {
            return Err(VmmActionError::LoadSnapshotNotAllowed);
        }
        let params = config
            .validate()
            .map_err(crate::snapshot::SnapshotError::from)?;
        let (mut microvm, restored) =
            crate::snapshot::load_snapshot(&params, event_manager, &self.options)?;
        if params.resume_vm {
            microvm.resume(event_manager)?;
        }
        self.resources.restored(restored);
        self.microvm = Some(microvm);
        Ok(())
    }

    fn handle_runtime(
        &mut self,
        action: VmmAction,
        event_manager: &mut VmmEventManager,
    ) -> VmmResponse {
        let microvm = self
            .microvm
            .as_mut()
            .ok_or(VmmActionError::NotSupportedBeforeStart)?;
        match action {
            VmmAction::Pause => microvm.pause(event_manager)?,
            VmmAction::Resume => microvm.resume(event_manager)?,
            VmmAction::SendCtrlAltDel => microvm.send_ctrl_alt_del()?,
            VmmAction::PatchDrive(update) => {
                let drive = self.resources.updated_drive(&update)?;
                if update.path_on_host.is_some() {
                    microvm.update_drive(&drive)?;
                }
                if let Some(limits) = &update.rate_limiter {
                    let limit = |block: &mut Block| block.update_rate_limiter(limits);
                    let id = &update.drive_id;
                    microvm
                        .devices()
                        .with_device(DeviceKind::Block, id, limit)?;
                }
                self.resources.record_drive_update(drive);
            }
            VmmAction::PatchNetworkInterface(update) => {
                let iface = self.resources.updated_network_interface(&update)?;
                let (rx, tx) = (update.rx_rate_limiter, update.tx_rate_limiter);
                let limit = |net: &mut Net| net.update_rate_limiters(rx, tx);
                let id = &update.iface_id;
                microvm.devices().with_device(DeviceKind::Net, id, limit)?;
                self.resources.record_network_interface_update(iface);
            }
            _ => {}
        }
        Ok(VmmData::Empty)
    }
}
