//! Kubernetes mode: what a broker pod knows about the rest of the cluster.
//!
//! Each Topic object is served by its own StatefulSet of broker pods; the operator records in
//! `status.assignment` which pod owns (takes sends for) which partitions, and which pod still
//! drains partitions it no longer owns. Every pod watches every Topic and ConsumerGroup of its
//! namespace ([`watch`]), so any pod can answer QueryRoute for any topic, and a request that
//! reaches the wrong pod is forwarded to the right one.
//!
//! ```text
//!   Topic orders  status.assignment: [{pod: orders-broker-0, partitions: "0-3"},
//!                                     {pod: orders-broker-1, partitions: "4-7", draining: "2"}]
//!   route(orders) = queues 0..3 RW on orders-broker-0.orders-broker.<ns>.svc.<domain>:8081
//!                   queues 4..7 RW and queue 2 READ on orders-broker-1....
//! ```

pub mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use weir_crds::naming;
use weir_crds::topic::Permission;

pub use crate::catalog::TopicAccess;

/// Who this pod is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// Pod name, e.g. `orders-broker-1`.
    pub pod: String,
    /// Its ordinal in the StatefulSet (the broker id in receipt handles and transaction ids).
    pub ordinal: u32,
    /// The Topic object this pod serves.
    pub topic_object: String,
    /// Namespace.
    pub namespace: String,
    /// Cluster DNS domain.
    pub cluster_domain: String,
}

impl PodIdentity {
    /// Identity from the pod name (a StatefulSet pod of `topic_object`'s broker set).
    pub fn new(pod: &str, topic_object: &str, namespace: &str, cluster_domain: &str) -> Result<Self, String> {
        let (set, ordinal) =
            naming::split_pod_name(pod).ok_or_else(|| format!("pod name {pod:?} is not <statefulset>-<ordinal>"))?;
        let expected = naming::broker_set(topic_object);
        if set != expected {
            return Err(format!("pod {pod:?} is not a pod of {expected}, the StatefulSet of Topic {topic_object}"));
        }
        Ok(Self {
            pod: pod.to_owned(),
            ordinal,
            topic_object: topic_object.to_owned(),
            namespace: namespace.to_owned(),
            cluster_domain: cluster_domain.to_owned(),
        })
    }

    /// Stable `host` of a pod of this namespace.
    pub fn host_of(&self, pod: &str) -> Option<String> {
        naming::pod_host(pod, &self.namespace, &self.cluster_domain)
    }
}

/// Where one topic's partitions live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The Topic object's name (its StatefulSet is `<object>-broker`).
    pub object: String,
    /// Partition count.
    pub partitions: u32,
    /// Topic permission.
    pub permission: TopicAccess,
    /// Message types the topic accepts.
    pub accepts: Vec<crate::catalog::MessageType>,
    /// Pods holding partitions, in status order.
    pub holders: Vec<Holder>,
}

impl From<Permission> for TopicAccess {
    fn from(p: Permission) -> Self {
        match p {
            Permission::ReadWrite => Self::ReadWrite,
            Permission::ReadOnly => Self::ReadOnly,
            Permission::WriteOnly => Self::WriteOnly,
        }
    }
}

/// The partitions one pod holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    /// Pod name.
    pub pod: String,
    /// Partitions it owns (takes sends for).
    pub owned: Vec<u32>,
    /// Partitions it only still serves to consumers (moved away, not yet drained).
    pub draining: Vec<u32>,
}

impl Placement {
    /// The pod owning `partition`.
    pub fn owner(&self, partition: u32) -> Option<&str> {
        self.holders.iter().find(|h| h.owned.contains(&partition)).map(|h| h.pod.as_str())
    }

    /// The partitions `pod` owns.
    pub fn owned_by(&self, pod: &str) -> &[u32] {
        self.holders.iter().find(|h| h.pod == pod).map_or(&[], |h| h.owned.as_slice())
    }

    /// Whether `pod` holds any partition (owned or draining).
    pub fn holds(&self, pod: &str) -> bool {
        self.holders.iter().any(|h| h.pod == pod && !(h.owned.is_empty() && h.draining.is_empty()))
    }
}

/// Every topic of the namespace by RocketMQ name, as last seen.
#[derive(Debug)]
pub struct ClusterView {
    me: PodIdentity,
    topics: RwLock<Arc<HashMap<String, Placement>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl ClusterView {
    /// An empty view for pod `me`.
    pub fn new(me: PodIdentity) -> Self {
        Self { me, topics: RwLock::new(Arc::default()), synced: tokio::sync::watch::channel(false).0 }
    }

    /// This pod.
    pub fn me(&self) -> &PodIdentity {
        &self.me
    }

    /// Where `topic` lives, if it is a Topic of this namespace.
    pub fn placement(&self, topic: &str) -> Option<Placement> {
        self.topics.read().get(topic).cloned()
    }

    /// Replaces the whole view (after any watched change).
    pub fn replace(&self, topics: HashMap<String, Placement>) {
        *self.topics.write() = Arc::new(topics);
    }

    /// Marks the view complete (the first full list of Topics and ConsumerGroups has arrived).
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Whether the view is complete.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the view is complete.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The host of the pod with `ordinal` in the StatefulSet of `topic` (for forwarding by the
    /// broker id in a transaction id or receipt handle).
    pub fn host_of_ordinal(&self, topic: &str, ordinal: u32) -> Option<String> {
        let object = self.placement(topic)?.object;
        self.me.host_of(&naming::pod_name(&object, ordinal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_comes_from_the_pod_name() {
        let me = PodIdentity::new("orders-broker-2", "orders", "shop", "cluster.local").unwrap();
        assert_eq!(me.ordinal, 2);
        assert_eq!(me.host_of("orders-broker-0").unwrap(), "orders-broker-0.orders-broker.shop.svc.cluster.local");
        assert!(PodIdentity::new("payments-broker-0", "orders", "shop", "cluster.local").is_err());
        assert!(PodIdentity::new("orders", "orders", "shop", "cluster.local").is_err());
    }

    #[test]
    fn owners_and_holders() {
        let p = Placement {
            object: "orders".into(),
            partitions: 4,
            permission: TopicAccess::ReadWrite,
            accepts: vec![],
            holders: vec![
                Holder { pod: "orders-broker-0".into(), owned: vec![0, 1], draining: vec![] },
                Holder { pod: "orders-broker-1".into(), owned: vec![2, 3], draining: vec![1] },
            ],
        };
        assert_eq!(p.owner(1), Some("orders-broker-0"));
        assert_eq!(p.owner(7), None);
        assert_eq!(p.owned_by("orders-broker-1"), &[2, 3]);
        assert!(p.holds("orders-broker-1"));
        assert!(!p.holds("orders-broker-5"));
    }
}
