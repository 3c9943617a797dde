//! Consumer state: per (consumer group, topic, partition) progress, kept durable through ack records
//! in the commit log and checkpoint snapshots.
//!
//! The broker appends a [`ProgressRecord`] when a group acknowledges messages (or when it first
//! starts on a partition, to pin its start offset); the storage writer applies it here once it is
//! durable, and recovery replays the records after the last checkpoint.

pub mod filter;
pub mod progress;
pub mod receipt;
pub mod sql;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use prost::Message as _;

use crate::storage::StateMachine;
use crate::storage::frame::RecordKind;
use progress::Progress;

/// A change of one group's progress on one partition, as logged (frame kind `Ack`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProgressRecord {
    /// Consumer group.
    #[prost(string, tag = "1")]
    pub group: String,
    /// Topic.
    #[prost(string, tag = "2")]
    pub topic: String,
    /// Partition.
    #[prost(uint32, tag = "3")]
    pub partition: u32,
    /// Offsets now done.
    #[prost(uint64, repeated, tag = "4")]
    pub done: Vec<u64>,
    /// Where the group starts on this partition (set on its first receive, and by offset resets).
    #[prost(uint64, optional, tag = "5")]
    pub start_at: Option<u64>,
    /// Done offsets handed back to the group for another delivery (dead-letter resend).
    #[prost(uint64, repeated, tag = "6")]
    pub revive: Vec<u64>,
    /// Drop this progress entirely (a broadcasting group's client that went away for good).
    #[prost(bool, tag = "7")]
    pub forget: bool,
    /// `start_at` is an offset reset: the group restarts there, forwards or back, dropping what
    /// it had done and leased.
    #[prost(bool, tag = "8")]
    pub reset: bool,
}

/// The snapshot stored in checkpoints.
#[derive(Clone, PartialEq, prost::Message)]
struct Snapshot {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<SnapshotEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotEntry {
    #[prost(string, tag = "1")]
    group: String,
    #[prost(string, tag = "2")]
    topic: String,
    #[prost(uint32, tag = "3")]
    partition: u32,
    #[prost(uint64, tag = "4")]
    watermark: u64,
    #[prost(uint64, repeated, tag = "5")]
    done: Vec<u64>,
    #[prost(uint64, repeated, tag = "6")]
    revived: Vec<u64>,
}

/// Identifies one progress entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProgressKey {
    /// Consumer group.
    pub group: Arc<str>,
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
}

/// A [`ProgressKey`] made of borrowed parts, to look progress up without building a key (a receive
/// looks up every partition of its topic on every pass, an acknowledgement every handle). Hashes
/// as the key it stands for: `Arc<str>` and `&str` hash as the same `str`.
#[derive(Debug, Clone, Copy, Hash)]
pub struct ProgressKeyRef<'a> {
    /// Consumer group.
    pub group: &'a str,
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: u32,
}

impl hashbrown::Equivalent<ProgressKey> for ProgressKeyRef<'_> {
    fn equivalent(&self, key: &ProgressKey) -> bool {
        self.partition == key.partition && *self.group == *key.group && *self.topic == *key.topic
    }
}

impl ProgressKey {
    /// Builds a key.
    pub fn new(group: &str, topic: &str, partition: u32) -> Self {
        Self { group: Arc::from(group), topic: Arc::from(topic), partition }
    }
}

/// All consumer progress of the broker.
#[derive(Debug)]
pub struct Consumers {
    progress: RwLock<hashbrown::HashMap<ProgressKey, Arc<Mutex<Progress>>, foldhash::fast::RandomState>>,
    generation: AtomicU64,
}

impl Default for Consumers {
    fn default() -> Self {
        // Generations start from the clock so handles issued before a restart never match a new lease.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64);
        Self { progress: RwLock::default(), generation: AtomicU64::new(seed.unwrap_or(1) << 8) }
    }
}

impl Consumers {
    /// The progress of a (group, topic, partition), if the group ever started on it.
    pub fn get(
        &self,
        key: &(impl std::hash::Hash + hashbrown::Equivalent<ProgressKey>),
    ) -> Option<Arc<Mutex<Progress>>> {
        self.progress.read().get(key).cloned()
    }

    /// Installs the progress of a group starting at `offset` unless it exists (used when the start
    /// record is applied).
    fn get_or_start(&self, key: ProgressKey, offset: u64) -> Arc<Mutex<Progress>> {
        if let Some(p) = self.get(&key) {
            return p;
        }
        self.progress.write().entry(key).or_insert_with(|| Arc::new(Mutex::new(Progress::starting_at(offset)))).clone()
    }

    /// A fresh lease generation.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Every progress entry (for metrics and stats).
    pub fn entries(&self) -> Vec<(ProgressKey, Arc<Mutex<Progress>>)> {
        self.progress.read().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Makes every message leased to `client` visible again (the client is gone).
    pub fn release_client(&self, client: &str) -> usize {
        let now = Instant::now();
        self.entries().iter().map(|(_, p)| p.lock().release_client(client, now)).sum()
    }
}

impl StateMachine for Consumers {
    fn apply(&self, kind: RecordKind, _position: u64, body: &[u8]) {
        if kind != RecordKind::Ack {
            return;
        }
        let Ok(record) = ProgressRecord::decode(body) else {
            tracing::error!("undecodable consumer progress record skipped");
            return;
        };
        let key = ProgressKey::new(&record.group, &record.topic, record.partition);
        if record.forget {
            self.progress.write().remove(&key);
            return;
        }
        if let (true, Some(start)) = (record.reset, record.start_at) {
            self.progress.write().insert(key, Arc::new(Mutex::new(Progress::starting_at(start))));
            return;
        }
        let progress = self.get_or_start(key, record.start_at.unwrap_or(0));
        let mut p = progress.lock();
        if let Some(start) = record.start_at {
            p.skip_to(start);
        }
        for offset in record.done {
            p.mark_done(offset);
        }
        for offset in record.revive {
            p.revive(offset);
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let entries = self
            .entries()
            .into_iter()
            .map(|(k, p)| {
                let p = p.lock();
                SnapshotEntry {
                    group: k.group.to_string(),
                    topic: k.topic.to_string(),
                    partition: k.partition,
                    watermark: p.watermark(),
                    done: p.done_above_watermark().collect(),
                    revived: p.revived().collect(),
                }
            })
            .collect();
        Snapshot { entries }.encode_to_vec()
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        let snapshot = Snapshot::decode(snapshot).map_err(|e| format!("consumer snapshot does not decode: {e}"))?;
        let mut map = self.progress.write();
        map.clear();
        for e in snapshot.entries {
            let key = ProgressKey::new(&e.group, &e.topic, e.partition);
            map.insert(key, Arc::new(Mutex::new(Progress::restored(e.watermark, e.done, e.revived))));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(done: Vec<u64>, start_at: Option<u64>) -> Vec<u8> {
        ProgressRecord { group: "g".into(), topic: "t".into(), partition: 1, done, start_at, ..Default::default() }
            .encode_to_vec()
    }

    #[test]
    fn apply_snapshot_restore() {
        let c = Consumers::default();
        c.apply(RecordKind::Ack, 0, &record(vec![], Some(10)));
        c.apply(RecordKind::Ack, 0, &record(vec![10, 12], None));
        let key = ProgressKey::new("g", "t", 1);
        assert_eq!(c.get(&key).unwrap().lock().watermark(), 11);
        let snap = c.snapshot();
        let d = Consumers::default();
        d.restore(&snap).unwrap();
        let p = d.get(&key).unwrap();
        let p = p.lock();
        assert_eq!(p.watermark(), 11);
        assert!(p.is_done(12) && !p.is_done(11));
    }

    /// A borrowed key finds what an owned key stored (it must hash the same), and only that.
    #[test]
    fn borrowed_keys_find_the_same_progress() {
        let c = Consumers::default();
        c.apply(RecordKind::Ack, 0, &record(vec![], Some(10)));
        let owned = c.get(&ProgressKey::new("g", "t", 1)).unwrap();
        let borrowed = c.get(&ProgressKeyRef { group: "g", topic: "t", partition: 1 }).unwrap();
        assert!(Arc::ptr_eq(&owned, &borrowed));
        for (group, topic, partition) in [("g", "t", 2), ("g", "u", 1), ("h", "t", 1), ("gt", "", 1)] {
            assert!(c.get(&ProgressKeyRef { group, topic, partition }).is_none(), "{group}/{topic}/{partition}");
        }
    }
}
