//! Consumption progress of one consumer group on one partition (the pop model of RocketMQ 5).
//!
//! ```text
//!  queue offsets:  0 ......... watermark ........ cursor ............. end of partition
//!                  [ all done ][ done set + leases ][ never handed out ]
//! ```
//!
//! - below `watermark` every message is done (acknowledged, filtered out or dead-lettered);
//! - between `watermark` and `cursor` a message is either done (in `done`) or leased to a consumer
//!   (in `leases`, invisible until its deadline);
//! - from `cursor` on, messages were never handed out.
//!
//! FIFO groups add one rule: at most one leased message per message group. A message whose group is
//! busy (leased, or an earlier message of it still waiting) is passed by the cursor and parked in
//! `deferred`, to be handed out in offset order once its group is free.
//!
//! Only `watermark` and `done` are durable (acks are logged); leases live in memory, so after a
//! restart the cursor falls back to the watermark and unacknowledged messages are delivered again.
//! This type does no I/O and holds no clock: callers pass `now`, which keeps it easy to test.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use foldhash::fast::RandomState;

/// A message handed to a consumer and not yet done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// When it becomes visible again.
    pub deadline: Instant,
    /// Delivery attempt this lease belongs to (1 for the first delivery).
    pub attempt: u32,
    /// Identifies this lease; a receipt handle carries it, and a newer lease invalidates older handles.
    pub generation: u64,
    /// Client it was delivered to.
    pub client: Arc<str>,
    /// The client asked the broker to keep extending the lease while it is alive (push consumers).
    pub auto_renew: bool,
    /// FIFO message group (index hash) the lease blocks; 0 when the delivery is not ordered.
    pub group_hash: u32,
}

/// Why a receipt handle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseError {
    /// The message is not leased (never delivered, or done through another handle).
    NotLeased,
    /// A newer delivery or invisibility change replaced the handle.
    Superseded,
}

/// A lease, and whether its acknowledgement is being made durable (held: out of expiry, not in
/// `expiries`, so an ack the broker accepted cannot race a redelivery of the same message). A flag
/// beside the lease instead of a set of held offsets: one map lookup per ack instead of a tree
/// insertion and removal.
#[derive(Debug, Clone)]
struct Leased {
    lease: Lease,
    held: bool,
}

/// Progress of one (group, topic, partition).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    watermark: u64,
    done: BTreeSet<u64>,
    cursor: u64,
    /// Looked up once or twice per delivered and per acknowledged message: a fast hasher (the keys
    /// are offsets, not attacker-chosen).
    leases: HashMap<u64, Leased, RandomState>,
    expiries: BTreeSet<(Instant, u64)>,
    /// FIFO: message group -> its leased offset.
    leased_groups: HashMap<u32, u64, RandomState>,
    /// FIFO: offsets passed by the cursor because their group was busy -> their group.
    deferred: BTreeMap<u64, u32>,
    /// FIFO: deferred offsets per group.
    deferred_groups: HashMap<u32, usize, RandomState>,
    /// Done offsets handed back to the group (a dead-letter resend): delivered again.
    revived: BTreeSet<u64>,
}

impl Progress {
    /// Progress that starts consuming at `offset`.
    pub fn starting_at(offset: u64) -> Self {
        Self { watermark: offset, cursor: offset, ..Default::default() }
    }

    /// Restores the durable part.
    pub fn restored(
        watermark: u64,
        done: impl IntoIterator<Item = u64>,
        revived: impl IntoIterator<Item = u64>,
    ) -> Self {
        let mut p = Self::starting_at(watermark);
        for o in done {
            p.mark_done(o);
        }
        p.revived.extend(revived);
        p
    }

    /// Done offsets handed back for another delivery.
    pub fn revived(&self) -> impl Iterator<Item = u64> + '_ {
        self.revived.iter().copied()
    }

    /// Hands a done message back to the group (resend from the dead-letter queue).
    pub fn revive(&mut self, offset: u64) {
        if self.is_done(offset) {
            self.revived.insert(offset);
        }
    }

    /// Revived offsets not leased right now, oldest first.
    pub fn revived_ready(&self, max: usize) -> Vec<u64> {
        self.revived.iter().filter(|o| !self.leases.contains_key(o)).take(max).copied().collect()
    }

    /// Every offset below this is done.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Done offsets at or above the watermark (sorted).
    pub fn done_above_watermark(&self) -> impl Iterator<Item = u64> + '_ {
        self.done.iter().copied()
    }

    /// Next offset never handed out.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Messages currently leased.
    pub fn leased(&self) -> usize {
        self.leases.len()
    }

    /// True when `offset` needs no more delivery.
    pub fn is_done(&self, offset: u64) -> bool {
        (offset < self.watermark || self.done.contains(&offset)) && !self.revived.contains(&offset)
    }

    /// Messages in `[watermark, end)` not yet done: the consumer lag.
    pub fn lag(&self, end: u64) -> u64 {
        end.saturating_sub(self.watermark).saturating_sub(self.done.range(..end).count() as u64)
            + self.revived.len() as u64
    }

    /// Messages passed over because their FIFO group was busy.
    pub fn deferred(&self) -> usize {
        self.deferred.len()
    }

    /// FIFO: whether a message of group `g` must wait (a message of the group is leased, or an
    /// earlier one is still deferred). Group 0 (no message group) never waits.
    pub fn group_busy(&self, g: u32) -> bool {
        g != 0 && (self.leased_groups.contains_key(&g) || self.deferred_groups.contains_key(&g))
    }

    /// FIFO: parks `offset` of group `g` until the group is free.
    pub fn defer(&mut self, offset: u64, g: u32) {
        if self.deferred.insert(offset, g).is_none() {
            *self.deferred_groups.entry(g).or_default() += 1;
        }
    }

    fn undefer(&mut self, offset: u64) {
        if let Some(g) = self.deferred.remove(&offset)
            && let Some(n) = self.deferred_groups.get_mut(&g)
        {
            *n -= 1;
            if *n == 0 {
                self.deferred_groups.remove(&g);
            }
        }
    }

    /// FIFO: deferred offsets whose group is free, the first of each group, in offset order.
    pub fn deferred_ready(&self, max: usize) -> Vec<u64> {
        let mut seen = std::collections::HashSet::new();
        self.deferred
            .iter()
            .filter(|(_, g)| !self.leased_groups.contains_key(g) && seen.insert(**g))
            .map(|(o, _)| *o)
            .take(max)
            .collect()
    }

    /// Moves the start up to `offset` (retention deleted what came before, or an offset reset).
    pub fn skip_to(&mut self, offset: u64) {
        if offset > self.watermark {
            self.watermark = offset;
            self.done = self.done.split_off(&offset);
            let gone: Vec<u64> = self.leases.keys().copied().filter(|o| *o < offset).collect();
            for o in gone {
                self.drop_lease(o);
            }
            let parked: Vec<u64> = self.deferred.range(..offset).map(|(o, _)| *o).collect();
            for o in parked {
                self.undefer(o);
            }
            self.advance_watermark();
        }
        self.cursor = self.cursor.max(self.watermark);
    }

    /// Marks `offset` done (acknowledged, filtered out or dead-lettered); drops its lease.
    /// Returns false if it already was.
    pub fn mark_done(&mut self, offset: u64) -> bool {
        self.drop_lease(offset);
        self.undefer(offset);
        if self.revived.remove(&offset) {
            return true;
        }
        if self.is_done(offset) {
            return false;
        }
        if offset == self.watermark {
            // Acknowledged in order, the usual case: no trip through `done`.
            self.watermark += 1;
            self.advance_watermark();
        } else {
            self.done.insert(offset);
        }
        self.cursor = self.cursor.max(self.watermark);
        true
    }

    fn advance_watermark(&mut self) {
        while self.done.first() == Some(&self.watermark) {
            self.done.pop_first();
            self.watermark += 1;
        }
    }

    fn drop_lease(&mut self, offset: u64) -> Option<Lease> {
        let Leased { lease, held } = self.leases.remove(&offset)?;
        if !held {
            self.expiries.remove(&(lease.deadline, offset));
        }
        if lease.group_hash != 0 && self.leased_groups.get(&lease.group_hash) == Some(&offset) {
            self.leased_groups.remove(&lease.group_hash);
        }
        Some(lease)
    }

    /// Hands out the next offset from the cursor, if below `end`; the caller decides to lease it or
    /// mark it done (filtered out).
    pub fn next_new(&mut self, end: u64) -> Option<u64> {
        while self.cursor < end {
            let offset = self.cursor;
            self.cursor += 1;
            if !self.is_done(offset) && !self.leases.contains_key(&offset) {
                return Some(offset);
            }
        }
        None
    }

    /// Leases `offset` (a new delivery or a redelivery).
    pub fn lease(&mut self, offset: u64, lease: Lease) {
        self.drop_lease(offset);
        self.undefer(offset);
        self.expiries.insert((lease.deadline, offset));
        if lease.group_hash != 0 {
            self.leased_groups.insert(lease.group_hash, offset);
        }
        self.leases.insert(offset, Leased { lease, held: false });
    }

    /// Offsets whose lease expired at `now`, oldest deadline first, at most `max`. Their leases stay
    /// until the caller re-leases them (with `attempt + 1`) or renews them.
    pub fn expired(&self, now: Instant, max: usize) -> Vec<(u64, Lease)> {
        self.expiries
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(max)
            .map(|(_, offset)| (*offset, self.leases[offset].lease.clone()))
            .collect()
    }

    /// The earliest lease deadline, for waking up a long poll when something becomes visible again.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.expiries.first().map(|(d, _)| *d)
    }

    /// The lease a receipt handle refers to, if the handle is still the current one.
    pub fn check(&self, offset: u64, generation: u64) -> Result<&Lease, LeaseError> {
        current(self.leases.get(&offset), generation).map(|l| &l.lease)
    }

    /// Holds the lease `generation` refers to while its ack is written: it no longer expires, so the
    /// message is not delivered again between the broker accepting the ack and applying it (when
    /// the ack becomes durable the offset is marked done, which drops the lease).
    pub fn hold(&mut self, offset: u64, generation: u64) -> Result<(), LeaseError> {
        let leased = current(self.leases.get_mut(&offset), generation)?;
        if !std::mem::replace(&mut leased.held, true) {
            let deadline = leased.lease.deadline;
            self.expiries.remove(&(deadline, offset));
        }
        Ok(())
    }

    /// The ack of a held lease failed: the lease expires as it would have (at once if it is due).
    pub fn unhold(&mut self, offset: u64, generation: u64) {
        if let Ok(leased) = current(self.leases.get_mut(&offset), generation)
            && std::mem::replace(&mut leased.held, false)
        {
            let deadline = leased.lease.deadline;
            self.expiries.insert((deadline, offset));
        }
    }

    /// Changes the deadline of the lease `generation` refers to and gives it a new generation. The
    /// client now decides when the message comes back (a push consumer's nack), so the broker stops
    /// renewing it automatically.
    pub fn renew(
        &mut self,
        offset: u64,
        generation: u64,
        deadline: Instant,
        new_generation: u64,
    ) -> Result<Lease, LeaseError> {
        let mut lease = self.check(offset, generation)?.clone();
        lease.deadline = deadline;
        lease.generation = new_generation;
        lease.auto_renew = false;
        self.lease(offset, lease.clone());
        Ok(lease)
    }

    /// Releases every lease of `client` so the messages are redelivered at once (the client left).
    pub fn release_client(&mut self, client: &str, now: Instant) -> usize {
        let theirs: Vec<(u64, Lease)> = self
            .leases
            .iter()
            .filter(|(_, l)| &*l.lease.client == client && !l.held)
            .map(|(o, l)| (*o, l.lease.clone()))
            .collect();
        for (offset, mut lease) in theirs.iter().cloned() {
            lease.deadline = now;
            lease.auto_renew = false;
            self.lease(offset, lease);
        }
        theirs.len()
    }
}

/// The entry `found` for a receipt handle of `generation`, if that handle is still the current one.
fn current<L: std::borrow::Borrow<Leased>>(found: Option<L>, generation: u64) -> Result<L, LeaseError> {
    match found {
        Some(l) if l.borrow().lease.generation == generation => Ok(l),
        Some(_) => Err(LeaseError::Superseded),
        None => Err(LeaseError::NotLeased),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn lease(now: Instant, secs: u64, generation: u64) -> Lease {
        Lease {
            deadline: now + Duration::from_secs(secs),
            attempt: 1,
            generation,
            client: Arc::from("c1"),
            auto_renew: false,
            group_hash: 0,
        }
    }

    #[test]
    fn lease_ack_and_watermark() {
        let now = Instant::now();
        let mut p = Progress::starting_at(0);
        for g in 0..3 {
            let o = p.next_new(10).unwrap();
            p.lease(o, lease(now, 10, g));
        }
        assert_eq!((p.cursor(), p.leased(), p.lag(10)), (3, 3, 10));
        assert!(p.mark_done(1));
        assert_eq!(p.watermark(), 0);
        assert!(p.mark_done(0));
        assert_eq!(p.watermark(), 2);
        assert!(!p.mark_done(0));
        assert_eq!(p.lag(10), 8);
        assert_eq!(p.check(2, 2).map(|l| l.attempt), Ok(1));
        assert_eq!(p.check(2, 9), Err(LeaseError::Superseded));
        assert_eq!(p.check(0, 0), Err(LeaseError::NotLeased));
    }

    #[test]
    fn a_held_lease_does_not_expire_until_its_ack_is_applied_or_fails() {
        let now = Instant::now();
        let later = now + Duration::from_secs(15);
        let mut p = Progress::starting_at(0);
        p.lease(0, lease(now, 10, 1));
        p.lease(1, lease(now, 10, 2));
        assert_eq!(p.hold(0, 9), Err(LeaseError::Superseded));
        p.hold(0, 1).unwrap();
        p.hold(1, 2).unwrap();
        assert!(p.expired(later, 10).is_empty(), "held leases do not expire");
        assert_eq!(p.release_client("c1", later), 0, "a client leaving does not release held leases");
        // The ack of 0 was applied; the ack of 1 failed, so 1 expires as it would have.
        assert!(p.mark_done(0));
        p.unhold(1, 2);
        assert_eq!(p.expired(later, 10).iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![1]);
        p.unhold(1, 2);
        assert_eq!(p.expired(later, 10).len(), 1, "unhold twice is harmless");
    }

    #[test]
    fn expiry_and_renewal() {
        let now = Instant::now();
        let mut p = Progress::starting_at(5);
        p.lease(5, lease(now, 10, 1));
        p.lease(6, lease(now, 20, 2));
        assert!(p.expired(now, 10).is_empty());
        assert_eq!(p.next_deadline(), Some(now + Duration::from_secs(10)));
        let later = now + Duration::from_secs(15);
        assert_eq!(p.expired(later, 10).iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![5]);
        let renewed = p.renew(5, 1, later + Duration::from_secs(30), 3).unwrap();
        assert_eq!(renewed.generation, 3);
        assert_eq!(p.renew(5, 1, later, 4), Err(LeaseError::Superseded));
        assert_eq!(p.expired(later, 10).len(), 0);
        assert_eq!(p.release_client("c1", later), 2);
        assert_eq!(p.expired(later, 10).len(), 2);
    }

    #[test]
    fn fifo_groups_wait_for_their_leased_message() {
        let now = Instant::now();
        let fifo = |g, generation| Lease { group_hash: g, ..lease(now, 10, generation) };
        let mut p = Progress::starting_at(0);
        // Offsets 0..4 belong to groups 1, 1, 2, 1.
        let groups = [1u32, 1, 2, 1];
        let mut handed = Vec::new();
        while let Some(o) = p.next_new(4) {
            let g = groups[o as usize];
            if p.group_busy(g) {
                p.defer(o, g);
            } else {
                p.lease(o, fifo(g, o));
                handed.push(o);
            }
        }
        assert_eq!(handed, vec![0, 2]);
        assert_eq!(p.deferred(), 2);
        assert!(p.deferred_ready(10).is_empty(), "group 1 is busy with offset 0");
        p.mark_done(0);
        assert_eq!(p.deferred_ready(10), vec![1], "only the next message of group 1, not offset 3");
        p.lease(1, fifo(1, 9));
        assert!(p.deferred_ready(10).is_empty());
        p.mark_done(1);
        assert_eq!(p.deferred_ready(10), vec![3]);
        assert!(p.group_busy(1), "offset 3 still waits");
        p.lease(3, fifo(1, 10));
        p.mark_done(3);
        assert!(!p.group_busy(1));
        assert_eq!(p.deferred(), 0);
    }

    /// What the lease bookkeeping relies on: every lease not held waits in `expiries` under its own
    /// deadline, and nothing else does (`expired` looks each entry up in `leases`).
    fn assert_leases_consistent(p: &Progress) {
        let expected: BTreeSet<(Instant, u64)> =
            p.leases.iter().filter(|(_, l)| !l.held).map(|(o, l)| (l.lease.deadline, *o)).collect();
        assert_eq!(p.expiries, expected);
    }

    /// One step of a consumer group's life on a partition.
    #[derive(Debug, Clone)]
    enum Step {
        Lease(u64, u64),
        Hold(u64, u64),
        Unhold(u64, u64),
        Done(u64),
        Renew(u64, u64, u64),
        ReleaseClient,
        Redeliver(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        let o = 0u64..24;
        let g = 0u64..6;
        prop_oneof![
            (o.clone(), g.clone()).prop_map(|(o, g)| Step::Lease(o, g)),
            (o.clone(), g.clone()).prop_map(|(o, g)| Step::Hold(o, g)),
            (o.clone(), g.clone()).prop_map(|(o, g)| Step::Unhold(o, g)),
            o.clone().prop_map(Step::Done),
            (o, g.clone(), 1u64..30).prop_map(|(o, g, s)| Step::Renew(o, g, s)),
            Just(Step::ReleaseClient),
            (1u64..30).prop_map(Step::Redeliver),
        ]
    }

    proptest! {
        /// Any mix of deliveries, acknowledgements being written (held), failed and applied,
        /// renewals, clients leaving and redeliveries of expired leases keeps every lease not held
        /// due exactly once, and a done offset never leased.
        #[test]
        fn leases_stay_consistent(steps in proptest::collection::vec(step(), 0..120)) {
            let now = Instant::now();
            let mut p = Progress::starting_at(0);
            for s in steps {
                match s {
                    Step::Lease(o, g) if !p.is_done(o) => p.lease(o, lease(now, g + 1, g)),
                    Step::Lease(..) => {}
                    Step::Hold(o, g) => { let _ = p.hold(o, g); }
                    Step::Unhold(o, g) => p.unhold(o, g),
                    Step::Done(o) => { p.mark_done(o); }
                    Step::Renew(o, g, secs) => { let _ = p.renew(o, g, now + Duration::from_secs(secs), g + 1); }
                    Step::ReleaseClient => { p.release_client("c1", now); }
                    Step::Redeliver(secs) => {
                        for (o, l) in p.expired(now + Duration::from_secs(secs), usize::MAX) {
                            p.lease(o, Lease { attempt: l.attempt + 1, ..lease(now, secs + 5, l.generation + 1) });
                        }
                    }
                }
                assert_leases_consistent(&p);
                prop_assert!(p.leases.keys().all(|o| !p.is_done(*o)), "a done offset has no lease");
            }
        }

        /// Whatever order offsets are acknowledged in, the watermark is the first offset not done,
        /// and lag counts exactly the offsets not done.
        #[test]
        fn watermark_is_first_not_done(acks in proptest::collection::vec(0u64..64, 0..200)) {
            let mut p = Progress::starting_at(0);
            let mut done = BTreeSet::new();
            for a in acks {
                p.mark_done(a);
                done.insert(a);
                let first_missing = (0..).find(|o| !done.contains(o)).unwrap();
                prop_assert_eq!(p.watermark(), first_missing);
                prop_assert_eq!(p.lag(64), 64 - done.len() as u64);
                prop_assert!(done.iter().all(|o| p.is_done(*o)));
            }
        }
    }
}
