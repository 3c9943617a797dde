//! The plan of one Topic.
//!
//! ```text
//!   invalid spec ───────────► Ready=False InvalidSpec, Stalled      no child writes, await change
//!   younger name twin ──────► Ready=False ResourceConflict, Stalled no child writes
//!   suspend: true ──────────► Ready=<serving?> Suspended            no child writes
//!   otherwise: assignment ──► children (replicas kept up while departing pods drain) + status
//!        BrokerUnavailable  a draining pod did not report its backlog
//!        Draining           departing pods / removed partitions still have consumers to serve
//!        Reassigning        moved partitions still drain on their previous owner
//!        Provisioning       pods missing, not ready, or rolling out
//!        Serving            Ready=True
//! ```
//!
//! Scale-down: pods at or above `brokers.replicas` give up their partitions at once (the new
//! owners take writes), keep serving them as `draining`, and the StatefulSet keeps them until each
//! reports a backlog of 0; then `replicas` shrinks and Kubernetes removes the highest ordinals.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use weir_crds::quantity::parse_size_quantity;
use weir_crds::status::reason;
use weir_crds::{
    BrokersStatus, Endpoints, PartitionCounts, Permission, ReassignmentState, ReassignmentStatus, StorageStatus, Topic,
    TopicStatus, format_partition_ranges, naming,
};

use super::{DEFAULT_RESYNC, PROGRESS_REQUEUE, Requeue, oldest_first};
use crate::assignment::{Assignment, AssignmentPlan, plan_assignment};
use crate::build::{
    BrokerSetShape, BuildError, TopicRef, build_client_service, build_headless_service, build_pdb, build_role_binding,
    build_service_account, build_stateful_set,
};
use crate::clock::seconds_between;
use crate::config::OperatorConfig;
use crate::reconcile::apply::fingerprint;
use crate::status::{PlannedEvent, Summary, apply_summary, transition_event};

/// Another Topic of the namespace, for name-clash detection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTopic {
    /// metadata.name.
    pub name: String,
    /// The RocketMQ name it resolves to.
    pub rocketmq_name: String,
    /// metadata.creationTimestamp, seconds since the epoch.
    pub created: Option<i64>,
}

impl PeerTopic {
    /// The identity of a Topic object (None without a name).
    pub fn of(topic: &Topic) -> Option<Self> {
        Some(Self {
            name: topic.metadata.name.clone()?,
            rocketmq_name: topic.effective_name()?.to_owned(),
            created: topic.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        })
    }
}

/// The observed broker StatefulSet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedSet {
    /// metadata.generation.
    pub generation: Option<i64>,
    /// spec.replicas.
    pub spec_replicas: i32,
    /// status.observedGeneration.
    pub observed_generation: Option<i64>,
    /// status.replicas.
    pub replicas: i32,
    /// status.readyReplicas.
    pub ready_replicas: i32,
    /// status.updatedReplicas.
    pub updated_replicas: i32,
    /// status.currentRevision.
    pub current_revision: Option<String>,
    /// status.updateRevision.
    pub update_revision: Option<String>,
    /// Size requested by the `data` volume claim template.
    pub claim_size: Option<Quantity>,
    /// StorageClass of the `data` volume claim template.
    pub storage_class: Option<String>,
    /// Fingerprint of what the operator last applied to it (annotation `weir.dev/applied-hash`).
    pub applied_hash: Option<String>,
}

impl ObservedSet {
    /// The StatefulSet controller has acted on the latest spec and every pod runs it.
    pub fn rolled_out(&self) -> bool {
        self.observed_generation >= self.generation
            && self.updated_replicas >= self.spec_replicas
            && self.current_revision == self.update_revision
    }
}

/// An observed broker volume claim.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedPvc {
    /// PVC name (`data-<pod>`).
    pub name: String,
    /// spec.resources.requests.storage.
    pub requested: Option<Quantity>,
    /// status.capacity.storage.
    pub capacity: Option<Quantity>,
}

/// Everything a Topic's plan looks at besides the Topic itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedTopic {
    /// Every Topic of the namespace, this one included.
    pub peers: Vec<PeerTopic>,
    /// The broker StatefulSet, if it exists.
    pub stateful_set: Option<ObservedSet>,
    /// Readiness of each existing broker pod, by ordinal.
    pub pods_ready: BTreeMap<u32, bool>,
    /// Per pod that was asked (those with drain entries): its backlog per partition, or why it
    /// did not answer.
    pub backlogs: BTreeMap<u32, Result<BTreeMap<u32, u64>, String>>,
    /// The Topic's volume claims.
    pub pvcs: Vec<ObservedPvc>,
}

/// The Topic's children, applied in this order (the StatefulSet last, so its Services exist
/// when its pods start).
#[derive(Clone, Debug, PartialEq)]
pub struct TopicChildren {
    /// The broker pods' ServiceAccount.
    pub service_account: ServiceAccount,
    /// Its read-only role in the namespace.
    pub role_binding: RoleBinding,
    /// The headless Service.
    pub headless_service: Service,
    /// The namespace's shared client Service.
    pub client_service: Service,
    /// The PodDisruptionBudget.
    pub pdb: PodDisruptionBudget,
    /// The broker StatefulSet.
    pub stateful_set: StatefulSet,
}

/// A PVC to grow (StatefulSet claim templates are immutable, so volumes are resized one by one).
#[derive(Clone, Debug, PartialEq)]
pub struct PvcResize {
    /// PVC name.
    pub name: String,
    /// New requested size.
    pub size: Quantity,
}

/// What to do for one Topic.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicPlan {
    /// Children to apply; None: write nothing but the status (invalid, conflicting, suspended).
    pub children: Option<TopicChildren>,
    /// Volume claims to grow.
    pub pvc_resizes: Vec<PvcResize>,
    /// The next status.
    pub status: TopicStatus,
    /// Whether `status` differs from the current one (else the status write is skipped).
    pub status_changed: bool,
    /// Events to publish.
    pub events: Vec<PlannedEvent>,
    /// When to look again.
    pub requeue: Requeue,
}

/// Plans one Topic. `now` is the reconcile's time.
pub fn plan_topic(
    topic: &Topic,
    observed: &ObservedTopic,
    config: &OperatorConfig,
    now: &Time,
) -> Result<TopicPlan, BuildError> {
    let topic_ref = TopicRef::of(topic)?;
    let previous = topic.status.clone().unwrap_or_default();
    let resync = topic.spec.resync_interval().unwrap_or(DEFAULT_RESYNC);
    let mut plan = Planner { topic, topic_ref, observed, config, now, previous, resync };
    Ok(plan.run())
}

struct Planner<'a> {
    topic: &'a Topic,
    topic_ref: TopicRef,
    observed: &'a ObservedTopic,
    config: &'a OperatorConfig,
    now: &'a Time,
    previous: TopicStatus,
    resync: Duration,
}

impl Planner<'_> {
    fn run(&mut self) -> TopicPlan {
        let mut problems = self.topic.validate();
        let set_name = naming::broker_set(&self.topic_ref.name);
        if set_name.len() > naming::MAX_BROKER_SET_NAME {
            problems.push(format!(
                "metadata.name {:?}: too long; the StatefulSet {set_name:?} may have at most {} characters",
                self.topic_ref.name,
                naming::MAX_BROKER_SET_NAME
            ));
        }
        if !problems.is_empty() {
            let summary = Summary::stalled(reason::INVALID_SPEC, problems.join("; "));
            return self.status_only(summary, Requeue::AwaitChange);
        }
        if let Some(holder) = self.name_holder() {
            let summary = Summary::stalled(
                reason::RESOURCE_CONFLICT,
                format!(
                    "Topic {holder:?} (older) already serves the RocketMQ topic {:?}; rename this one with spec.topicName",
                    self.rocketmq_name()
                ),
            );
            // The holder may go away; look again at the resync period.
            return self.status_only(summary, Requeue::After(self.resync));
        }
        if self.topic.spec.suspend {
            let (serving, desired) = self.serving_of_previous();
            let summary = Summary {
                ready: serving == desired && desired > 0,
                reason: reason::SUSPENDED,
                message: format!("reconciliation suspended (spec.suspend); {serving}/{desired} partitions serving"),
                reconciling: false,
                stalled: false,
            };
            return self.status_only(summary, Requeue::After(self.resync));
        }
        self.reconcile()
    }

    fn rocketmq_name(&self) -> &str {
        self.topic.effective_name().unwrap_or(&self.topic_ref.name)
    }

    /// The older Topic that holds this Topic's RocketMQ name, if it is not this one.
    fn name_holder(&self) -> Option<String> {
        let me = PeerTopic::of(self.topic)?;
        let mut twins: Vec<&PeerTopic> =
            self.observed.peers.iter().filter(|p| p.rocketmq_name == me.rocketmq_name && p.name != me.name).collect();
        if twins.is_empty() {
            return None;
        }
        twins.push(&me);
        let order = oldest_first(twins.iter().map(|p| (p.name.as_str(), p.created)));
        order.first().filter(|holder| **holder != me.name).map(|h| (*h).to_owned())
    }

    /// Previous assignment, dropping entries that do not parse (reported as a warning).
    fn previous_assignment(&self) -> (Assignment, Vec<String>) {
        let mut assignment = Assignment::default();
        let mut dropped = Vec::new();
        for entry in &self.previous.assignment {
            match Assignment::from_status(&self.topic_ref.name, std::slice::from_ref(entry)) {
                Ok(one) => {
                    for (o, p) in one.pods {
                        let pod = assignment.pods.entry(o).or_default();
                        pod.owned.extend(p.owned);
                        pod.draining.extend(p.draining);
                    }
                }
                Err(e) => dropped.push(e.to_string()),
            }
        }
        (assignment, dropped)
    }

    fn ready(&self, ordinal: u32) -> bool {
        self.observed.pods_ready.get(&ordinal).copied().unwrap_or(false)
    }

    fn serving_count(&self, assignment: &Assignment, partitions: u32) -> u32 {
        (0..partitions).filter(|p| assignment.owner_of(*p).is_some_and(|o| self.ready(o))).count() as u32
    }

    fn serving_of_previous(&self) -> (u32, u32) {
        let desired = self.previous.partitions.as_ref().map_or(0, |p| p.desired.max(0) as u32);
        (self.serving_count(&self.previous_assignment().0, desired), desired)
    }

    /// Pods that may own partitions: up to `replicas`, those that already own some or are ready
    /// (a new pod gets partitions only once it can take them), all of them for a new Topic.
    fn target_pods(&self, previous: &Assignment, replicas: u32) -> BTreeSet<u32> {
        let all: BTreeSet<u32> = (0..replicas).collect();
        if previous.owning_pods().is_empty() {
            return all;
        }
        let owning = previous.owning_pods();
        let targets: BTreeSet<u32> = all.iter().copied().filter(|o| owning.contains(o) || self.ready(*o)).collect();
        if targets.is_empty() { all } else { targets }
    }

    /// Drain entries that are over: the pod reported a backlog of 0 (or no such partition), or the
    /// pod no longer exists (the StatefulSet was scaled below it by hand; nobody serves it).
    fn drained(&self, previous: &Assignment) -> (BTreeSet<(u32, u32)>, Vec<String>) {
        let gone_from = self.observed.stateful_set.as_ref().map(|s| s.spec_replicas.max(0) as u32);
        let mut drained = BTreeSet::new();
        let mut unreachable = BTreeSet::new();
        for (o, p) in previous.drain_entries() {
            if gone_from.is_some_and(|n| o >= n) {
                drained.insert((o, p));
                continue;
            }
            match self.observed.backlogs.get(&o) {
                Some(Ok(backlog)) if backlog.get(&p).copied().unwrap_or(0) == 0 => {
                    drained.insert((o, p));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    unreachable.insert(format!("{}: {e}", naming::pod_name(&self.topic_ref.name, o)));
                }
                None => {
                    unreachable.insert(format!("{}: not asked", naming::pod_name(&self.topic_ref.name, o)));
                }
            }
        }
        (drained, unreachable.into_iter().collect())
    }

    fn reconcile(&mut self) -> TopicPlan {
        let spec = &self.topic.spec;
        let partitions = spec.partitions.max(1) as u32;
        let replicas = spec.brokers.replicas.max(1) as u32;
        let (previous, dropped) = self.previous_assignment();
        let targets = self.target_pods(&previous, replicas);
        let (drained, unreachable) = self.drained(&previous);
        let next = plan_assignment(&previous, partitions, &targets, &drained);

        // Keep departing pods until their drains are over; the StatefulSet removes the highest
        // ordinals first, so the set only shrinks past pods that are done.
        let last_busy = next.assignment.busy_pods().last().map_or(0, |o| o + 1);
        let set_replicas = replicas.max(last_busy) as i32;

        let shape = match &self.observed.stateful_set {
            Some(set) => BrokerSetShape {
                replicas: set_replicas,
                claim_size: set.claim_size.clone().unwrap_or_else(|| spec.brokers.storage.size.clone()),
                storage_class: set.storage_class.clone(),
            },
            None => BrokerSetShape::from_spec(self.topic, set_replicas),
        };
        let children = TopicChildren {
            service_account: build_service_account(&self.topic_ref),
            role_binding: build_role_binding(&self.topic_ref, &self.config.broker_cluster_role),
            headless_service: build_headless_service(&self.topic_ref),
            client_service: build_client_service(&self.topic_ref.namespace),
            pdb: build_pdb(&self.topic_ref, self.topic),
            stateful_set: build_stateful_set(self.topic, &self.topic_ref, self.config, &shape),
        };
        // A set this reconcile is about to change has not rolled out the new spec, whatever its
        // status says about the previous one.
        let set_outdated = self
            .observed
            .stateful_set
            .as_ref()
            .and_then(|s| s.applied_hash.as_deref())
            .is_some_and(|applied| fingerprint(&children.stateful_set).ok().as_deref() != Some(applied));
        let (pvc_resizes, storage) = self.storage();

        let serving = self.serving_count(&next.assignment, partitions);
        let summary = self.summary(&next, partitions, replicas, serving, &unreachable, set_outdated);
        let requeue = Requeue::After(if summary.ready { self.resync } else { PROGRESS_REQUEUE });

        let mut status = self.previous.clone();
        status.assignment = next.assignment.to_status(&self.topic_ref.name);
        status.partitions = Some(PartitionCounts {
            desired: partitions as i32,
            serving: serving as i32,
            writable: if spec.permission == Permission::ReadOnly { 0 } else { serving as i32 },
        });
        status.reassignment = Some(self.reassignment(&next));
        status.brokers = self.observed.stateful_set.as_ref().map(|s| BrokersStatus {
            replicas: s.replicas,
            ready_replicas: s.ready_replicas,
            current_revision: s.current_revision.clone(),
            update_revision: s.update_revision.clone(),
        });
        status.storage = Some(storage);
        status.endpoints = Some(Endpoints {
            grpc: Some(format!(
                "{}:{}",
                naming::client_service_host(&self.topic_ref.namespace, &self.config.cluster_domain),
                naming::GRPC_PORT
            )),
            metrics: Some(format!(":{}/metrics", naming::METRICS_PORT)),
        });

        let mut plan = self.finish(status, summary, requeue);
        plan.children = Some(children);
        plan.pvc_resizes = pvc_resizes;
        plan.events.extend(move_events(&self.topic_ref.name, &next));
        if !dropped.is_empty() {
            plan.events.push(PlannedEvent {
                warning: true,
                reason: "AssignmentRepaired".to_owned(),
                action: "Reassign".to_owned(),
                note: format!("ignored unreadable status.assignment entries: {}", dropped.join("; ")),
            });
        }
        plan
    }

    fn summary(
        &self,
        next: &AssignmentPlan,
        partitions: u32,
        replicas: u32,
        serving: u32,
        unreachable: &[String],
        set_outdated: bool,
    ) -> Summary {
        let draining = next.assignment.draining_count();
        let departing: BTreeSet<u32> = next
            .assignment
            .pods
            .iter()
            .filter(|(o, p)| **o >= replicas && !p.draining.is_empty())
            .map(|(o, _)| *o)
            .collect();
        if !unreachable.is_empty() {
            return Summary::progressing(
                reason::BROKER_UNAVAILABLE,
                format!("cannot check drains on {}", unreachable.join(", ")),
            );
        }
        if !departing.is_empty() || !next.removing.is_empty() {
            let pods: Vec<String> = departing.iter().map(|o| naming::pod_name(&self.topic_ref.name, *o)).collect();
            let mut what = Vec::new();
            if !pods.is_empty() {
                what.push(format!("pods {} before scale-down", pods.join(", ")));
            }
            if !next.removing.is_empty() {
                what.push(format!(
                    "partitions {} before removal",
                    format_partition_ranges(next.removing.iter().copied())
                ));
            }
            return Summary::progressing(reason::DRAINING, format!("draining {}", what.join(" and ")));
        }
        if draining > 0 {
            return Summary::progressing(
                reason::REASSIGNING,
                format!("{draining} moved partitions still drain on their previous pods"),
            );
        }
        let ready_pods = (0..replicas).filter(|o| self.ready(*o)).count();
        let rolled_out = !set_outdated && self.observed.stateful_set.as_ref().is_some_and(ObservedSet::rolled_out);
        if serving < partitions || ready_pods < replicas as usize || !rolled_out {
            let rollout = if rolled_out { "" } else { ", rollout in progress" };
            return Summary::progressing(
                reason::PROVISIONING,
                format!("{serving}/{partitions} partitions serving, {ready_pods}/{replicas} pods ready{rollout}"),
            );
        }
        Summary::ready(reason::SERVING, format!("{serving}/{partitions} partitions serving on {replicas} pods"))
    }

    fn reassignment(&self, next: &AssignmentPlan) -> ReassignmentStatus {
        let draining = next.assignment.draining_count() as i32;
        if draining == 0 {
            return ReassignmentStatus::default();
        }
        let previous = self.previous.reassignment.clone().unwrap_or_default();
        let ongoing = previous.state != ReassignmentState::Idle;
        let total = if ongoing { previous.total } else { 0 } + next.started_drains as i32;
        let total = total.max(draining);
        ReassignmentStatus {
            state: ReassignmentState::Draining,
            moved: total - draining,
            total,
            started_at: if ongoing { previous.started_at } else { Some(self.now.clone()) },
            message: Some(format!("{draining} partition drains pending")),
        }
    }

    /// Volume sizes, and the PVCs to grow when the StorageClass allows it.
    fn storage(&self) -> (Vec<PvcResize>, StorageStatus) {
        let storage = &self.topic.spec.brokers.storage;
        let bytes = |q: &Option<Quantity>| q.as_ref().and_then(|q| parse_size_quantity("size", q).ok());
        let wanted = parse_size_quantity("brokers.storage.size", &storage.size).ok();
        let mut resizes = Vec::new();
        let mut min_capacity: Option<(u64, Quantity)> = None;
        let mut pending = false;
        for pvc in &self.observed.pvcs {
            if let Some(cap) = bytes(&pvc.capacity)
                && min_capacity.as_ref().is_none_or(|(m, _)| cap < *m)
            {
                min_capacity = pvc.capacity.clone().map(|q| (cap, q));
            }
            let requested = bytes(&pvc.requested);
            if let (Some(w), Some(r)) = (wanted, requested)
                && storage.expandable
                && r < w
            {
                resizes.push(PvcResize { name: pvc.name.clone(), size: storage.size.clone() });
            }
            if let (Some(w), Some(c)) = (wanted, bytes(&pvc.capacity))
                && storage.expandable
                && c < w
            {
                pending = true;
            }
        }
        let status = StorageStatus {
            requested: Some(storage.size.clone()),
            min_capacity: min_capacity.map(|(_, q)| q),
            resize_pending: pending,
        };
        (resizes, status)
    }

    /// A plan that writes only the status (conditions on top of the previous status).
    fn status_only(&self, summary: Summary, requeue: Requeue) -> TopicPlan {
        self.finish(self.previous.clone(), summary, requeue)
    }

    /// Sets generation, name, conditions and sync time; decides whether the status changed.
    fn finish(&self, mut status: TopicStatus, summary: Summary, requeue: Requeue) -> TopicPlan {
        let generation = self.topic.metadata.generation;
        status.observed_generation = generation;
        status.topic_name = Some(self.rocketmq_name().to_owned());
        apply_summary(&mut status.conditions, &summary, generation, self.now);
        let events: Vec<PlannedEvent> = transition_event(&self.previous.conditions, &summary).into_iter().collect();
        status.last_sync_time = self.previous.last_sync_time.clone();
        let content_changed = status != self.previous;
        let sync_due = self
            .previous
            .last_sync_time
            .as_ref()
            .is_none_or(|t| seconds_between(t, self.now) >= self.resync.as_secs() as i64);
        if content_changed || sync_due {
            status.last_sync_time = Some(self.now.clone());
        }
        let status_changed = status != self.previous;
        TopicPlan { children: None, pvc_resizes: Vec::new(), status, status_changed, events, requeue }
    }
}

/// One Normal event per target pod that receives moved partitions.
fn move_events(topic: &str, next: &AssignmentPlan) -> Vec<PlannedEvent> {
    let mut by_target: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for m in next.moves.iter().filter(|m| m.from.is_some()) {
        by_target.entry(m.to).or_default().push(m.partition);
    }
    by_target
        .into_iter()
        .map(|(to, parts)| PlannedEvent {
            warning: false,
            reason: reason::REASSIGNING.to_owned(),
            action: "Reassign".to_owned(),
            note: format!(
                "partitions {} now owned by {}; their previous pods drain them",
                format_partition_ranges(parts),
                naming::pod_name(topic, to)
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{topic, topic_yaml};
    use k8s_openapi::jiff::Timestamp;
    use weir_crds::status::{READY, RECONCILING, STALLED, find_condition};
    use weir_crds::{PartitionAssignment, TopicSpec};

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn config() -> OperatorConfig {
        OperatorConfig { broker_image_tag: "0.1.0".to_owned(), ..OperatorConfig::default() }
    }

    fn peers(topics: &[&Topic]) -> Vec<PeerTopic> {
        topics.iter().filter_map(|t| PeerTopic::of(t)).collect()
    }

    /// A healthy world: the set exists and rolled out with `pods` ready pods.
    fn healthy(t: &Topic, pods: u32) -> ObservedTopic {
        ObservedTopic {
            peers: peers(&[t]),
            stateful_set: Some(ObservedSet {
                generation: Some(1),
                spec_replicas: pods as i32,
                observed_generation: Some(1),
                replicas: pods as i32,
                ready_replicas: pods as i32,
                updated_replicas: pods as i32,
                current_revision: Some("r1".into()),
                update_revision: Some("r1".into()),
                claim_size: Some(Quantity("10Gi".into())),
                storage_class: None,
                applied_hash: None,
            }),
            pods_ready: (0..pods).map(|o| (o, true)).collect(),
            backlogs: BTreeMap::new(),
            pvcs: Vec::new(),
        }
    }

    fn ready_reason(status: &TopicStatus) -> (String, String) {
        let c = find_condition(&status.conditions, READY).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    fn replicas_of(plan: &TopicPlan) -> i32 {
        plan.children.as_ref().unwrap().stateful_set.spec.replicas.unwrap()
    }

    /// Runs the plan and stores its status on the topic, as the apply step would.
    fn step(t: &mut Topic, observed: &ObservedTopic, now: i64) -> TopicPlan {
        let plan = plan_topic(t, observed, &config(), &at(now)).unwrap();
        t.status = Some(plan.status.clone());
        plan
    }

    #[test]
    fn a_new_topic_is_provisioned_then_serving() {
        let mut t = topic_yaml("orders", "partitions: 8\nbrokers: {replicas: 3}");
        let empty = ObservedTopic { peers: peers(&[&t]), ..ObservedTopic::default() };
        let plan = step(&mut t, &empty, 100);
        assert_eq!(ready_reason(&plan.status), ("False".into(), "Provisioning".into()));
        assert_eq!(replicas_of(&plan), 3);
        assert_eq!(plan.status.assignment.len(), 3, "a new topic assigns every pod at once");
        assert_eq!(plan.status.observed_generation, Some(1));
        assert_eq!(plan.requeue, Requeue::After(PROGRESS_REQUEUE));
        assert!(plan.events.iter().any(|e| e.reason == "Provisioning"));
        let plan = {
            let w = healthy(&t, 3);
            step(&mut t, &w, 110)
        };
        assert_eq!(ready_reason(&plan.status), ("True".into(), "Serving".into()));
        assert_eq!(plan.status.partitions, Some(PartitionCounts { desired: 8, serving: 8, writable: 8 }));
        assert_eq!(plan.requeue, Requeue::After(Duration::from_secs(300)));
        assert_eq!(plan.status.endpoints.as_ref().unwrap().grpc.as_deref(), Some("weir.shop.svc.cluster.local:8081"));
        // Nothing changed: no status write, no events.
        let again = {
            let w = healthy(&t, 3);
            step(&mut t, &w, 120)
        };
        assert!(!again.status_changed);
        assert!(again.events.is_empty());
        // The resync period passed: only lastSyncTime moves.
        let later = {
            let w = healthy(&t, 3);
            step(&mut t, &w, 500)
        };
        assert!(later.status_changed);
        assert_eq!(later.status.last_sync_time, Some(at(500)));
        let c = find_condition(&later.status.conditions, READY).unwrap();
        assert_eq!(c.last_transition_time, at(110));
    }

    #[test]
    fn scale_down_keeps_the_departing_pod_until_it_is_drained() {
        let mut t = topic_yaml("orders", "partitions: 6\nbrokers: {replicas: 3}");
        {
            let w = healthy(&t, 3);
            step(&mut t, &w, 100)
        };
        t.spec.brokers.replicas = 2;
        t.metadata.generation = Some(2);
        let mut world = healthy(&t, 3);
        // Pod 2 has not been asked yet (it had no drains): the planner moves its partitions away.
        let plan = step(&mut t, &world, 110);
        assert_eq!(replicas_of(&plan), 3, "pod 2 stays while it drains");
        assert_eq!(ready_reason(&plan.status).1, "Draining");
        assert_eq!(plan.status.reassignment.as_ref().unwrap().state, ReassignmentState::Draining);
        let pod2 = plan.status.assignment.iter().find(|a| a.pod == "orders-broker-2").unwrap();
        assert_eq!((pod2.partitions.as_str(), pod2.draining.as_str()), ("", "4-5"));
        assert!(plan.events.iter().any(|e| e.action == "Reassign"));
        // Pod 2 still has backlog on partition 5.
        world.backlogs.insert(2, Ok(BTreeMap::from([(4, 0), (5, 3)])));
        let plan = step(&mut t, &world, 120);
        assert_eq!(replicas_of(&plan), 3);
        let r = plan.status.reassignment.clone().unwrap();
        assert_eq!((r.moved, r.total, r.started_at), (1, 2, Some(at(110))));
        // Drained: the set shrinks.
        world.backlogs.insert(2, Ok(BTreeMap::from([(4, 0), (5, 0)])));
        let plan = step(&mut t, &world, 130);
        assert_eq!(replicas_of(&plan), 2);
        assert_eq!(plan.status.reassignment.as_ref().unwrap().state, ReassignmentState::Idle);
        assert_eq!(plan.status.assignment.len(), 2);
    }

    #[test]
    fn an_unreachable_draining_pod_blocks_with_broker_unavailable() {
        let mut t = topic_yaml("orders", "partitions: 4\nbrokers: {replicas: 2}");
        {
            let w = healthy(&t, 2);
            step(&mut t, &w, 100)
        };
        t.spec.brokers.replicas = 1;
        let mut world = healthy(&t, 2);
        step(&mut t, &world, 110);
        world.backlogs.insert(1, Err("connection refused".into()));
        let plan = step(&mut t, &world, 120);
        assert_eq!(ready_reason(&plan.status), ("False".into(), "BrokerUnavailable".into()));
        assert_eq!(replicas_of(&plan), 2);
        assert!(plan.events.iter().any(|e| e.warning));
    }

    #[test]
    fn scale_up_gives_partitions_to_new_pods_once_they_are_ready() {
        let mut t = topic_yaml("orders", "partitions: 4\nbrokers: {replicas: 2}");
        {
            let w = healthy(&t, 2);
            step(&mut t, &w, 100)
        };
        t.spec.brokers.replicas = 4;
        let mut world = healthy(&t, 2);
        let plan = step(&mut t, &world, 110);
        assert_eq!(replicas_of(&plan), 4);
        assert_eq!(plan.status.assignment.len(), 2, "pods 2 and 3 are not ready yet");
        assert_eq!(ready_reason(&plan.status).1, "Provisioning");
        world.pods_ready.insert(2, true);
        world.pods_ready.insert(3, true);
        let plan = step(&mut t, &world, 120);
        assert_eq!(plan.status.assignment.len(), 4);
        assert_eq!(ready_reason(&plan.status).1, "Reassigning");
    }

    #[test]
    fn a_changed_statefulset_is_not_serving_before_it_rolls_out() {
        let mut t = topic_yaml("orders", "partitions: 2\nbrokers: {replicas: 2}");
        let mut world = healthy(&t, 2);
        let plan = step(&mut t, &world, 100);
        let applied = fingerprint(&plan.children.unwrap().stateful_set).unwrap();
        world.stateful_set.as_mut().unwrap().applied_hash = Some(applied);
        assert_eq!(ready_reason(&step(&mut t, &world, 110).status), ("True".into(), "Serving".into()));
        // A new image: the live set still reports the previous spec as rolled out.
        t.spec.brokers.image = Some(weir_crds::ImageSpec { tag: Some("2.0.0".into()), ..Default::default() });
        t.metadata.generation = Some(2);
        let plan = step(&mut t, &world, 120);
        assert_eq!(ready_reason(&plan.status), ("False".into(), "Provisioning".into()));
        assert!(find_condition(&plan.status.conditions, READY).unwrap().message.contains("rollout in progress"));
    }

    #[test]
    fn the_younger_of_two_name_twins_gets_resource_conflict_and_no_children() {
        let mut older = topic_yaml("orders", "partitions: 1");
        older.metadata.creation_timestamp = Some(at(10));
        let mut younger = topic_yaml("orders-2", "topicName: orders\npartitions: 1");
        younger.metadata.creation_timestamp = Some(at(20));
        let world = ObservedTopic { peers: peers(&[&older, &younger]), ..ObservedTopic::default() };
        let plan = plan_topic(&younger, &world, &config(), &at(30)).unwrap();
        assert!(plan.children.is_none());
        assert_eq!(ready_reason(&plan.status), ("False".into(), "ResourceConflict".into()));
        assert!(find_condition(&plan.status.conditions, STALLED).is_some_and(|c| c.status == "True"));
        let plan = plan_topic(&older, &world, &config(), &at(30)).unwrap();
        assert!(plan.children.is_some());
    }

    #[test]
    fn an_invalid_spec_stalls_without_children_and_awaits_a_change() {
        let t = topic_yaml("orders", "partitions: 4\nretention: {time: 3days}");
        let plan = plan_topic(&t, &ObservedTopic::default(), &config(), &at(1)).unwrap();
        assert!(plan.children.is_none());
        assert_eq!(plan.requeue, Requeue::AwaitChange);
        assert_eq!(ready_reason(&plan.status).1, "InvalidSpec");
        assert!(find_condition(&plan.status.conditions, RECONCILING).is_some_and(|c| c.status == "False"));
        let long = topic("a".repeat(50).as_str(), TopicSpec::default());
        let plan = plan_topic(&long, &ObservedTopic::default(), &config(), &at(1)).unwrap();
        assert!(find_condition(&plan.status.conditions, READY).unwrap().message.contains("too long"));
    }

    #[test]
    fn suspend_writes_no_children() {
        let mut t = topic_yaml("orders", "partitions: 2");
        {
            let w = healthy(&t, 1);
            step(&mut t, &w, 100)
        };
        t.spec.suspend = true;
        let plan = {
            let w = healthy(&t, 1);
            step(&mut t, &w, 110)
        };
        assert!(plan.children.is_none());
        assert_eq!(ready_reason(&plan.status), ("True".into(), "Suspended".into()));
        assert_eq!(plan.status.assignment.len(), 1, "the assignment is kept");
    }

    #[test]
    fn shrink_drains_then_removes_the_highest_partitions() {
        let mut t = topic_yaml("orders", "partitions: 4\nallowPartitionShrink: true\nbrokers: {replicas: 2}");
        {
            let w = healthy(&t, 2);
            step(&mut t, &w, 100)
        };
        t.spec.partitions = 3;
        let mut world = healthy(&t, 2);
        let plan = step(&mut t, &world, 110);
        assert_eq!(ready_reason(&plan.status).1, "Draining");
        assert!(find_condition(&plan.status.conditions, READY).unwrap().message.contains("partitions 3"));
        world.backlogs.insert(1, Ok(BTreeMap::new()));
        let plan = step(&mut t, &world, 120);
        assert_eq!(ready_reason(&plan.status).1, "Serving");
        assert_eq!(plan.status.partitions.as_ref().unwrap().desired, 3);
    }

    #[test]
    fn existing_claim_templates_are_kept_and_pvcs_grow_when_expandable() {
        let mut t = topic_yaml("orders", "partitions: 1\nbrokers: {storage: {size: 20Gi, expandable: true}}");
        let mut world = healthy(&t, 1);
        world.pvcs = vec![ObservedPvc {
            name: "data-orders-broker-0".into(),
            requested: Some(Quantity("10Gi".into())),
            capacity: Some(Quantity("10Gi".into())),
        }];
        let plan = step(&mut t, &world, 100);
        let set = plan.children.unwrap().stateful_set;
        let claim = &set.spec.volume_claim_templates.unwrap()[0];
        let size = &claim.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"];
        assert_eq!(size.0, "10Gi", "claim templates are immutable");
        assert_eq!(
            plan.pvc_resizes,
            vec![PvcResize { name: "data-orders-broker-0".into(), size: Quantity("20Gi".into()) }]
        );
        let storage = plan.status.storage.unwrap();
        assert!(storage.resize_pending);
        assert_eq!(storage.min_capacity, Some(Quantity("10Gi".into())));
    }

    #[test]
    fn unreadable_assignment_entries_are_dropped_with_a_warning() {
        let mut t = topic_yaml("orders", "partitions: 2");
        t.status = Some(TopicStatus {
            assignment: vec![PartitionAssignment {
                pod: "elsewhere-0".into(),
                partitions: "0-1".into(),
                draining: "".into(),
            }],
            ..TopicStatus::default()
        });
        let plan = plan_topic(&t, &healthy(&t, 1), &config(), &at(1)).unwrap();
        assert!(plan.events.iter().any(|e| e.reason == "AssignmentRepaired" && e.warning));
        assert_eq!(plan.status.assignment[0].pod, "orders-broker-0");
    }
}
