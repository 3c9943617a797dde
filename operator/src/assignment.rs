//! The sticky partition -> pod planner behind `status.assignment`.
//!
//! A Topic's partitions are spread over its broker pods by ordinal. The plan is data, written to
//! the Topic's status, and the brokers act on it: a pod takes sends for the partitions it *owns*
//! and keeps serving the partitions it is *draining* to consumers until its backlog there is 0.
//! Moving a partition is therefore cheap (the new owner takes writes as soon as the status says
//! so), but every move leaves a drain behind, so the planner moves as little as it can.
//!
//! ```text
//!   before (3 pods, 8 partitions)      scale to 4 pods                  after the drain
//!   pod0: 0 1 2                        pod0: 0 1     draining: 2        pod0: 0 1
//!   pod1: 3 4 5                        pod1: 3 4     draining: 5        pod1: 3 4
//!   pod2: 6 7                          pod2: 6 7                        pod2: 6 7
//!                                      pod3: 2 5                        pod3: 2 5
//! ```
//!
//! Rules, in the order they are applied (each one is checked by a property test):
//!
//! 1. **Exactly one owner.** Every partition below `partitions` is owned by exactly one of the
//!    target pods. A corrupt previous status that lists a partition under two owners keeps the
//!    lowest ordinal as owner; the others drain it.
//! 2. **Balanced within one.** Target pods own `partitions / pods` or one more.
//! 3. **Minimal moves.** A partition moves only if its owner is no longer a target pod or owns
//!    more than its quota. The "one more" quotas go to the pods that already hold the most, so
//!    the number of moved partitions is the least any balanced placement allows.
//! 4. **Mid-drain partitions stay put.** A pod over quota sheds partitions that are not being
//!    drained anywhere first (then the highest ids), so a recently moved partition does not move
//!    again and end up spread over three pods.
//! 5. **Owned and draining never overlap on one pod.** A pod is not given a partition it is still
//!    draining while the pool has another partition for it; if that is unavoidable, the drain
//!    entry is dropped, because an owner serves everything it holds for its partitions anyway.
//! 6. **Fill in order.** Partitions without an owner (new ones, and those shed above) go, in
//!    ascending id order, to the pods below quota, lowest ordinal first. New pods hold nothing, so
//!    a scale-up with new partitions fills the new pods first, and ranges stay contiguous.
//! 7. **Shrink drains first.** Partitions at or above `partitions` (an allowed shrink removes the
//!    highest ids) lose their owner and are drained on it; they are gone once drained.
//! 8. **Drains end on evidence only.** A drain entry is dropped only when the caller reports that
//!    pod's backlog of that partition as 0 (`drained`).
//! 9. **Deterministic.** Only ordered collections; the same input gives the same plan.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;
use weir_crds::{PartitionAssignment, format_partition_ranges, naming, parse_partition_ranges};

/// What one pod owns and drains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPartitions {
    /// Partitions the pod takes sends for.
    pub owned: BTreeSet<u32>,
    /// Partitions the pod no longer owns but still serves to consumers until drained.
    pub draining: BTreeSet<u32>,
}

impl PodPartitions {
    fn is_empty(&self) -> bool {
        self.owned.is_empty() && self.draining.is_empty()
    }
}

/// A placement: pod ordinal -> partitions. Pods with nothing are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Per pod ordinal.
    pub pods: BTreeMap<u32, PodPartitions>,
}

/// A `status.assignment` entry that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AssignmentError {
    /// The pod name is not `<set>-<ordinal>` of this Topic's StatefulSet.
    #[error("status.assignment: pod {pod:?} is not a pod of StatefulSet {set:?}")]
    ForeignPod {
        /// The name found.
        pod: String,
        /// The expected StatefulSet.
        set: String,
    },
    /// The partition list does not parse.
    #[error("status.assignment of pod {pod:?}: {source}")]
    Ranges {
        /// The pod whose entry is broken.
        pod: String,
        /// The parse error.
        #[source]
        source: weir_crds::PartitionRangesError,
    },
}

impl Assignment {
    /// Reads `status.assignment` of the Topic object `topic` (its metadata.name). Entries of the
    /// same pod listed twice are merged.
    pub fn from_status(topic: &str, entries: &[PartitionAssignment]) -> Result<Self, AssignmentError> {
        let set = naming::broker_set(topic);
        let mut out = Assignment::default();
        for entry in entries {
            let ordinal = match naming::split_pod_name(&entry.pod) {
                Some((s, ordinal)) if s == set => ordinal,
                _ => return Err(AssignmentError::ForeignPod { pod: entry.pod.clone(), set }),
            };
            let parse = |value: &str| {
                parse_partition_ranges(value)
                    .map_err(|source| AssignmentError::Ranges { pod: entry.pod.clone(), source })
            };
            let pod = out.pods.entry(ordinal).or_default();
            pod.owned.extend(parse(&entry.partitions)?);
            pod.draining.extend(parse(&entry.draining)?);
        }
        Ok(out)
    }

    /// The `status.assignment` entries, one per pod that owns or drains something, by ordinal.
    pub fn to_status(&self, topic: &str) -> Vec<PartitionAssignment> {
        self.pods
            .iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(ordinal, p)| PartitionAssignment {
                pod: naming::pod_name(topic, *ordinal),
                partitions: format_partition_ranges(p.owned.iter().copied()),
                draining: format_partition_ranges(p.draining.iter().copied()),
            })
            .collect()
    }

    /// The owner of a partition (the lowest ordinal if a corrupt status lists several).
    pub fn owner_of(&self, partition: u32) -> Option<u32> {
        self.pods.iter().find(|(_, p)| p.owned.contains(&partition)).map(|(o, _)| *o)
    }

    /// Every (pod, partition) drain entry.
    pub fn drain_entries(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.pods.iter().flat_map(|(o, p)| p.draining.iter().map(move |part| (*o, *part)))
    }

    /// Number of drain entries.
    pub fn draining_count(&self) -> usize {
        self.pods.values().map(|p| p.draining.len()).sum()
    }

    /// Pods that own or drain anything.
    pub fn busy_pods(&self) -> BTreeSet<u32> {
        self.pods.iter().filter(|(_, p)| !p.is_empty()).map(|(o, _)| *o).collect()
    }

    /// Pods that own at least one partition.
    pub fn owning_pods(&self) -> BTreeSet<u32> {
        self.pods.iter().filter(|(_, p)| !p.owned.is_empty()).map(|(o, _)| *o).collect()
    }

    fn pod(&mut self, ordinal: u32) -> &mut PodPartitions {
        self.pods.entry(ordinal).or_default()
    }

    fn prune(&mut self) {
        self.pods.retain(|_, p| !p.is_empty());
    }
}

/// One change of owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Move {
    /// The partition.
    pub partition: u32,
    /// Previous owner; `None` for a partition that had none (new, or a corrupt status).
    pub from: Option<u32>,
    /// New owner.
    pub to: u32,
}

/// The planner's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssignmentPlan {
    /// The next placement.
    pub assignment: Assignment,
    /// Owner changes, by partition.
    pub moves: Vec<Move>,
    /// Partitions at or above the partition count that are still being drained somewhere.
    pub removing: BTreeSet<u32>,
    /// Drain entries that ended in this plan (reported drained).
    pub finished_drains: Vec<(u32, u32)>,
    /// Drain entries that started in this plan (moves away from an owner, and shrinks).
    pub started_drains: usize,
}

/// Plans the placement of `partitions` partitions over the target `pods` (ordinals), starting
/// from `previous`. `drained` holds the (pod, partition) drain entries whose backlog was observed
/// to be 0; only those drains end. See the module documentation for the rules.
pub fn plan_assignment(
    previous: &Assignment,
    partitions: u32,
    pods: &BTreeSet<u32>,
    drained: &BTreeSet<(u32, u32)>,
) -> AssignmentPlan {
    let mut next = Assignment::default();
    let mut finished_drains = Vec::new();
    let mut started_drains = 0;

    // Rule 1: one owner per partition in the previous placement (lowest ordinal wins).
    let mut owner: BTreeMap<u32, u32> = BTreeMap::new();
    for (ordinal, pod) in &previous.pods {
        for &p in &pod.owned {
            match owner.entry(p) {
                std::collections::btree_map::Entry::Occupied(_) => {
                    next.pod(*ordinal).draining.insert(p);
                }
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(*ordinal);
                }
            }
        }
    }
    // Rule 8: carry over the drains that did not finish; a drain of a partition the pod owns again
    // is redundant (rule 5).
    for (ordinal, p) in previous.drain_entries() {
        if drained.contains(&(ordinal, p)) {
            finished_drains.push((ordinal, p));
        } else if owner.get(&p) != Some(&ordinal) {
            next.pod(ordinal).draining.insert(p);
        }
    }

    // Rule 7 and departing pods: release what must leave its owner; keep the rest.
    let mut kept: BTreeMap<u32, BTreeSet<u32>> = pods.iter().map(|o| (*o, BTreeSet::new())).collect();
    for (&p, &o) in &owner {
        match kept.get_mut(&o) {
            Some(set) if p < partitions => {
                set.insert(p);
            }
            _ => {
                next.pod(o).draining.insert(p);
                started_drains += 1;
            }
        }
    }

    let quota = quotas(partitions, &kept);
    let mid_drain: BTreeSet<u32> = next.drain_entries().map(|(_, p)| p).collect();

    // Rules 3 and 4: pods above quota shed partitions that are not mid-drain first, highest first.
    let placed: BTreeSet<u32> = kept.values().flatten().copied().collect();
    let mut pool: BTreeSet<u32> = (0..partitions).filter(|p| !placed.contains(p)).collect();
    for (o, set) in kept.iter_mut() {
        let excess = set.len().saturating_sub(quota[o]);
        let mut order: Vec<u32> = set.iter().rev().copied().collect();
        order.sort_by_key(|p| mid_drain.contains(p)); // stable: not mid-drain (false) first
        for p in order.into_iter().take(excess) {
            set.remove(&p);
            pool.insert(p);
            next.pod(*o).draining.insert(p);
            started_drains += 1;
        }
    }

    // Rules 5 and 6: fill pods below quota in ordinal order from the pool, ascending.
    let mut moves = Vec::new();
    for (o, set) in kept.iter_mut() {
        while set.len() < quota[o] {
            let draining_here = &next.pods.get(o).map(|p| p.draining.clone()).unwrap_or_default();
            let Some(p) = pool.iter().find(|p| !draining_here.contains(p)).or_else(|| pool.first()).copied() else {
                break;
            };
            pool.remove(&p);
            next.pod(*o).draining.remove(&p);
            set.insert(p);
            moves.push(Move { partition: p, from: owner.get(&p).copied(), to: *o });
        }
    }
    for (o, set) in kept {
        next.pod(o).owned.extend(set);
    }

    next.prune();
    moves.sort();
    let removing = next.drain_entries().map(|(_, p)| p).filter(|p| *p >= partitions).collect();
    AssignmentPlan { assignment: next, moves, removing, finished_drains, started_drains }
}

/// Per target pod, how many partitions it owns in a balanced placement: `partitions / pods`, plus
/// one for the `partitions % pods` pods that already hold the most (ties: lowest ordinal).
fn quotas(partitions: u32, kept: &BTreeMap<u32, BTreeSet<u32>>) -> BTreeMap<u32, usize> {
    let n = kept.len();
    if n == 0 {
        return BTreeMap::new();
    }
    let (base, extra) = (partitions as usize / n, partitions as usize % n);
    let mut by_load: Vec<(u32, usize)> = kept.iter().map(|(o, s)| (*o, s.len())).collect();
    by_load.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_load.iter().enumerate().map(|(i, (o, _))| (*o, base + usize::from(i < extra))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pods(range: std::ops::Range<u32>) -> BTreeSet<u32> {
        range.collect()
    }

    fn owned(a: &Assignment, ordinal: u32) -> Vec<u32> {
        a.pods.get(&ordinal).map(|p| p.owned.iter().copied().collect()).unwrap_or_default()
    }

    fn draining(a: &Assignment, ordinal: u32) -> Vec<u32> {
        a.pods.get(&ordinal).map(|p| p.draining.iter().copied().collect()).unwrap_or_default()
    }

    fn fresh(partitions: u32, replicas: u32) -> Assignment {
        plan_assignment(&Assignment::default(), partitions, &pods(0..replicas), &BTreeSet::new()).assignment
    }

    #[test]
    fn fresh_topic_gets_contiguous_balanced_ranges() {
        let a = fresh(8, 3);
        assert_eq!(owned(&a, 0), vec![0, 1, 2]);
        assert_eq!(owned(&a, 1), vec![3, 4, 5]);
        assert_eq!(owned(&a, 2), vec![6, 7]);
        let status = a.to_status("orders");
        assert_eq!(status[0].pod, "orders-broker-0");
        assert_eq!(status[0].partitions, "0-2");
        assert_eq!(status[2].draining, "");
        assert_eq!(Assignment::from_status("orders", &status).unwrap(), a);
    }

    #[test]
    fn scale_up_with_new_partitions_fills_the_new_pods_first() {
        let before = fresh(4, 2);
        let plan = plan_assignment(&before, 8, &pods(0..4), &BTreeSet::new());
        assert_eq!(owned(&plan.assignment, 0), vec![0, 1]);
        assert_eq!(owned(&plan.assignment, 1), vec![2, 3]);
        assert_eq!(owned(&plan.assignment, 2), vec![4, 5]);
        assert_eq!(owned(&plan.assignment, 3), vec![6, 7]);
        assert!(plan.moves.iter().all(|m| m.from.is_none()), "only new partitions are placed: {:?}", plan.moves);
        assert_eq!(plan.started_drains, 0);
    }

    #[test]
    fn scale_up_moves_the_highest_ids_and_leaves_drains() {
        let before = fresh(8, 3);
        let plan = plan_assignment(&before, 8, &pods(0..4), &BTreeSet::new());
        assert_eq!(owned(&plan.assignment, 0), vec![0, 1]);
        assert_eq!(draining(&plan.assignment, 0), vec![2]);
        assert_eq!(owned(&plan.assignment, 1), vec![3, 4]);
        assert_eq!(draining(&plan.assignment, 1), vec![5]);
        assert_eq!(owned(&plan.assignment, 2), vec![6, 7]);
        assert_eq!(owned(&plan.assignment, 3), vec![2, 5]);
        assert_eq!(plan.moves.len(), 2);
        let done: BTreeSet<(u32, u32)> = [(0, 2), (1, 5)].into();
        let after = plan_assignment(&plan.assignment, 8, &pods(0..4), &done);
        assert_eq!(after.assignment.draining_count(), 0);
        assert!(after.moves.is_empty());
        assert_eq!(after.finished_drains, vec![(0, 2), (1, 5)]);
    }

    #[test]
    fn scale_down_drains_the_departing_pod() {
        let before = fresh(8, 3);
        let plan = plan_assignment(&before, 8, &pods(0..2), &BTreeSet::new());
        assert!(owned(&plan.assignment, 2).is_empty());
        assert_eq!(draining(&plan.assignment, 2), vec![6, 7]);
        assert_eq!(owned(&plan.assignment, 0), vec![0, 1, 2, 6]);
        assert_eq!(owned(&plan.assignment, 1), vec![3, 4, 5, 7]);
        // Until pod 2 reports the drain, it keeps draining (and the set keeps 3 pods).
        let again = plan_assignment(&plan.assignment, 8, &pods(0..2), &BTreeSet::new());
        assert_eq!(again.assignment, plan.assignment);
        assert!(again.moves.is_empty());
    }

    #[test]
    fn shrink_drains_the_highest_partitions() {
        let before = fresh(8, 2);
        let plan = plan_assignment(&before, 6, &pods(0..2), &BTreeSet::new());
        assert_eq!(plan.removing, [6, 7].into());
        assert_eq!(draining(&plan.assignment, 1), vec![6, 7]);
        assert_eq!(owned(&plan.assignment, 0), vec![0, 1, 2]);
        assert_eq!(owned(&plan.assignment, 1), vec![3, 4, 5]);
        // Rebalancing 6 partitions over 2 pods moved partition 3 as well.
        assert_eq!(draining(&plan.assignment, 0), vec![3]);
        let done = plan_assignment(&plan.assignment, 6, &pods(0..2), &[(0, 3), (1, 6), (1, 7)].into());
        assert!(done.removing.is_empty());
        assert_eq!(done.assignment.draining_count(), 0);
    }

    #[test]
    fn a_partition_drained_elsewhere_does_not_return_to_its_draining_pod_if_avoidable() {
        // Pod 2 left (draining 6, 7) and comes back before the drain finished.
        let before = fresh(8, 3);
        let down = plan_assignment(&before, 8, &pods(0..2), &BTreeSet::new()).assignment;
        let up = plan_assignment(&down, 8, &pods(0..3), &BTreeSet::new());
        let pod2 = up.assignment.pods.get(&2).cloned().unwrap_or_default();
        assert!(pod2.owned.is_disjoint(&pod2.draining), "{pod2:?}");
        assert_eq!(pod2.owned.len(), 2);
    }

    #[test]
    fn from_status_rejects_foreign_pods_and_bad_ranges() {
        let foreign =
            [PartitionAssignment { pod: "other-broker-0".into(), partitions: "0".into(), draining: "".into() }];
        assert!(matches!(Assignment::from_status("orders", &foreign), Err(AssignmentError::ForeignPod { .. })));
        let bad = [PartitionAssignment { pod: "orders-broker-0".into(), partitions: "x".into(), draining: "".into() }];
        assert!(matches!(Assignment::from_status("orders", &bad), Err(AssignmentError::Ranges { .. })));
    }

    // ---- properties -------------------------------------------------------------------------

    /// An arbitrary, possibly inconsistent previous placement (duplicate owners, overlaps, pods
    /// and partitions beyond the current counts).
    fn arb_assignment() -> impl Strategy<Value = Assignment> {
        prop::collection::btree_map(
            0u32..10,
            (prop::collection::btree_set(0u32..40, 0..12), prop::collection::btree_set(0u32..40, 0..4)),
            0..10,
        )
        .prop_map(|m| Assignment {
            pods: m.into_iter().map(|(o, (owned, draining))| (o, PodPartitions { owned, draining })).collect(),
        })
    }

    /// A consistent placement as the planner produces it, from a random history.
    fn arb_history() -> impl Strategy<Value = Assignment> {
        prop::collection::vec((1u32..40, 1u32..10, prop::bool::ANY), 1..5).prop_map(|steps| {
            let mut a = Assignment::default();
            for (partitions, replicas, finish) in steps {
                let drained = if finish { a.drain_entries().collect() } else { BTreeSet::new() };
                a = plan_assignment(&a, partitions, &pods(0..replicas), &drained).assignment;
            }
            a
        })
    }

    fn arb_drained(a: &Assignment) -> impl Strategy<Value = BTreeSet<(u32, u32)>> + use<> {
        let entries: Vec<(u32, u32)> = a.drain_entries().collect();
        prop::sample::subsequence(entries.clone(), 0..=entries.len()).prop_map(|v| v.into_iter().collect())
    }

    fn arb_case() -> impl Strategy<Value = (Assignment, u32, BTreeSet<u32>, BTreeSet<(u32, u32)>)> {
        (prop_oneof![arb_assignment(), arb_history()], 0u32..40, prop::collection::btree_set(0u32..12, 1..8))
            .prop_flat_map(|(a, p, pods)| {
                let drained = arb_drained(&a);
                (Just(a), Just(p), Just(pods), drained)
            })
    }

    /// The fewest moves of already-placed partitions any balanced placement needs.
    fn lower_bound(previous: &Assignment, partitions: u32, pods: &BTreeSet<u32>) -> usize {
        let mut seen = BTreeSet::new();
        let mut counts: Vec<usize> = pods
            .iter()
            .map(|o| {
                previous
                    .pods
                    .get(o)
                    .map(|p| p.owned.iter().filter(|x| **x < partitions && previous.owner_of(**x) == Some(*o)))
                    .into_iter()
                    .flatten()
                    .filter(|x| seen.insert(**x))
                    .count()
            })
            .collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let n = pods.len();
        let (base, extra) = (partitions as usize / n, partitions as usize % n);
        counts.iter().enumerate().map(|(i, c)| c.saturating_sub(base + usize::from(i < extra))).sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn every_partition_has_exactly_one_owner_among_the_target_pods(
            (prev, partitions, targets, drained) in arb_case()
        ) {
            let plan = plan_assignment(&prev, partitions, &targets, &drained);
            for p in 0..partitions {
                let owners: Vec<u32> = plan.assignment.pods.iter()
                    .filter(|(_, x)| x.owned.contains(&p)).map(|(o, _)| *o).collect();
                prop_assert_eq!(owners.len(), 1, "partition {} owners {:?}", p, owners);
                prop_assert!(targets.contains(&owners[0]));
            }
            for pod in plan.assignment.pods.values() {
                prop_assert!(pod.owned.iter().all(|p| *p < partitions));
            }
        }

        #[test]
        fn owners_are_balanced_within_one((prev, partitions, targets, drained) in arb_case()) {
            let plan = plan_assignment(&prev, partitions, &targets, &drained);
            let counts: Vec<usize> = targets.iter()
                .map(|o| plan.assignment.pods.get(o).map_or(0, |p| p.owned.len())).collect();
            let (min, max) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
            prop_assert!(max - min <= 1, "counts {:?}", counts);
        }

        #[test]
        fn moves_are_minimal((prev, partitions, targets, drained) in arb_case()) {
            let plan = plan_assignment(&prev, partitions, &targets, &drained);
            let moved_stayers = plan.moves.iter()
                .filter(|m| m.from.is_some_and(|f| targets.contains(&f))).count();
            prop_assert_eq!(moved_stayers, lower_bound(&prev, partitions, &targets));
            // Nothing moves that did not have to: a partition whose owner stays and keeps its
            // quota stays; no pod both gives and receives already-placed partitions.
            for m in &plan.moves {
                if let Some(from) = m.from {
                    prop_assert_ne!(from, m.to);
                    let gained_placed = plan.moves.iter().any(|n| n.to == from && n.from.is_some());
                    prop_assert!(!gained_placed, "pod {} gives and takes: {:?}", from, plan.moves);
                }
            }
            // Every move is recorded against the real previous owner.
            for m in &plan.moves {
                prop_assert_eq!(m.from, prev.owner_of(m.partition));
            }
        }

        #[test]
        fn a_departing_owner_leaves_a_drain_behind((prev, partitions, targets, drained) in arb_case()) {
            let plan = plan_assignment(&prev, partitions, &targets, &drained);
            for m in &plan.moves {
                if let Some(from) = m.from {
                    prop_assert!(plan.assignment.pods[&from].draining.contains(&m.partition));
                }
            }
            for p in &plan.removing {
                prop_assert!(*p >= partitions);
            }
        }

        #[test]
        fn owned_and_draining_never_overlap_on_a_pod((prev, partitions, targets, drained) in arb_case()) {
            let plan = plan_assignment(&prev, partitions, &targets, &drained);
            for (o, pod) in &plan.assignment.pods {
                prop_assert!(pod.owned.is_disjoint(&pod.draining), "pod {}: {:?}", o, pod);
            }
        }

        #[test]
        fn drains_end_only_when_reported((prev, partitions, targets, drained) in arb_case()) {
            let plan = plan_assignment(&prev, partitions, &targets, &drained);
            for (o, p) in prev.drain_entries() {
                let still = plan.assignment.pods.get(&o).is_some_and(|x| x.draining.contains(&p) || x.owned.contains(&p));
                prop_assert!(still || drained.contains(&(o, p)), "drain ({}, {}) vanished", o, p);
            }
            for (o, p) in &plan.finished_drains {
                prop_assert!(drained.contains(&(*o, *p)));
            }
        }

        #[test]
        fn planning_is_deterministic_and_idempotent((prev, partitions, targets, drained) in arb_case()) {
            let a = plan_assignment(&prev, partitions, &targets, &drained);
            let b = plan_assignment(&prev, partitions, &targets, &drained);
            prop_assert_eq!(&a, &b);
            let again = plan_assignment(&a.assignment, partitions, &targets, &BTreeSet::new());
            prop_assert!(again.moves.is_empty(), "a stable placement moves nothing: {:?}", again.moves);
            prop_assert_eq!(again.assignment, a.assignment);
        }

        #[test]
        fn a_consistent_placement_is_not_disturbed_by_partition_growth(
            prev in arb_history(), grow in 0u32..16, replicas in 1u32..10
        ) {
            let current = (0..).take_while(|p| prev.owner_of(*p).is_some()).count() as u32;
            let targets = pods(0..replicas);
            let settled = plan_assignment(&prev, current, &targets, &BTreeSet::new()).assignment;
            let plan = plan_assignment(&settled, current + grow, &targets, &BTreeSet::new());
            let moved_existing = plan.moves.iter().filter(|m| m.partition < current).count();
            prop_assert_eq!(moved_existing, lower_bound(&settled, current + grow, &targets));
        }

        #[test]
        fn status_round_trips(prev in arb_history()) {
            let status = prev.to_status("t");
            prop_assert_eq!(Assignment::from_status("t", &status).unwrap(), prev);
        }
    }
}
