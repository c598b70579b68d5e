//! Turns a method, path and body into the `VmmAction` Firecracker's API means by them.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use vmm::config::{
    DriveConfig, DriveUpdate, MachineConfigUpdate, NetworkInterfaceConfig, NetworkInterfaceUpdate,
};
use vmm::rpc::VmmAction;

/// Firecracker resources Ember does not serve.
pub const UNSUPPORTED: &[&str] = &["balloon", "cpu-config", "hotplug", "mmds", "pmem", "serial"];

/// A request that names no action; `Display` is the `fault_message` (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("Invalid request method and/or path: {0} {1}.")]
    InvalidPathMethod(String, String),
    #[error("{0} is not supported by Ember.")]
    NotSupported(String),
    #[error("GET request cannot have a body.")]
    GetWithBody,
    #[error("Empty PUT request.")]
    EmptyPut,
    #[error("Empty PATCH request.")]
    EmptyPatch,
    #[error("The ID cannot be empty.")]
    EmptyId,
    #[error("The id from the path does not match the id from the body!")]
    IdMismatch,
    #[error("An error occurred when deserializing the json body of a request: {0}.")]
    Json(#[from] serde_json::Error),
}

/// The body of `PUT /actions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    action_type: ActionType,
}

#[derive(Deserialize)]
enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

/// The body of `PATCH /vm`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmBody {
    state: VmState,
}

#[derive(Deserialize)]
enum VmState {
    Paused,
    Resumed,
}

/// The action a request asks for.
pub fn route(method: &str, path: &str, body: &[u8]) -> Result<VmmAction, RouteError> {
    let tokens: Vec<&str> = path.split_terminator('/').skip(1).collect();
    let resource = tokens.first().copied().unwrap_or_default();
    if UNSUPPORTED.contains(&resource) {
        return Err(RouteError::NotSupported(path.to_string()));
    }
    let invalid = || RouteError::InvalidPathMethod(method.to_string(), path.to_string());
    match (method, body.is_empty()) {
        ("GET", true) => route_get(&tokens).ok_or_else(invalid),
        ("GET", false) => Err(RouteError::GetWithBody),
        ("PUT", true) => Err(RouteError::EmptyPut),
        ("PUT", false) => route_put(&tokens, body)?.ok_or_else(invalid),
        ("PATCH", true) => Err(RouteError::EmptyPatch),
        ("PATCH", false) => route_patch(&tokens, body)?.ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

fn route_get(tokens: &[&str]) -> Option<VmmAction> {
    match tokens {
        [] => Some(VmmAction::GetInstanceInfo),
        ["version"] => Some(VmmAction::GetVersion),
        ["machine-config"] => Some(VmmAction::GetMachineConfig),
        ["vm", "config"] => Some(VmmAction::GetVmConfig),
        _ => None,
    }
}

fn route_put(tokens: &[&str], body: &[u8]) -> Result<Option<VmmAction>, RouteError> {
    let action = match tokens {
        ["actions"] => action(json(body)?),
        ["boot-source"] => VmmAction::ConfigureBootSource(json(body)?),
        ["machine-config"] => VmmAction::PutMachineConfig(json(body)?),
        ["metrics"] => VmmAction::ConfigureMetrics(json(body)?),
        ["logger"] => VmmAction::ConfigureLogger(json(body)?),
        ["snapshot", "create"] => VmmAction::CreateSnapshot(json(body)?),
        ["snapshot", "load"] => VmmAction::LoadSnapshot(json(body)?),
        ["vsock"] => VmmAction::SetVsock(json(body)?),
        ["entropy"] => VmmAction::SetEntropy(json(body)?),
        ["drives"] | ["network-interfaces"] => return Err(RouteError::EmptyId),
        ["drives", id] => VmmAction::InsertDrive(with_id(id, body, |d: &DriveConfig| &d.drive_id)?),
        ["network-interfaces", id] => {
            VmmAction::InsertNetworkInterface(with_id(id, body, |n: &NetworkInterfaceConfig| {
                &n.iface_id
            })?)
        }
        _ => return Ok(None),
    };
    Ok(Some(action))
}

fn route_patch(tokens: &[&str], body: &[u8]) -> Result<Option<VmmAction>, RouteError> {
    let action = match tokens {
        ["machine-config"] => patch_machine_config(json(body)?)?,
        ["vm"] => vm_state(json(body)?),
        ["drives"] | ["network-interfaces"] => return Err(RouteError::EmptyId),
        ["drives", id] => VmmAction::PatchDrive(with_id(id, body, |d: &DriveUpdate| &d.drive_id)?),
        ["network-interfaces", id] => {
            VmmAction::PatchNetworkInterface(with_id(id, body, |n: &NetworkInterfaceUpdate| {
                &n.iface_id
            })?)
        }
        _ => return Ok(None),
    };
    Ok(Some(action))
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, RouteError> {
    Ok(serde_json::from_slice(body)?)
}

/// Parses a body whose id must equal the id in the path.
fn with_id<T: DeserializeOwned>(
    path_id: &str,
    body: &[u8],
    body_id: impl Fn(&T) -> &String,
) -> Result<T, RouteError> {
    let parsed: T = json(body)?;
    if body_id(&parsed) != path_id {
        return Err(RouteError::IdMismatch);
    }
    Ok(parsed)
}

fn action(body: ActionBody) -> VmmAction {
    match body.action_type {
        ActionType::InstanceStart => VmmAction::StartInstance,
        ActionType::SendCtrlAltDel => VmmAction::SendCtrlAltDel,
        ActionType::FlushMetrics => VmmAction::FlushMetrics,
    }
}

fn vm_state(body: VmBody) -> VmmAction {
    match body.state {
        VmState::Paused => VmmAction::Pause,
        VmState::Resumed => VmmAction::Resume,
    }
}

fn patch_machine_config(update: MachineConfigUpdate) -> Result<VmmAction, RouteError> {
    if update.is_empty() {
        return Err(RouteError::EmptyPatch);
    }
    Ok(VmmAction::PatchMachineConfig(update))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(method: &str, path: &str, body: &str) -> String {
        route(method, path, body.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn put_metrics_configures_metrics() {
        let action = route("PUT", "/metrics", br#"{"metrics_path": "/tmp/m.fifo"}"#).unwrap();
        let VmmAction::ConfigureMetrics(metrics) = action else {
            panic!("routed to {action:?}");
        };
        assert_eq!(
            metrics.metrics_path,
            std::path::PathBuf::from("/tmp/m.fifo")
        );
        assert!(!metrics.emit_id);
        assert!(fault("PUT", "/metrics", r#"{"path": "/x"}"#).contains("unknown field"));
    }

    #[test]
    fn put_logger_configures_the_logger() {
        let body = br#"{"level": "info", "show_level": true, "module": "vmm"}"#;
        let VmmAction::ConfigureLogger(config) = route("PUT", "/logger", body).unwrap() else {
            panic!("not routed to ConfigureLogger");
        };
        assert_eq!(config.level, Some(vmm::config::LogLevel::Info));
        assert_eq!(config.show_level, Some(true));
        assert_eq!(config.module.as_deref(), Some("vmm"));
        assert!(fault("PUT", "/logger", r#"{"level": "Loud"}"#).contains("Loud"));
        assert!(fault("PUT", "/logger", r#"{"path": "/x"}"#).contains("unknown field"));
    }

    #[test]
    fn gets_and_actions_map_to_vmm_actions() {
        let cases = [
            ("GET", "/", "", VmmAction::GetInstanceInfo),
            ("GET", "/version", "", VmmAction::GetVersion),
            ("GET", "/vm/config", "", VmmAction::GetVmConfig),
            ("GET", "/machine-config", "", VmmAction::GetMachineConfig),
            (
                "PUT",
                "/actions",
                r#"{"action_type":"InstanceStart"}"#,
                VmmAction::StartInstance,
            ),
            (
                "PUT",
                "/actions",
                r#"{"action_type":"SendCtrlAltDel"}"#,
                VmmAction::SendCtrlAltDel,
            ),
            ("PATCH", "/vm", r#"{"state":"Paused"}"#, VmmAction::Pause),
            ("PATCH", "/vm", r#"{"state":"Resumed"}"#, VmmAction::Resume),
        ];
        for (method, path, body, want) in cases {
            assert_eq!(
                route(method, path, body.as_bytes()).unwrap(),
                want,
                "{path}"
            );
        }
    }

    #[test]
    fn ids_in_path_and_body_must_match() {
        let body = r#"{"drive_id":"b","path_on_host":"/d","is_root_device":false}"#;
        let want = "The id from the path does not match the id from the body!";
        assert_eq!(fault("PUT", "/drives/a", body), want);
        assert!(matches!(
            route("PUT", "/drives/b", body.as_bytes()),
            Ok(VmmAction::InsertDrive(_))
        ));
        let body = r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#;
        assert_eq!(fault("PUT", "/network-interfaces/eth1", body), want);
        assert_eq!(fault("PUT", "/drives", body), "The ID cannot be empty.");
        let body = r#"{"drive_id":"a","path_on_host":"/new"}"#;
        assert_eq!(fault("PATCH", "/drives/b", body), want);
    }

    #[test]
    fn method_and_body_rules_follow_firecracker() {
        let invalid = "Invalid request method and/or path:";
        // The whole path, not only its first part as Firecracker does: clearer, same prefix.
        assert_eq!(fault("PUT", "/vm", "{}"), format!("{invalid} PUT /vm."));
        assert_eq!(
            fault("GET", "/drives/a/b", ""),
            format!("{invalid} GET /drives/a/b.")
        );
        assert_eq!(
            fault("DELETE", "/drives/x", ""),
            format!("{invalid} DELETE /drives/x.")
        );
        assert_eq!(
            fault("POST", "/actions", "{}"),
            format!("{invalid} POST /actions.")
        );
        assert_eq!(
            fault("GET", "/version", "{}"),
            "GET request cannot have a body."
        );
        assert_eq!(fault("PUT", "/boot-source", ""), "Empty PUT request.");
        assert_eq!(
            fault("PATCH", "/machine-config", ""),
            "Empty PATCH request."
        );
        assert_eq!(
            fault("PATCH", "/machine-config", "{}"),
            "Empty PATCH request."
        );
    }

    #[test]
    fn unimplemented_firecracker_resources_say_so() {
        for path in ["/balloon", "/mmds"] {
            let message = fault("PUT", path, "{}");
            assert_eq!(message, format!("{path} is not supported by Ember."));
        }
    }

    #[test]
    fn vsock_and_entropy_are_put() {
        let body = br#"{"guest_cid": 3, "uds_path": "/tmp/v.sock"}"#;
        let Ok(VmmAction::SetVsock(vsock)) = route("PUT", "/vsock", body) else {
            panic!("not routed to SetVsock");
        };
        assert_eq!((vsock.guest_cid, vsock.vsock_id), (3, None));
        let Ok(VmmAction::SetEntropy(entropy)) = route("PUT", "/entropy", b"{}") else {
            panic!("not routed to SetEntropy");
        };
        assert_eq!(entropy.rate_limiter, None);
        assert!(fault("PUT", "/vsock", r#"{"guest_cid": -1, "uds_path": "/v"}"#).contains("-1"));
        assert!(fault("GET", "/vsock", "").starts_with("Invalid request method"));
    }

    #[test]
    fn json_errors_carry_serde_messages() {
        let message = fault("PUT", "/machine-config", r#"{"vcpu_count": 2}"#);
        assert!(
            message.contains("missing field `mem_size_mib`"),
            "{message}"
        );
        let message = fault("PUT", "/actions", r#"{"action_type":"Reboot"}"#);
        assert!(message.contains("unknown variant `Reboot`"), "{message}");
        let message = fault("PUT", "/boot-source", "{");
        assert!(message.contains("EOF while parsing"), "{message}");
    }
}
