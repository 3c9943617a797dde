//! Writes: server-side apply of children and of `/status`, skipped when nothing would change.
//!
//! A child is re-applied when either
//! * what the operator wants changed (the desired object's fingerprint, kept in the annotation
//!   [`APPLIED_HASH_ANNOTATION`], differs — this also catches fields the operator stopped
//!   setting), or
//! * someone changed a field the operator sets (the desired object is no longer a subset of the
//!   live one: drift repair).
//!
//! Otherwise no request is sent, so a periodic resync of an unchanged Topic costs reads only.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, FIELD_MANAGER, Result};

/// Annotation holding the fingerprint of what the operator last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "weir.dev/applied-hash";

/// Server-side apply parameters: the operator's field manager, taking over conflicting fields.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies `desired` unless `current` already matches it. Returns whether a request was sent.
pub async fn apply_child<K>(client: &Client, desired: &K, current: Option<&K>) -> Result<bool>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
{
    let what = format!("{} {}/{}", K::kind(&()), desired.namespace().unwrap_or_default(), desired.name_any());
    let mut desired = desired.clone();
    let hash = fingerprint(&desired).map_err(|source| Error::Serialize { what: "child object", source })?;
    desired.annotations_mut().insert(APPLIED_HASH_ANNOTATION.to_owned(), hash);
    if let Some(current) = current {
        let want =
            serde_json::to_value(&desired).map_err(|source| Error::Serialize { what: "child object", source })?;
        let have = serde_json::to_value(current).map_err(|source| Error::Serialize { what: "child object", source })?;
        if is_subset(&want, &have) {
            return Ok(false);
        }
    }
    let namespace = desired.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch(&desired.name_any(), &apply_params(), &Patch::Apply(&desired))
        .await
        .map_err(Error::kube(format!("apply {what}")))?;
    Ok(true)
}

/// Applies `{apiVersion, kind, status}` to the `/status` subresource of a custom resource.
pub async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    S: Serialize,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube(format!("apply status of {} {name}", K::kind(&()))))?;
    Ok(())
}

/// Whether every field of `want` is present in `have` with the same value (objects may have
/// more keys; arrays must match element by element).
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, v)| h.get(k).is_some_and(|hv| is_subset(v, hv))),
        (Value::Array(w), Value::Array(h)) => w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b)),
        _ => want == have,
    }
}

/// A stable 64-bit FNV-1a fingerprint of the object's JSON (serde_json writes map keys in a
/// fixed order for these types, and the hash does not depend on the Rust version).
pub fn fingerprint<T: Serialize>(object: &T) -> Result<String, serde_json::Error> {
    let bytes = serde_json::to_vec(object)?;
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    Ok(format!("{hash:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_added_fields_but_not_changes() {
        let want = json!({"spec": {"replicas": 3, "ports": [{"port": 1}]}});
        let have = json!({"spec": {"replicas": 3, "ports": [{"port": 1, "protocol": "TCP"}], "x": 1}, "status": {}});
        assert!(is_subset(&want, &have));
        assert!(!is_subset(&want, &json!({"spec": {"replicas": 2, "ports": [{"port": 1}]}})));
        assert!(!is_subset(&want, &json!({"spec": {"replicas": 3, "ports": []}})));
    }

    #[test]
    fn fingerprint_is_stable() {
        assert_eq!(fingerprint(&json!({"a": 1})).unwrap(), fingerprint(&json!({"a": 1})).unwrap());
        assert_ne!(fingerprint(&json!({"a": 1})).unwrap(), fingerprint(&json!({"a": 2})).unwrap());
    }
}
