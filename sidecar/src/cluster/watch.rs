//! Watching the namespace's Topics and ConsumerGroups (read-only) and keeping the broker in line:
//! the placement of every topic for routes and forwarding, this pod's own topic (settings,
//! owned partitions, retention), and every group's settings (filters, retry, pause, broadcast).
//!
//! Each watched change rebuilds the whole view from the two object sets; namespaces hold few
//! Topics and groups, and a rebuild is cheap next to a round trip to the API server.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use weir_crds::consumer_group::ConsumerGroup;
use weir_crds::manifest::Manifests;
use weir_crds::partition_ranges::parse_partition_ranges;
use weir_crds::topic::Topic;

use super::{ClusterView, Holder, Placement};
use crate::broker::Broker;
use crate::catalog::TopicConfig;
use crate::standalone::{group_config, topic_config};
use crate::storage::Retention;

/// Objects of one kind by name, with the buffer of a relist in progress.
struct Objects<K> {
    current: BTreeMap<String, K>,
    relisting: Option<BTreeMap<String, K>>,
    synced: bool,
}

impl<K: kube::Resource> Objects<K> {
    fn new() -> Self {
        Self { current: BTreeMap::new(), relisting: None, synced: false }
    }

    /// Applies a watch event; true when the set changed.
    fn apply(&mut self, event: watcher::Event<K>) -> bool {
        let name = |k: &K| k.meta().name.clone().unwrap_or_default();
        match event {
            watcher::Event::Apply(k) => {
                self.current.insert(name(&k), k);
                true
            }
            watcher::Event::Delete(k) => self.current.remove(&name(&k)).is_some(),
            watcher::Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(k) => {
                self.relisting.get_or_insert_default().insert(name(&k), k);
                false
            }
            watcher::Event::InitDone => {
                self.current = self.relisting.take().unwrap_or_default();
                self.synced = true;
                true
            }
        }
    }
}

/// An event of either watch (boxed: the objects are large).
enum Change {
    Topic(Box<watcher::Event<Topic>>),
    Group(Box<watcher::Event<ConsumerGroup>>),
}

/// Watches until the stream ends (never, in practice: the watcher retries with backoff).
pub async fn run(client: kube::Client, view: Arc<ClusterView>, broker: Arc<Broker>) {
    let namespace = view.me().namespace.clone();
    let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    let groups: Api<ConsumerGroup> = Api::namespaced(client, &namespace);
    let topic_events =
        watcher(topics, watcher::Config::default()).default_backoff().map(|e| e.map(|e| Change::Topic(Box::new(e))));
    let group_events =
        watcher(groups, watcher::Config::default()).default_backoff().map(|e| e.map(|e| Change::Group(Box::new(e))));
    let mut events = std::pin::pin!(futures::stream::select(topic_events, group_events));
    let mut topics = Objects::new();
    let mut groups = Objects::new();
    let mut applied_groups: BTreeSet<String> = BTreeSet::new();
    while let Some(event) = events.next().await {
        let changed = match event {
            Ok(Change::Topic(e)) => topics.apply(*e),
            Ok(Change::Group(e)) => groups.apply(*e),
            Err(e) => {
                tracing::warn!(error = %e, "watching Topics and ConsumerGroups failed; retrying");
                false
            }
        };
        if changed && topics.synced && groups.synced {
            let all = Manifests {
                topics: topics.current.values().cloned().collect(),
                consumer_groups: groups.current.values().cloned().collect(),
            };
            apply(&view, &broker, &all, &mut applied_groups);
            view.mark_synced();
        }
    }
}

/// Brings the view and the broker in line with the objects.
fn apply(view: &ClusterView, broker: &Broker, all: &Manifests, applied_groups: &mut BTreeSet<String>) {
    view.replace(placements(&all.topics));
    let me = view.me();
    if let Some(own) = all.topics.iter().find(|t| t.metadata.name.as_deref() == Some(me.topic_object.as_str())) {
        match own_topic(own, &me.pod) {
            Ok((config, retention)) => {
                let unchanged = broker.catalog().existing_topic(&config.name).is_some_and(|t| t.config == config);
                if !unchanged {
                    tracing::info!(topic = %config.name, owned = ?config.owned, "serving topic");
                    if let Err(e) = broker.catalog().put_topic(config) {
                        tracing::error!(error = %e, "could not apply the Topic");
                    }
                }
                broker.store().set_retention(retention);
            }
            Err(e) => tracing::error!(topic = %me.topic_object, error = %e, "the Topic cannot be served"),
        }
    } else {
        tracing::warn!(topic = %me.topic_object, "the Topic this pod serves does not exist (deleted?)");
    }
    let mut present = BTreeSet::new();
    for g in &all.consumer_groups {
        match group_config(g, all) {
            Ok(config) => {
                present.insert(config.name.clone());
                if let Err(e) = broker.catalog().put_group(config) {
                    tracing::warn!(error = %e, "ConsumerGroup skipped");
                }
            }
            Err(e) => tracing::warn!(error = %e, "ConsumerGroup skipped"),
        }
    }
    for gone in applied_groups.difference(&present) {
        broker.catalog().remove_group(gone);
    }
    *applied_groups = present;
}

/// Settings of this pod's topic, with the partitions it owns.
fn own_topic(topic: &Topic, pod: &str) -> anyhow::Result<(TopicConfig, Retention)> {
    let (mut config, time, bytes) = topic_config(topic)?;
    let owned = topic
        .status
        .as_ref()
        .and_then(|s| s.assignment.iter().find(|a| a.pod == pod))
        .map(|a| parse_partition_ranges(&a.partitions))
        .transpose()?
        .unwrap_or_default();
    config.owned = Some(owned);
    Ok((config, Retention { time: Some(time), bytes }))
}

/// Placement of every topic by RocketMQ name. Two Topic objects claiming one name: the older
/// one has it (the operator marks the younger ResourceConflict and gives it no pods).
fn placements(topics: &[Topic]) -> HashMap<String, Placement> {
    let mut by_age: Vec<&Topic> = topics.iter().collect();
    by_age.sort_by_key(|t| (t.metadata.creation_timestamp.clone().map(|t| t.0), t.metadata.name.clone()));
    let mut placed = HashMap::new();
    for t in by_age {
        let (Some(name), Some(object)) = (t.effective_name(), t.metadata.name.as_deref()) else { continue };
        if placed.contains_key(name) {
            continue;
        }
        let accepts = match topic_config(t) {
            Ok((config, ..)) => config.accepts,
            Err(e) => {
                tracing::warn!(topic = object, error = %e, "Topic skipped");
                continue;
            }
        };
        let mut holders = Vec::new();
        for a in t.status.iter().flat_map(|s| &s.assignment) {
            match (parse_partition_ranges(&a.partitions), parse_partition_ranges(&a.draining)) {
                (Ok(owned), Ok(draining)) => holders.push(Holder { pod: a.pod.clone(), owned, draining }),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(topic = object, pod = %a.pod, error = %e, "assignment skipped")
                }
            }
        }
        let placement = Placement {
            object: object.to_owned(),
            partitions: u32::try_from(t.spec.partitions).unwrap_or(0),
            permission: t.spec.permission.into(),
            accepts,
            holders,
        };
        placed.insert(name.to_owned(), placement);
    }
    placed
}
