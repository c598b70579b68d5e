//! Serves one framed request: route it, hand the action to the VMM thread, wait for the reply
//! and turn it into a response.

use super::http::{Request, Response};
use super::router::route;
use std::sync::mpsc::{self, Sender};
use vmm::rpc::{ApiRequest, VmmAction, VmmData, VmmResponse};
use vmm_sys_util::eventfd::EventFd;

const VMM_GONE: &str = "The VMM thread is not running.";

pub struct Handler {
    to_vmm: Sender<ApiRequest>,
    wake: EventFd,
    vmm_gone: bool,
}

impl Handler {
    pub fn new(to_vmm: Sender<ApiRequest>, wake: EventFd) -> Self {
        Handler {
            to_vmm,
            wake,
            vmm_gone: false,
        }
    }

    /// True once the VMM thread has dropped its end of the channel.
    pub fn vmm_gone(&self) -> bool {
        self.vmm_gone
    }

    pub fn handle(&mut self, request: &Request) -> Response {
        log::debug!("API request: {} {}", request.method, request.path);
        dispatch(request, |action| self.ask_vmm(action))
    }

    fn ask_vmm(&mut self, action: VmmAction) -> Response {
        let (reply_to, reply) = mpsc::channel();
        if self.to_vmm.send((action, reply_to)).is_err() {
            self.vmm_gone = true;
            return Response::fault(500, VMM_GONE);
        }
        if let Err(err) = self.wake.write(1) {
            return Response::fault(500, &format!("Cannot wake the VMM thread: {err}"));
        }
        match reply.recv() {
            Ok(answer) => to_response(answer),
            Err(_) => {
                self.vmm_gone = true;
                Response::fault(500, VMM_GONE)
            }
        }
    }
}

/// The response to `request` when `vmm` answers its action in place of the VMM thread: what
/// [`Handler::handle`] sends, without the channel (used by [`super::answer_wire`]).
pub fn respond(request: &Request, vmm: impl FnOnce(VmmAction) -> VmmResponse) -> Response {
    dispatch(request, |action| to_response(vmm(action)))
}

/// Routes `request`: 400 if it names no action, otherwise what `answer` makes of the action.
fn dispatch(request: &Request, answer: impl FnOnce(VmmAction) -> Response) -> Response {
    match route(&request.method, &request.path, &request.body) {
        Ok(action) => answer(action),
        Err(err) => Response::fault(400, &err.to_string()),
    }
}

/// 204 for `Empty`, 200 with JSON for data, 400 with the error's text otherwise.
pub fn to_response(answer: VmmResponse) -> Response {
    let body = match answer {
        Ok(VmmData::Empty) => return Response::no_content(),
        Ok(VmmData::MachineConfig(config)) => serde_json::to_string(&config),
        Ok(VmmData::VmConfig(config)) => serde_json::to_string(&config),
        Ok(VmmData::InstanceInfo(info)) => serde_json::to_string(&info),
        Ok(VmmData::Version(version)) => {
            Ok(serde_json::json!({ "firecracker_version": version }).to_string())
        }
        Err(err) => return Response::fault(400, &err.to_string()),
    };
    match body {
        Ok(body) => Response::json(200, body),
        Err(err) => Response::fault(500, &format!("Cannot serialize the reply: {err}")),
    }
}
