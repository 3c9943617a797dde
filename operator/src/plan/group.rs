//! The plan of one ConsumerGroup.
//!
//! The brokers read ConsumerGroups themselves (subscriptions, pause, retry policy), so the
//! operator creates nothing for a group. It checks what admission cannot (the subscribed Topics
//! exist; Orderly needs FIFO topics; no two groups share a RocketMQ name), reports members and lag
//! gathered from the brokers, and carries out the declarative offset reset.
//!
//! ```text
//!   invalid spec / Orderly on a non-FIFO topic ─► Ready=False InvalidSpec, Stalled
//!   younger name twin ─────────────────────────► Ready=False ResourceConflict, Stalled
//!   a subscribed Topic is missing ─────────────► Ready=False TopicNotFound (until it appears)
//!   new offsetReset.requestId
//!       members online, delivering, not forced ► Ready=False ResetBlocked (waits)
//!       brokers not known or not answering ────► Ready=False ResetInProgress (waits)
//!       otherwise ─────────────────────────────► ResetOffset on every pod of every topic, once
//!   consumeEnabled: false ─────────────────────► Ready=True Paused
//!   otherwise ─────────────────────────────────► Ready=True Active
//! ```
//!
//! Lag is written at a bounded rate: a new figure replaces the old one only when
//! [`LAG_WRITE_INTERVAL`] has passed since the last one, or members or conditions changed too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_crds::status::reason;
use weir_crds::{
    ConsumerGroup, ConsumerGroupStatus, LagStatus, MessageType, OffsetReset, OffsetResetResult, OffsetResetStatus,
    OffsetResetTarget, Ordering, SubscriptionStatus, naming,
};

use super::{BROKER_RETRY_REQUEUE, DEFAULT_RESYNC, PROGRESS_REQUEUE, Requeue, oldest_first};
use crate::broker_admin::{BrokerPod, GroupTopicStats, ResetTarget};
use crate::clock::seconds_between;
use crate::status::{PlannedEvent, Summary, apply_summary, transition_event};

/// Least time between two lag updates of the same group's status.
pub const LAG_WRITE_INTERVAL: Duration = Duration::from_secs(30);

/// Another ConsumerGroup of the namespace, for name-clash detection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerGroup {
    /// metadata.name.
    pub name: String,
    /// The RocketMQ group name.
    pub rocketmq_name: String,
    /// metadata.creationTimestamp, seconds since the epoch.
    pub created: Option<i64>,
}

impl PeerGroup {
    /// The identity of a group object (None without a name).
    pub fn of(group: &ConsumerGroup) -> Option<Self> {
        Some(Self {
            name: group.metadata.name.clone()?,
            rocketmq_name: group.effective_name()?.to_owned(),
            created: group.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        })
    }
}

/// A subscribed Topic as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribedTopic {
    /// Its RocketMQ name (what the brokers call it).
    pub rocketmq_name: String,
    /// Its message type.
    pub message_type: MessageType,
    /// spec.partitions.
    pub partitions: i32,
    /// Pods in its `status.assignment` (owners and drainers), by name.
    pub pods: Vec<String>,
    /// Its Ready condition is True.
    pub ready: bool,
    /// Its broker StatefulSet exists.
    pub stateful_set_exists: bool,
}

/// Everything a group's plan looks at besides the group itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedGroup {
    /// Every ConsumerGroup of the namespace, this one included.
    pub peers: Vec<PeerGroup>,
    /// The subscribed Topics that exist, by metadata.name.
    pub topics: BTreeMap<String, SubscribedTopic>,
    /// Per (Topic metadata.name, pod name): the group's figures there, or why they are missing.
    pub stats: BTreeMap<(String, String), Result<GroupTopicStats, String>>,
}

/// One `ResetOffset` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetOp {
    /// The pod.
    pub pod: BrokerPod,
    /// RocketMQ group name.
    pub group: String,
    /// RocketMQ topic name.
    pub topic: String,
    /// Where to.
    pub target: ResetTarget,
}

/// What to do for one ConsumerGroup.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupPlan {
    /// Offset reset calls to make now (all of them belong to `spec.offsetReset`); afterwards
    /// [`record_offset_reset`] writes the outcome into `status`.
    pub resets: Vec<ResetOp>,
    /// The next status (before the outcome of `resets`).
    pub status: ConsumerGroupStatus,
    /// Events to publish.
    pub events: Vec<PlannedEvent>,
    /// When to look again.
    pub requeue: Requeue,
}

impl GroupPlan {
    /// Whether `status` differs from the group's current status.
    pub fn status_changed(&self, group: &ConsumerGroup) -> bool {
        group.status.as_ref() != Some(&self.status)
    }
}

/// Plans one ConsumerGroup.
pub fn plan_group(group: &ConsumerGroup, observed: &ObservedGroup, now: &Time) -> GroupPlan {
    let previous = group.status.clone().unwrap_or_default();
    let namespace = group.metadata.namespace.clone().unwrap_or_default();
    let name = group.effective_name().unwrap_or_default().to_owned();
    let generation = group.metadata.generation;

    let mut status = previous.clone();
    status.observed_generation = generation;
    status.group_name = Some(name.clone());
    status.subscriptions = group
        .spec
        .subscriptions
        .iter()
        .map(|s| {
            let topic = observed.topics.get(&s.topic_ref.name);
            SubscriptionStatus {
                topic: s.topic_ref.name.clone(),
                partitions: topic.map_or(0, |t| t.partitions),
                ready: topic.is_some_and(|t| t.ready),
            }
        })
        .collect();
    let figures = Figures::of(observed);

    let mut resets = Vec::new();
    let mut events = Vec::new();
    let (summary, requeue) = match decide(group, observed, &figures, &previous) {
        Decision::Summary(summary, requeue) => (summary, requeue),
        Decision::Reset(reset) => {
            resets = reset_ops(group, observed, &namespace, &name, &reset);
            events.push(PlannedEvent {
                warning: false,
                reason: reason::RESET_IN_PROGRESS.to_owned(),
                action: "OffsetReset".to_owned(),
                note: format!(
                    "resetting offsets to {:?} on {} broker pods (request {})",
                    reset.to,
                    resets.len(),
                    reset.request_id
                ),
            });
            let summary = steady_summary(group);
            (summary, Requeue::After(LAG_WRITE_INTERVAL))
        }
    };

    let conditions_changed = apply_summary(&mut status.conditions, &summary, generation, now);
    events.extend(transition_event(&previous.conditions, &summary));
    if let Some(members) = figures.members {
        status.members = Some(members);
    }
    let members_changed = status.members != previous.members;
    status.lag = next_lag(previous.lag.as_ref(), figures.lag.as_ref(), members_changed || conditions_changed, now);
    GroupPlan { resets, status, events, requeue }
}

/// Records the outcome of the offset reset `reset` in `status`: Succeeded if no call failed.
pub fn record_offset_reset(status: &mut ConsumerGroupStatus, reset: &OffsetReset, failures: &[String], now: &Time) {
    status.last_offset_reset = Some(OffsetResetStatus {
        request_id: reset.request_id.clone(),
        to: reset.to,
        result: if failures.is_empty() { OffsetResetResult::Succeeded } else { OffsetResetResult::Failed },
        completed_at: Some(now.clone()),
        message: (!failures.is_empty()).then(|| failures.join("; ")),
    });
}

enum Decision {
    Summary(Summary, Requeue),
    Reset(OffsetReset),
}

/// Members and lag summed over the pods that answered.
struct Figures {
    members: Option<i32>,
    lag: Option<LagStatus>,
    unanswered: Vec<String>,
}

impl Figures {
    fn of(observed: &ObservedGroup) -> Self {
        let mut members_per_pod: BTreeMap<&str, u32> = BTreeMap::new();
        let (mut total, mut max_pod, mut answered) = (0u64, 0u64, false);
        let mut unanswered = Vec::new();
        for ((_, pod), result) in &observed.stats {
            match result {
                Ok(stats) => {
                    answered = true;
                    // A client holds one connection (to one pod) however many topics it reads.
                    let m = members_per_pod.entry(pod.as_str()).or_default();
                    *m = (*m).max(stats.members);
                    total = total.saturating_add(stats.lag);
                    max_pod = max_pod.max(stats.lag);
                }
                Err(e) => unanswered.push(format!("{pod}: {e}")),
            }
        }
        let members = answered.then(|| members_per_pod.values().map(|m| i64::from(*m)).sum::<i64>());
        Self {
            members: members.map(|m| i32::try_from(m).unwrap_or(i32::MAX)),
            lag: answered.then(|| LagStatus {
                total: i64::try_from(total).unwrap_or(i64::MAX),
                // The admin API reports lag per pod, not per partition: this is the largest lag
                // on one pod, an upper bound of the largest partition lag.
                max_partition: i64::try_from(max_pod).unwrap_or(i64::MAX),
                updated_at: None,
            }),
            unanswered,
        }
    }
}

fn steady_summary(group: &ConsumerGroup) -> Summary {
    if group.spec.consume_enabled {
        Summary::ready(reason::ACTIVE, "delivering")
    } else {
        Summary::ready(reason::PAUSED, "delivery paused (consumeEnabled: false)")
    }
}

fn decide(
    group: &ConsumerGroup,
    observed: &ObservedGroup,
    figures: &Figures,
    previous: &ConsumerGroupStatus,
) -> Decision {
    let problems = group.validate();
    if !problems.is_empty() {
        return Decision::Summary(Summary::stalled(reason::INVALID_SPEC, problems.join("; ")), Requeue::AwaitChange);
    }
    if let Some(holder) = name_holder(group, observed) {
        let message = format!(
            "ConsumerGroup {holder:?} (older) already uses the RocketMQ group {:?}; set spec.groupName",
            group.effective_name().unwrap_or_default()
        );
        return Decision::Summary(Summary::stalled(reason::RESOURCE_CONFLICT, message), Requeue::After(DEFAULT_RESYNC));
    }
    let missing: Vec<&str> = group
        .spec
        .subscriptions
        .iter()
        .map(|s| s.topic_ref.name.as_str())
        .filter(|t| !observed.topics.contains_key(*t))
        .collect();
    if !missing.is_empty() {
        let message = format!("Topic {} not found in this namespace", missing.join(", "));
        return Decision::Summary(
            Summary::progressing(reason::TOPIC_NOT_FOUND, message),
            Requeue::After(LAG_WRITE_INTERVAL),
        );
    }
    if group.spec.ordering == Ordering::Orderly {
        let not_fifo: Vec<&str> = observed
            .topics
            .iter()
            .filter(|(_, t)| t.message_type != MessageType::Fifo)
            .map(|(name, _)| name.as_str())
            .collect();
        if !not_fifo.is_empty() {
            let message =
                format!("ordering Orderly needs FIFO topics; {} is not messageType FIFO", not_fifo.join(", "));
            return Decision::Summary(Summary::stalled(reason::INVALID_SPEC, message), Requeue::AwaitChange);
        }
    }
    if let Some(reset) = &group.spec.offset_reset
        && previous.last_offset_reset.as_ref().is_none_or(|last| last.request_id != reset.request_id)
    {
        return decide_reset(group, observed, figures, reset);
    }
    Decision::Summary(steady_summary(group), Requeue::After(LAG_WRITE_INTERVAL))
}

fn decide_reset(group: &ConsumerGroup, observed: &ObservedGroup, figures: &Figures, reset: &OffsetReset) -> Decision {
    let delivering = group.spec.consume_enabled;
    let members = figures.members.unwrap_or(0);
    if !reset.force && delivering && members > 0 {
        let message = format!(
            "offset reset {:?} waits: {members} consumers are online; set consumeEnabled: false, stop them, or set force: true",
            reset.request_id
        );
        return Decision::Summary(
            Summary::progressing(reason::RESET_BLOCKED, message),
            Requeue::After(LAG_WRITE_INTERVAL),
        );
    }
    let without_pods: Vec<&str> =
        observed.topics.iter().filter(|(_, t)| t.pods.is_empty()).map(|(n, _)| n.as_str()).collect();
    if !without_pods.is_empty() {
        let message = format!("offset reset {:?} waits for brokers of {}", reset.request_id, without_pods.join(", "));
        return Decision::Summary(
            Summary::progressing(reason::RESET_IN_PROGRESS, message),
            Requeue::After(PROGRESS_REQUEUE),
        );
    }
    // Without force and while delivering, members must be known on every pod to be sure none is
    // online.
    if !reset.force && delivering && !figures.unanswered.is_empty() {
        let message = format!(
            "offset reset {:?} waits: cannot count consumers on {}",
            reset.request_id,
            figures.unanswered.join(", ")
        );
        return Decision::Summary(
            Summary::progressing(reason::RESET_IN_PROGRESS, message),
            Requeue::After(BROKER_RETRY_REQUEUE),
        );
    }
    Decision::Reset(reset.clone())
}

fn name_holder(group: &ConsumerGroup, observed: &ObservedGroup) -> Option<String> {
    let me = PeerGroup::of(group)?;
    let mut twins: Vec<&PeerGroup> =
        observed.peers.iter().filter(|p| p.rocketmq_name == me.rocketmq_name && p.name != me.name).collect();
    if twins.is_empty() {
        return None;
    }
    twins.push(&me);
    let order = oldest_first(twins.iter().map(|p| (p.name.as_str(), p.created)));
    order.first().filter(|h| **h != me.name).map(|h| (*h).to_owned())
}

/// The broker target of a reset request.
pub fn reset_target(reset: &OffsetReset) -> ResetTarget {
    match reset.to {
        OffsetResetTarget::Earliest => ResetTarget::Earliest,
        OffsetResetTarget::Latest => ResetTarget::Latest,
        OffsetResetTarget::Timestamp => {
            ResetTarget::TimestampMs(reset.timestamp.as_ref().map_or(0, |t| t.0.as_millisecond()))
        }
        OffsetResetTarget::Offset => ResetTarget::Offset(reset.offset.unwrap_or(0).max(0).unsigned_abs()),
    }
}

fn reset_ops(
    group: &ConsumerGroup,
    observed: &ObservedGroup,
    namespace: &str,
    group_name: &str,
    reset: &OffsetReset,
) -> Vec<ResetOp> {
    let target = reset_target(reset);
    let subscribed: BTreeSet<&str> = group.spec.subscriptions.iter().map(|s| s.topic_ref.name.as_str()).collect();
    observed
        .topics
        .iter()
        .filter(|(name, _)| subscribed.contains(name.as_str()))
        .flat_map(|(_, t)| {
            t.pods.iter().map(move |pod| ResetOp {
                pod: BrokerPod::new(namespace, pod.clone()),
                group: group_name.to_owned(),
                topic: t.rocketmq_name.clone(),
                target,
            })
        })
        .collect()
}

/// The lag to write: the new figure if it differs and is due (or `forced` by another change),
/// else the previous one unchanged.
fn next_lag(previous: Option<&LagStatus>, measured: Option<&LagStatus>, forced: bool, now: &Time) -> Option<LagStatus> {
    let Some(measured) = measured else {
        return previous.cloned();
    };
    let same = previous.is_some_and(|p| p.total == measured.total && p.max_partition == measured.max_partition);
    let due = previous
        .and_then(|p| p.updated_at.as_ref())
        .is_none_or(|t| seconds_between(t, now) >= LAG_WRITE_INTERVAL.as_secs() as i64);
    if same || !(due || forced) {
        return previous.cloned();
    }
    Some(LagStatus { updated_at: Some(now.clone()), ..measured.clone() })
}

/// The pods a group's cleanup calls `DeleteGroup` on: every pod of every subscribed Topic whose
/// StatefulSet still exists.
pub fn cleanup_pods(group: &ConsumerGroup, observed: &ObservedGroup) -> Vec<BrokerPod> {
    let namespace = group.metadata.namespace.clone().unwrap_or_default();
    let pods: BTreeSet<&String> = observed
        .topics
        .values()
        .filter(|t| t.stateful_set_exists)
        .flat_map(|t| t.pods.iter())
        .filter(|p| naming::split_pod_name(p).is_some())
        .collect();
    pods.into_iter().map(|p| BrokerPod::new(namespace.clone(), p.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;
    use weir_crds::ConsumerGroupSpec;
    use weir_crds::status::{READY, find_condition};

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn group(yaml: &str) -> ConsumerGroup {
        let spec: ConsumerGroupSpec = serde_yaml::from_str(yaml).unwrap();
        let mut g = ConsumerGroup::new("billing", spec);
        g.metadata = ObjectMeta {
            name: Some("billing".into()),
            namespace: Some("shop".into()),
            generation: Some(1),
            creation_timestamp: Some(at(1)),
            ..ObjectMeta::default()
        };
        g
    }

    fn orders(message_type: MessageType) -> SubscribedTopic {
        SubscribedTopic {
            rocketmq_name: "orders".into(),
            message_type,
            partitions: 4,
            pods: vec!["orders-broker-0".into(), "orders-broker-1".into()],
            ready: true,
            stateful_set_exists: true,
        }
    }

    fn world(members: [u32; 2], lag: [u64; 2]) -> ObservedGroup {
        let stats = (0..2)
            .map(|i| {
                let s = GroupTopicStats { lag: lag[i], inflight: 0, members: members[i] };
                (("orders".to_owned(), format!("orders-broker-{i}")), Ok(s))
            })
            .collect();
        ObservedGroup {
            peers: Vec::new(),
            topics: BTreeMap::from([("orders".to_owned(), orders(MessageType::Normal))]),
            stats,
        }
    }

    fn reason_of(status: &ConsumerGroupStatus) -> String {
        find_condition(&status.conditions, READY).unwrap().reason.clone()
    }

    const BASIC: &str = "subscriptions: [{topicRef: {name: orders}}]";

    #[test]
    fn active_group_reports_members_and_lag() {
        let g = group(BASIC);
        let plan = plan_group(&g, &world([2, 1], [10, 30]), &at(100));
        assert_eq!(reason_of(&plan.status), "Active");
        assert_eq!(plan.status.members, Some(3));
        let lag = plan.status.lag.clone().unwrap();
        assert_eq!((lag.total, lag.max_partition, lag.updated_at), (40, 30, Some(at(100))));
        assert_eq!(
            plan.status.subscriptions,
            vec![SubscriptionStatus { topic: "orders".into(), partitions: 4, ready: true }]
        );
        assert!(plan.resets.is_empty());
    }

    #[test]
    fn lag_is_written_at_most_every_30_seconds_unless_members_change() {
        let mut g = group(BASIC);
        g.status = Some(plan_group(&g, &world([1, 1], [10, 10]), &at(100)).status);
        let plan = plan_group(&g, &world([1, 1], [50, 10]), &at(110));
        assert_eq!(plan.status.lag.as_ref().unwrap().total, 20, "not due yet");
        assert!(!plan.status_changed(&g));
        let plan = plan_group(&g, &world([2, 1], [50, 10]), &at(110));
        assert_eq!(plan.status.lag.as_ref().unwrap().total, 60, "members changed");
        let plan = plan_group(&g, &world([1, 1], [50, 10]), &at(130));
        assert_eq!(plan.status.lag.as_ref().unwrap().total, 60, "30s passed");
    }

    #[test]
    fn missing_topic_and_orderly_on_normal_topic() {
        let g = group("subscriptions: [{topicRef: {name: orders}}, {topicRef: {name: refunds}}]");
        let plan = plan_group(&g, &world([0, 0], [0, 0]), &at(1));
        assert_eq!(reason_of(&plan.status), "TopicNotFound");
        assert!(find_condition(&plan.status.conditions, READY).unwrap().message.contains("refunds"));
        let g = group("subscriptions: [{topicRef: {name: orders}}]\nordering: Orderly");
        let plan = plan_group(&g, &world([0, 0], [0, 0]), &at(1));
        assert_eq!(reason_of(&plan.status), "InvalidSpec");
        assert_eq!(plan.requeue, Requeue::AwaitChange);
        let mut fifo = world([0, 0], [0, 0]);
        fifo.topics.insert("orders".into(), orders(MessageType::Fifo));
        assert_eq!(reason_of(&plan_group(&g, &fifo, &at(1)).status), "Active");
    }

    #[test]
    fn paused_group_is_ready_with_reason_paused() {
        let g = group("subscriptions: [{topicRef: {name: orders}}]\nconsumeEnabled: false");
        let plan = plan_group(&g, &world([0, 0], [0, 0]), &at(1));
        assert_eq!(reason_of(&plan.status), "Paused");
        assert!(find_condition(&plan.status.conditions, READY).unwrap().status == "True");
    }

    const RESET: &str = "subscriptions: [{topicRef: {name: orders}}]\noffsetReset: {requestId: r1, to: Earliest}";

    #[test]
    fn offset_reset_is_blocked_while_members_are_online_unless_forced() {
        let g = group(RESET);
        let plan = plan_group(&g, &world([1, 0], [0, 0]), &at(1));
        assert_eq!(reason_of(&plan.status), "ResetBlocked");
        assert!(plan.resets.is_empty());
        let forced = group(&format!("{RESET}\n").replace("to: Earliest}", "to: Earliest, force: true}"));
        let plan = plan_group(&forced, &world([1, 0], [0, 0]), &at(1));
        assert_eq!(plan.resets.len(), 2);
    }

    #[test]
    fn offset_reset_runs_once_per_request_id() {
        let mut g = group(RESET);
        let plan = plan_group(&g, &world([0, 0], [0, 0]), &at(5));
        assert_eq!(plan.resets.len(), 2);
        assert_eq!(plan.resets[0].target, ResetTarget::Earliest);
        assert_eq!(plan.resets[0].pod, BrokerPod::new("shop", "orders-broker-0"));
        let mut status = plan.status;
        record_offset_reset(&mut status, g.spec.offset_reset.as_ref().unwrap(), &[], &at(5));
        assert_eq!(status.last_offset_reset.as_ref().unwrap().result, OffsetResetResult::Succeeded);
        g.status = Some(status);
        assert!(plan_group(&g, &world([0, 0], [0, 0]), &at(6)).resets.is_empty());
        g.spec.offset_reset.as_mut().unwrap().request_id = "r2".into();
        assert_eq!(plan_group(&g, &world([0, 0], [0, 0]), &at(7)).resets.len(), 2);
    }

    #[test]
    fn offset_reset_waits_for_unknown_members_and_records_failures() {
        let g = group(RESET);
        let mut w = world([0, 0], [0, 0]);
        w.stats.insert(("orders".into(), "orders-broker-1".into()), Err("unreachable".into()));
        let plan = plan_group(&g, &w, &at(1));
        assert_eq!(reason_of(&plan.status), "ResetInProgress");
        let mut status = ConsumerGroupStatus::default();
        record_offset_reset(&mut status, g.spec.offset_reset.as_ref().unwrap(), &["pod 1 refused".into()], &at(2));
        let last = status.last_offset_reset.unwrap();
        assert_eq!((last.result, last.message.as_deref()), (OffsetResetResult::Failed, Some("pod 1 refused")));
    }

    #[test]
    fn reset_targets_convert() {
        let r: OffsetReset =
            serde_yaml::from_str("{requestId: x, to: Timestamp, timestamp: '1970-01-01T00:00:02Z'}").unwrap();
        assert_eq!(reset_target(&r), ResetTarget::TimestampMs(2000));
        let r: OffsetReset = serde_yaml::from_str("{requestId: x, to: Offset, offset: 7}").unwrap();
        assert_eq!(reset_target(&r), ResetTarget::Offset(7));
    }

    #[test]
    fn younger_group_with_the_same_name_conflicts() {
        let mut g = group(BASIC);
        g.metadata.creation_timestamp = Some(at(50));
        let mut w = world([0, 0], [0, 0]);
        w.peers = vec![PeerGroup {
            name: "billing-old".into(),
            rocketmq_name: "billing".into(),
            created: Some(at(1).0.as_second()),
        }];
        assert_eq!(reason_of(&plan_group(&g, &w, &at(60)).status), "ResourceConflict");
    }

    #[test]
    fn cleanup_targets_pods_of_topics_whose_set_exists() {
        let g = group(BASIC);
        let mut w = world([0, 0], [0, 0]);
        assert_eq!(cleanup_pods(&g, &w).len(), 2);
        w.topics.get_mut("orders").unwrap().stateful_set_exists = false;
        assert!(cleanup_pods(&g, &w).is_empty());
    }
}
