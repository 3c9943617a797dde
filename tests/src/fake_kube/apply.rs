//! The PATCH flavours, as pure functions from the stored object to the proposed one; the store
//! then applies its usual update rules (status split, metadata, no-op detection).

use serde_json::Value;

use super::error::ApiError;

/// `application/merge-patch+json` (RFC 7386). Also used for strategic merge patches, which differ
/// only for lists with patch-merge keys (e.g. containers by name): those are replaced here.
pub(crate) fn merge_patch(current: &Value, patch: &Value) -> Value {
    let mut doc = current.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

/// `application/json-patch+json` (RFC 6902). Like the real server (evanphx/json-patch), a `test`
/// for `null` passes on a missing path: kube's finalizer helper sends exactly that when an object
/// has no finalizers yet.
pub(crate) fn json_patch(
    current: &Value,
    patch: &json_patch::Patch,
    kind: &str,
    name: &str,
) -> Result<Value, ApiError> {
    let mut doc = current.clone();
    for op in &patch.0 {
        if let json_patch::PatchOperation::Test(test) = op
            && test.value.is_null()
            && doc.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(&mut doc, std::slice::from_ref(op))
            .map_err(|e| ApiError::invalid(kind, name, &format!("json patch failed: {e}")))?;
    }
    Ok(doc)
}

/// Server-side apply for a manager that always applies its complete desired object: fields it
/// applied last time and no longer applies are removed, then the applied object is merged in (maps
/// recursively, lists and scalars replaced). Fields other managers set are kept; conflicts between
/// managers are never reported.
pub(crate) fn server_side_apply(current: &Value, last_applied: Option<&Value>, applied: &Value) -> Value {
    let mut doc = current.clone();
    if let Some(last) = last_applied {
        remove_dropped(&mut doc, last, applied);
    }
    merge_applied(&mut doc, applied);
    doc
}

fn remove_dropped(target: &mut Value, last: &Value, applied: &Value) {
    let (Some(target), Some(last)) = (target.as_object_mut(), last.as_object()) else {
        return;
    };
    for (k, last_value) in last {
        match applied.get(k) {
            None => {
                target.remove(k);
            }
            Some(applied_value) => {
                if let Some(t) = target.get_mut(k) {
                    remove_dropped(t, last_value, applied_value);
                }
            }
        }
    }
}

fn merge_applied(target: &mut Value, applied: &Value) {
    match (target.as_object_mut(), applied.as_object()) {
        (Some(target), Some(applied)) => {
            for (k, v) in applied.iter().filter(|(_, v)| !v.is_null()) {
                match target.get_mut(k) {
                    Some(t) => merge_applied(t, v),
                    None => {
                        target.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = applied.clone(),
    }
}
