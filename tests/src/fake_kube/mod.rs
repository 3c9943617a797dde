//! An in-memory Kubernetes API server for tests: a **test double standing in for kube-apiserver**,
//! which cannot run here (no cluster, no etcd, no Docker). It speaks the real REST API over plain
//! HTTP on 127.0.0.1 (random port), so an unmodified `kube::Client` in the test process — and
//! `kube::runtime` controllers, watchers, the finalizer helper, `Recorder` and Lease-based leader
//! election built on it — and other processes given [`FakeKube::write_kubeconfig`] (a broker,
//! `kubectl`) work against it.
//!
//! Implemented, like the real server:
//! - routing for any resource type: `/api/v1/...` and `/apis/{group}/{version}/...`, namespaced,
//!   cluster-scoped and all-namespace collections, the `/status` subresource of every kind;
//!   a built-in plural/kind table for Weir's kinds, other types learned from the first write;
//! - GET, LIST (`labelSelector` with `=`, `==`, `!=`, `in`, `notin`, exists, `!key`;
//!   `fieldSelector` on any dotted path), POST (`generateName`), PUT, DELETE, and PATCH as
//!   server-side apply, JSON merge patch, strategic merge patch (treated as a merge patch) and
//!   JSON patch (`test` included);
//! - server-owned metadata (`uid`, `creationTimestamp`, one global `resourceVersion` counter,
//!   `generation` bumped by changes outside `metadata` and `status`); writes that change nothing
//!   keep the resourceVersion and emit no watch event; `/status` writes change only `.status`,
//!   main-resource writes never change it; optimistic concurrency (409 on a stale
//!   `resourceVersion`, delete preconditions);
//! - WATCH from a resourceVersion (history replay) or from now (ADDED for every object first),
//!   `sendInitialEvents` (streaming lists), selectors (objects leaving a selector are DELETED),
//!   `timeoutSeconds`; newline-delimited JSON, one chunk per event;
//! - finalizers and `deletionTimestamp`, background garbage collection by
//!   `ownerReferences[].uid`, namespace termination (403 for new content), 404 for a missing
//!   namespace; errors as `Status` objects with the real reasons;
//! - discovery (`/version`, `/api`, `/apis`, resource lists) for kubectl.
//!
//! Not implemented: authentication and RBAC, admission (no defaulting, no OpenAPI or CEL
//! validation, no immutable fields), field-manager conflicts and `managedFields` (apply always
//! wins), strategic-merge list keys, `dryRun` (refused), DELETE of a whole collection, pagination
//! (`limit` returns everything), metadata-only responses (full objects are sent, which kube's
//! `PartialObjectMeta` accepts), BOOKMARKs other than the streaming-list one, Foreground/Orphan
//! propagation (always Background), graceful pod termination, more than one version per group,
//! protobuf, and every controller (no kubelet, no StatefulSet or Deployment controller: tests
//! play those roles).
//! A namespace named `default` exists from the start.

mod apply;
mod discovery;
mod error;
mod http;
mod resources;
mod selector;
mod store;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kube::Resource;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch::{Sender, channel};

pub use self::error::ApiError;
use self::http::Shared;
use self::resources::{ResourceType, split_api_version};
use self::store::{ObjKey, Part, Store};

/// One mutating HTTP request (POST, PUT, PATCH, DELETE) the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    /// HTTP method.
    pub method: String,
    /// URL path, without the query.
    pub path: String,
    /// HTTP status code of the answer.
    pub status: u16,
    /// Whether the store changed (a no-op apply or patch answers 200 with `changed: false`).
    pub changed: bool,
}

/// A running fake API server; dropping it stops the server and ends open watches.
pub struct FakeKube {
    shared: Arc<Shared>,
    stop: Sender<bool>,
}

impl FakeKube {
    /// Starts the server on a random loopback port, with namespace `default`.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr: SocketAddr = listener.local_addr().expect("bound address");
        let (notify, changes) = channel(0);
        let (stop, stop_rx) = channel(false);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(notify)),
            writes: Mutex::default(),
            changes,
            stop: stop_rx,
            addr,
        });
        let fake = Self { shared: shared.clone(), stop };
        fake.create_namespace("default");
        let shutdown = http::stopped(shared.stop.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, http::router(shared)).with_graceful_shutdown(shutdown).await {
                tracing::warn!("fake kube-apiserver stopped: {e}");
            }
        });
        fake
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A client for this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let uri = self.url().parse().expect("a loopback URL is a valid URI");
        kube::Client::try_from(kube::Config::new(uri)).expect("a plain-HTTP client builds")
    }

    /// Writes a kubeconfig whose current context points at this server, with no credentials and
    /// namespace `default`, for other processes (`KUBECONFIG=...`, `kubectl --kubeconfig`).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url()}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake",
            "preferences": {},
        });
        let yaml = serde_yaml::to_string(&config).map_err(std::io::Error::other)?;
        std::fs::write(path, yaml)
    }

    /// Mutating HTTP requests received so far, oldest first.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.shared.writes.lock().clone()
    }

    /// Forgets the recorded writes (e.g. after setup, before the step under test).
    pub fn clear_writes(&self) {
        self.shared.writes.lock().clear();
    }

    /// The newest resourceVersion; unchanged by writes that change nothing.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().resource_version()
    }

    /// Creates namespace `name` unless it exists; returns it.
    pub fn create_namespace(&self, name: &str) -> Value {
        if let Some(ns) = self.get("v1", "namespaces", None, name) {
            return ns;
        }
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        self.put(ns).expect("a namespace with a valid name can be created")
    }

    /// Resolves a type named by plural or kind, e.g. (`apps/v1`, `statefulsets`) or (`v1`, `Pod`).
    fn resource_type(&self, api_version: &str, kind_or_plural: &str) -> Result<ResourceType, ApiError> {
        let (group, _) = split_api_version(api_version);
        let store = self.shared.store.lock();
        store.types.resolve(group, kind_or_plural).cloned().ok_or_else(ApiError::no_such_resource)
    }

    fn key(
        &self,
        api_version: &str,
        kind_or_plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<ObjKey, ApiError> {
        Ok(ObjKey::new(&self.resource_type(api_version, kind_or_plural)?, namespace, name))
    }

    /// One object, as the server would return it.
    pub fn get(&self, api_version: &str, kind_or_plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = self.key(api_version, kind_or_plural, namespace, name).ok()?;
        self.shared.store.lock().get(&key).cloned()
    }

    /// Objects of a type in one namespace, or in all (`None`).
    pub fn list(&self, api_version: &str, kind_or_plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let Ok(ty) = self.resource_type(api_version, kind_or_plural) else { return Vec::new() };
        self.shared.store.lock().list(&ty, namespace).cloned().collect()
    }

    /// Creates or replaces an object (status included), the way a kubelet or another controller
    /// would write it: new resourceVersion and watch event only if something changed. The body's
    /// `apiVersion`, `kind`, `metadata.name` and (for namespaced kinds) `metadata.namespace`,
    /// default `default`, name it; types never seen before are registered.
    pub fn put(&self, object: Value) -> Result<Value, ApiError> {
        let field = |f: &str| object.get(f).and_then(Value::as_str).map(str::to_owned);
        let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
            return Err(ApiError::bad_request("apiVersion and kind are required"));
        };
        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned);
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut store = self.shared.store.lock();
        let ty = store.types.learn_kind(&api_version, &kind, namespace.is_some());
        let namespace = namespace.unwrap_or_else(|| "default".into());
        let key = ObjKey::new(&ty, Some(&namespace), &name);
        if store.get(&key).is_some() {
            Ok(store.update(&key, Part::Whole, object)?.object)
        } else {
            store.create(&ty, Some(&namespace), object, true)
        }
    }

    /// Merges `status` into the object's `.status` (JSON merge patch), like a controller's
    /// status write.
    pub fn patch_status(
        &self,
        api_version: &str,
        kind_or_plural: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        let key = self.key(api_version, kind_or_plural, namespace, name)?;
        let mut store = self.shared.store.lock();
        let current = store.get(&key).cloned().ok_or_else(|| ApiError::not_found(kind_or_plural, name))?;
        let proposed = apply::merge_patch(&current, &json!({ "status": status }));
        Ok(store.update(&key, Part::Status, proposed)?.object)
    }

    /// Deletes like an API client would: finalizers are respected, dependents are collected.
    pub fn delete(
        &self,
        api_version: &str,
        kind_or_plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), ApiError> {
        let key = self.key(api_version, kind_or_plural, namespace, name)?;
        self.shared.store.lock().delete(&key, None).map(drop)
    }

    /// [`get`](Self::get) for a typed resource; panics if the stored object does not deserialize.
    pub fn get_typed<K>(&self, namespace: Option<&str>, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let obj = self.get(&K::api_version(&()), &K::plural(&()), namespace, name)?;
        Some(serde_json::from_value(obj).expect("stored object deserializes as its type"))
    }

    /// [`list`](Self::list) for a typed resource.
    pub fn list_typed<K>(&self, namespace: Option<&str>) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let objects = self.list(&K::api_version(&()), &K::plural(&()), namespace);
        objects
            .into_iter()
            .map(|o| serde_json::from_value(o).expect("stored object deserializes as its type"))
            .collect()
    }

    /// [`put`](Self::put) for a typed resource (`apiVersion` and `kind` filled in).
    pub fn put_typed<K>(&self, object: &K) -> Result<K, ApiError>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let mut value = serde_json::to_value(object).map_err(|e| ApiError::bad_request(e.to_string()))?;
        value["apiVersion"] = K::api_version(&()).into();
        value["kind"] = K::kind(&()).into();
        let stored = self.put(value)?;
        Ok(serde_json::from_value(stored).expect("stored object deserializes as its type"))
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
