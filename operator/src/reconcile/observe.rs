//! Reads: everything a plan looks at, gathered from the API server and the brokers. Nothing here
//! decides; failures of the API are errors (retried), failures of a broker are data (the plan
//! reports them).

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::ListParams;
use kube::{Api, Client};
use weir_crds::status::{READY, is_condition_true};
use weir_crds::{ConsumerGroup, Topic, naming, parse_partition_ranges};

use super::apply::APPLIED_HASH_ANNOTATION;
use super::{BROKER_CALL_TIMEOUT, Context};
use crate::broker_admin::{AdminError, BrokerPod};
use crate::build::labels;
use crate::plan::group::{PeerGroup, SubscribedTopic};
use crate::plan::topic::{ObservedPvc, ObservedSet, PeerTopic};
use crate::plan::{ObservedGroup, ObservedTopic};
use crate::{Error, Result};

/// The live children of a Topic, for the "unchanged, skip the write" check.
#[derive(Clone, Debug, Default)]
pub struct LiveChildren {
    /// The broker ServiceAccount.
    pub service_account: Option<ServiceAccount>,
    /// Its RoleBinding.
    pub role_binding: Option<RoleBinding>,
    /// The StatefulSet.
    pub stateful_set: Option<StatefulSet>,
    /// The headless Service.
    pub headless_service: Option<Service>,
    /// The client Service.
    pub client_service: Option<Service>,
    /// The PodDisruptionBudget.
    pub pdb: Option<PodDisruptionBudget>,
}

async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(Error::kube(format!("get {name}")))
}

/// The Topic's children as they are now.
pub async fn live_children(client: &Client, namespace: &str, topic: &str) -> Result<LiveChildren> {
    let set = naming::broker_set(topic);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    Ok(LiveChildren {
        service_account: get_opt(&Api::namespaced(client.clone(), namespace), &set).await?,
        role_binding: get_opt(&Api::namespaced(client.clone(), namespace), &set).await?,
        stateful_set: get_opt(&Api::namespaced(client.clone(), namespace), &set).await?,
        headless_service: get_opt(&services, &set).await?,
        client_service: get_opt(&services, naming::CLIENT_SERVICE).await?,
        pdb: get_opt(&Api::namespaced(client.clone(), namespace), &set).await?,
    })
}

/// The plan's view of a StatefulSet.
pub fn observed_set(set: &StatefulSet) -> ObservedSet {
    let spec = &set.spec;
    let status = set.status.as_ref();
    let claim = spec
        .volume_claim_templates
        .as_ref()
        .and_then(|t| t.iter().find(|c| c.metadata.name.as_deref() == Some(naming::DATA_VOLUME)))
        .and_then(|c| c.spec.as_ref());
    ObservedSet {
        generation: set.metadata.generation,
        spec_replicas: spec.replicas.unwrap_or(1),
        observed_generation: status.and_then(|s| s.observed_generation),
        replicas: status.map_or(0, |s| s.replicas),
        ready_replicas: status.and_then(|s| s.ready_replicas).unwrap_or(0),
        updated_replicas: status.and_then(|s| s.updated_replicas).unwrap_or(0),
        current_revision: status.and_then(|s| s.current_revision.clone()),
        update_revision: status.and_then(|s| s.update_revision.clone()),
        claim_size: claim
            .and_then(|c| c.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage").cloned()),
        storage_class: claim.and_then(|c| c.storage_class_name.clone()),
        applied_hash: set.metadata.annotations.as_ref().and_then(|a| a.get(APPLIED_HASH_ANNOTATION)).cloned(),
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Pods with drain entries in the Topic's current status (ordinals), ignoring unreadable entries.
fn draining_pods(topic: &Topic, name: &str) -> BTreeSet<u32> {
    let set = naming::broker_set(name);
    topic
        .status
        .iter()
        .flat_map(|s| s.assignment.iter())
        .filter(|a| parse_partition_ranges(&a.draining).is_ok_and(|d| !d.is_empty()))
        .filter_map(|a| naming::split_pod_name(&a.pod).filter(|(s, _)| *s == set).map(|(_, o)| o))
        .collect()
}

/// Observes a Topic: peers, StatefulSet, pods, PVCs, and the backlogs of draining pods.
pub async fn observe_topic(ctx: &Context, topic: &Topic, live: &LiveChildren) -> Result<ObservedTopic> {
    let name = topic.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let namespace = topic.metadata.namespace.clone().ok_or(Error::MissingMetadata("namespace"))?;
    let client = &ctx.client;
    let selector = ListParams::default().labels(&labels::topic_selector_string(&name));

    let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    let peers =
        topics.list(&ListParams::default()).await.map_err(Error::kube(format!("list Topics in {namespace}")))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pods = pods.list(&selector).await.map_err(Error::kube(format!("list pods of Topic {namespace}/{name}")))?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let pvcs = pvcs.list(&selector).await.map_err(Error::kube(format!("list PVCs of Topic {namespace}/{name}")))?;

    let set = naming::broker_set(&name);
    let pods_ready: BTreeMap<u32, bool> = pods
        .items
        .iter()
        .filter_map(|p| {
            let (s, ordinal) = naming::split_pod_name(p.metadata.name.as_deref()?)?;
            (s == set).then(|| (ordinal, pod_ready(p)))
        })
        .collect();

    let rocketmq_name = topic.effective_name().unwrap_or(&name).to_owned();
    let asks = draining_pods(topic, &name).into_iter().map(|ordinal| {
        let pod = BrokerPod::new(&namespace, naming::pod_name(&name, ordinal));
        let exists = pods_ready.contains_key(&ordinal);
        let topic_name = rocketmq_name.clone();
        async move {
            if !exists {
                return (ordinal, Err(format!("pod {} does not exist", pod.pod)));
            }
            let answer = broker_call(ctx.admin.partition_backlog(&pod, &topic_name), &pod).await;
            (ordinal, answer.map_err(|e| e.to_string()))
        }
    });
    let backlogs = join_all(asks).await.into_iter().collect();

    Ok(ObservedTopic {
        peers: peers.items.iter().filter_map(PeerTopic::of).collect(),
        stateful_set: live.stateful_set.as_ref().map(observed_set),
        pods_ready,
        backlogs,
        pvcs: pvcs
            .items
            .iter()
            .map(|p| ObservedPvc {
                name: p.metadata.name.clone().unwrap_or_default(),
                requested: p
                    .spec
                    .as_ref()
                    .and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage").cloned()),
                capacity: p.status.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage").cloned()),
            })
            .collect(),
    })
}

/// Runs a broker call with the standard timeout.
pub async fn broker_call<T>(
    call: impl Future<Output = Result<T, AdminError>>,
    pod: &BrokerPod,
) -> Result<T, AdminError> {
    tokio::time::timeout(BROKER_CALL_TIMEOUT, call).await.unwrap_or_else(|_| {
        Err(AdminError::Unavailable {
            pod: pod.to_string(),
            message: format!("no answer within {BROKER_CALL_TIMEOUT:?}"),
        })
    })
}

/// Pods named in a Topic's status (owners and drainers).
fn assigned_pods(topic: &Topic) -> Vec<String> {
    let mut pods: Vec<String> = topic
        .status
        .iter()
        .flat_map(|s| s.assignment.iter())
        .filter(|a| !a.partitions.trim().is_empty() || !a.draining.trim().is_empty())
        .map(|a| a.pod.clone())
        .collect();
    pods.sort();
    pods.dedup();
    pods
}

/// Observes a ConsumerGroup: peers, subscribed Topics, and (if `with_stats`) the group's figures
/// on every pod of those Topics.
pub async fn observe_group(ctx: &Context, group: &ConsumerGroup, with_stats: bool) -> Result<ObservedGroup> {
    let namespace = group.metadata.namespace.clone().ok_or(Error::MissingMetadata("namespace"))?;
    let client = &ctx.client;
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &namespace);
    let peers = groups
        .list(&ListParams::default())
        .await
        .map_err(Error::kube(format!("list ConsumerGroups in {namespace}")))?;
    let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);

    let mut subscribed = BTreeMap::new();
    for sub in &group.spec.subscriptions {
        let name = &sub.topic_ref.name;
        let Some(topic) = get_opt(&topics, name).await? else { continue };
        let set_exists = get_opt(&sets, &naming::broker_set(name)).await?.is_some();
        subscribed.insert(
            name.clone(),
            SubscribedTopic {
                rocketmq_name: topic.effective_name().unwrap_or(name).to_owned(),
                message_type: topic.spec.message_type,
                partitions: topic.spec.partitions,
                pods: assigned_pods(&topic),
                ready: topic.status.as_ref().is_some_and(|s| is_condition_true(&s.conditions, READY)),
                stateful_set_exists: set_exists,
            },
        );
    }

    let mut stats = BTreeMap::new();
    if with_stats {
        let group_name = group.effective_name().unwrap_or_default().to_owned();
        let asks = subscribed.iter().flat_map(|(topic, t)| {
            let group_name = group_name.clone();
            let namespace = namespace.clone();
            t.pods.iter().map(move |pod| {
                let broker = BrokerPod::new(namespace.clone(), pod.clone());
                let (topic, rocketmq_topic, group_name) = (topic.clone(), t.rocketmq_name.clone(), group_name.clone());
                async move {
                    let answer =
                        broker_call(ctx.admin.group_stats(&broker, &rocketmq_topic, &group_name), &broker).await;
                    ((topic, broker.pod), answer.map_err(|e| e.to_string()))
                }
            })
        });
        stats = join_all(asks).await.into_iter().collect();
    }

    Ok(ObservedGroup { peers: peers.items.iter().filter_map(PeerGroup::of).collect(), topics: subscribed, stats })
}

/// Whether the namespace is being deleted (cleanup then must not wait for brokers).
pub async fn namespace_terminating(client: &Client, namespace: &str) -> Result<bool> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = get_opt(&namespaces, namespace).await?;
    Ok(ns.is_none_or(|ns| {
        ns.metadata.deletion_timestamp.is_some()
            || ns.status.and_then(|s| s.phase).is_some_and(|phase| phase == "Terminating")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_set_its_claim_and_pod_readiness() {
        let set: StatefulSet = serde_yaml::from_str(
            r#"
metadata: {name: orders-broker, generation: 3}
spec:
  replicas: 2
  selector: {}
  template: {}
  volumeClaimTemplates:
    - metadata: {name: data}
      spec: {storageClassName: fast, resources: {requests: {storage: 20Gi}}}
status: {replicas: 2, readyReplicas: 1, updatedReplicas: 2, observedGeneration: 3, currentRevision: a, updateRevision: a}
"#,
        )
        .unwrap();
        let observed = observed_set(&set);
        assert_eq!((observed.spec_replicas, observed.ready_replicas), (2, 1));
        assert_eq!(observed.claim_size.as_ref().map(|q| q.0.as_str()), Some("20Gi"));
        assert_eq!(observed.storage_class.as_deref(), Some("fast"));
        assert!(observed.rolled_out());

        let pod: Pod = serde_yaml::from_str("status: {conditions: [{type: Ready, status: 'True'}]}").unwrap();
        assert!(pod_ready(&pod));
        let pod: Pod = serde_yaml::from_str("status: {conditions: [{type: Ready, status: 'False'}]}").unwrap();
        assert!(!pod_ready(&pod));
    }

    #[test]
    fn only_this_topics_draining_pods_are_asked() {
        let topic: Topic = serde_yaml::from_str(
            r#"
apiVersion: weir.dev/v1alpha1
kind: Topic
metadata: {name: orders}
spec: {}
status:
  assignment:
    - {pod: orders-broker-0, partitions: "0-3"}
    - {pod: orders-broker-2, partitions: "", draining: "4"}
    - {pod: other-broker-1, partitions: "", draining: "1"}
    - {pod: orders-broker-3, partitions: "", draining: "x"}
"#,
        )
        .unwrap();
        assert_eq!(draining_pods(&topic, "orders"), BTreeSet::from([2]));
        assert_eq!(assigned_pods(&topic), ["orders-broker-0", "orders-broker-2", "orders-broker-3", "other-broker-1"]);
    }
}
