//! The group commit: appending to the commit log, one group of appends at a time.
//!
//! Producers and acknowledgers hand in batches of records: bodies they encoded, or sent messages
//! that the group encodes straight into its buffer (see `record_body`). A group takes
//! everything that queued up while the previous one was being written, frames it into one buffer
//! and issues one `pwrite`. Under load the groups grow by themselves, so the cost of a write and
//! of an fdatasync is shared by many messages; at low load a lone message is written at once.
//!
//! On the serving threads the appends of one turn arrive together (`staging`): the first of them
//! queues them all at once, so a turn's sends and acknowledgements share a group.
//!
//! ```text
//!  appends ──► waiting queue ──► [ written on the caller's own thread by whichever caller finds
//!                                  the writer free; it takes the whole queue, a group at a time ]
//!                                        │ groups in log order
//!                                        ▼
//!                                  publisher (publisher.rs) ──► index entries, state, answers
//!                                        ▲ durable end
//!  flushes, checkpoints,                 │
//!  "a Sync group is waiting" ──► [ writer thread: fdatasync of everything written so far, while
//!                                  the callers go on writing the next groups; the flush timer ]
//! ```
//!
//! A caller writes its group itself (as RocketMQ's send path does) instead of waking a thread
//! and being woken in turn: two thread hand-offs per request were a fifth of the broker's CPU.
//! An fdatasync may take milliseconds, so it never runs on a request thread; and since it covers
//! everything written before it started, one runs for all the `Sync` groups written while the
//! previous one was in progress. Writing and syncing overlap, so neither waits for the other.
//!
//! A failed `fdatasync` is fatal: the kernel may have dropped the dirty pages, so nothing written
//! since the last good sync can be acknowledged, and retrying could report success for lost data.
//! The store fails every unpublished group, poisons itself and calls the fatal hook (the broker
//! exits).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use crate::lock::Mutex;
use tokio::sync::oneshot;

use crate::storage::frame::{self, HEADER_LEN, RecordKind};
use crate::storage::index::IndexEntry;
use crate::storage::publisher::{Publisher, Reply, StateRecord, Waiter, WrittenGroup};
use crate::storage::record_body::{RecordBody, digest_sent};
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
    /// For consumer progress: the topic whose long polls it may free a message for (an
    /// acknowledgement frees the next message of a FIFO group). Unset: every topic's.
    pub wakes: Option<Box<str>>,
    /// The body, encoded or to be encoded when written.
    pub body: RecordBody,
}

impl AppendRecord {
    /// A message for `partition`.
    pub fn message(
        partition: Arc<Partition>,
        tag_hash: u32,
        group_hash: u32,
        store_time_ms: u64,
        body: impl Into<RecordBody>,
    ) -> Self {
        Self {
            kind: RecordKind::Message,
            partition: Some(partition),
            tag_hash,
            group_hash,
            store_time_ms,
            wakes: None,
            body: body.into(),
        }
    }

    /// A record for the state machine (consumer progress and the like).
    pub fn state(kind: RecordKind, body: impl Into<RecordBody>) -> Self {
        Self { kind, partition: None, tag_hash: 0, group_hash: 0, store_time_ms: 0, wakes: None, body: body.into() }
    }

    /// Consumer progress on `topic`: once published it wakes that topic's long polls only.
    pub fn progress(topic: &str, body: Vec<u8>) -> Self {
        Self { wakes: Some(topic.into()), ..Self::state(RecordKind::Ack, body) }
    }
}

/// One caller's records, waiting to be written.
pub(crate) struct Append {
    pub(crate) records: Vec<AppendRecord>,
    pub(crate) durability: Durability,
    pub(crate) reply: Reply,
}

impl Append {
    pub(crate) fn bytes(&self) -> usize {
        self.records.iter().map(|r| r.body.len() + HEADER_LEN).sum()
    }

    /// Computes the body digests of the sent messages of `appends` together (see
    /// [`record_body`](crate::storage::record_body)). Every append passes here once, as it is
    /// queued ([`Committer::queue`], [`Committer::queue_all`]).
    fn digest_all<'a>(appends: impl IntoIterator<Item = &'a mut Append>) {
        digest_sent(appends.into_iter().flat_map(|a| a.records.iter_mut().map(|r| &mut r.body)));
    }

    /// Whether it carries messages (acknowledgements alone may use the free-space reserve).
    fn carries_messages(&self) -> bool {
        self.records.iter().any(|r| r.kind == RecordKind::Message)
    }
}

/// Work for the writer thread.
pub(crate) enum Command {
    /// Sync the log and capture (position, state snapshot) for a checkpoint.
    Capture { reply: oneshot::Sender<Result<(u64, Vec<u8>), StorageError>> },
    /// Sync the log now.
    Flush { reply: oneshot::Sender<Result<u64, StorageError>> },
    /// A group was written on a caller's thread that waits for an fdatasync, or that started the
    /// flush timer: the writer thread looks again.
    Wake,
}

/// Limits of one group commit.
const MAX_GROUP_BYTES: usize = 8 << 20;

/// Capacity the writer's encoding buffer starts with; a group of up to this size never grows it.
pub(super) const GROUP_BUFFER_BYTES: usize = 1 << 20;

/// The writer and the appends waiting for it. Whoever holds `writer` writes.
pub(crate) struct Committer {
    inner: Arc<StoreInner>,
    writer: Mutex<Writer>,
    waiting: Mutex<Vec<Append>>,
    publisher: Arc<Publisher>,
    /// Bytes of one group at most.
    limit: usize,
}

impl Committer {
    pub(crate) fn new(inner: Arc<StoreInner>) -> Self {
        let limit = MAX_GROUP_BYTES.min(inner.config.segment_bytes as usize / 2);
        let publisher = Arc::new(Publisher::new(inner.clone(), inner.log.end()));
        let writer = Writer {
            inner: inner.clone(),
            publisher: publisher.clone(),
            buf: Vec::with_capacity(GROUP_BUFFER_BYTES),
            next_offsets: ByPartition::default(),
            unsynced_since: None,
            disk_full: false,
            closed: false,
            free_space: None,
        };
        Self { inner, writer: Mutex::new(writer), waiting: Mutex::new(Vec::new()), publisher, limit }
    }

    /// Queues an append, to be written by the next [`Self::commit_waiting`] (this caller's or
    /// anyone's). Its sent messages are digested first, outside the lock.
    pub(crate) fn queue(&self, mut append: Append) {
        Append::digest_all([&mut append]);
        self.waiting.lock().push(append);
    }

    /// Queues appends, in order, under one lock; the sent messages of all of them are digested
    /// together first, outside it (a serving thread's turn, see `staging`).
    pub(crate) fn queue_all(&self, appends: impl IntoIterator<Item = Append>) {
        let mut appends: Vec<Append> = appends.into_iter().collect();
        Append::digest_all(&mut appends);
        self.waiting.lock().extend(appends);
    }

    /// Writes the queue while this thread can take the writer. Returns whether the writer thread
    /// must now be woken: a group waits for its fdatasync, or the flush timer must start (see
    /// [`Command::Wake`]). The holder of the writer always looks at the queue again after letting
    /// go, so an append queued while it held the writer (whose own attempt found it taken) is
    /// never left behind.
    pub(crate) fn commit_waiting(&self) -> bool {
        let mut wake = false;
        loop {
            if self.waiting.lock().is_empty() {
                return wake;
            }
            let Some(mut writer) = self.writer.try_lock() else { return wake };
            wake |= self.drain_waiting(&mut writer);
        }
    }

    /// Runs `f` with the writer (waiting for it if another thread holds it) after writing what
    /// is queued, and writes what queued meanwhile after it. Every use of the writer goes through
    /// here or [`Self::commit_waiting`], so whoever lets go of the writer first writes what others
    /// queued while it was held. Only the writer thread calls this, and it sends itself no
    /// wake-up: it looks for unpublished groups after every call, before it sleeps.
    fn with_writer<T>(&self, f: impl FnOnce(&mut Writer) -> T) -> T {
        let mut writer = self.writer.lock();
        self.drain_waiting(&mut writer);
        let result = f(&mut writer);
        self.drain_waiting(&mut writer);
        drop(writer);
        self.commit_waiting();
        result
    }

    /// Writes everything queued, a group at a time; returns whether the writer thread must look.
    fn drain_waiting(&self, writer: &mut Writer) -> bool {
        let mut wake = false;
        loop {
            let group = {
                let mut waiting = self.waiting.lock();
                let mut bytes = 0;
                let take = waiting
                    .iter()
                    .take_while(|append| {
                        bytes += append.bytes();
                        bytes <= self.limit
                    })
                    .count()
                    .max(1)
                    .min(waiting.len());
                waiting.drain(..take).collect::<Vec<_>>()
            };
            if group.is_empty() {
                return wake;
            }
            wake |= writer.commit(group);
        }
    }

    /// Makes everything written so far durable without holding the writer while the fdatasync
    /// runs, so appends go on meanwhile, then publishes the groups that waited for it. Returns
    /// the position the sync reached. A failure is fatal: every unpublished group fails.
    fn sync(&self) -> Result<u64, StorageError> {
        let point = self.with_writer(|w| w.sync_point());
        let result = if point.end > self.inner.log.durable() { point.sync(&self.inner.metrics) } else { Ok(()) };
        match &result {
            Ok(()) => {
                // Answer the waiters before taking the writer again (a group may be being written).
                self.inner.log.mark_durable(point.end);
                self.publisher.publish_durable();
                self.with_writer(|w| w.synced(&point));
            }
            Err(e) => {
                // Poisoned first, so no group is written after the unpublished ones have failed.
                self.with_writer(|w| w.die(e));
                self.publisher.fail_all(e);
            }
        }
        result.map(|()| point.end)
    }
}

/// The writer thread: runs fdatasyncs for the groups that wait for one, for flushes and
/// checkpoints (one sync serves every request that queued meanwhile), and for `Async` data when
/// the flush interval runs out. Runs until every sender is gone.
pub(crate) fn run(committer: Arc<Committer>, rx: Receiver<Command>) {
    let flush_every = committer.inner.config.async_flush_interval;
    let mut disconnected = false;
    while !disconnected {
        let unsynced_since = committer.with_writer(|w| w.unsynced_since);
        // Checked after `with_writer`: groups it wrote for others sent no wake-up.
        let timeout = match unsynced_since {
            _ if committer.publisher.has_unpublished() => Duration::ZERO,
            Some(t) => flush_every.saturating_sub(t.elapsed()),
            None => Duration::from_secs(3600),
        };
        // Take everything queued up, so one fdatasync answers it all.
        let mut flushes = Vec::new();
        let mut captures = Vec::new();
        let mut next = match rx.recv_timeout(timeout) {
            Ok(cmd) => Some(cmd),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                disconnected = true;
                None
            }
        };
        while let Some(cmd) = next {
            match cmd {
                Command::Wake => {}
                Command::Flush { reply } => flushes.push(reply),
                Command::Capture { reply } => captures.push(reply),
            }
            next = match rx.try_recv() {
                Ok(cmd) => Some(cmd),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    None
                }
            };
        }
        // A checkpoint's snapshot matches the published position, which this sync makes durable.
        let captured: Vec<_> = captures
            .into_iter()
            .map(|reply| (reply, committer.publisher.at_published_end(|| committer.inner.state.snapshot())))
            .collect();
        // Only this thread clears `unsynced_since`: if it was set above it still is (data written
        // since it was read sent a wake-up, and is looked at on the next turn).
        let due = committer.publisher.has_unpublished() || unsynced_since.is_some_and(|t| t.elapsed() >= flush_every);
        if !due && flushes.is_empty() && captured.is_empty() {
            continue;
        }
        // A failure poisons the store inside.
        let result = committer.sync();
        for reply in flushes {
            let _ = reply.send(result.clone());
        }
        for (reply, captured) in captured {
            let _ = reply.send(result.clone().map(|_| captured));
        }
    }
    let mut writer = committer.writer.lock();
    committer.drain_waiting(&mut writer);
    // Appends that come later are refused: nothing would sync them.
    writer.closed = true;
    match writer.sync() {
        Ok(()) => committer.publisher.publish_durable(),
        Err(e) => {
            writer.die(&e);
            committer.publisher.fail_all(&e);
        }
    }
    // Any that queued meanwhile are answered (refused), not left waiting.
    committer.drain_waiting(&mut writer);
}

struct Writer {
    inner: Arc<StoreInner>,
    publisher: Arc<Publisher>,
    buf: Vec<u8>,
    /// Next queue offset of every partition written to since the publisher was last left idle:
    /// a partition's index ends at its last published offset, and groups written after it may
    /// still be waiting for their fdatasync.
    /// Keyed by [`partition_key`]; the `Arc` beside it keeps that address unique.
    next_offsets: ByPartition<(Arc<Partition>, u64)>,
    /// Set while written data is not yet fdatasynced.
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
    /// Writes the appends of `group` as one group, refusing those that cannot be written. Returns
    /// whether the writer thread must look (the group waits for an fdatasync, or the data written
    /// is the first unsynced since the last sync and the flush timer must start).
    fn commit(&mut self, group: Vec<Append>) -> bool {
        if let Some(reason) = self.inner.poisoned() {
            for append in group {
                let _ = append.reply.send(Err(StorageError::Fatal(reason.clone())));
            }
            return false;
        }
        if self.closed {
            for append in group {
                let _ = append.reply.send(Err(StorageError::Closed));
            }
            return false;
        }
        let messages: u64 = group.iter().filter(|a| a.carries_messages()).map(|a| a.bytes() as u64).sum();
        let full = if messages > 0 { self.check_space(messages) } else { None };
        let log = &self.inner.log;
        let mut accepted = Vec::with_capacity(group.len());
        for append in group {
            let size: u64 = append.records.iter().map(|r| frame::padded((HEADER_LEN + r.body.len()) as u64)).sum();
            let refusal =
                if let Some(r) = append.records.iter().find(|r| r.body.len() + HEADER_LEN > log.max_frame() as usize) {
                    Some(StorageError::TooLarge { len: r.body.len(), max: log.max_frame() as usize - HEADER_LEN })
                } else if size > log.segment_bytes() / 2 {
                    Some(StorageError::TooLarge { len: size as usize, max: log.segment_bytes() as usize / 2 })
                } else {
                    full.clone().filter(|_| append.carries_messages())
                };
            match refusal {
                Some(e) => {
                    let _ = append.reply.send(Err(e));
                }
                None => accepted.push((append, size)),
            }
        }
        if accepted.is_empty() {
            return false;
        }
        let was_unsynced = self.unsynced_since.is_some();
        match self.append_group(accepted) {
            Some(needs_sync) => needs_sync || !was_unsynced,
            None => false,
        }
    }

    /// Frames and writes one group and hands it to the publisher. Returns whether it waits for an
    /// fdatasync, or `None` if it could not be written (its waiters were answered with the error).
    fn append_group(&mut self, appends: Vec<(Append, u64)>) -> Option<bool> {
        let log = &self.inner.log;
        let total: u64 = appends.iter().map(|(_, size)| size).sum();
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
                    for (append, _) in appends {
                        let _ = append.reply.send(Err(e.clone()));
                    }
                    return None;
                }
            }
        }
        let start = active.end();
        let mut needs_sync = false;
        let mut waiters = Vec::with_capacity(appends.len());
        let mut index_runs: ByPartition<(Arc<Partition>, Vec<u8>)> = ByPartition::default();
        let mut next_offsets: ByPartition<u64> = ByPartition::default();
        let mut state_records = Vec::new();
        self.buf.clear();
        for (append, _) in appends {
            needs_sync |= append.durability == Durability::Sync;
            let mut results = Vec::with_capacity(append.records.len());
            for record in append.records {
                let position = start + self.buf.len() as u64;
                let sequence = match &record.partition {
                    Some(p) => {
                        let key = partition_key(p);
                        let next = next_offsets.entry(key).or_insert_with(|| {
                            self.next_offsets.get(&key).map_or_else(|| p.index.end(), |(_, next)| *next)
                        });
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
                let body_start = self.buf.len() + HEADER_LEN;
                frame::encode_with(&mut self.buf, record.kind, position, sequence, record.body.len(), |out| {
                    record.body.write_into(out)
                });
                if record.kind != RecordKind::Message {
                    let written = &self.buf[body_start..body_start + record.body.len()];
                    state_records.push(StateRecord {
                        kind: record.kind,
                        position,
                        body: record.body.into_bytes(written),
                        wakes: record.wakes,
                    });
                }
                results.push(Appended { position, queue_offset: sequence });
            }
            waiters.push(Waiter { reply: append.reply, results });
        }

        if let Err(e) = active.append(start, &self.buf) {
            // Cut off whatever part of the write landed so the next group starts at a clean frame.
            let _ = active.truncate(start);
            let e = StorageError::io("append to log", active.path(), e);
            for w in waiters {
                let _ = w.reply.send(Err(e.clone()));
            }
            return None;
        }
        self.inner.metrics.groups.inc();
        // The offsets are taken only now that the group is in the log.
        for (&key, (partition, _)) in &index_runs {
            self.next_offsets.insert(key, (partition.clone(), next_offsets[&key]));
        }
        if self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        if needs_sync {
            log.count_sync_group();
        }
        let idle = self.publisher.push(WrittenGroup {
            end: active.end(),
            needs_sync,
            index_runs: index_runs.into_values().collect(),
            state_records,
            waiters,
        });
        // With nothing unpublished, every partition's index ends at its next offset.
        if idle {
            self.next_offsets.clear();
        }
        Some(needs_sync)
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

    /// fdatasync of the active segment, holding the writer (the last sync at shutdown).
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

/// Maps keyed by [`partition_key`], looked up twice per message while the writer is held: a fast
/// hasher (the keys are addresses, not chosen by clients).
type ByPartition<V> = HashMap<usize, V, foldhash::fast::RandomState>;

/// A partition's address, as a map key for the partitions of the groups being written.
fn partition_key(partition: &Arc<Partition>) -> usize {
    Arc::as_ptr(partition) as usize
}
