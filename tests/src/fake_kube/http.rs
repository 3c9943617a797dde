//! The REST surface: URL routing for any resource type (core `/api/v1`, grouped
//! `/apis/{group}/{version}`, namespaced, cluster-scoped, all-namespace) and the verbs. Watches
//! are in `watch.rs`, discovery in `discovery.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::WriteRecord;
use super::apply::{json_patch, merge_patch, server_side_apply};
use super::discovery;
use super::error::ApiError;
use super::resources::ResourceType;
use super::selector::Selector;
use super::store::{ObjKey, Part, Store, Written};

/// Largest request body accepted.
const MAX_BODY: usize = 16 << 20;

/// State shared by the handle and the request handlers.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub writes: Mutex<Vec<WriteRecord>>,
    /// Latest resourceVersion, to wake watches.
    pub changes: watch::Receiver<u64>,
    /// Becomes true when the handle is dropped; ends the server and open watches.
    pub stop: watch::Receiver<bool>,
    pub addr: SocketAddr,
}

/// Resolves once the handle is dropped.
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// A successful answer.
enum Reply {
    /// JSON body; `changed` says whether the store changed (for the write log).
    Json(StatusCode, Value, bool),
    Watch(Body),
}

impl From<Written> for Reply {
    fn from(w: Written) -> Self {
        Reply::Json(StatusCode::OK, w.object, w.changed)
    }
}

fn ok(body: Value) -> Result<Reply, ApiError> {
    Ok(Reply::Json(StatusCode::OK, body, false))
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let json = [(header::CONTENT_TYPE, "application/json")];
    let (response, changed) = match serve(&shared, req).await {
        Ok(Reply::Json(code, body, changed)) => ((code, json, body.to_string()).into_response(), changed),
        Ok(Reply::Watch(body)) => ((StatusCode::OK, json, body).into_response(), false),
        Err(e) => (e.into_response(), false),
    };
    if matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        let status = response.status().as_u16();
        shared.writes.lock().push(WriteRecord { method: method.to_string(), path, status, changed });
    }
    response
}

/// What a resource URL names.
pub(crate) struct Target {
    group: String,
    version: String,
    plural: String,
    pub namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

enum Route {
    Version,
    CoreVersions,
    Groups,
    Resources { group: String, version: String },
    Resource(Target),
}

fn route(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_such_resource()),
    };
    let (group, version) = (group.to_owned(), version.to_owned());
    // `namespaces/{ns}/status` is the namespace's own subresource, not a resource type in it.
    let (namespace, plural, tail) = match rest {
        [] => return Ok(Route::Resources { group, version }),
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" => (Some(*ns), *plural, tail),
        [plural, tail @ ..] => (None, *plural, tail),
    };
    let (name, status) = match tail {
        [] => (None, false),
        [name] => (Some(*name), false),
        [name, "status"] => (Some(*name), true),
        _ => return Err(ApiError::no_such_resource()),
    };
    let (plural, namespace, name) = (plural.into(), namespace.map(Into::into), name.map(Into::into));
    Ok(Route::Resource(Target { group, version, plural, namespace, name, status }))
}

impl Target {
    /// The type this URL names, learning an unknown one from a written body's `kind`.
    pub fn resolve(&self, store: &mut Store, body: Option<&Value>) -> Result<ResourceType, ApiError> {
        let ty = match store.types.by_plural(&self.group, &self.plural) {
            Some(ty) => ty.clone(),
            None => {
                let kind = body.and_then(|b| b.get("kind")?.as_str()).ok_or_else(ApiError::no_such_resource)?;
                let (group, version, plural) = (self.group.clone(), self.version.clone(), self.plural.clone());
                let namespaced = self.namespace.is_some();
                let learned = store.types.learn(ResourceType { group, version, plural, kind: kind.into(), namespaced });
                learned.ok_or_else(ApiError::no_such_resource)?
            }
        };
        let wrong_scope =
            if ty.namespaced { self.namespace.is_none() && self.name.is_some() } else { self.namespace.is_some() };
        if wrong_scope {
            return Err(ApiError::no_such_resource());
        }
        Ok(ty)
    }

    /// The object this URL names.
    fn locate(&self, store: &mut Store, name: &str, body: Option<&Value>) -> Result<(ResourceType, ObjKey), ApiError> {
        let ty = self.resolve(store, body)?;
        let key = ObjKey::new(&ty, self.namespace.as_deref(), name);
        Ok((ty, key))
    }
}

/// A JSON object body; apply bodies may be YAML (kube sends JSON, which is YAML too).
fn parse_object(body: &[u8], yaml: bool) -> Result<Value, ApiError> {
    let parsed = match serde_json::from_slice::<Value>(body) {
        Err(_) if yaml => serde_yaml::from_slice(body).map_err(|e| e.to_string()),
        other => other.map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(ApiError::bad_request("the request body must be an object")),
        Err(e) => Err(ApiError::bad_request(format!("invalid request body: {e}"))),
    }
}

/// Decoded query parameters.
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    pub fn selector(&self) -> Result<Selector, ApiError> {
        Selector::parse(self.get("labelSelector"), self.get("fieldSelector"))
    }

    /// A numeric parameter; empty counts as absent.
    pub fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        let value = self.get(key).filter(|v| !v.is_empty());
        value.map(|v| v.parse().map_err(|_| ApiError::bad_request(format!("invalid {key}: {v:?}")))).transpose()
    }
}

async fn serve(shared: &Arc<Shared>, req: Request) -> Result<Reply, ApiError> {
    let (parts, body) = req.into_parts();
    let query = Query(form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect());
    if query.get("dryRun").is_some() {
        return Err(ApiError::bad_request("dryRun is not supported by the fake API server"));
    }
    let target = match route(parts.uri.path())? {
        Route::Version => return ok(discovery::version()),
        Route::CoreVersions => return ok(discovery::core_versions(shared.addr)),
        Route::Groups => return ok(discovery::groups(&shared.store.lock().types)),
        Route::Resources { group, version } => {
            return discovery::resources(&shared.store.lock().types, &group, &version).map(ok)?;
        }
        Route::Resource(target) => target,
    };
    if parts.method == Method::GET && target.name.is_none() && query.flag("watch") {
        return super::watch::watch(shared, &target, &query).map(Reply::Watch);
    }
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| ApiError::bad_request(e.to_string()))?;
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let content_type = content_type.split(';').next().unwrap_or("").trim();
    let part = if target.status { Part::Status } else { Part::Main };
    let store = &mut *shared.store.lock();
    match (&parts.method, target.name.as_deref()) {
        (&Method::GET, None) => {
            let ty = target.resolve(store, None)?;
            let selector = query.selector()?;
            let items: Vec<&Value> =
                store.list(&ty, target.namespace.as_deref()).filter(|o| selector.matches(o)).collect();
            // `limit` is honoured by returning everything at once (no `continue`).
            ok(json!({
                "kind": format!("{}List", ty.kind),
                "apiVersion": ty.api_version(),
                "metadata": {"resourceVersion": store.resource_version().to_string()},
                "items": items,
            }))
        }
        (&Method::GET, Some(name)) => {
            let (ty, key) = target.locate(store, name, None)?;
            ok(store.get(&key).cloned().ok_or_else(|| ApiError::not_found(&ty.resource(), name))?)
        }
        (&Method::POST, None) => {
            let obj = parse_object(&body, false)?;
            let ty = target.resolve(store, Some(&obj))?;
            if ty.namespaced && target.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            Ok(Reply::Json(StatusCode::CREATED, store.create(&ty, target.namespace.as_deref(), obj, false)?, true))
        }
        (&Method::PUT, Some(name)) => {
            let obj = parse_object(&body, false)?;
            let (_, key) = target.locate(store, name, Some(&obj))?;
            Ok(store.update(&key, part, obj)?.into())
        }
        (&Method::PATCH, Some(name)) if content_type == APPLY => apply(store, &target, name, part, &query, &body),
        (&Method::PATCH, Some(name)) => patch(store, &target, name, part, content_type, &body),
        (&Method::DELETE, Some(name)) => {
            let options = if body.is_empty() { json!({}) } else { parse_object(&body, false)? };
            let (_, key) = target.locate(store, name, None)?;
            let written = store.delete(&key, options.get("preconditions"))?;
            // 202 while finalizers hold the object back, like the real server.
            let code = if store.get(&key).is_some() { StatusCode::ACCEPTED } else { StatusCode::OK };
            Ok(Reply::Json(code, written.object, written.changed))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

const APPLY: &str = "application/apply-patch+yaml";

/// Merge, strategic merge and JSON patches: computed on the stored object, then stored like a PUT.
fn patch(
    store: &mut Store,
    target: &Target,
    name: &str,
    part: Part,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let (ty, key) = target.locate(store, name, None)?;
    let current = store.get(&key).ok_or_else(|| ApiError::not_found(&ty.resource(), name))?;
    let invalid = |e: serde_json::Error| ApiError::bad_request(format!("invalid patch: {e}"));
    let proposed = match content_type {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            merge_patch(current, &serde_json::from_slice(body).map_err(invalid)?)
        }
        "application/json-patch+json" => {
            json_patch(current, &serde_json::from_slice(body).map_err(invalid)?, &ty.kind, name)?
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    Ok(store.update(&key, part, proposed)?.into())
}

/// Server-side apply; creates the object when absent (main resource only).
fn apply(
    store: &mut Store,
    target: &Target,
    name: &str,
    part: Part,
    query: &Query,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let manager = query.get("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
        ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        )
    })?;
    let mut applied = parse_object(body, true)?;
    let (ty, key) = target.locate(store, name, Some(&applied))?;
    let meta = applied.as_object_mut().and_then(|o| o.entry("metadata").or_insert_with(|| json!({})).as_object_mut());
    let meta = meta.ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    if meta.entry("name").or_insert_with(|| name.into()) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object does not match the name on the URL ({name})"
        )));
    }
    let reply = match store.get(&key) {
        None if part == Part::Main => {
            let created = store.create(&ty, target.namespace.as_deref(), applied.clone(), false)?;
            Reply::Json(StatusCode::CREATED, created, true)
        }
        None => return Err(ApiError::not_found(&ty.resource(), name)),
        Some(current) => {
            let proposed = server_side_apply(current, store.last_applied(&key, manager, part), &applied);
            store.update(&key, part, proposed)?.into()
        }
    };
    store.remember_applied(key, manager, part, applied);
    Ok(reply)
}
