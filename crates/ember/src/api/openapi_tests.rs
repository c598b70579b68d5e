//! Keeps `resources/api/openapi.yaml` true to the router: every operation it lists is
//! routed, every other method on its paths is refused as an invalid path or method, and the
//! resources it calls unsupported are exactly the ones the router refuses.

use super::router::{route, RouteError, UNSUPPORTED};

const SPEC: &str = include_str!("../../../../resources/api/openapi.yaml");
const METHODS: [&str; 5] = ["GET", "PUT", "PATCH", "POST", "DELETE"];
/// Every path of Firecracker's API (its swagger file), so that a route added to the router
/// but not to the spec is caught too.
const FIRECRACKER_PATHS: &[&str] = &[
    "/",
    "/actions",
    "/balloon",
    "/balloon/statistics",
    "/balloon/hinting/start",
    "/balloon/hinting/status",
    "/balloon/hinting/stop",
    "/boot-source",
    "/cpu-config",
    "/drives/{drive_id}",
    "/pmem/{id}",
    "/logger",
    "/machine-config",
    "/metrics",
    "/mmds",
    "/mmds/config",
    "/entropy",
    "/serial",
    "/hotplug/memory",
    "/network-interfaces/{iface_id}",
    "/snapshot/create",
    "/snapshot/load",
    "/version",
    "/vm",
    "/vm/config",
    "/vsock",
];

/// `(path, methods)` for each entry under `paths:`, read from the YAML's indentation (the
/// file is written by hand in one layout; a YAML parser would be a dependency for this alone).
fn spec_operations() -> Vec<(String, Vec<String>)> {
    let mut operations: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_paths = false;
    for line in SPEC.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        let Some(key) = line.strip_suffix(':') else {
            continue;
        };
        if !in_paths {
            continue;
        }
        if let Some(path) = key.strip_prefix("  /") {
            operations.push((format!("/{path}"), Vec::new()));
        } else if let Some(method) = key.strip_prefix("    ").filter(|m| !m.starts_with(' ')) {
            if let Some((_, methods)) = operations.last_mut() {
                methods.push(method.to_ascii_uppercase());
            }
        }
    }
    operations
}

/// A concrete path for a templated one: `{drive_id}` becomes `x`.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|part| if part.starts_with('{') { "x" } else { part })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether the router knows `method path`, whatever it makes of a placeholder body.
fn is_routed(method: &str, path: &str) -> bool {
    let body: &[u8] = if method == "GET" { b"" } else { b"{}" };
    !matches!(
        route(method, path, body),
        Err(RouteError::InvalidPathMethod(..) | RouteError::NotSupported(_))
    )
}

/// The resources the spec's description lists as not implemented: "... implement (a, b)".
fn spec_unsupported_list() -> Vec<&'static str> {
    let (_, after) = SPEC
        .split_once("does not implement (")
        .expect("the spec lists unsupported resources");
    let (list, _) = after.split_once(')').expect("the list ends with ')'");
    list.split(',').map(str::trim).collect()
}

#[test]
fn every_spec_operation_is_routed_and_no_other() {
    let operations = spec_operations();
    assert!(operations.len() >= 5, "spec not read: {operations:?}");
    for (path, listed) in &operations {
        let concrete = concrete(path);
        for method in METHODS {
            let in_spec = listed.iter().any(|m| m == method);
            assert_eq!(
                is_routed(method, &concrete),
                in_spec,
                "{method} {path}: the spec says {}",
                if in_spec { "served" } else { "not served" }
            );
        }
    }
}

#[test]
fn every_routed_firecracker_path_is_in_the_spec() {
    let operations = spec_operations();
    for path in FIRECRACKER_PATHS {
        let in_spec = operations.iter().find(|(listed, _)| listed == path);
        for method in METHODS {
            let listed = in_spec.is_some_and(|(_, methods)| methods.iter().any(|m| m == method));
            assert!(
                listed || !is_routed(method, &concrete(path)),
                "{method} {path} is routed but not in resources/api/openapi.yaml"
            );
        }
    }
}

#[test]
fn unsupported_resources_match_the_spec() {
    let operations = spec_operations();
    for resource in UNSUPPORTED {
        assert!(
            !operations
                .iter()
                .any(|(path, _)| path.split('/').nth(1) == Some(resource)),
            "/{resource} is refused by the router but listed in the spec"
        );
    }
    let mut listed = spec_unsupported_list();
    let mut refused: Vec<&str> = UNSUPPORTED.to_vec();
    listed.sort_unstable();
    refused.sort_unstable();
    assert_eq!(
        listed, refused,
        "the spec's unsupported list and the router's differ"
    );
    for served in ["logger", "metrics"] {
        assert!(!UNSUPPORTED.contains(&served), "{served} is served");
    }
}
