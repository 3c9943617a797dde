//! The objects, their change history and the write rules of a real API server: metadata the server
//! owns, the status subresource split, optimistic concurrency, no-op detection, finalizers,
//! garbage collection by owner reference and namespace termination.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::error::ApiError;
use super::resources::{Registry, ResourceType};

/// Watch history kept for replay; a watch from before it gets 410 Gone.
const HISTORY: usize = 50_000;

/// Identity of one stored object; `namespace` is empty for cluster-scoped kinds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjKey {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(ty: &ResourceType, namespace: Option<&str>, name: &str) -> Self {
        let namespace = if ty.namespaced { namespace.unwrap_or_default() } else { "" };
        Self { group: ty.group.clone(), kind: ty.kind.clone(), namespace: namespace.into(), name: name.into() }
    }

    fn namespace_object(name: &str) -> Self {
        Self { group: String::new(), kind: "Namespace".into(), namespace: String::new(), name: name.into() }
    }

    fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.kind == "Namespace"
    }
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Part {
    /// The main resource: everything but `.status`.
    Main,
    /// The `/status` subresource: only `.status`.
    Status,
    /// Both (the test-side `FakeKube::put`, which plays kubelet and controllers at once).
    Whole,
}

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One entry of the history watches replay.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub kind: ChangeKind,
    pub key: ObjKey,
    pub object: Value,
    /// The object before a modification, so selector watches can turn it into ADDED/DELETED.
    pub previous: Option<Value>,
}

/// Result of a write: the object now stored (or last stored) and whether anything changed.
#[derive(Debug)]
pub(crate) struct Written {
    pub object: Value,
    pub changed: bool,
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn meta_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = obj.as_object_mut().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    meta.as_object_mut().ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

/// `meta_mut` for objects already stored (always objects with object metadata).
fn stored_meta(obj: &mut Value) -> &mut Map<String, Value> {
    meta_mut(obj).expect("stored objects have object metadata")
}

fn finalizers(obj: &Value) -> Vec<&str> {
    let list = obj.pointer("/metadata/finalizers").and_then(Value::as_array);
    list.map(|l| l.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn deleting(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

fn uid_of(obj: &Value) -> Option<&str> {
    meta_str(obj, "uid")
}

/// Everything outside `metadata` and `status`: a change there bumps `generation`.
fn spec_of(obj: &Value) -> Vec<(&String, &Value)> {
    let map = obj.as_object().into_iter().flatten();
    map.filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status")).collect()
}

/// The real server omits empty metadata collections; doing the same keeps no-op detection exact.
fn prune_empty_metadata(obj: &mut Value) {
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        meta.retain(|_, v| match v {
            Value::Null => false,
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        });
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn new_uid() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{suffix}")
}

/// Status the server fills in on create.
fn initial_status(kind: &str) -> Option<Value> {
    match kind {
        "Namespace" => Some(json!({"phase": "Active"})),
        "Pod" => Some(json!({"phase": "Pending"})),
        _ => None,
    }
}

/// All objects, the global resourceVersion counter and the change history.
#[derive(Debug)]
pub(crate) struct Store {
    rv: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: VecDeque<Change>,
    /// Changes up to this resourceVersion were dropped from `history`.
    compacted: u64,
    /// Last object each field manager applied, per (object, manager, part).
    applied: HashMap<(ObjKey, String, Part), Value>,
    pub types: Registry,
    notify: watch::Sender<u64>,
}

impl Store {
    /// An empty store that publishes every new resourceVersion on `notify`.
    pub fn new(notify: watch::Sender<u64>) -> Self {
        let (rv, compacted) = (0, 0);
        let (objects, history, applied) = Default::default();
        Self { rv, objects, history, compacted, applied, types: Registry::default(), notify }
    }

    /// The newest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// `configmaps` / `topics.weir.dev` for messages about `key`.
    fn resource_name(&self, key: &ObjKey) -> String {
        self.types.resolve(&key.group, &key.kind).map_or_else(|| key.kind.to_lowercase(), ResourceType::resource)
    }

    pub fn get(&self, key: &ObjKey) -> Option<&Value> {
        self.objects.get(key)
    }

    fn get_or_404(&self, key: &ObjKey) -> Result<Value, ApiError> {
        self.objects.get(key).cloned().ok_or_else(|| ApiError::not_found(&self.resource_name(key), &key.name))
    }

    /// Objects of a type, in one namespace or (None) all of them.
    pub fn list<'a>(
        &'a self,
        ty: &'a ResourceType,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |(k, _)| {
                k.group == ty.group && k.kind == ty.kind && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v)
    }

    /// Changes newer than `rv`, or 410 if they are no longer kept.
    pub fn changes_after(&self, rv: u64) -> Result<impl Iterator<Item = &Change>, ApiError> {
        if rv < self.compacted {
            return Err(ApiError::expired(format!("too old resource version: {rv} ({})", self.compacted + 1)));
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Ok(self.history.range(start..))
    }

    pub fn last_applied(&self, key: &ObjKey, manager: &str, part: Part) -> Option<&Value> {
        self.applied.get(&(key.clone(), manager.to_owned(), part))
    }

    pub fn remember_applied(&mut self, key: ObjKey, manager: &str, part: Part, applied: Value) {
        self.applied.insert((key, manager.to_owned(), part), applied);
    }

    fn record(&mut self, kind: ChangeKind, key: &ObjKey, object: Value, previous: Option<Value>) {
        self.history.push_back(Change { rv: self.rv, kind, key: key.clone(), object, previous });
        if self.history.len() > HISTORY
            && let Some(dropped) = self.history.pop_front()
        {
            self.compacted = dropped.rv;
        }
        self.notify.send_replace(self.rv);
    }

    fn next_rv(&mut self, obj: &mut Value) {
        self.rv += 1;
        stored_meta(obj).insert("resourceVersion".into(), self.rv.to_string().into());
    }

    /// POST: a new object in `namespace` (for namespaced types). `keep_status` is for test-side
    /// writes; over HTTP the server drops a submitted status like the real one does.
    pub fn create(
        &mut self,
        ty: &ResourceType,
        namespace: Option<&str>,
        mut obj: Value,
        keep_status: bool,
    ) -> Result<Value, ApiError> {
        let meta = meta_mut(&mut obj)?;
        let name = match (meta.get("name").and_then(Value::as_str), meta.get("generateName").and_then(Value::as_str)) {
            (Some(name), _) if !name.is_empty() => name.to_owned(),
            (_, Some(prefix)) => generated_name(prefix),
            _ => {
                return Err(ApiError::invalid(
                    &ty.kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        let namespace = if ty.namespaced {
            let body_ns = meta.get("namespace").and_then(Value::as_str);
            let ns = namespace.or(body_ns).unwrap_or("default").to_owned();
            if body_ns.is_some_and(|b| b != ns) {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".into(), ns.clone().into());
            Some(ns)
        } else {
            meta.remove("namespace");
            None
        };
        meta.insert("name".into(), name.clone().into());
        meta.insert("uid".into(), new_uid().into());
        meta.insert("creationTimestamp".into(), now().into());
        meta.insert("generation".into(), 1.into());
        for field in ["deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "managedFields"] {
            meta.remove(field);
        }
        let map = obj.as_object_mut().expect("meta_mut checked it is an object");
        map.insert("apiVersion".into(), ty.api_version().into());
        if map.get("kind").is_some_and(|k| k != ty.kind.as_str()) {
            return Err(ApiError::bad_request(format!("the body's kind does not match the URL's ({})", ty.kind)));
        }
        map.insert("kind".into(), ty.kind.clone().into());
        if !keep_status {
            map.remove("status");
        }
        if let Some(status) = initial_status(&ty.kind).filter(|_| !map.contains_key("status")) {
            map.insert("status".into(), status);
        }
        if let Some(ns) = &namespace {
            let ns_obj =
                self.objects.get(&ObjKey::namespace_object(ns)).ok_or_else(|| ApiError::not_found("namespaces", ns))?;
            if deleting(ns_obj) {
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    ty.resource()
                )));
            }
        }
        let key = ObjKey::new(ty, namespace.as_deref(), &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&ty.resource(), &name));
        }
        prune_empty_metadata(&mut obj);
        self.next_rv(&mut obj);
        self.objects.insert(key.clone(), obj.clone());
        self.record(ChangeKind::Added, &key, obj.clone(), None);
        Ok(obj)
    }

    /// PUT, and every PATCH once the patch has produced the proposed object. A non-empty
    /// `metadata.resourceVersion` in `proposed` must be the stored one (optimistic concurrency).
    pub fn update(&mut self, key: &ObjKey, part: Part, mut proposed: Value) -> Result<Written, ApiError> {
        let old = self.get_or_404(key)?;
        let resource = self.resource_name(key);
        let meta = meta_mut(&mut proposed)?;
        if meta.get("name").and_then(Value::as_str).is_some_and(|n| n != key.name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object does not match the name on the URL ({})",
                key.name
            )));
        }
        let stale = meta.get("resourceVersion").and_then(Value::as_str).filter(|rv| !rv.is_empty());
        if part != Part::Whole && stale.is_some_and(|rv| Some(rv) != meta_str(&old, "resourceVersion")) {
            return Err(ApiError::conflict(&resource, &key.name));
        }
        let new = if part == Part::Status {
            let mut new = old.clone();
            let map = new.as_object_mut().expect("stored objects are objects");
            match proposed.get("status") {
                Some(status) if !status.is_null() => map.insert("status".into(), status.clone()),
                _ => map.remove("status"),
            };
            new
        } else {
            // The server owns identity and lifecycle metadata; clients cannot change them.
            let old_meta = old.get("metadata").and_then(Value::as_object).expect("stored objects have metadata");
            for field in
                ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "name"]
            {
                match old_meta.get(field) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
            let map = proposed.as_object_mut().expect("meta_mut checked it is an object");
            for field in ["apiVersion", "kind"] {
                map.insert(field.into(), old[field].clone());
            }
            if part == Part::Main {
                match old.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            proposed
        };
        self.commit(key, &old, new)
    }

    /// Stores `new` in place of `old` unless nothing changed; removes it if it is deleted and its
    /// last finalizer is gone.
    fn commit(&mut self, key: &ObjKey, old: &Value, mut new: Value) -> Result<Written, ApiError> {
        prune_empty_metadata(&mut new);
        if deleting(old) {
            let before = finalizers(old);
            let added: Vec<&str> = finalizers(&new).into_iter().filter(|f| !before.contains(f)).collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    &key.kind,
                    &key.name,
                    &format!(
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, \
                         found new finalizers {added:?}"
                    ),
                ));
            }
        }
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        let generation = if spec_of(old) == spec_of(&new) { generation } else { generation + 1 };
        let meta = stored_meta(&mut new);
        meta.insert("generation".into(), generation.into());
        meta.insert("resourceVersion".into(), old["metadata"]["resourceVersion"].clone());
        if new == *old {
            return Ok(Written { object: new, changed: false });
        }
        if self.ready_to_remove(key, &new) {
            self.remove(key, new.clone());
            return Ok(Written { object: new, changed: true });
        }
        self.next_rv(&mut new);
        self.objects.insert(key.clone(), new.clone());
        self.record(ChangeKind::Modified, key, new.clone(), Some(old.clone()));
        Ok(Written { object: new, changed: true })
    }

    /// Deleted, without finalizers, and (for a namespace) empty.
    fn ready_to_remove(&self, key: &ObjKey, obj: &Value) -> bool {
        deleting(obj)
            && finalizers(obj).is_empty()
            && !(key.is_namespace() && self.objects.keys().any(|k| k.namespace == key.name))
    }

    /// DELETE: immediate without finalizers, otherwise marks the object and waits for them.
    /// `preconditions` is DeleteOptions' `{uid, resourceVersion}`.
    pub fn delete(&mut self, key: &ObjKey, preconditions: Option<&Value>) -> Result<Written, ApiError> {
        let old = self.get_or_404(key)?;
        for field in ["uid", "resourceVersion"] {
            let expected = preconditions.and_then(|p| p.get(field)).and_then(Value::as_str);
            if expected.is_some_and(|e| Some(e) != meta_str(&old, field)) {
                return Err(ApiError::conflict(&self.resource_name(key), &key.name));
            }
        }
        let mut marked = old.clone();
        if !deleting(&old) {
            let meta = stored_meta(&mut marked);
            meta.insert("deletionTimestamp".into(), now().into());
            meta.insert("deletionGracePeriodSeconds".into(), 0.into());
        }
        if !key.is_namespace() {
            return self.commit(key, &old, marked);
        }
        marked["status"] = json!({"phase": "Terminating"});
        let written = self.commit(key, &old, marked)?;
        let contents: Vec<ObjKey> = self.objects.keys().filter(|k| k.namespace == key.name).cloned().collect();
        for k in contents {
            // Already-deleted dependents (garbage collection) are fine to miss.
            let _ = self.delete(&k, None);
        }
        self.finish_namespace(&key.name);
        Ok(written)
    }

    /// Drops an object for good: DELETED event, then its dependents and, if it was the last
    /// object of a terminating namespace, the namespace.
    fn remove(&mut self, key: &ObjKey, mut last: Value) {
        self.objects.remove(key);
        self.applied.retain(|(k, _, _), _| k != key);
        self.next_rv(&mut last);
        let uid = uid_of(&last).map(str::to_owned);
        self.record(ChangeKind::Deleted, key, last, None);
        if let Some(uid) = uid {
            self.collect_garbage(&uid);
        }
        if !key.namespace.is_empty() {
            self.finish_namespace(&key.namespace);
        }
    }

    /// Background-propagation garbage collection: dependents whose every owner is gone are
    /// deleted; dependents with another live owner just lose the dangling reference.
    fn collect_garbage(&mut self, owner_uid: &str) {
        let owned_by = |obj: &Value, uid: &str| {
            let refs = obj.pointer("/metadata/ownerReferences").and_then(Value::as_array);
            refs.into_iter().flatten().any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        };
        let dependents: Vec<ObjKey> =
            self.objects.iter().filter(|(_, o)| owned_by(o, owner_uid)).map(|(k, _)| k.clone()).collect();
        for key in dependents {
            let Some(obj) = self.objects.get(&key).cloned() else { continue };
            let mut pruned = obj.clone();
            if let Some(Value::Array(refs)) = pruned.pointer_mut("/metadata/ownerReferences") {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
            }
            let other_owner_alive = pruned
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .any(|uid| self.objects.values().any(|o| uid_of(o) == Some(uid)));
            // The dependent may vanish meanwhile through recursion; then there is nothing to do.
            let _ = if other_owner_alive { self.commit(&key, &obj, pruned) } else { self.delete(&key, None) };
        }
    }

    /// Removes a terminating namespace once it is empty and has no finalizers.
    fn finish_namespace(&mut self, namespace: &str) {
        let key = ObjKey::namespace_object(namespace);
        if let Some(ns) = self.objects.get(&key).cloned()
            && self.ready_to_remove(&key, &ns)
        {
            self.remove(&key, ns);
        }
    }
}
