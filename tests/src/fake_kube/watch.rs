//! WATCH: newline-delimited JSON events (`{"type": ..., "object": ...}`), one chunk each, read
//! from the store's history so a watch from an older resourceVersion replays what it missed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::error::ApiError;
use super::http::{Query, Shared, Target, stopped};
use super::resources::ResourceType;
use super::selector::Selector;
use super::store::{Change, ChangeKind, Store};

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut out = serde_json::to_vec(&Line { kind, object }).expect("JSON values serialize");
    out.push(b'\n');
    Bytes::from(out)
}

/// What one watch sends: events of one type (in one namespace) matching its selectors.
struct Filter {
    ty: ResourceType,
    namespace: Option<String>,
    selector: Selector,
}

impl Filter {
    /// The event this watch sees for a change: objects entering or leaving the selector become
    /// ADDED/DELETED, as with the real server's watch cache.
    fn event(&self, c: &Change) -> Option<Bytes> {
        let same_type = c.key.group == self.ty.group && c.key.kind == self.ty.kind;
        if !same_type || self.namespace.as_ref().is_some_and(|ns| *ns != c.key.namespace) {
            return None;
        }
        let now = self.selector.matches(&c.object);
        let before = c.previous.as_ref().is_some_and(|p| self.selector.matches(p));
        let kind = match (c.kind, before, now) {
            (ChangeKind::Modified, true, true) => "MODIFIED",
            (ChangeKind::Modified, false, true) | (ChangeKind::Added, _, true) => "ADDED",
            (ChangeKind::Modified, true, false) | (ChangeKind::Deleted, _, true) => "DELETED",
            _ => return None,
        };
        Some(line(kind, &c.object))
    }

    /// Events after `cursor` (which moves to the newest resourceVersion), and whether the watch
    /// must end because that history is gone (a 410 `ERROR` event, after which kube relists).
    fn poll(&self, store: &Store, cursor: &mut u64) -> (Vec<Bytes>, bool) {
        let out = match store.changes_after(*cursor) {
            Ok(changes) => (changes.filter_map(|c| self.event(c)).collect(), false),
            Err(gone) => (vec![line("ERROR", &gone.status())], true),
        };
        *cursor = store.resource_version();
        out
    }
}

/// Without a resourceVersion (or with `0`) the watch starts with ADDED for every current object
/// (and, with `sendInitialEvents`, a BOOKMARK marking their end); with one it replays history.
/// It ends after `timeoutSeconds`, or when the server stops.
pub(crate) fn watch(shared: &Arc<Shared>, target: &Target, query: &Query) -> Result<Body, ApiError> {
    let selector = query.selector()?;
    let deadline = query.number("timeoutSeconds")?.map(|s| Instant::now() + Duration::from_secs(s));
    let from = query.number("resourceVersion")?.filter(|rv| *rv != 0);
    let mut store = shared.store.lock();
    let ty = target.resolve(&mut store, None)?;
    let mut initial = Vec::new();
    let mut cursor = store.resource_version();
    match from {
        Some(rv) => cursor = rv,
        None => {
            let current = store.list(&ty, target.namespace.as_deref()).filter(|o| selector.matches(o));
            initial.extend(current.map(|o| line("ADDED", o)));
            if query.flag("sendInitialEvents") {
                let meta = json!({"resourceVersion": cursor.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}});
                initial.push(line(
                    "BOOKMARK",
                    &json!({"kind": ty.kind, "apiVersion": ty.api_version(), "metadata": meta}),
                ));
            }
        }
    }
    drop(store);
    let filter = Filter { ty, namespace: target.namespace.clone(), selector };
    let (shared, mut changes) = (shared.clone(), shared.changes.clone());
    let stream = async_stream::stream! {
        for l in initial {
            yield Ok::<_, Infallible>(l);
        }
        loop {
            // Mark the notification seen before reading, so a write after the read wakes us.
            changes.borrow_and_update();
            let (lines, gone) = filter.poll(&shared.store.lock(), &mut cursor);
            for l in lines {
                yield Ok(l);
            }
            if gone {
                break;
            }
            let timeout = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                () = stopped(shared.stop.clone()) => break,
                () = timeout => break,
            }
        }
    };
    Ok(Body::from_stream(stream))
}
