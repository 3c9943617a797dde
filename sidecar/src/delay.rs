//! Delayed (timed) messages: a persistent timer index keyed by delivery time.
//!
//! A delayed message is written to the commit log as a `Scheduled` record, outside any partition,
//! so no consumer can see it. Its due time and log position go into a bucket file per minute of
//! delivery time; only the buckets of the current and the next minute are held in memory, so a
//! message due next month costs 24 bytes of disk and nothing in memory until its minute nears.
//! When a message is due, the broker copies it into its partition and logs a `TimerFired` record in
//! the same group commit; once a past bucket has fired completely its file is deleted.
//!
//! ```text
//! timer/<minute of delivery, 20 digits>.tmr        entries appended as messages are scheduled
//!
//!  0               8               16          20          24
//!  +---------------+---------------+-----------+-----------+
//!  | due (u64, ms  | position (u64)| length    | spare u32 |   one entry, little endian
//!  | since epoch)  | of the record | u32       |           |
//!  +---------------+---------------+-----------+-----------+
//! ```
//!
//! Bucket files are derived data: recovery replays `Scheduled` and `TimerFired` records after the
//! checkpoint, which may append an entry twice; loading de-duplicates by position and skips fired
//! ones, so a message fires at least once and, barring a crash between the copy and its
//! `TimerFired` record, exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use prost::Message as _;

use crate::storage::StorageError;

const ENTRY_LEN: usize = 24;
const BUCKET_MS: u64 = 60_000;
const SUFFIX: &str = "tmr";

/// Delayed messages that fired, as logged (frame kind `TimerFired`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FiredRecord {
    /// Log positions of the `Scheduled` records that were delivered.
    #[prost(uint64, repeated, tag = "1")]
    pub positions: Vec<u64>,
    /// Their due times (ms), in the same order.
    #[prost(uint64, repeated, tag = "2")]
    pub due_ms: Vec<u64>,
}

/// The timer's durable state for checkpoints: which entries of undeleted buckets already fired.
#[derive(Clone, PartialEq, prost::Message)]
struct Snapshot {
    #[prost(message, repeated, tag = "1")]
    buckets: Vec<SnapshotBucket>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotBucket {
    #[prost(uint64, tag = "1")]
    bucket: u64,
    #[prost(uint64, repeated, tag = "2")]
    fired: Vec<u64>,
}

/// A message whose time has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Delivery time, ms since the epoch.
    pub due_ms: u64,
    /// Position of its `Scheduled` record.
    pub position: u64,
    /// Frame length of that record.
    pub length: u32,
}

#[derive(Debug, Default)]
struct State {
    /// Buckets with a file on disk.
    buckets: BTreeSet<u64>,
    /// Buckets below this one are loaded into `due` (or complete).
    loaded_upto: u64,
    /// Loaded entries not fired yet: (due, position) -> length.
    due: BTreeMap<(u64, u64), u32>,
    /// Entries handed out by `take_due` and not yet confirmed fired.
    firing: HashSet<u64>,
    /// Fired positions per bucket whose file still exists.
    fired: BTreeMap<u64, HashSet<u64>>,
    /// Open bucket files for appending.
    files: HashMap<u64, File>,
    /// Scheduled entries not yet fired (approximate across restarts: counted from the files).
    waiting: u64,
}

/// The timer index.
#[derive(Debug)]
pub struct Timer {
    dir: PathBuf,
    state: Mutex<State>,
    /// Wakes the firing loop when a new entry is due sooner than what it sleeps for.
    pub wake: tokio::sync::Notify,
}

fn bucket_of(due_ms: u64) -> u64 {
    due_ms / BUCKET_MS
}

fn file_name(bucket: u64) -> String {
    format!("{bucket:020}.{SUFFIX}")
}

impl Timer {
    /// Opens the timer index in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create timer dir", dir, e))?;
        let mut state = State::default();
        for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("list timer dir", dir, e))? {
            let path = entry.map_err(|e| StorageError::io("list timer dir", dir, e))?.path();
            let stem =
                path.file_stem().and_then(|s| s.to_str()).filter(|_| path.extension().is_some_and(|e| e == SUFFIX));
            if let Some(bucket) = stem.and_then(|s| s.parse().ok()) {
                state.buckets.insert(bucket);
                state.waiting += std::fs::metadata(&path).map(|m| m.len() / ENTRY_LEN as u64).unwrap_or(0);
            }
        }
        Ok(Self { dir: dir.to_owned(), state: Mutex::new(state), wake: tokio::sync::Notify::new() })
    }

    /// Records a scheduled message (from the writer thread or recovery).
    pub fn schedule(&self, due: Due) -> Result<(), StorageError> {
        let bucket = bucket_of(due.due_ms);
        let mut st = self.state.lock();
        if st.fired.get(&bucket).is_some_and(|f| f.contains(&due.position)) {
            return Ok(()); // replayed after it fired
        }
        let mut entry = [0u8; ENTRY_LEN];
        entry[0..8].copy_from_slice(&due.due_ms.to_le_bytes());
        entry[8..16].copy_from_slice(&due.position.to_le_bytes());
        entry[16..20].copy_from_slice(&due.length.to_le_bytes());
        let path = self.dir.join(file_name(bucket));
        if !st.files.contains_key(&bucket) {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| StorageError::io("open timer bucket", &path, e))?;
            if st.files.len() >= 64 {
                st.files.clear();
            }
            st.files.insert(bucket, file);
        }
        let file = st.files.get_mut(&bucket).expect("opened above");
        file.write_all(&entry).map_err(|e| StorageError::io("append timer entry", &path, e))?;
        st.buckets.insert(bucket);
        st.waiting += 1;
        if bucket < st.loaded_upto {
            st.due.insert((due.due_ms, due.position), due.length);
        }
        drop(st);
        self.wake.notify_one();
        Ok(())
    }

    /// Records that scheduled messages were delivered.
    pub fn fired(&self, record: &FiredRecord) {
        let mut st = self.state.lock();
        for (position, due_ms) in record.positions.iter().zip(&record.due_ms) {
            st.due.remove(&(*due_ms, *position));
            st.firing.remove(position);
            if st.fired.entry(bucket_of(*due_ms)).or_default().insert(*position) {
                st.waiting = st.waiting.saturating_sub(1);
            }
        }
    }

    /// Entries due at `now_ms` (at most `max`), marked as firing until [`Timer::fired`] or
    /// [`Timer::retry`].
    pub fn take_due(&self, now_ms: u64, max: usize) -> Result<Vec<Due>, StorageError> {
        let mut st = self.state.lock();
        self.load_until(&mut st, bucket_of(now_ms) + 2)?;
        let mut out = Vec::new();
        for (&(due_ms, position), &length) in st.due.range(..(now_ms + 1, 0)) {
            if out.len() >= max {
                break;
            }
            if !st.firing.contains(&position) {
                out.push(Due { due_ms, position, length });
            }
        }
        for d in &out {
            st.firing.insert(d.position);
        }
        Ok(out)
    }

    /// Gives entries back after a failed delivery; they are taken again on the next pass.
    pub fn retry(&self, entries: &[Due]) {
        let mut st = self.state.lock();
        for d in entries {
            st.firing.remove(&d.position);
        }
    }

    /// When the next loaded entry is due (ms), if any.
    pub fn next_due(&self) -> Option<u64> {
        let st = self.state.lock();
        st.due.keys().find(|(_, p)| !st.firing.contains(p)).map(|(d, _)| *d)
    }

    /// Scheduled messages not delivered yet.
    pub fn waiting(&self) -> u64 {
        self.state.lock().waiting
    }

    /// Loaded entries held in memory.
    pub fn in_memory(&self) -> usize {
        self.state.lock().due.len()
    }

    /// Loads every bucket below `upto` that is not loaded yet.
    fn load_until(&self, st: &mut State, upto: u64) -> Result<(), StorageError> {
        let pending: Vec<u64> = st.buckets.range(st.loaded_upto..upto).copied().collect();
        for bucket in pending {
            let path = self.dir.join(file_name(bucket));
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io("read timer bucket", &path, e)),
            };
            let fired = st.fired.get(&bucket).cloned().unwrap_or_default();
            for e in bytes.chunks_exact(ENTRY_LEN) {
                let due_ms = u64::from_le_bytes(e[0..8].try_into().expect("8 bytes"));
                let position = u64::from_le_bytes(e[8..16].try_into().expect("8 bytes"));
                let length = u32::from_le_bytes(e[16..20].try_into().expect("4 bytes"));
                if !fired.contains(&position) {
                    st.due.insert((due_ms, position), length);
                }
            }
        }
        st.loaded_upto = st.loaded_upto.max(upto);
        Ok(())
    }

    /// Deletes the files of past buckets that fired completely. Call only after the `TimerFired`
    /// records are durable (they are: `fired` runs after the group commit).
    pub fn compact(&self, now_ms: u64) -> Result<(), StorageError> {
        let mut st = self.state.lock();
        let current = bucket_of(now_ms);
        let candidates: Vec<u64> = st.buckets.range(..current.min(st.loaded_upto)).copied().collect();
        for bucket in candidates {
            let lo = (bucket * BUCKET_MS, 0);
            let hi = ((bucket + 1) * BUCKET_MS, 0);
            if st.due.range(lo..hi).next().is_some() {
                continue;
            }
            let path = self.dir.join(file_name(bucket));
            st.files.remove(&bucket);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("delete timer bucket", &path, e)),
            }
            st.buckets.remove(&bucket);
            st.fired.remove(&bucket);
        }
        Ok(())
    }

    /// fdatasync of the bucket files written since the last checkpoint.
    pub fn sync(&self) -> Result<(), StorageError> {
        let st = self.state.lock();
        for file in st.files.values() {
            file.sync_data().map_err(|e| StorageError::io("sync timer bucket", &self.dir, e))?;
        }
        Ok(())
    }

    /// The fired sets for a checkpoint.
    pub fn snapshot(&self) -> Vec<u8> {
        let st = self.state.lock();
        let buckets =
            st.fired.iter().map(|(b, f)| SnapshotBucket { bucket: *b, fired: f.iter().copied().collect() }).collect();
        Snapshot { buckets }.encode_to_vec()
    }

    /// Restores the fired sets.
    pub fn restore(&self, bytes: &[u8]) -> Result<(), String> {
        let snapshot = Snapshot::decode(bytes).map_err(|e| format!("timer snapshot does not decode: {e}"))?;
        let mut st = self.state.lock();
        for b in snapshot.buckets {
            // A bucket deleted before the crash has nothing left to skip.
            if st.buckets.contains(&b.bucket) {
                st.waiting = st.waiting.saturating_sub(b.fired.len() as u64);
                st.fired.insert(b.bucket, b.fired.into_iter().collect());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(due_ms: u64, position: u64) -> Due {
        Due { due_ms, position, length: 64 }
    }

    #[test]
    fn far_future_entries_stay_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let t = Timer::open(dir.path()).unwrap();
        let now = 10 * BUCKET_MS;
        t.schedule(due(now + 500, 1)).unwrap();
        t.schedule(due(now + 30 * 24 * 3600 * 1000, 2)).unwrap(); // a month away
        assert_eq!(t.take_due(now, 10).unwrap(), vec![]);
        assert_eq!(t.in_memory(), 1, "only the near entry is loaded");
        assert_eq!(t.waiting(), 2);
        assert_eq!(t.take_due(now + 500, 10).unwrap(), vec![due(now + 500, 1)]);
        assert_eq!(t.take_due(now + 500, 10).unwrap(), vec![], "not handed out twice while firing");
        t.fired(&FiredRecord { positions: vec![1], due_ms: vec![now + 500] });
        assert_eq!(t.waiting(), 1);
        t.compact(now + 2 * BUCKET_MS).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the fired bucket's file is gone");
    }

    #[test]
    fn failed_fires_come_back_and_replays_do_not_double_fire() {
        let dir = tempfile::tempdir().unwrap();
        let now = 100 * BUCKET_MS;
        {
            let t = Timer::open(dir.path()).unwrap();
            t.schedule(due(now, 7)).unwrap();
            t.schedule(due(now + 1, 8)).unwrap();
            let got = t.take_due(now + 1, 10).unwrap();
            assert_eq!(got.len(), 2);
            t.retry(&got[1..]);
            t.fired(&FiredRecord { positions: vec![7], due_ms: vec![now] });
            let snapshot = t.snapshot();
            // Crash: reopen with the snapshot; recovery replays the schedule of 7 again.
            let t2 = Timer::open(dir.path()).unwrap();
            t2.restore(&snapshot).unwrap();
            t2.schedule(due(now, 7)).unwrap();
            assert_eq!(t2.take_due(now + 1, 10).unwrap(), vec![due(now + 1, 8)]);
        }
    }
}
