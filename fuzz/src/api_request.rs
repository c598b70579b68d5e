//! `api_request`: raw bytes from an API client through the server's framing
//! (`http::parse_request`), routing (`router::route`) and response rendering, via
//! `ember::api::answer_wire`, with a fake VMM thread: pre-boot configuration is applied by a
//! real `VmResources`, starting "succeeds" when the config validates, and every
//! post-boot action fails.
//!
//! Checks: the reply is a sequence of well-formed HTTP/1.1 responses with a known status,
//! a Content-Length matching a JSON body (a `fault_message` for errors), nothing after a
//! `Connection: close` or `100 Continue`; and the fake VMM's configuration stays valid.

use vmm::rpc::{
    InstanceInfo, InstanceState, VmResources, VmmAction, VmmActionError, VmmData, VmmResponse,
    DEFAULT_INSTANCE_ID, VMM_VERSION,
};

pub fn run(data: &[u8]) {
    let mut vmm = FakeVmm::default();
    let reply = ember::api::answer_wire(data, |action| vmm.answer(action));
    check_responses(&reply);
}

#[derive(Default)]
struct FakeVmm {
    config: VmResources,
    started: bool,
}

impl FakeVmm {
    fn answer(&mut self, action: VmmAction) -> VmmResponse {
        action.check_allowed(self.started)?;
        let answer = match action {
            VmmAction::StartInstance => self.config.config_for_start().map(|_| {
                self.started = true;
                VmmData::Empty
            }),
            VmmAction::GetVersion => Ok(VmmData::Version(VMM_VERSION.into())),
            VmmAction::GetInstanceInfo => {
                let state = if self.started {
                    InstanceState::Running
                } else {
                    InstanceState::NotStarted
                };
                Ok(VmmData::InstanceInfo(InstanceInfo::new(
                    DEFAULT_INSTANCE_ID,
                    state,
                )))
            }
            // There is no VM behind this API: every action on one fails.
            other => self
                .config
                .apply(&other)
                .unwrap_or(Err(VmmActionError::NotSupportedBeforeStart)),
        };
        let config = self.config.config();
        if config.boot_source.is_some() {
            if let Err(e) = config.validate() {
                panic!("an accepted config is invalid: {e}");
            }
        }
        answer
    }
}

/// Asserts `reply` is zero or more complete, well-formed responses.
pub fn check_responses(reply: &[u8]) {
    let mut rest = reply;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(rest) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!(
                "not a response ({other:?}): {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        assert_eq!(response.version, Some(1), "HTTP/1.1 only");
        let code = response.code.expect("a complete response has a status");
        let reason = response.reason.unwrap_or_default();
        assert!(
            matches!(code, 100 | 200 | 204 | 400 | 408 | 500 | 503) && !reason.is_empty(),
            "unexpected status line {code} {reason:?}"
        );
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| std::str::from_utf8(h.value).expect("ASCII header"))
        };
        let body_len = header("content-length").map_or(0, |v| v.parse().expect("a length"));
        let closes = header("connection") == Some("close");
        let body = rest
            .get(head_len..head_len + body_len)
            .expect("the whole body is there");
        rest = &rest[head_len + body_len..];
        match code {
            100 | 204 => assert_eq!(body_len, 0, "{code} has no body"),
            _ => {
                let json: serde_json::Value =
                    serde_json::from_slice(body).expect("bodies are JSON");
                if code >= 400 {
                    assert!(json["fault_message"].is_string(), "fault without message");
                }
            }
        }
        if code == 100 || closes {
            assert!(
                rest.is_empty(),
                "bytes sent after {code} / Connection: close"
            );
        }
    }
}
