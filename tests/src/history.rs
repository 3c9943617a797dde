//! A Jepsen-style history of a workload run against a broker that crashes, and its checker.
//!
//! Producers record each send as acknowledged (`Ok`) or indeterminate (the RPC failed: the message
//! may or may not be stored). Consumers record each delivery, in the order they saw them, and
//! when its ack was confirmed. The checker then counts, per consumer group:
//!
//! * `lost`: acknowledged sends the group never received (must be 0);
//! * `unexpected`: deliveries of messages nobody sent (must be 0);
//! * `recovered`: indeterminate sends that were delivered (allowed);
//! * duplicates, split into *explained* (no ack of it was confirmed before this delivery: the
//!   at-least-once contract) and *unexplained* (delivered again after a confirmed ack: must be 0).
//!   "Before" is the order the client saw: a consumer may have its ack of an old delivery
//!   confirmed after the message was redelivered to another consumer and acknowledged there (the
//!   broker answers OK to acknowledging something already done), which is no violation;
//! * `fifo_violations` (FIFO groups): a message first delivered before an earlier message of its
//!   message group (out of order), or while an earlier acknowledged one was never delivered (skip).

use std::collections::{BTreeSet, HashMap, HashSet};

use parking_lot::Mutex;

/// How a send ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The broker answered OK: the message is durable.
    Ok,
    /// The RPC failed or timed out: stored or not, nobody knows.
    Indeterminate,
}

#[derive(Clone, Debug)]
struct Sent {
    key: String,
    seq: u64,
    outcome: SendOutcome,
}

#[derive(Clone, Debug)]
struct Delivery {
    group: String,
    id: String,
    /// When its ack was confirmed: the number of deliveries recorded by then (a logical clock;
    /// deliveries at this index or later came after the confirmation).
    acked_at: Option<usize>,
}

#[derive(Default)]
struct Events {
    sends: HashMap<String, Sent>,
    deliveries: Vec<Delivery>,
}

/// The history, shared by every producer and consumer task.
#[derive(Default)]
pub struct History {
    events: Mutex<Events>,
}

/// What the checker found in one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupReport {
    /// Deliveries seen.
    pub deliveries: usize,
    /// Acknowledged sends never delivered (ids).
    pub lost: Vec<String>,
    /// Delivered ids nobody sent.
    pub unexpected: Vec<String>,
    /// Indeterminate sends that were delivered.
    pub recovered: usize,
    /// Repeated deliveries allowed by at-least-once.
    pub explained_duplicates: usize,
    /// Repeated deliveries after a confirmed ack (ids).
    pub unexplained_duplicates: Vec<String>,
    /// Order violations, described.
    pub fifo_violations: Vec<String>,
}

impl GroupReport {
    /// Whether nothing was violated.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.unexplained_duplicates.is_empty()
            && self.fifo_violations.is_empty()
    }
}

impl History {
    /// Records a send of `id` (message group `key`, the `seq`-th message of that key).
    pub fn sent(&self, id: &str, key: &str, seq: u64, outcome: SendOutcome) {
        self.events.lock().sends.insert(id.to_owned(), Sent { key: key.to_owned(), seq, outcome });
    }

    /// Records a delivery to `group`; returns its index for [`History::acked`].
    pub fn delivered(&self, group: &str, id: &str) -> usize {
        let mut events = self.events.lock();
        events.deliveries.push(Delivery { group: group.to_owned(), id: id.to_owned(), acked_at: None });
        events.deliveries.len() - 1
    }

    /// Records that the ack of delivery `index` was confirmed by the broker.
    pub fn acked(&self, index: usize) {
        let mut events = self.events.lock();
        let now = events.deliveries.len();
        events.deliveries[index].acked_at = Some(now);
    }

    /// Every delivery of `id`, in the order seen: its group, its position among all deliveries and
    /// when its ack was confirmed (the number of deliveries recorded by then), for explaining a
    /// failed check.
    pub fn trace(&self, id: &str) -> Vec<String> {
        let events = self.events.lock();
        let sent = events.sends.get(id).map(|s| format!("{:?}", s.outcome)).unwrap_or_else(|| "never sent".into());
        let deliveries = events.deliveries.iter().enumerate().filter(|(_, d)| d.id == id).map(|(at, d)| {
            let ack = d.acked_at.map_or_else(|| "ack not confirmed".to_owned(), |t| format!("ack confirmed at {t}"));
            format!("{id} (send {sent}): delivered to {} at {at}, {ack}", d.group)
        });
        deliveries.collect()
    }

    /// Acknowledged and indeterminate sends so far.
    pub fn send_counts(&self) -> (usize, usize) {
        let events = self.events.lock();
        let ok = events.sends.values().filter(|s| s.outcome == SendOutcome::Ok).count();
        (ok, events.sends.len() - ok)
    }

    /// Whether `group` has received every acknowledged send.
    pub fn has_everything(&self, group: &str) -> bool {
        let events = self.events.lock();
        let seen: HashSet<&str> =
            events.deliveries.iter().filter(|d| d.group == group).map(|d| d.id.as_str()).collect();
        events.sends.iter().filter(|(_, s)| s.outcome == SendOutcome::Ok).all(|(id, _)| seen.contains(id.as_str()))
    }

    /// Checks `group`; `fifo` adds the per-message-group order checks.
    pub fn check(&self, group: &str, fifo: bool) -> GroupReport {
        let events = self.events.lock();
        let mut report = GroupReport::default();
        // Per message: the earliest confirmation of an ack of one of its deliveries so far.
        let mut confirmed: HashMap<&str, usize> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::new();
        // Per message group: acknowledged seqs not yet delivered, and the highest seq delivered.
        let mut pending: HashMap<&str, BTreeSet<u64>> = HashMap::new();
        for s in events.sends.values().filter(|s| s.outcome == SendOutcome::Ok) {
            pending.entry(s.key.as_str()).or_default().insert(s.seq);
        }
        let mut highest: HashMap<&str, u64> = HashMap::new();
        for (at, d) in events.deliveries.iter().enumerate().filter(|(_, d)| d.group == group) {
            report.deliveries += 1;
            let Some(sent) = events.sends.get(&d.id) else {
                report.unexpected.push(d.id.clone());
                continue;
            };
            if !seen.insert(d.id.as_str()) {
                if confirmed.get(d.id.as_str()).is_some_and(|&acked_at| acked_at <= at) {
                    report.unexplained_duplicates.push(d.id.clone());
                } else {
                    report.explained_duplicates += 1;
                }
            } else {
                if sent.outcome == SendOutcome::Indeterminate {
                    report.recovered += 1;
                }
                if fifo {
                    let key = sent.key.as_str();
                    if let Some(&top) = highest.get(key).filter(|&&top| top > sent.seq) {
                        report.fifo_violations.push(format!("{key}: #{} first delivered after #{top}", sent.seq));
                    }
                    let waiting = pending.entry(key).or_default();
                    if let Some(skipped) = waiting.range(..sent.seq).next() {
                        report.fifo_violations.push(format!("{key}: #{} delivered before #{skipped}", sent.seq));
                    }
                    waiting.remove(&sent.seq);
                    let top = highest.entry(key).or_default();
                    *top = (*top).max(sent.seq);
                }
            }
            if let Some(acked_at) = d.acked_at {
                let earliest = confirmed.entry(d.id.as_str()).or_insert(acked_at);
                *earliest = (*earliest).min(acked_at);
            }
        }
        let mut lost: Vec<String> = events
            .sends
            .iter()
            .filter(|(id, s)| s.outcome == SendOutcome::Ok && !seen.contains(id.as_str()))
            .map(|(id, _)| id.clone())
            .collect();
        lost.sort();
        report.lost = lost;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(sends: &[(&str, &str, u64, SendOutcome)], deliveries: &[(&str, bool)]) -> History {
        let h = History::default();
        for (id, key, seq, outcome) in sends {
            h.sent(id, key, *seq, *outcome);
        }
        for (id, acked) in deliveries {
            let i = h.delivered("g", id);
            if *acked {
                h.acked(i);
            }
        }
        h
    }

    use SendOutcome::{Indeterminate, Ok};

    #[test]
    fn a_clean_run_is_clean() {
        let h = history(&[("a", "k", 0, Ok), ("b", "k", 1, Ok)], &[("a", true), ("b", true)]);
        let r = h.check("g", true);
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.deliveries, 2);
        assert!(h.has_everything("g"));
    }

    #[test]
    fn an_acknowledged_send_never_delivered_is_lost() {
        let h = history(&[("a", "k", 0, Ok), ("b", "k", 1, Indeterminate)], &[]);
        let r = h.check("g", false);
        assert_eq!(r.lost, ["a"]);
        assert!(!h.has_everything("g"));
    }

    #[test]
    fn unknown_deliveries_are_unexpected_and_indeterminate_ones_recovered() {
        let h = history(&[("a", "k", 0, Indeterminate)], &[("a", true), ("zz", true)]);
        let r = h.check("g", false);
        assert_eq!(r.unexpected, ["zz"]);
        assert_eq!(r.recovered, 1);
        assert!(r.lost.is_empty());
    }

    #[test]
    fn redelivery_is_explained_only_without_a_confirmed_ack() {
        let h =
            history(&[("a", "k", 0, Ok), ("b", "k", 1, Ok)], &[("a", false), ("a", true), ("b", true), ("b", true)]);
        let r = h.check("g", false);
        assert_eq!(r.explained_duplicates, 1);
        assert_eq!(r.unexplained_duplicates, ["b"]);
    }

    /// A consumer whose ack of an old delivery is confirmed only after the message went to another
    /// consumer (its lease ran out meanwhile, or the broker restarted) and was acknowledged there:
    /// the broker answers OK to acknowledging what is already done. No violation; a delivery after
    /// that confirmation is one.
    #[test]
    fn an_ack_confirmed_after_a_redelivery_does_not_make_it_unexplained() {
        let h = History::default();
        h.sent("a", "k", 0, Ok);
        let first = h.delivered("g", "a");
        let second = h.delivered("g", "a");
        h.acked(second);
        h.acked(first);
        let r = h.check("g", false);
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.explained_duplicates, 1);
        h.delivered("g", "a");
        assert_eq!(h.check("g", false).unexplained_duplicates, ["a"]);
        assert_eq!(
            h.trace("a"),
            [
                "a (send Ok): delivered to g at 0, ack confirmed at 2",
                "a (send Ok): delivered to g at 1, ack confirmed at 2",
                "a (send Ok): delivered to g at 2, ack not confirmed",
            ]
        );
    }

    #[test]
    fn fifo_catches_reordering_and_skips() {
        let sends = [("a", "k", 0, Ok), ("b", "k", 1, Ok), ("c", "k", 2, Ok)];
        let reordered = history(&sends, &[("b", true), ("a", true), ("c", true)]);
        let r = reordered.check("g", true);
        assert_eq!(r.fifo_violations.len(), 2, "{r:?}"); // b skipped a; a came after b
        let skipped = history(&sends, &[("a", true), ("c", true)]);
        assert_eq!(skipped.check("g", true).fifo_violations, ["k: #2 delivered before #1"]);
        // A redelivery of an earlier message (its ack was lost) is no violation.
        let redelivered = history(&sends, &[("a", false), ("a", true), ("b", true), ("c", true)]);
        assert!(redelivered.check("g", true).is_clean());
        // Different message groups are independent.
        let two_keys = history(&[("a", "k", 0, Ok), ("x", "q", 0, Ok)], &[("x", true), ("a", true)]);
        assert!(two_keys.check("g", true).is_clean());
        // Concurrent groups are not checked for order.
        assert!(reordered.check("g", false).is_clean());
    }
}
