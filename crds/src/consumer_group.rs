//! The `ConsumerGroup` custom resource (`weir.dev/v1alpha1`, short name `wcg`).
//!
//! A ConsumerGroup is a RocketMQ consumer group (SubscriptionGroupConfig): what it subscribes to,
//! clustering or broadcasting delivery, ordering, retry and dead-letter policy, pause, and a
//! declarative one-shot offset reset.
//!
//! ```yaml
//! apiVersion: weir.dev/v1alpha1
//! kind: ConsumerGroup
//! metadata: {name: billing}
//! spec:
//!   subscriptions:
//!     - topicRef: {name: orders}
//!       filter: {type: Tag, expression: "TagA || TagB"}
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    CEL_NOT_RESERVED, DeletionPolicy, GROUP_NAME_MAX_LEN, GROUP_NAME_PATTERN, check_object_name, check_rocketmq_name,
};
use crate::quantity::{self, QuantityError};

/// Most subscriptions a group may have.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Most delivery attempts a group may allow.
pub const MAX_ATTEMPTS: i32 = 1000;
/// RocketMQ's default retry schedule (the proxy's customized backoff for consumers).
pub const ROCKETMQ_RETRY_LEVELS: [&str; 18] =
    ["1s", "5s", "10s", "30s", "1m", "2m", "3m", "4m", "5m", "6m", "7m", "8m", "9m", "10m", "20m", "30m", "1h", "2h"];

/// Desired state of a ConsumerGroup.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "ConsumerGroup",
    plural = "consumergroups",
    singular = "consumergroup",
    shortname = "wcg",
    category = "weir",
    namespaced,
    status = "ConsumerGroupStatus",
    derive = "PartialEq",
    doc = "A RocketMQ 5 consumer group served by Weir: subscriptions, clustering or broadcasting \
           delivery, ordering, retry and dead-letter policy, pause and offset reset.",
    validation = Rule::new("has(self.spec.groupName) || self.metadata.name.matches('^[a-zA-Z0-9_-]{1,120}$')")
        .message("metadata.name is not a valid RocketMQ group name (at most 120 of a-z, 0-9, '-'; no '.'); set spec.groupName"),
    printcolumn(name = "Topic", type_ = "string", json_path = ".spec.subscriptions[0].topicRef.name", description = "First subscribed Topic"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.consumptionMode", description = "Clustering or Broadcasting"),
    printcolumn(name = "Order", type_ = "string", json_path = ".spec.ordering", description = "Concurrent or Orderly", priority = 1),
    printcolumn(name = "Consumers", type_ = "integer", json_path = ".status.members", description = "Online consumers"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lag.total", description = "Messages not yet consumed"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Status", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.groupName) == has(oldSelf.groupName)")
        .message("groupName cannot be added or removed after creation"),
)]
pub struct ConsumerGroupSpec {
    /// RocketMQ consumer group name that clients use. Defaults to metadata.name. Letters,
    /// digits, '-', '_' and '%', at most 120 characters (the broker derives %RETRY%{group} and
    /// %DLQ%{group} from it); the prefixes %RETRY%, %DLQ% and rmq_sys_ are reserved. Immutable,
    /// and cannot be added or removed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 120), pattern(GROUP_NAME_PATTERN))]
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("groupName is immutable"),
        validation = Rule::new(CEL_NOT_RESERVED).message("groupName must not start with %RETRY%, %DLQ% or rmq_sys_ (reserved by RocketMQ)"),
    )]
    pub group_name: Option<String>,

    /// Topics the group consumes, 1 to 64, each at most once, each with an optional filter.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.topicRef.name == s.topicRef.name))")
        .message("each topic may be subscribed only once"))]
    pub subscriptions: Vec<Subscription>,

    /// Clustering (default): each message goes to one consumer of the group. Broadcasting: each
    /// message goes to every online consumer of the group (keyed by client id; the SDK calls are
    /// the same as in clustering mode). Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("consumptionMode is immutable"))]
    pub consumption_mode: ConsumptionMode,

    /// Concurrent (default): messages are delivered in parallel. Orderly: within a message group,
    /// the next message is delivered only after the previous one is acked or dead-lettered
    /// (RocketMQ consumeMessageOrderly, sent to clients as Settings.subscription.fifo). Orderly
    /// needs FIFO topics; otherwise the group reports Ready=False reason InvalidSpec.
    #[serde(default)]
    pub ordering: Ordering,

    /// Deliver messages (RocketMQ consumeEnable). false pauses delivery on the brokers; consumers
    /// stay connected and receive nothing. Default true.
    #[serde(default = "default_true")]
    pub consume_enabled: bool,

    /// Where a new group (one without committed offsets) starts reading. Default Latest.
    #[serde(default)]
    pub start_from: StartFrom,

    /// Redelivery of messages that are not acked, and the dead-letter queue.
    #[serde(default)]
    pub retry: RetryPolicy,

    /// One-shot offset reset. Changing requestId performs it once; the result is reported in
    /// status.lastOffsetReset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_reset: Option<OffsetReset>,

    /// What happens on the brokers when the group is deleted: Delete (default: drop its offsets,
    /// retry and dead-letter state) or Retain (keep them, so re-creating the group resumes).
    #[serde(default = "default_group_deletion_policy")]
    pub deletion_policy: DeletionPolicy,
}

/// One subscribed topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The Topic to consume.
    pub topic_ref: TopicRef,
    /// Which messages of the topic the group receives. Default: all (Tag filter "*").
    #[serde(default)]
    pub filter: Filter,
}

/// Reference to a Topic object.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct TopicRef {
    /// metadata.name of a Topic in the same namespace (not its spec.topicName).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Broker-side message filter (RocketMQ FilterExpression).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.expression) || (has(self.type) && self.type != 'Tag') || self.expression.split('||').all(t, t.trim() != '')")
        .message("a Tag filter is * or tags separated by || (e.g. TagA || TagB), with no empty tag"),
)]
pub struct Filter {
    /// Tag (default): expression is * or tags separated by || (e.g. TagA || TagB). SQL92: a
    /// SQL92 condition on message properties (e.g. region = 'eu' AND amount > 100).
    /// Messages filtered out count as consumed for this group.
    #[serde(rename = "type", default)]
    pub filter_type: FilterType,
    /// The filter expression. Default "*" (everything).
    #[serde(default = "default_filter_expression")]
    #[schemars(length(min = 1, max = 4096))]
    pub expression: String,
}

impl Default for Filter {
    fn default() -> Self {
        Self { filter_type: FilterType::Tag, expression: default_filter_expression() }
    }
}

/// Filter expression language.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FilterType {
    /// Tag expression: `*` or `TagA || TagB`.
    #[default]
    Tag,
    /// SQL92 condition on message properties.
    #[serde(rename = "SQL92")]
    Sql92,
}

/// Delivery of messages among the group's consumers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConsumptionMode {
    /// Each message to one consumer.
    #[default]
    Clustering,
    /// Each message to every online consumer.
    Broadcasting,
}

/// Ordering of delivery.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Ordering {
    /// Parallel delivery.
    #[default]
    Concurrent,
    /// FIFO per message group.
    Orderly,
}

/// Start position of a new group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.position) && self.position == 'Timestamp') == has(self.timestamp)")
        .message("startFrom.timestamp is required when position is Timestamp, and allowed only then"),
)]
pub struct StartFrom {
    /// Earliest: the oldest retained message. Latest (default): only messages sent after the group
    /// first appears. Timestamp: the first message stored at or after timestamp.
    #[serde(default)]
    pub position: StartPosition,
    /// RFC 3339 time for position Timestamp, e.g. 2026-11-24T00:00:00Z.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Time>,
}

/// Start position of a new group.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StartPosition {
    /// The oldest retained message.
    Earliest,
    /// Messages sent from now on.
    #[default]
    Latest,
    /// From a point in time.
    Timestamp,
}

/// Redelivery and dead-letter policy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Deliveries of a message, the first included, before it goes to the dead-letter queue,
    /// 1 to 1000. Default 17: one delivery plus RocketMQ's default 16 retries (retryMaxTimes + 1,
    /// what clients see as Settings.backoffPolicy.maxAttempts).
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_attempts: i32,
    /// Delay before each redelivery of a message that was nacked or not acked in time.
    #[serde(default)]
    pub backoff: Backoff,
    /// The group's dead-letter queue.
    #[serde(default)]
    pub dead_letter: DeadLetter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: default_max_attempts(), backoff: Backoff::default(), dead_letter: DeadLetter::default() }
    }
}

/// Redelivery delays.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.policy) || self.policy != 'Customized' || !has(self.levels) || size(self.levels) > 0")
        .message("backoff.levels must list at least one delay when policy is Customized"),
    validation = Rule::new("!has(self.initial) || !has(self.max) || duration(self.max) >= duration(self.initial)")
        .message("backoff.max must not be shorter than backoff.initial"),
)]
pub struct Backoff {
    /// Customized (default, as RocketMQ): the delay before retry n is levels[n-1] (the last level
    /// repeats). Exponential: initial, then times multiplier per retry, capped at max. Clients
    /// that only understand one form get it derived from the other.
    #[serde(default)]
    pub policy: BackoffPolicy,
    /// Delays of a Customized policy, as durations. Default RocketMQ's 1s 5s 10s 30s 1m 2m 3m 4m
    /// 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h. At most 64.
    #[serde(default = "default_levels")]
    #[schemars(schema_with = "quantity::duration_list_schema", length(max = 64))]
    pub levels: Vec<String>,
    /// First delay of an Exponential policy, as a duration. Default 1s.
    #[serde(default = "default_initial")]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub initial: String,
    /// Longest delay of an Exponential policy, as a duration. Default 2h.
    #[serde(default = "default_max")]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub max: String,
    /// Growth factor of an Exponential policy, 1 to 10. Default 2.
    #[serde(default = "default_multiplier")]
    #[schemars(range(min = 1, max = 10))]
    pub multiplier: i32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            policy: BackoffPolicy::default(),
            levels: default_levels(),
            initial: default_initial(),
            max: default_max(),
            multiplier: default_multiplier(),
        }
    }
}

/// Backoff policy kind (RocketMQ GroupRetryPolicyType).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackoffPolicy {
    /// A list of delays.
    #[default]
    Customized,
    /// initial × multiplier^(n-1), capped at max.
    Exponential,
}

/// Dead-letter queue settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Move messages that used up maxAttempts to the group's dead-letter queue (%DLQ%{group}),
    /// where they can be listed and resent. false discards them. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for DeadLetter {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// A one-shot offset reset, performed once per requestId.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(self.to == 'Timestamp') == has(self.timestamp)")
        .message("offsetReset.timestamp is required when to is Timestamp, and allowed only then"),
    validation = Rule::new("(self.to == 'Offset') == has(self.offset)")
        .message("offsetReset.offset is required when to is Offset, and allowed only then"),
)]
pub struct OffsetReset {
    /// Any string; a new value asks for one more reset (e.g. 2026-11-24-1). The reset waits until
    /// consumeEnabled is false or no consumer is online, unless force is true.
    #[schemars(length(min = 1, max = 63))]
    pub request_id: String,
    /// Earliest, Latest, Timestamp (needs timestamp) or Offset (needs offset), applied to every
    /// partition of every subscribed topic.
    pub to: OffsetResetTarget,
    /// RFC 3339 time for to Timestamp: each partition restarts at its first message stored at or
    /// after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Time>,
    /// Queue offset for to Offset, clamped to each partition's retained range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub offset: Option<i64>,
    /// Reset even while consumers are online and delivering (they may see duplicates or skips).
    /// Default false.
    #[serde(default)]
    pub force: bool,
}

/// Target of an offset reset.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OffsetResetTarget {
    /// The oldest retained message.
    Earliest,
    /// The end of each partition (skip the backlog).
    Latest,
    /// A point in time.
    Timestamp,
    /// A queue offset.
    Offset,
}

/// Observed state of a ConsumerGroup, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupStatus {
    /// metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The RocketMQ group name in use (spec.groupName or metadata.name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,

    /// kstatus conditions Ready, Reconciling and Stalled. Ready reasons: Active, Paused,
    /// TopicNotFound, InvalidSpec, ResetInProgress, ResetBlocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// State of each subscription.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["topic".into()]))]
    pub subscriptions: Vec<SubscriptionStatus>,

    /// Online consumers (clients with a live telemetry stream or recent heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<i32>,

    /// Messages not yet consumed. Updated at most every 30s and only on a significant change;
    /// per-partition detail is in the metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<LagStatus>,

    /// Retry and dead-letter counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryStatus>,

    /// Outcome of the last offsetReset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offset_reset: Option<OffsetResetStatus>,
}

/// State of one subscription.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    /// The Topic (metadata.name) subscribed to.
    pub topic: String,
    /// Partitions of that topic.
    #[serde(default)]
    pub partitions: i32,
    /// The topic exists and the brokers know the subscription.
    #[serde(default)]
    pub ready: bool,
}

/// Consumer lag of a group.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LagStatus {
    /// Messages not yet consumed, over all partitions of all subscribed topics.
    #[serde(default)]
    pub total: i64,
    /// The largest lag of a single partition.
    #[serde(default)]
    pub max_partition: i64,
    /// When the lag was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
}

/// Retry and dead-letter counts of a group.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetryStatus {
    /// Messages waiting for a redelivery.
    #[serde(default)]
    pub in_retry: i64,
    /// Messages in the dead-letter queue.
    #[serde(default)]
    pub dead_lettered: i64,
}

/// Outcome of an offset reset.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OffsetResetStatus {
    /// spec.offsetReset.requestId that was handled.
    pub request_id: String,
    /// spec.offsetReset.to that was applied.
    pub to: OffsetResetTarget,
    /// Succeeded or Failed.
    pub result: OffsetResetResult,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Details, e.g. why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Result of an offset reset.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OffsetResetResult {
    /// Offsets were moved.
    Succeeded,
    /// Offsets were not moved; see message.
    Failed,
}

fn default_true() -> bool {
    true
}
fn default_filter_expression() -> String {
    "*".to_owned()
}
fn default_group_deletion_policy() -> DeletionPolicy {
    DeletionPolicy::Delete
}
fn default_max_attempts() -> i32 {
    17
}
fn default_levels() -> Vec<String> {
    ROCKETMQ_RETRY_LEVELS.iter().map(|s| (*s).to_owned()).collect()
}
fn default_initial() -> String {
    "1s".to_owned()
}
fn default_max() -> String {
    "2h".to_owned()
}
fn default_multiplier() -> i32 {
    2
}

impl ConsumerGroupSpec {
    /// A clustering, concurrent group on the given Topics with every default applied.
    pub fn for_topics<I, S>(topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            group_name: None,
            subscriptions: topics
                .into_iter()
                .map(|name| Subscription { topic_ref: TopicRef { name: name.into() }, filter: Filter::default() })
                .collect(),
            consumption_mode: ConsumptionMode::default(),
            ordering: Ordering::default(),
            consume_enabled: true,
            start_from: StartFrom::default(),
            retry: RetryPolicy::default(),
            offset_reset: None,
            deletion_policy: default_group_deletion_policy(),
        }
    }

    /// The RocketMQ group name: `spec.groupName`, else `metadata.name` (None only if neither is set).
    pub fn effective_name<'a>(&'a self, meta: &'a ObjectMeta) -> Option<&'a str> {
        self.group_name.as_deref().or(meta.name.as_deref())
    }

    /// Checks the spec on its own: the same rules as the CRD schema and its CEL rules (for
    /// manifests that never pass an API server), plus parsing every duration. Returns one
    /// human-readable line per problem; empty means valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(name) = &self.group_name
            && let Some(p) = check_rocketmq_name("spec.groupName", name, GROUP_NAME_MAX_LEN)
        {
            problems.push(p);
        }
        if self.subscriptions.is_empty() {
            problems.push(
                "spec.subscriptions: at least one subscription is required (- topicRef: {name: <topic>})".to_owned(),
            );
        }
        if self.subscriptions.len() > MAX_SUBSCRIPTIONS {
            problems.push(format!(
                "spec.subscriptions: at most {MAX_SUBSCRIPTIONS} are allowed, got {}",
                self.subscriptions.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, sub) in self.subscriptions.iter().enumerate() {
            let topic = &sub.topic_ref.name;
            if topic.is_empty() || topic.len() > 253 {
                problems.push(format!("spec.subscriptions[{i}].topicRef.name: must be 1 to 253 characters"));
            }
            if !seen.insert(topic.as_str()) {
                problems.push(format!(
                    "spec.subscriptions[{i}]: topic {topic:?} is subscribed more than once; each topic may be subscribed only once"
                ));
            }
            let expr = &sub.filter.expression;
            if expr.is_empty() || expr.len() > 4096 {
                problems.push(format!("spec.subscriptions[{i}].filter.expression: must be 1 to 4096 characters"));
            } else if sub.filter.filter_type == FilterType::Tag && expr.split("||").any(|tag| tag.trim().is_empty()) {
                problems.push(format!(
                    "spec.subscriptions[{i}].filter.expression {expr:?}: a Tag filter is * or tags separated by || (e.g. TagA || TagB), with no empty tag"
                ));
            }
        }
        if (self.start_from.position == StartPosition::Timestamp) != self.start_from.timestamp.is_some() {
            problems.push(
                "spec.startFrom.timestamp: required when position is Timestamp, and allowed only then".to_owned(),
            );
        }
        let retry = &self.retry;
        if !(1..=MAX_ATTEMPTS).contains(&retry.max_attempts) {
            problems.push(format!(
                "spec.retry.maxAttempts: must be between 1 and {MAX_ATTEMPTS}, got {}",
                retry.max_attempts
            ));
        }
        let backoff = &retry.backoff;
        if backoff.policy == BackoffPolicy::Customized && backoff.levels.is_empty() {
            problems
                .push("spec.retry.backoff.levels: must list at least one delay when policy is Customized".to_owned());
        }
        if backoff.levels.len() > 64 {
            problems.push(format!("spec.retry.backoff.levels: at most 64 are allowed, got {}", backoff.levels.len()));
        }
        if !(1..=10).contains(&backoff.multiplier) {
            problems
                .push(format!("spec.retry.backoff.multiplier: must be between 1 and 10, got {}", backoff.multiplier));
        }
        for (i, level) in backoff.levels.iter().enumerate() {
            if let Err(e) = quantity::parse_duration(&format!("retry.backoff.levels[{i}]"), level) {
                problems.push(format!("spec.{e}"));
            }
        }
        match (
            quantity::parse_duration("retry.backoff.initial", &backoff.initial),
            quantity::parse_duration("retry.backoff.max", &backoff.max),
        ) {
            (Ok(initial), Ok(max)) if max < initial => problems
                .push(format!("spec.retry.backoff.max: {} is shorter than initial {}", backoff.max, backoff.initial)),
            (initial, max) => {
                problems.extend([initial.err(), max.err()].into_iter().flatten().map(|e| format!("spec.{e}")))
            }
        }
        if let Some(reset) = &self.offset_reset {
            if reset.request_id.is_empty() || reset.request_id.len() > 63 {
                problems.push("spec.offsetReset.requestId: must be 1 to 63 characters".to_owned());
            }
            if (reset.to == OffsetResetTarget::Timestamp) != reset.timestamp.is_some() {
                problems.push(
                    "spec.offsetReset.timestamp: required when to is Timestamp, and allowed only then".to_owned(),
                );
            }
            if (reset.to == OffsetResetTarget::Offset) != reset.offset.is_some() {
                problems.push("spec.offsetReset.offset: required when to is Offset, and allowed only then".to_owned());
            }
            if reset.offset.is_some_and(|o| o < 0) {
                problems.push("spec.offsetReset.offset: must not be negative".to_owned());
            }
        }
        problems
    }

    /// Checks a change from `old` to `self` against the CEL transition rules (immutable
    /// groupName and consumptionMode). Does not repeat [`ConsumerGroupSpec::validate`].
    pub fn validate_update(&self, old: &ConsumerGroupSpec) -> Vec<String> {
        let mut problems = Vec::new();
        if self.group_name != old.group_name {
            problems
                .push(format!("spec.groupName: is immutable (was {:?}, now {:?})", old.group_name, self.group_name));
        }
        if self.consumption_mode != old.consumption_mode {
            problems.push(format!(
                "spec.consumptionMode: is immutable (was {:?}, now {:?}); create a new group instead",
                old.consumption_mode, self.consumption_mode
            ));
        }
        problems
    }
}

impl Backoff {
    /// Delay before redelivering a message whose delivery number `attempt` (1 = the first
    /// delivery) failed: levels[attempt-1] (the last level repeats), or initial ×
    /// multiplier^(attempt-1) capped at max.
    pub fn delay_after_attempt(&self, attempt: u32) -> Result<Duration, QuantityError> {
        let n = attempt.max(1) - 1;
        match self.policy {
            BackoffPolicy::Customized => {
                let Some(last) = self.levels.len().checked_sub(1) else {
                    return Ok(Duration::ZERO);
                };
                let i = (n as usize).min(last);
                quantity::parse_duration(&format!("retry.backoff.levels[{i}]"), &self.levels[i])
            }
            BackoffPolicy::Exponential => {
                let initial = quantity::parse_duration("retry.backoff.initial", &self.initial)?;
                let max = quantity::parse_duration("retry.backoff.max", &self.max)?;
                let factor = f64::from(self.multiplier.max(1)).powi(n.min(1000) as i32);
                Ok(Duration::try_from_secs_f64(initial.as_secs_f64() * factor).unwrap_or(max).min(max))
            }
        }
    }
}

impl ConsumerGroup {
    /// The RocketMQ group name (`spec.groupName`, else `metadata.name`).
    pub fn effective_name(&self) -> Option<&str> {
        self.spec.effective_name(&self.metadata)
    }

    /// [`ConsumerGroupSpec::validate`] plus the checks that need metadata (metadata.name is a
    /// valid object name and, when spec.groupName is not set, a valid RocketMQ group name).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(name) = &self.metadata.name
            && let Some(p) = check_object_name(name)
        {
            problems.push(p);
        }
        match (&self.spec.group_name, &self.metadata.name) {
            (Some(_), _) => {}
            (None, None) => problems.push("metadata.name: missing (and spec.groupName is not set either)".to_owned()),
            (None, Some(name)) => {
                if let Some(p) = check_rocketmq_name("metadata.name", name, GROUP_NAME_MAX_LEN) {
                    problems.push(format!("{p} (or set spec.groupName)"));
                }
            }
        }
        problems.extend(self.spec.validate());
        problems
    }
}
