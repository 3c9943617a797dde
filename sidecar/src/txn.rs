//! Transactional messages: half messages, commit / rollback, and check-back of orphans.
//!
//! A half message is written to the commit log as a `Half` record, outside any partition, so no
//! consumer sees it. `EndTransaction(COMMIT)` copies it into its partition and logs a `TxnOutcome`
//! commit in the same group commit; ROLLBACK logs a rollback; UNKNOWN keeps it pending. A half
//! message nobody resolves is checked back: the broker asks a live producer that declared the topic
//! (over its Telemetry stream) for the outcome, every check interval, up to the topic's check limit,
//! then rolls it back. Every step is a log record, so pending transactions and their check counts
//! survive a restart.

use std::collections::{HashMap, HashSet, VecDeque};

use parking_lot::Mutex;
use prost::Message as _;

/// What happened to a transaction, as logged (frame kind `TxnOutcome`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutcomeRecord {
    /// Transaction id.
    #[prost(string, tag = "1")]
    pub transaction_id: String,
    /// What happened.
    #[prost(enumeration = "Outcome", tag = "2")]
    pub outcome: i32,
    /// When (ms since the epoch).
    #[prost(int64, tag = "3")]
    pub at_ms: i64,
    /// Why (for rollbacks by the broker).
    #[prost(string, tag = "4")]
    pub reason: String,
}

/// Kinds of transaction outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Outcome {
    /// Not set.
    Unspecified = 0,
    /// Committed: the message was copied into its partition.
    Commit = 1,
    /// Rolled back: the half message is discarded.
    Rollback = 2,
    /// A producer was asked for the outcome (one check-back).
    Checked = 3,
}

/// The fields of a half message the transaction table needs (decoded from its `Half` record).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HalfRouting {
    /// Topic.
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Message id.
    #[prost(string, tag = "3")]
    pub message_id: String,
    /// Store time (ms).
    #[prost(int64, tag = "10")]
    pub store_timestamp_ms: i64,
    /// Transaction id.
    #[prost(string, tag = "17")]
    pub transaction_id: String,
}

/// A transaction waiting for its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Position of the `Half` record.
    pub position: u64,
    /// Its frame length.
    pub length: u32,
    /// Topic.
    pub topic: String,
    /// Message id.
    pub message_id: String,
    /// When the half message was stored (ms).
    pub created_ms: i64,
    /// Check-backs sent so far.
    pub checks: u32,
    /// When the last check-back was sent (ms), or 0.
    pub last_check_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Snapshot {
    #[prost(message, repeated, tag = "1")]
    pending: Vec<SnapshotEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotEntry {
    #[prost(string, tag = "1")]
    transaction_id: String,
    #[prost(uint64, tag = "2")]
    position: u64,
    #[prost(uint32, tag = "3")]
    length: u32,
    #[prost(string, tag = "4")]
    topic: String,
    #[prost(string, tag = "5")]
    message_id: String,
    #[prost(int64, tag = "6")]
    created_ms: i64,
    #[prost(uint32, tag = "7")]
    checks: u32,
    #[prost(int64, tag = "8")]
    last_check_ms: i64,
}

/// Pending transactions.
#[derive(Debug, Default)]
pub struct Transactions {
    pending: Mutex<HashMap<String, Pending>>,
    /// Transactions being committed or rolled back right now (two EndTransactions for one
    /// transaction must not both copy it).
    resolving: Mutex<HashSet<String>>,
    /// Recently ended transactions, so a retried EndTransaction gets the same answer.
    recent: Mutex<(HashMap<String, Outcome>, VecDeque<String>)>,
}

/// Ended transactions remembered for retried EndTransactions.
const RECENT: usize = 10_000;

impl Transactions {
    /// Applies a `Half` record.
    pub fn half(&self, position: u64, length: u32, body: &[u8]) {
        let Ok(h) = HalfRouting::decode(body) else {
            tracing::error!(position, "undecodable half message skipped");
            return;
        };
        self.pending.lock().insert(
            h.transaction_id,
            Pending {
                position,
                length,
                topic: h.topic,
                message_id: h.message_id,
                created_ms: h.store_timestamp_ms,
                checks: 0,
                last_check_ms: 0,
            },
        );
    }

    /// Applies a `TxnOutcome` record.
    pub fn outcome(&self, body: &[u8]) {
        let Ok(r) = OutcomeRecord::decode(body) else {
            tracing::error!("undecodable transaction outcome skipped");
            return;
        };
        let mut pending = self.pending.lock();
        match Outcome::try_from(r.outcome) {
            Ok(o @ (Outcome::Commit | Outcome::Rollback)) => {
                pending.remove(&r.transaction_id);
                let mut recent = self.recent.lock();
                recent.0.insert(r.transaction_id.clone(), o);
                recent.1.push_back(r.transaction_id);
                if recent.1.len() > RECENT
                    && let Some(old) = recent.1.pop_front()
                {
                    recent.0.remove(&old);
                }
            }
            Ok(Outcome::Checked) => {
                if let Some(p) = pending.get_mut(&r.transaction_id) {
                    p.checks += 1;
                    p.last_check_ms = r.at_ms;
                }
            }
            _ => {}
        }
    }

    /// The pending transaction `id`.
    pub fn get(&self, id: &str) -> Option<Pending> {
        self.pending.lock().get(id).cloned()
    }

    /// How `id` ended, if it ended recently.
    pub fn resolved(&self, id: &str) -> Option<Outcome> {
        self.recent.lock().0.get(id).copied()
    }

    /// Claims the right to resolve `id`; false if someone else is resolving it.
    pub fn begin_resolve(&self, id: &str) -> bool {
        self.resolving.lock().insert(id.to_owned())
    }

    /// Releases the claim of [`Transactions::begin_resolve`].
    pub fn end_resolve(&self, id: &str) {
        self.resolving.lock().remove(id);
    }

    /// Transactions due for a check-back at `now_ms`: unresolved for `first_after_ms` since they
    /// were stored and `every_ms` since their last check.
    pub fn due_for_check(
        &self,
        now_ms: i64,
        first_after_ms: impl Fn(&str) -> i64,
        every_ms: impl Fn(&str) -> i64,
    ) -> Vec<(String, Pending)> {
        let resolving = self.resolving.lock().clone();
        self.pending
            .lock()
            .iter()
            .filter(|(id, p)| {
                !resolving.contains(*id)
                    && now_ms - p.created_ms >= first_after_ms(&p.topic)
                    && (p.last_check_ms == 0 || now_ms - p.last_check_ms >= every_ms(&p.topic))
            })
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect()
    }

    /// Number of pending transactions.
    pub fn len(&self) -> usize {
        self.pending.lock().len()
    }

    /// True when none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Serialises the pending table.
    pub fn snapshot(&self) -> Vec<u8> {
        let pending = self
            .pending
            .lock()
            .iter()
            .map(|(id, p)| SnapshotEntry {
                transaction_id: id.clone(),
                position: p.position,
                length: p.length,
                topic: p.topic.clone(),
                message_id: p.message_id.clone(),
                created_ms: p.created_ms,
                checks: p.checks,
                last_check_ms: p.last_check_ms,
            })
            .collect();
        Snapshot { pending }.encode_to_vec()
    }

    /// Restores the pending table.
    pub fn restore(&self, bytes: &[u8]) -> Result<(), String> {
        let s = Snapshot::decode(bytes).map_err(|e| format!("transaction snapshot does not decode: {e}"))?;
        let mut pending = self.pending.lock();
        pending.clear();
        for e in s.pending {
            pending.insert(
                e.transaction_id,
                Pending {
                    position: e.position,
                    length: e.length,
                    topic: e.topic,
                    message_id: e.message_id,
                    created_ms: e.created_ms,
                    checks: e.checks,
                    last_check_ms: e.last_check_ms,
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(id: &str, created: i64) -> Vec<u8> {
        HalfRouting {
            topic: "t".into(),
            message_id: format!("m-{id}"),
            store_timestamp_ms: created,
            transaction_id: id.into(),
        }
        .encode_to_vec()
    }

    fn outcome(id: &str, o: Outcome, at: i64) -> Vec<u8> {
        OutcomeRecord { transaction_id: id.into(), outcome: o as i32, at_ms: at, reason: String::new() }.encode_to_vec()
    }

    #[test]
    fn lifecycle_checks_and_snapshot() {
        let t = Transactions::default();
        t.half(100, 64, &half("a", 1_000));
        t.half(200, 64, &half("b", 1_000));
        t.outcome(&outcome("a", Outcome::Commit, 2_000));
        assert!(t.get("a").is_none());
        assert_eq!(t.due_for_check(5_000, |_| 6_000, |_| 30_000).len(), 0, "too young");
        assert_eq!(t.due_for_check(7_000, |_| 6_000, |_| 30_000).len(), 1);
        t.outcome(&outcome("b", Outcome::Checked, 7_000));
        assert_eq!(t.get("b").unwrap().checks, 1);
        assert_eq!(t.due_for_check(8_000, |_| 6_000, |_| 30_000).len(), 0, "checked recently");
        let restored = Transactions::default();
        restored.restore(&t.snapshot()).unwrap();
        assert_eq!(restored.get("b"), t.get("b"));
        assert!(t.begin_resolve("b") && !t.begin_resolve("b"));
        t.end_resolve("b");
    }
}
