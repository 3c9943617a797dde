//! Discovery documents (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`), in
//! the legacy (non-aggregated) form that kubectl falls back to, built from the resource table.

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::error::ApiError;
use super::resources::Registry;

pub(crate) fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-weir-fake", "gitCommit": "", "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
    })
}

pub(crate) fn core_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
    })
}

pub(crate) fn groups(types: &Registry) -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for ty in types.all().iter().filter(|t| !t.group.is_empty()) {
        if groups.iter().all(|g| g["name"] != ty.group.as_str()) {
            let version = json!({"groupVersion": ty.api_version(), "version": ty.version});
            groups.push(json!({"name": ty.group, "versions": [version], "preferredVersion": version}));
        }
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(crate) fn resources(types: &Registry, group: &str, version: &str) -> Result<Value, ApiError> {
    let verbs = ["create", "delete", "get", "list", "patch", "update", "watch"];
    let mut resources = Vec::new();
    for ty in types.all().iter().filter(|t| t.group == group && t.version == version) {
        let (name, kind, namespaced) = (&ty.plural, &ty.kind, ty.namespaced);
        let singular = kind.to_lowercase();
        resources.push(
            json!({"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind, "verbs": verbs}),
        );
        let status = format!("{name}/status");
        resources
            .push(json!({"name": status, "namespaced": namespaced, "kind": kind, "verbs": ["get", "patch", "update"]}));
    }
    if resources.is_empty() {
        return Err(ApiError::no_such_resource());
    }
    let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Ok(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}
