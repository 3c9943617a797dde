//! The `Topic` custom resource (`weir.dev/v1alpha1`, short name `wt`).
//!
//! A Topic is one RocketMQ topic served by its own StatefulSet of broker pods. Its partitions
//! (RocketMQ queues) are spread over the pods by the operator, which records the placement in
//! `status.assignment`.
//!
//! ```yaml
//! apiVersion: weir.dev/v1alpha1
//! kind: Topic
//! metadata: {name: orders}
//! spec:
//!   messageType: Normal
//!   partitions: 8
//!   retention: {time: 72h, bytes: 50Gi}
//!   brokers: {replicas: 3, storage: {size: 20Gi}}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    CEL_NOT_RESERVED, DeletionPolicy, TOPIC_NAME_MAX_LEN, TOPIC_NAME_PATTERN, check_object_name, check_rocketmq_name,
};
use crate::quantity::{self, QuantityError};

/// Most partitions a Topic may have.
pub const MAX_PARTITIONS: i32 = 1024;
/// Highest replication factor.
pub const MAX_REPLICATION_FACTOR: i32 = 3;
/// Flush interval of an `Async` topic when `flushInterval` is not set.
pub const DEFAULT_FLUSH_INTERVAL: &str = "500ms";

/// Desired state of a Topic.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Topic",
    plural = "topics",
    singular = "topic",
    shortname = "wt",
    category = "weir",
    namespaced,
    status = "TopicStatus",
    derive = "PartialEq",
    doc = "A RocketMQ 5 topic served by Weir: one StatefulSet of broker pods that own its partitions. \
           Applications reach it through the namespace's Weir client Service with any RocketMQ 5 SDK.",
    validation = Rule::new("has(self.spec.topicName) || self.metadata.name.matches('^[a-zA-Z0-9_-]{1,127}$')")
        .message("metadata.name is not a valid RocketMQ topic name (at most 127 of a-z, 0-9, '-'; no '.'); set spec.topicName"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.messageType", description = "RocketMQ message type"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions", description = "Desired partitions (queues)"),
    printcolumn(name = "Serving", type_ = "integer", json_path = ".status.partitions.serving", description = "Partitions served by a ready pod"),
    printcolumn(name = "Pods", type_ = "integer", json_path = ".status.brokers.readyReplicas", description = "Ready broker pods"),
    printcolumn(name = "Reassign", type_ = "string", json_path = ".status.reassignment.state", description = "Partition reassignment state"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Status", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#),
    printcolumn(name = "Message", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].message"#, priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.partitions >= oldSelf.partitions || (has(self.allowPartitionShrink) && self.allowPartitionShrink)")
        .message("partitions cannot be decreased unless allowPartitionShrink is true (a shrink drains the removed partitions first)"),
    validation = Rule::new("has(self.topicName) == has(oldSelf.topicName)")
        .message("topicName cannot be added or removed after creation"),
    validation = Rule::new("!has(self.fifo) || (has(self.messageType) && self.messageType == 'FIFO')")
        .message("fifo is only allowed when messageType is FIFO"),
    validation = Rule::new("!has(self.fifo) || !has(self.fifo.scope) || self.fifo.scope != 'Global' || self.partitions == 1")
        .message("fifo.scope Global (one total order) needs exactly 1 partition"),
    validation = Rule::new("!has(self.delay) || (has(self.messageType) && self.messageType == 'Delay')")
        .message("delay is only allowed when messageType is Delay"),
    validation = Rule::new("!has(self.transaction) || (has(self.messageType) && self.messageType == 'Transaction')")
        .message("transaction is only allowed when messageType is Transaction"),
    validation = Rule::new("!has(self.flushInterval) || (has(self.durability) && self.durability == 'Async')")
        .message("flushInterval is only allowed when durability is Async"),
    validation = Rule::new("!has(self.brokers) || !has(self.brokers.replicas) || !has(self.replicationFactor) || self.brokers.replicas >= self.replicationFactor")
        .message("brokers.replicas must be at least replicationFactor (each replica of a partition lives on a different pod)"),
)]
pub struct TopicSpec {
    /// RocketMQ topic name that clients use. Defaults to metadata.name. Letters, digits, '-', '_'
    /// and '%', at most 127 characters; the prefixes %RETRY%, %DLQ% and rmq_sys_ are reserved.
    /// Set it when the RocketMQ name is not a valid Kubernetes name (e.g. upper case or '_').
    /// Immutable, and cannot be added or removed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 127), pattern(TOPIC_NAME_PATTERN))]
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("topicName is immutable"),
        validation = Rule::new(CEL_NOT_RESERVED).message("topicName must not start with %RETRY%, %DLQ% or rmq_sys_ (reserved by RocketMQ)"),
    )]
    pub topic_name: Option<String>,

    /// Kind of messages the topic accepts (RocketMQ 5 TopicMessageType): Normal, FIFO (ordered per
    /// message group; see fifo), Delay (delivered at a time; see delay) or Transaction (half
    /// messages committed or rolled back by the producer; see transaction). Producers sending
    /// another type are rejected. Default Normal. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("messageType is immutable"))]
    pub message_type: MessageType,

    /// Number of partitions (RocketMQ queues, read and write queue count alike), 1 to 1024.
    /// Default 8. May grow at any time; shrinking needs allowPartitionShrink.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1024))]
    pub partitions: i32,

    /// Allow lowering partitions. The operator first stops writes to the partitions being removed
    /// (RocketMQ write-queues-first), lets consumers drain them, then deletes them. Default false.
    #[serde(default)]
    pub allow_partition_shrink: bool,

    /// Copies of each partition on distinct pods, 1 to 3. Default 1. Immutable in v1alpha1
    /// (replication is planned; values above 1 are accepted for forward compatibility).
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 3))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("replicationFactor is immutable"))]
    pub replication_factor: i32,

    /// Access allowed on the topic (RocketMQ topic perm): ReadWrite (default), ReadOnly (sends
    /// are refused, consumers keep draining; used for maintenance and drains) or WriteOnly
    /// (sends accepted, nothing is delivered).
    #[serde(default)]
    pub permission: Permission,

    /// When a send is acknowledged. Sync (default): after the group commit holding the message
    /// is fdatasync'ed to disk, so an acknowledged message survives a power loss. Async: as soon
    /// as the message is in the page cache; the commit log is flushed every flushInterval, so a
    /// node crash can lose up to that much acknowledged data (a pod crash loses nothing).
    #[serde(default)]
    pub durability: Durability,

    /// Flush period of an Async topic, as a duration (e.g. 500ms, 1s). Only allowed with
    /// durability Async; default 500ms (RocketMQ flushIntervalCommitLog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity::optional_duration_schema")]
    pub flush_interval: Option<String>,

    /// How long and how much the brokers keep. Whole commit-log segments are deleted when they
    /// are older than time or the log exceeds bytes, whatever consumers have read (RocketMQ
    /// fileReservedTime and disk limits).
    #[serde(default)]
    pub retention: Retention,

    /// Ordering options; only allowed with messageType FIFO (then it defaults to scope MessageGroup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fifo: Option<FifoSpec>,

    /// Delayed-delivery options; only allowed with messageType Delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelaySpec>,

    /// Transaction check-back options; only allowed with messageType Transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionSpec>,

    /// The broker pods (a StatefulSet with one volume per pod) that serve this topic.
    #[serde(default)]
    pub brokers: BrokersSpec,

    /// What happens to messages and volumes when the Topic is deleted: Retain (default: keep
    /// broker data and PVCs, only remove the finalizer weir.dev/cleanup) or Delete (delete the
    /// topic's data on the brokers and its PVCs).
    #[serde(default = "default_topic_deletion_policy")]
    pub deletion_policy: DeletionPolicy,

    /// Pause reconciliation: the operator leaves the StatefulSet and brokers as they are and
    /// reports Ready reason Suspended. Brokers keep serving. Default false.
    #[serde(default)]
    pub suspend: bool,

    /// How often the operator re-checks the brokers and repairs drift even without a change, as
    /// a duration (e.g. 5m). Default 5m.
    #[serde(default = "default_resync_interval")]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub resync_interval: String,

    /// Extra broker-side topic attributes (RocketMQ topic attributes), passed through verbatim.
    /// An escape hatch; unknown keys are ignored by the broker with a warning event.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// RocketMQ 5 topic message type.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Plain messages, no ordering between partitions.
    #[default]
    Normal,
    /// Ordered messages: same message group, same partition, strictly FIFO.
    #[serde(rename = "FIFO")]
    Fifo,
    /// Messages delivered at or after their delivery timestamp.
    Delay,
    /// Half messages, visible only after the producer commits them.
    Transaction,
}

/// Topic permission (RocketMQ perm bits).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Sends and receives are allowed.
    #[default]
    ReadWrite,
    /// Sends are refused; consumers can still receive.
    ReadOnly,
    /// Sends are accepted; nothing is delivered.
    WriteOnly,
}

/// When the broker acknowledges a send.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Ack after fdatasync of the group commit.
    #[default]
    Sync,
    /// Ack after the page cache; flushed every flushInterval. Consumers' acknowledgements of the
    /// topic are kept the same way (after a power loss the last acknowledged messages may be
    /// delivered again).
    Async,
}

/// Retention limits of a topic's commit log.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep messages at least this long, as a duration (e.g. 72h; there is no d unit). Default 72h
    /// (RocketMQ fileReservedTime). Older segments are deleted.
    #[serde(default = "default_retention_time")]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub time: String,

    /// Upper bound of the commit log on each broker pod, as a quantity (e.g. 50Gi); the oldest
    /// segments are deleted beyond it. Unset: only time applies (keep it below the volume size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity::optional_size_schema")]
    pub bytes: Option<Quantity>,
}

impl Default for Retention {
    fn default() -> Self {
        Self { time: default_retention_time(), bytes: None }
    }
}

/// Ordering options of a FIFO topic.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FifoSpec {
    /// Scope of the order. MessageGroup (default): messages with the same message group (sharding
    /// key) are stored and delivered strictly in order, different groups in parallel. Global: one
    /// total order over the topic; requires partitions 1.
    #[serde(default)]
    pub scope: FifoScope,
}

/// Scope of FIFO ordering.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FifoScope {
    /// Order per message group.
    #[default]
    MessageGroup,
    /// One order for the whole (single-partition) topic.
    Global,
}

/// Options of a Delay topic.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DelaySpec {
    /// Longest delay a producer may ask for, as a duration (e.g. 24h). Sends with a delivery time
    /// further ahead are refused with ILLEGAL_DELIVERY_TIME. Default 24h (RocketMQ
    /// timerMaxDelaySec / the proxy's maxDelayTimeMills).
    #[serde(default = "default_max_delay")]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub max_delay: String,
}

impl Default for DelaySpec {
    fn default() -> Self {
        Self { max_delay: default_max_delay() }
    }
}

/// Options of a Transaction topic.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransactionSpec {
    /// How long a half message may stay undecided before the broker asks a producer of the topic
    /// for its outcome, and the pause between further checks, as a duration. Default 60s
    /// (RocketMQ transactionCheckInterval).
    #[serde(default = "default_check_interval")]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub check_interval: String,

    /// Check-backs before an undecided half message is rolled back, 1 to 1000. Default 15
    /// (RocketMQ transactionCheckMax).
    #[serde(default = "default_max_checks")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_checks: i32,
}

impl Default for TransactionSpec {
    fn default() -> Self {
        Self { check_interval: default_check_interval(), max_checks: default_max_checks() }
    }
}

/// The broker StatefulSet of a topic.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokersSpec {
    /// Broker pods, 1 to 1024. Partitions are spread evenly over the pods and stay where they are
    /// when pods are added; on a scale-down the partitions of the departing pods are drained and
    /// moved first. Default 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1024))]
    pub replicas: i32,

    /// Broker container image. Unset fields fall back to the operator's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSpec>,

    /// CPU and memory requests and limits of the broker container. Unset: the operator's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The volume of each broker pod (a PVC from the StatefulSet's volumeClaimTemplates).
    #[serde(default)]
    pub storage: StorageSpec,

    /// What happens to the PVCs when the Topic is deleted or scaled down
    /// (StatefulSet persistentVolumeClaimRetentionPolicy).
    #[serde(default)]
    pub pvc_retention: PvcRetention,

    /// Scheduling and metadata overrides for the broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,

    /// The PodDisruptionBudget of the broker pods.
    #[serde(default)]
    pub disruption: Disruption,
}

impl Default for BrokersSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            image: None,
            resources: None,
            storage: StorageSpec::default(),
            pvc_retention: PvcRetention::default(),
            pod_template: None,
            disruption: Disruption::default(),
        }
    }
}

/// Container image of the brokers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository, e.g. ghcr.io/weir-mq/weir-sidecar. Unset: the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Image tag. Unset: the operator's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Image pull policy: Always, IfNotPresent or Never. Unset: the Kubernetes default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
}

/// Image pull policy of the broker container: Always, IfNotPresent or Never. Unset: the
/// Kubernetes default (IfNotPresent, or Always for the tag latest).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the image is missing on the node.
    IfNotPresent,
    /// Never pull.
    Never,
}

/// Volume of each broker pod.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size of each pod's volume, as a quantity (e.g. 20Gi). Default 10Gi. May only grow,
    /// and growing needs a StorageClass with allowVolumeExpansion (see expandable).
    #[serde(default = "default_storage_size")]
    #[schemars(schema_with = "quantity::size_schema")]
    pub size: Quantity,

    /// StorageClass of the PVCs. Unset: the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// Declare that the StorageClass supports volume expansion, so the operator resizes existing
    /// PVCs when size grows. When false a larger size only applies to new pods. Default false.
    #[serde(default)]
    pub expandable: bool,

    /// How far ahead of the data each broker keeps its commit log zero-filled while Sync sends
    /// come, as a quantity (e.g. 8Mi). An fdatasync into zero-filled space writes only data, not
    /// file system metadata, which shortens Sync acknowledgements; the price is that those bytes
    /// reach the volume twice (Async-only load is never zero-filled). Set 0 on a volume whose
    /// write bandwidth is the limit (a throughput-capped cloud disk). Unset: the broker's
    /// default, 8Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity::optional_size_schema")]
    pub zero_fill_ahead: Option<Quantity>,

    /// The most of the synced commit log, behind its newest data, each broker keeps in the page
    /// cache, as a quantity (e.g. 1Gi). Older log is let go of, so the cache charged to the pod
    /// stays bounded, and consumers further behind than this read from the volume; within it,
    /// log that no consumer group still needs is let go of as well. 0 keeps all of it until the
    /// kernel needs the memory. Unset: half the broker container's memory limit
    /// (1Gi with the default limit of 2Gi), or the broker's default, 1Gi, without a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity::optional_size_schema")]
    pub log_cache_window: Option<Quantity>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            expandable: false,
            zero_fill_ahead: None,
            log_cache_window: None,
        }
    }
}

/// PVC retention of the broker StatefulSet.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetention {
    /// PVCs when the StatefulSet is deleted: Retain (default) or Delete. With deletionPolicy
    /// Delete the operator deletes them anyway.
    #[serde(default = "default_when_deleted")]
    pub when_deleted: PvcRetentionPolicy,
    /// PVCs of pods removed by a scale-down (after their partitions were moved away): Retain or
    /// Delete (default).
    #[serde(default = "default_when_scaled")]
    pub when_scaled: PvcRetentionPolicy,
}

impl Default for PvcRetention {
    fn default() -> Self {
        Self { when_deleted: default_when_deleted(), when_scaled: default_when_scaled() }
    }
}

/// StatefulSet PVC retention policy value.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PvcRetentionPolicy {
    /// Keep the PVC.
    Retain,
    /// Delete the PVC.
    Delete,
}

/// Overrides applied to the broker pod template.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra pod labels (the operator's selector labels cannot be overridden).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Node labels the pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Pod affinity and anti-affinity. Unset: the operator prefers spreading pods over nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Topology spread constraints of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Secrets for pulling the broker image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

/// PodDisruptionBudget of the broker pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Disruption {
    /// Broker pods that voluntary disruptions (node drains) may take down at once. Default 1;
    /// 0 blocks node drains.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 0))]
    pub max_unavailable: i32,
}

impl Default for Disruption {
    fn default() -> Self {
        Self { max_unavailable: default_max_unavailable() }
    }
}

/// Observed state of a Topic, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The RocketMQ topic name in use (spec.topicName or metadata.name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,

    /// kstatus conditions Ready, Reconciling and Stalled. Ready reasons: Serving, Provisioning,
    /// Reassigning, Draining, ResourceConflict, InvalidSpec, BrokerUnavailable, CleanupBlocked,
    /// Suspended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Partition counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<PartitionCounts>,

    /// Which broker pod owns which partitions (placement as data; sticky across scale-ups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["pod".into()]))]
    pub assignment: Vec<PartitionAssignment>,

    /// Progress of moving partitions between pods (scale up/down, shrink, drain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassignment: Option<ReassignmentStatus>,

    /// The broker StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<BrokersStatus>,

    /// The broker volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStatus>,

    /// Where clients and Prometheus reach the brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,

    /// When the operator last compared the brokers with the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}

/// Partition counts of a Topic.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionCounts {
    /// spec.partitions as last acted on.
    pub desired: i32,
    /// Partitions whose owning pod is ready.
    pub serving: i32,
    /// Partitions that accept sends (serving and not draining or read-only).
    pub writable: i32,
}

/// The partitions one broker pod owns.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionAssignment {
    /// Pod name, e.g. orders-broker-0.
    pub pod: String,
    /// Partition ids as ascending ids and inclusive ranges, e.g. 0-2,5 (see
    /// `weir_crds::parse_partition_ranges`).
    pub partitions: String,
    /// Partitions this pod no longer owns but still holds unconsumed messages of: it takes no
    /// sends for them and serves them to consumers until drained (same format as partitions).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub draining: String,
}

/// Progress of a partition reassignment.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReassignmentStatus {
    /// Idle, Planned, Draining, Moving or Stalled.
    pub state: ReassignmentState,
    /// Partitions moved so far in this reassignment.
    #[serde(default)]
    pub moved: i32,
    /// Partitions this reassignment moves in total.
    #[serde(default)]
    pub total: i32,
    /// When the reassignment started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Human-readable progress or the reason it is stalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// State of a partition reassignment.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReassignmentState {
    /// Nothing to move.
    #[default]
    Idle,
    /// Moves computed, not started.
    Planned,
    /// Writes to the moving partitions stopped; waiting for consumers to drain them.
    Draining,
    /// Copying or handing over partitions.
    Moving,
    /// No progress; see message.
    Stalled,
}

/// State of the broker StatefulSet.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BrokersStatus {
    /// Pods the StatefulSet has.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// StatefulSet currentRevision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// StatefulSet updateRevision (differs from currentRevision during a rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
}

/// State of the broker volumes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// spec.brokers.storage.size as last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity::status_size_schema")]
    pub requested: Option<Quantity>,
    /// Smallest capacity among the pods' volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity::status_size_schema")]
    pub min_capacity: Option<Quantity>,
    /// A volume resize was requested and has not finished.
    #[serde(default)]
    pub resize_pending: bool,
}

/// Addresses of a topic's brokers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// RocketMQ 5 gRPC endpoint for clients, host:port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    /// Prometheus metrics endpoint of each pod, e.g. :9090/metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

fn default_partitions() -> i32 {
    8
}
fn default_replication_factor() -> i32 {
    1
}
fn default_topic_deletion_policy() -> DeletionPolicy {
    DeletionPolicy::Retain
}
fn default_resync_interval() -> String {
    "5m".to_owned()
}
fn default_retention_time() -> String {
    "72h".to_owned()
}
fn default_max_delay() -> String {
    "24h".to_owned()
}
fn default_check_interval() -> String {
    "60s".to_owned()
}
fn default_max_checks() -> i32 {
    15
}
fn default_replicas() -> i32 {
    1
}
fn default_storage_size() -> Quantity {
    Quantity("10Gi".to_owned())
}
fn default_when_deleted() -> PvcRetentionPolicy {
    PvcRetentionPolicy::Retain
}
fn default_when_scaled() -> PvcRetentionPolicy {
    PvcRetentionPolicy::Delete
}
fn default_max_unavailable() -> i32 {
    1
}

impl Default for TopicSpec {
    /// The spec of `spec: {}`: a Normal topic with 8 partitions and every default applied.
    fn default() -> Self {
        Self {
            topic_name: None,
            message_type: MessageType::default(),
            partitions: default_partitions(),
            allow_partition_shrink: false,
            replication_factor: default_replication_factor(),
            permission: Permission::default(),
            durability: Durability::default(),
            flush_interval: None,
            retention: Retention::default(),
            fifo: None,
            delay: None,
            transaction: None,
            brokers: BrokersSpec::default(),
            deletion_policy: default_topic_deletion_policy(),
            suspend: false,
            resync_interval: default_resync_interval(),
            config: BTreeMap::new(),
        }
    }
}

impl TopicSpec {
    /// The RocketMQ topic name: `spec.topicName`, else `metadata.name` (None only if neither is set).
    pub fn effective_name<'a>(&'a self, meta: &'a ObjectMeta) -> Option<&'a str> {
        self.topic_name.as_deref().or(meta.name.as_deref())
    }

    /// FIFO scope of a FIFO topic (MessageGroup when the fifo block is absent); None otherwise.
    pub fn fifo_scope(&self) -> Option<FifoScope> {
        (self.message_type == MessageType::Fifo).then(|| self.fifo.as_ref().map(|f| f.scope).unwrap_or_default())
    }

    /// `retention.time` as a duration.
    pub fn retention_time(&self) -> Result<Duration, QuantityError> {
        quantity::parse_duration("retention.time", &self.retention.time)
    }

    /// `retention.bytes` in bytes (None: no size limit).
    pub fn retention_bytes(&self) -> Result<Option<u64>, QuantityError> {
        self.retention.bytes.as_ref().map(|q| quantity::parse_size_quantity("retention.bytes", q)).transpose()
    }

    /// The flush period of an Async topic (`flushInterval`, default 500ms); None for Sync topics.
    pub fn flush_interval(&self) -> Result<Option<Duration>, QuantityError> {
        match self.durability {
            Durability::Sync => Ok(None),
            Durability::Async => quantity::parse_duration(
                "flushInterval",
                self.flush_interval.as_deref().unwrap_or(DEFAULT_FLUSH_INTERVAL),
            )
            .map(Some),
        }
    }

    /// Longest delay of a Delay topic (`delay.maxDelay`, default 24h); None for other types.
    pub fn max_delay(&self) -> Result<Option<Duration>, QuantityError> {
        if self.message_type != MessageType::Delay {
            return Ok(None);
        }
        let spec = self.delay.clone().unwrap_or_default();
        quantity::parse_duration("delay.maxDelay", &spec.max_delay).map(Some)
    }

    /// Check-back interval and maximum checks of a Transaction topic; None for other types.
    pub fn transaction_checks(&self) -> Result<Option<(Duration, u32)>, QuantityError> {
        if self.message_type != MessageType::Transaction {
            return Ok(None);
        }
        let spec = self.transaction.clone().unwrap_or_default();
        let interval = quantity::parse_duration("transaction.checkInterval", &spec.check_interval)?;
        Ok(Some((interval, spec.max_checks.max(1).unsigned_abs())))
    }

    /// `resyncInterval` as a duration.
    pub fn resync_interval(&self) -> Result<Duration, QuantityError> {
        quantity::parse_duration("resyncInterval", &self.resync_interval)
    }

    /// `brokers.storage.size` in bytes.
    pub fn storage_size(&self) -> Result<u64, QuantityError> {
        quantity::parse_size_quantity("brokers.storage.size", &self.brokers.storage.size)
    }

    /// Checks the spec on its own: the same rules as the CRD schema and its CEL rules (for
    /// manifests that never pass an API server, such as the standalone broker's), plus parsing
    /// every duration and size. Returns one human-readable line per problem; empty means valid.
    ///
    /// The metadata.name rule needs the object; see [`Topic::validate`].
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(name) = &self.topic_name
            && let Some(p) = check_rocketmq_name("spec.topicName", name, TOPIC_NAME_MAX_LEN)
        {
            problems.push(p);
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            problems.push(format!("spec.partitions: must be between 1 and {MAX_PARTITIONS}, got {}", self.partitions));
        }
        if !(1..=MAX_REPLICATION_FACTOR).contains(&self.replication_factor) {
            problems.push(format!(
                "spec.replicationFactor: must be between 1 and {MAX_REPLICATION_FACTOR}, got {}",
                self.replication_factor
            ));
        }
        if self.fifo.is_some() && self.message_type != MessageType::Fifo {
            problems.push(format!(
                "spec.fifo: only allowed when messageType is FIFO, but messageType is {}",
                self.message_type
            ));
        }
        if self.fifo_scope() == Some(FifoScope::Global) && self.partitions != 1 {
            problems.push(format!(
                "spec.fifo.scope: Global (one total order) needs exactly 1 partition, but partitions is {}",
                self.partitions
            ));
        }
        if self.delay.is_some() && self.message_type != MessageType::Delay {
            problems.push(format!(
                "spec.delay: only allowed when messageType is Delay, but messageType is {}",
                self.message_type
            ));
        }
        if self.transaction.is_some() && self.message_type != MessageType::Transaction {
            problems.push(format!(
                "spec.transaction: only allowed when messageType is Transaction, but messageType is {}",
                self.message_type
            ));
        }
        if let Some(t) = &self.transaction
            && !(1..=1000).contains(&t.max_checks)
        {
            problems.push(format!("spec.transaction.maxChecks: must be between 1 and 1000, got {}", t.max_checks));
        }
        if self.flush_interval.is_some() && self.durability != Durability::Async {
            problems.push(
                "spec.flushInterval: only allowed when durability is Async (Sync topics flush every group commit)"
                    .to_owned(),
            );
        }
        if !(1..=1024).contains(&self.brokers.replicas) {
            problems.push(format!("spec.brokers.replicas: must be between 1 and 1024, got {}", self.brokers.replicas));
        }
        if self.brokers.replicas < self.replication_factor {
            problems.push(format!(
                "spec.brokers.replicas: must be at least replicationFactor ({}), got {}",
                self.replication_factor, self.brokers.replicas
            ));
        }
        if self.brokers.disruption.max_unavailable < 0 {
            problems.push(format!(
                "spec.brokers.disruption.maxUnavailable: must not be negative, got {}",
                self.brokers.disruption.max_unavailable
            ));
        }
        let value_checks = [
            self.retention_time().err(),
            self.retention_bytes().err(),
            self.resync_interval().err(),
            self.storage_size().err(),
            (self.brokers.storage.zero_fill_ahead.as_ref())
                .and_then(|q| quantity::parse_size_quantity("brokers.storage.zeroFillAhead", q).err()),
            (self.brokers.storage.log_cache_window.as_ref())
                .and_then(|q| quantity::parse_size_quantity("brokers.storage.logCacheWindow", q).err()),
            self.flush_interval.as_deref().and_then(|v| quantity::parse_duration("flushInterval", v).err()),
            self.delay.as_ref().and_then(|d| quantity::parse_duration("delay.maxDelay", &d.max_delay).err()),
            self.transaction
                .as_ref()
                .and_then(|t| quantity::parse_duration("transaction.checkInterval", &t.check_interval).err()),
        ];
        problems.extend(value_checks.into_iter().flatten().map(|e| format!("spec.{e}")));
        problems
    }

    /// Checks a change from `old` to `self`: the CEL transition rules (immutable fields, no
    /// partition shrink without allowPartitionShrink) plus what the operator enforces (the volume
    /// size may only grow). Does not repeat [`TopicSpec::validate`].
    pub fn validate_update(&self, old: &TopicSpec) -> Vec<String> {
        let mut problems = Vec::new();
        if self.topic_name != old.topic_name {
            problems
                .push(format!("spec.topicName: is immutable (was {:?}, now {:?})", old.topic_name, self.topic_name));
        }
        if self.message_type != old.message_type {
            problems.push(format!(
                "spec.messageType: is immutable (was {}, now {}); create a new topic instead",
                old.message_type, self.message_type
            ));
        }
        if self.replication_factor != old.replication_factor {
            problems.push(format!(
                "spec.replicationFactor: is immutable (was {}, now {})",
                old.replication_factor, self.replication_factor
            ));
        }
        if self.partitions < old.partitions && !self.allow_partition_shrink {
            problems.push(format!(
                "spec.partitions: cannot decrease from {} to {} unless allowPartitionShrink is true",
                old.partitions, self.partitions
            ));
        }
        if let (Ok(new), Ok(old_size)) = (self.storage_size(), old.storage_size())
            && new < old_size
        {
            problems.push(format!(
                "spec.brokers.storage.size: may only grow (was {}, now {})",
                old.brokers.storage.size.0, self.brokers.storage.size.0
            ));
        }
        problems
    }
}

impl Topic {
    /// The RocketMQ topic name (`spec.topicName`, else `metadata.name`).
    pub fn effective_name(&self) -> Option<&str> {
        self.spec.effective_name(&self.metadata)
    }

    /// [`TopicSpec::validate`] plus the checks that need metadata (a name to fall back on, and
    /// that `metadata.name` is a valid RocketMQ name when `spec.topicName` is not set).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(name) = &self.metadata.name
            && let Some(p) = check_object_name(name)
        {
            problems.push(p);
        }
        match (&self.spec.topic_name, &self.metadata.name) {
            (Some(_), _) => {}
            (None, None) => problems.push("metadata.name: missing (and spec.topicName is not set either)".to_owned()),
            (None, Some(name)) => {
                if let Some(p) = check_rocketmq_name("metadata.name", name, TOPIC_NAME_MAX_LEN) {
                    problems.push(format!("{p} (or set spec.topicName)"));
                }
            }
        }
        problems.extend(self.spec.validate());
        problems
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MessageType::Normal => "Normal",
            MessageType::Fifo => "FIFO",
            MessageType::Delay => "Delay",
            MessageType::Transaction => "Transaction",
        })
    }
}
