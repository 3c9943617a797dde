//! The group commit: appending to the commit log, one group of appends at a time.
//!
//! Producers and acknowledgers hand in batches of pre-encoded record bodies. A group takes
//! everything that queued up while the previous one was being written, frames it into one buffer,
//! issues one `pwrite` and (when any record in the group asked for `Sync` durability) one
//! `fdatasync`, then publishes the new index entries and answers every waiter. Under load the
//! groups grow by themselves, so the cost of a write and of an fdatasync is shared by many
//! messages; at low load a lone message is written at once.
//!
//! Who commits a group depends on what it waits for:
//!
//! ```text
//!  Async appends ──► waiting queue ──► [ committed on the caller's own thread by whichever
//!                                        caller finds the writer free; it takes the whole queue ]
//!  Sync appends, flushes,
//!  checkpoints ────► channel ────────► [ writer thread: drain → frame → pwrite → fdatasync →
//!                                        index → reply; also the Async flush timer ]
//! ```
//!
//! An `Async` append only needs the page cache, so the caller writes it itself (as RocketMQ's send
//! path does) instead of waking a thread and being woken in turn: two thread hand-offs per
//! request were a fifth of the broker's CPU. An fdatasync may take milliseconds, so it never runs
//! on a request thread. Both paths share one lock on the writer, so groups are written, and their
//! index entries published, one after the other in log order.
//!
//! A failed `fdatasync` is fatal: the kernel may have dropped the dirty pages, so nothing written
//! since the last good sync can be acknowledged, and retrying could report success for lost data.
//! The writer fails every waiter, poisons the store and calls the fatal hook (the broker exits).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::storage::frame::{self, HEADER_LEN, RecordKind};
use crate::storage::index::IndexEntry;
use crate::storage::segment::Segment;
use crate::storage::{Appended, Durability, Partition, StorageError, StoreInner, StoreMetrics};

/// One record to append.
#[derive(Debug)]
pub struct AppendRecord {
    /// What the body is.
    pub kind: RecordKind,
    /// For messages: the partition that assigns its queue offset and indexes it.
    pub partition: Option<Arc<Partition>>,
    /// For messages: hash of the tag for the index.
    pub tag_hash: u32,
    /// For messages: hash of the FIFO message group for the index.
    pub group_hash: u32,
    /// For messages: store time for the index.
    pub store_time_ms: u64,
    /// The encoded body.
    pub body: Vec<u8>,
}

impl AppendRecord {
    /// A message for `partition`.
    pub fn message(
        partition: Arc<Partition>,
        tag_hash: u32,
        group_hash: u32,
        store_time_ms: u64,
        body: Vec<u8>,
    ) -> Self {
        Self { kind: RecordKind::Message, partition: Some(partition), tag_hash, group_hash, store_time_ms, body }
    }

    /// A record for the state machine (consumer progress and the like).
    pub fn state(kind: RecordKind, body: Vec<u8>) -> Self {
        Self { kind, partition: None, tag_hash: 0, group_hash: 0, store_time_ms: 0, body }
    }
}

/// Work for the writer thread.
pub(crate) enum Command {
    Append {
        records: Vec<AppendRecord>,
        durability: Durability,
        reply: Reply,
    },
    /// Sync the log and capture (position, state snapshot) for a checkpoint.
    Capture {
        reply: oneshot::Sender<Result<(u64, Vec<u8>), StorageError>>,
    },
    /// Sync the log now.
    Flush {
        reply: oneshot::Sender<Result<u64, StorageError>>,
    },
    /// An `Async` group was committed on a caller's thread while nothing was waiting to be synced:
    /// the writer thread sets its flush timer.
    Tick,
}

/// Limits of one group commit.
const MAX_GROUP_BYTES: usize = 8 << 20;

type Reply = oneshot::Sender<Result<Vec<Appended>, StorageError>>;

struct Waiter {
    reply: Reply,
    results: Vec<Appended>,
    durability: Durability,
}

/// The writer and the `Async` appends waiting for it. Whoever holds `writer` commits.
pub(crate) struct Committer {
    inner: Arc<StoreInner>,
    writer: Mutex<Writer>,
    waiting: Mutex<Vec<Command>>,
    /// Bytes of one group at most.
    limit: usize,
}

impl Committer {
    pub(crate) fn new(inner: Arc<StoreInner>) -> Self {
        let limit = MAX_GROUP_BYTES.min(inner.config.segment_bytes as usize / 2);
        let writer = Writer {
            inner: inner.clone(),
            buf: Vec::with_capacity(1 << 20),
            unsynced_since: None,
            disk_full: false,
            closed: false,
            free_space: None,
        };
        Self { inner, writer: Mutex::new(writer), waiting: Mutex::new(Vec::new()), limit }
    }

    /// Queues an `Async` append and, unless another thread is committing (it will take this one
    /// too), commits everything queued on this thread. Returns whether the writer thread must now
    /// set its flush timer (see [`Command::Tick`]).
    pub(crate) fn append_async(&self, cmd: Command) -> bool {
        self.waiting.lock().push(cmd);
        self.commit_waiting()
    }

    /// Commits the queue while this thread can take the writer. The holder of the writer always
    /// looks at the queue again after letting go, so an append queued while it held the writer
    /// (whose own attempt found it taken) is never left behind.
    fn commit_waiting(&self) -> bool {
        let mut tick = false;
        loop {
            if self.waiting.lock().is_empty() {
                return tick;
            }
            let Some(mut writer) = self.writer.try_lock() else { return tick };
            let was_unsynced = writer.unsynced_since.is_some();
            self.drain_waiting(&mut writer);
            tick |= !was_unsynced && writer.unsynced_since.is_some();
        }
    }

    /// Runs `f` with the writer (waiting for it if another thread holds it), then commits what
    /// queued meanwhile. Every use of the writer goes through here or [`Self::commit_waiting`], so
    /// whoever lets go of the writer first commits what others queued while it was held.
    fn with_writer<T>(&self, f: impl FnOnce(&mut Writer) -> T) -> T {
        let mut writer = self.writer.lock();
        let result = f(&mut writer);
        self.drain_waiting(&mut writer);
        drop(writer);
        self.commit_waiting();
        result
    }

    /// Commits everything queued, a group at a time.
    fn drain_waiting(&self, writer: &mut Writer) {
        loop {
            let group = {
                let mut waiting = self.waiting.lock();
                let mut bytes = 0;
                let take = waiting
                    .iter()
                    .take_while(|cmd| {
                        bytes += group_bytes(cmd);
                        bytes <= self.limit
                    })
                    .count()
                    .max(1)
                    .min(waiting.len());
                waiting.drain(..take).collect::<Vec<_>>()
            };
            if group.is_empty() {
                return;
            }
            let others = writer.commit(group);
            debug_assert!(others.is_empty(), "only appends wait for the inline committer");
        }
    }

    /// Makes everything written so far durable without holding the writer while the fdatasync
    /// runs, so appends go on meanwhile; `capture` runs with the writer before the sync starts.
    /// Returns the position the sync reached and what `capture` returned. A failure is fatal.
    fn sync_outside<T>(&self, capture: impl FnOnce(&Writer) -> T) -> Result<(u64, T), StorageError> {
        let (point, captured) = self.with_writer(|w| (w.sync_point(), capture(w)));
        let result = point.sync(&self.inner.metrics);
        self.with_writer(|w| match &result {
            Ok(()) => w.synced(&point),
            Err(e) => w.die(e),
        });
        result.map(|()| (point.end, captured))
    }

    /// Runs the flushes and checkpoints the writer thread was given.
    fn run_others(&self, others: Vec<Command>) {
        for cmd in others {
            match cmd {
                Command::Capture { reply } => {
                    let result = self.sync_outside(|w| w.inner.state.snapshot());
                    let _ = reply.send(result);
                }
                Command::Flush { reply } => {
                    let _ = reply.send(self.sync_outside(|_| ()).map(|(end, ())| end));
                }
                Command::Append { .. } => unreachable!("appends are handled by commit"),
                Command::Tick => {}
            }
        }
    }
}

/// The writer thread: commits what the channel brings (`Sync` appends, flushes, checkpoints) and
/// syncs `Async` data when the flush interval runs out. Runs until every sender is gone.
pub(crate) fn run(committer: Arc<Committer>, rx: Receiver<Command>) {
    let flush_every = committer.inner.config.async_flush_interval;
    let limit = committer.limit;
    let mut carry: Option<Command> = None;
    loop {
        let timeout = match committer.with_writer(|w| w.unsynced_since) {
            Some(t) => flush_every.saturating_sub(t.elapsed()),
            None => Duration::from_secs(3600),
        };
        let next = match carry.take() {
            Some(cmd) => Ok(cmd),
            None => rx.recv_timeout(timeout),
        };
        let first = match next {
            Ok(Command::Tick) => continue,
            Ok(cmd) => cmd,
            Err(RecvTimeoutError::Timeout) => {
                let due = committer.with_writer(|w| w.unsynced_since.is_some_and(|t| t.elapsed() >= flush_every));
                if due {
                    // A failure poisons the store inside.
                    let _ = committer.sync_outside(|_| ());
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Take whatever queued up meanwhile, up to the group limit; the rest waits for the next group.
        let mut group = vec![first];
        let mut bytes = group_bytes(&group[0]);
        while bytes < limit {
            match carry.take().map(Ok).unwrap_or_else(|| rx.try_recv()) {
                Ok(Command::Tick) => {}
                Ok(cmd) => {
                    let more = group_bytes(&cmd);
                    if bytes + more > limit {
                        carry = Some(cmd);
                        break;
                    }
                    bytes += more;
                    group.push(cmd);
                }
                Err(_) => break,
            }
        }
        let others = committer.with_writer(|writer| writer.commit(group));
        committer.run_others(others);
    }
    let mut writer = committer.writer.lock();
    committer.drain_waiting(&mut writer);
    // Appends that come later are refused: nothing would sync them.
    writer.closed = true;
    if let Err(e) = writer.sync() {
        writer.die(&e);
    }
    // Any that queued meanwhile are answered (refused), not left waiting.
    committer.drain_waiting(&mut writer);
}

/// Whether a waiter's records include messages (acknowledgements may use the reserve).
fn carries_messages(records: &[AppendRecord]) -> bool {
    records.iter().any(|r| r.kind == RecordKind::Message)
}

fn group_bytes(cmd: &Command) -> usize {
    match cmd {
        Command::Append { records, .. } => records.iter().map(|r| r.body.len() + HEADER_LEN).sum(),
        _ => 0,
    }
}

struct Writer {
    inner: Arc<StoreInner>,
    buf: Vec<u8>,
    /// Set while written data is not yet fdatasynced (Async durability).
    unsynced_since: Option<Instant>,
    /// Whether the last group found the volume full (to log the transitions once).
    disk_full: bool,
    /// Set when the writer thread has made its last sync: nothing more may be written.
    closed: bool,
    /// The volume's free space as last measured.
    free_space: Option<FreeSpace>,
}

/// An fdatasync of the active segment up to `end`, which may run while others keep writing (an
/// fdatasync covers everything written to the file before it started).
struct SyncPoint {
    segment: Arc<Segment>,
    end: u64,
    started: Instant,
}

impl SyncPoint {
    fn sync(&self, metrics: &StoreMetrics) -> Result<(), StorageError> {
        self.segment
            .sync()
            .map_err(|e| StorageError::Fatal(format!("fdatasync of {} failed: {e}", self.segment.path().display())))?;
        metrics.observe_fsync(self.started.elapsed());
        Ok(())
    }
}

/// Free space of the data volume as measured at some instant, and what was written since.
#[derive(Debug, Clone, Copy)]
struct FreeSpace {
    measured: Instant,
    available: u64,
    written_since: u64,
}

/// How long a measurement of the free space is trusted while there is plenty of it (another
/// process may fill the volume meanwhile; writes into a preallocated segment need no new space).
const FREE_SPACE_TRUSTED: Duration = Duration::from_millis(100);

impl Writer {
    /// Writes the appends of `group` as one group; returns its other commands (flushes and
    /// checkpoints), which the writer thread runs without holding the writer.
    fn commit(&mut self, group: Vec<Command>) -> Vec<Command> {
        if let Some(reason) = self.inner.poisoned() {
            for cmd in group {
                fail(cmd, StorageError::Fatal(reason.clone()));
            }
            return Vec::new();
        }
        if self.closed {
            for cmd in group {
                fail(cmd, StorageError::Closed);
            }
            return Vec::new();
        }
        let mut appends = Vec::new();
        let mut others = Vec::new();
        let messages: u64 = group
            .iter()
            .filter(|cmd| matches!(cmd, Command::Append { records, .. } if carries_messages(records)))
            .map(|cmd| group_bytes(cmd) as u64)
            .sum();
        let full = if messages > 0 { self.check_space(messages) } else { None };
        let log = &self.inner.log;
        for cmd in group {
            match cmd {
                Command::Append { records, durability, reply } => {
                    let size: u64 = records.iter().map(|r| frame::padded((HEADER_LEN + r.body.len()) as u64)).sum();
                    if let Some(r) = records.iter().find(|r| r.body.len() + HEADER_LEN > log.max_frame() as usize) {
                        let max = log.max_frame() as usize - HEADER_LEN;
                        let _ = reply.send(Err(StorageError::TooLarge { len: r.body.len(), max }));
                    } else if size > log.segment_bytes() / 2 {
                        let _ = reply.send(Err(StorageError::TooLarge {
                            len: size as usize,
                            max: log.segment_bytes() as usize / 2,
                        }));
                    } else if let Some(e) = full.as_ref().filter(|_| carries_messages(&records)) {
                        let _ = reply.send(Err(e.clone()));
                    } else {
                        appends.push((records, durability, reply, size));
                    }
                }
                other => others.push(other),
            }
        }
        if !appends.is_empty() {
            self.append_group(appends);
        }
        others
    }

    /// Frames, writes and (if asked) syncs one group, then publishes it and answers its waiters.
    #[allow(clippy::type_complexity)]
    fn append_group(&mut self, appends: Vec<(Vec<AppendRecord>, Durability, Reply, u64)>) {
        let log = &self.inner.log;
        let total: u64 = appends.iter().map(|a| a.3).sum();
        let mut active = log.active();
        // The whole group goes into one segment: roll first if it does not fit. Rolling creates and
        // preallocates the next segment, so running out of space fails the group before any write.
        if !active.is_empty() && active.end() + total > active.base() + log.segment_bytes() {
            match log.roll() {
                Ok(next) => active = next,
                Err(e) => {
                    if matches!(e, StorageError::Fatal(_)) {
                        self.die(&e);
                    }
                    for (_, _, reply, _) in appends {
                        let _ = reply.send(Err(e.clone()));
                    }
                    return;
                }
            }
        }
        let start = active.end();
        let mut needs_sync = false;
        let mut waiters = Vec::with_capacity(appends.len());
        let mut index_runs: HashMap<*const Partition, (Arc<Partition>, Vec<u8>)> = HashMap::new();
        let mut next_offsets: HashMap<*const Partition, u64> = HashMap::new();
        let mut state_records = Vec::new();
        self.buf.clear();
        for (records, durability, reply, _) in appends {
            needs_sync |= durability == Durability::Sync;
            let mut results = Vec::with_capacity(records.len());
            for record in records {
                let position = start + self.buf.len() as u64;
                let sequence = match &record.partition {
                    Some(p) => {
                        let key = Arc::as_ptr(p);
                        let next = next_offsets.entry(key).or_insert_with(|| p.index.end());
                        let seq = *next;
                        *next += 1;
                        let entry = IndexEntry {
                            position,
                            length: (HEADER_LEN + record.body.len()) as u32,
                            tag_hash: record.tag_hash,
                            store_time_ms: record.store_time_ms,
                            group_hash: record.group_hash,
                        };
                        entry.encode(&mut index_runs.entry(key).or_insert_with(|| (p.clone(), Vec::new())).1);
                        seq
                    }
                    None => 0,
                };
                frame::encode_into(&mut self.buf, record.kind, position, sequence, &record.body);
                if record.kind != RecordKind::Message {
                    state_records.push((record.kind, position, record.body));
                }
                results.push(Appended { position, queue_offset: sequence });
            }
            waiters.push(Waiter { reply, results, durability });
        }

        if let Err(e) = active.append(start, &self.buf) {
            // Cut off whatever part of the write landed so the next group starts at a clean frame.
            let _ = active.truncate(start);
            let e = StorageError::io("append to log", active.path(), e);
            for w in waiters {
                let _ = w.reply.send(Err(e.clone()));
            }
            return;
        }
        let end = active.end();

        // Async waiters only need the page cache.
        let mut sync_waiters = Vec::new();
        for w in waiters {
            if w.durability == Durability::Sync {
                sync_waiters.push(w);
            } else {
                let _ = w.reply.send(Ok(w.results));
            }
        }
        if needs_sync {
            if let Err(e) = self.sync() {
                self.die(&e);
                for w in sync_waiters {
                    let _ = w.reply.send(Err(e.clone()));
                }
                return;
            }
        } else if self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }

        // Publish: index entries and state records become visible only now, after durability.
        for (_, (partition, encoded)) in index_runs {
            if let Err(e) = partition.index.append(&encoded) {
                // The log has the records and recovery rebuilds the index from it; stop taking writes.
                self.die(&e);
            }
        }
        for (kind, position, body) in state_records {
            self.inner.state.apply(kind, position, &body);
        }
        self.inner.publish(end);
        for w in sync_waiters {
            let _ = w.reply.send(Ok(w.results));
        }
    }

    /// Where a sync started now, without the writer, will reach.
    fn sync_point(&self) -> SyncPoint {
        let segment = self.inner.log.active();
        SyncPoint { end: segment.end(), segment, started: Instant::now() }
    }

    /// Records a sync of `point` that ran without the writer: what was written meanwhile is
    /// still unsynced (as of when the sync started, at the latest).
    fn synced(&mut self, point: &SyncPoint) {
        self.inner.log.mark_durable(point.end);
        self.unsynced_since = (self.inner.log.end() > point.end).then_some(point.started);
    }

    /// fdatasync of the active segment, holding the writer (a `Sync` group must be durable before
    /// it is published and the next group is written).
    fn sync(&mut self) -> Result<(), StorageError> {
        let point = self.sync_point();
        point.sync(&self.inner.metrics)?;
        self.synced(&point);
        Ok(())
    }

    /// Whether `bytes` of new messages (and the next segment, if they would need one) fit above
    /// the free-space reserve; the refusal to send otherwise. Logs when the volume fills or frees.
    ///
    /// The volume is measured (`statvfs`) only when the last measurement is older than
    /// [`FREE_SPACE_TRUSTED`] or what was written since could have brought it within a segment of
    /// the reserve, not for every group.
    fn check_space(&mut self, bytes: u64) -> Option<StorageError> {
        let log = &self.inner.log;
        // Acknowledgements may need to roll into a new segment too: keep room for one.
        let reserve = self.inner.config.min_free_bytes.max(log.segment_bytes());
        let active = log.active();
        // A roll preallocates a whole segment before writing.
        let rolls = active.end() + bytes > active.base() + log.segment_bytes();
        let needed = bytes + if rolls { log.segment_bytes() } else { 0 };
        if let Some(last) = &mut self.free_space {
            let left = last.available.saturating_sub(last.written_since);
            if last.measured.elapsed() < FREE_SPACE_TRUSTED && left >= needed + reserve + log.segment_bytes() {
                last.written_since += needed;
                return None;
            }
        }
        let stat = rustix::fs::statvfs(&self.inner.config.dir).ok()?;
        let available = stat.f_bavail * stat.f_frsize;
        let full = available < needed + reserve;
        self.free_space =
            Some(FreeSpace { measured: Instant::now(), available, written_since: if full { 0 } else { needed } });
        if full != self.disk_full {
            self.disk_full = full;
            if full {
                tracing::error!(available, needed, reserve, "data volume full: refusing sends");
            } else {
                tracing::warn!(available, reserve, "data volume has room again: accepting sends");
            }
        }
        full.then_some(StorageError::DiskFull { available, needed, reserve })
    }

    fn die(&mut self, e: &StorageError) {
        self.inner.poison(e.to_string());
    }
}

fn fail(cmd: Command, e: StorageError) {
    match cmd {
        Command::Append { reply, .. } => {
            let _ = reply.send(Err(e));
        }
        Command::Capture { reply } => {
            let _ = reply.send(Err(e));
        }
        Command::Flush { reply } => {
            let _ = reply.send(Err(e));
        }
        Command::Tick => {}
    }
}
