//! The storage engine: one shared commit log per broker plus a small index per partition (the
//! RocketMQ CommitLog + ConsumeQueue design).
//!
//! ```text
//! <data dir>/
//!   commitlog/<position>.log          frames of every partition and every ack   (segment, frame)
//!   index/<topic>/<partition>/<offset>.idx   queue offset -> log position        (index)
//!   checkpoint                         replay start + consumer state snapshot   (checkpoint)
//! ```
//!
//! Writes are group-committed in log order ([`writer`]): request threads write, a writer thread
//! runs the fdatasyncs, and groups become visible in log order once durable as asked
//! (`publisher`); reads are positioned reads from any thread. The log is the only source of
//! truth: indexes and consumer state are rebuilt from it past the checkpoint on every start
//! ([`recovery`]).

mod cache_window;
pub mod checkpoint;
pub mod commitlog;
pub mod frame;
pub mod index;
mod publisher;
pub mod record;
pub mod record_body;
pub mod recovery;
pub mod segment;
mod staging;
pub mod stored_view;
mod upkeep;
pub mod writer;
mod zero_fill;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::lock::{Mutex, RwLock};
use bytes::Bytes;
use prost::Message as _;
use tokio::sync::{oneshot, watch};

use checkpoint::Checkpoint;
use commitlog::CommitLog;
use frame::RecordKind;
use index::{IndexEntry, PartitionIndex};
pub use record_body::RecordBody;
pub use recovery::RecoveryReport;
use upkeep::LogUpkeep;
pub use writer::AppendRecord;
use writer::{Append, Command, Committer};

/// Errors of the storage engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause (shared so the error can be cloned to every waiter of a group commit).
        source: Arc<std::io::Error>,
    },
    /// Stored bytes failed verification.
    #[error("corrupt data{}: {reason}", position.map(|p| format!(" at log position {p}")).unwrap_or_default())]
    Corrupt {
        /// Where, if known.
        position: Option<u64>,
        /// What was wrong.
        reason: String,
    },
    /// A record is larger than a frame may be.
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The data at a position was deleted by retention.
    #[error("log position {position} was deleted by retention")]
    Expired {
        /// The position asked for.
        position: u64,
    },
    /// Durability can no longer be guaranteed (an fsync failed); the store accepts no more writes.
    #[error("storage stopped: {0}")]
    Fatal(String),
    /// The store is shut down.
    #[error("storage is shut down")]
    Closed,
    /// Invalid configuration.
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// The data volume is (nearly) full: messages are refused, the space left is kept for
    /// acknowledgements, indexes and checkpoints.
    #[error(
        "disk full: {available} bytes free on the data volume, {needed} needed above the reserve of {reserve} \
         (--min-free-space); sends are refused until space is freed (shorter retention, a bigger volume)"
    )]
    DiskFull {
        /// Bytes free for the broker.
        available: u64,
        /// What the refused write needed.
        needed: u64,
        /// The configured reserve.
        reserve: u64,
    },
}

impl StorageError {
    /// Wraps an I/O error with the operation and the path.
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io { op, path: path.to_owned(), source: Arc::new(source) }
    }
}

/// fsync of a directory, so that created, renamed and deleted names are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StorageError::io("sync directory", dir, e))
}

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the group commit's fdatasync returned.
    #[default]
    Sync,
    /// After the write reached the page cache; synced within the flush interval.
    Async,
}

/// Where an appended record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Log position of its frame.
    pub position: u64,
    /// Queue offset (messages); 0 for other records.
    pub queue_offset: u64,
}

/// Retention limits; whole sealed segments are deleted when either is exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete segments whose newest data is older than this.
    pub time: Option<Duration>,
    /// Delete the oldest segments while the log is larger than this.
    pub bytes: Option<u64>,
}

/// Settings of a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Data directory.
    pub dir: PathBuf,
    /// Capacity of one segment file.
    pub segment_bytes: u64,
    /// Largest frame (header + body).
    pub max_frame_bytes: u32,
    /// How long Async-durability data may stay unsynced.
    pub async_flush_interval: Duration,
    /// Retention limits.
    pub retention: Retention,
    /// Free space on the data volume kept for acknowledgements, indexes and checkpoints (never less
    /// than one segment, which an acknowledgement may need to roll): messages that would eat into
    /// it are refused (disk full) instead of filling the volume.
    pub min_free_bytes: u64,
    /// How far ahead of the data the active segment is kept zero-filled while Sync appends are
    /// being made, so that their fdatasyncs write only data (see `zero_fill.rs`); 0 turns it off
    /// (every byte then reaches the disk once, as under Async load).
    pub zero_fill_ahead: u64,
    /// Synced log kept in the page cache behind the durable end; older log is let go of, so
    /// consumers further behind read it from the disk (see `cache_window.rs`); 0 keeps it all.
    pub log_cache_window: u64,
}

impl StoreConfig {
    /// Defaults for a data directory: 256 MiB segments, 8 MiB frames, 200 ms async flush, 72 h,
    /// zero-filled 8 MiB ahead, 1 GiB of synced log kept cached.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 256 << 20,
            max_frame_bytes: 8 << 20,
            async_flush_interval: Duration::from_millis(200),
            retention: Retention { time: Some(Duration::from_secs(72 * 3600)), bytes: None },
            min_free_bytes: 64 << 20,
            zero_fill_ahead: 8 << 20,
            log_cache_window: 1 << 30,
        }
    }

    fn validate(&self) -> Result<(), StorageError> {
        if self.segment_bytes < 2 * self.max_frame_bytes as u64 {
            return Err(StorageError::Config(format!(
                "segment size {} must be at least twice the largest frame ({})",
                self.segment_bytes, self.max_frame_bytes
            )));
        }
        Ok(())
    }
}

/// State derived from non-message records (consumer acknowledgements), owned by the broker layer.
///
/// `apply` is called in log order, once for every record: from the writer thread after the record is
/// durable, and during recovery for records after the checkpoint. `snapshot` is taken by the writer
/// between groups, so it reflects exactly the records before the checkpoint position.
pub trait StateMachine: Send + Sync + 'static {
    /// Applies one record written at log `position` (its frame is `HEADER_LEN + body.len()` long).
    fn apply(&self, kind: RecordKind, position: u64, body: &[u8]);
    /// Serialises the current state.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with a snapshot.
    fn restore(&self, snapshot: &[u8]) -> Result<(), String>;
    /// Sees every message replayed during recovery (to rebuild caches such as send de-duplication).
    fn replayed_message(&self, _partition: &Partition, _queue_offset: u64, _body: &[u8]) {}
}

/// The log's readers (the broker's consumer groups), as far as the page cache is concerned: log
/// they have all finished with need not stay cached (see `cache_window.rs`).
pub trait LogReaders: Send + Sync {
    /// The log position before which no reader needs a message any more (`u64::MAX`: no reader
    /// needs anything). Asked by the log upkeep thread about ten times a second.
    fn finished_before(&self) -> u64;
}

/// A state machine that keeps nothing (for tests and tools).
#[derive(Debug, Default)]
pub struct NoState;

impl StateMachine for NoState {
    fn apply(&self, _: RecordKind, _: u64, _: &[u8]) {}
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// Timing the storage engine reports.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// fdatasync durations of the commit log.
    pub fsync_seconds: prometheus::Histogram,
    /// Time from handing records to the log until they are published, by durability.
    pub commit_seconds: prometheus::HistogramVec,
    /// `commit_seconds` of `Sync` and `Async` appends, looked up once.
    commit_sync: prometheus::Histogram,
    commit_async: prometheus::Histogram,
    /// Bytes of synced log let go of from the page cache behind the cache window.
    pub cache_released_bytes: prometheus::IntCounter,
    /// Bytes of log read past the page cache (log it let go of).
    pub direct_read_bytes: prometheus::IntCounter,
    /// Groups written to the commit log.
    pub groups: prometheus::IntCounter,
}

/// From 100 µs (a write to the page cache) to 1 s (a stalled disk).
const STORE_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

impl Default for StoreMetrics {
    fn default() -> Self {
        let opts = prometheus::HistogramOpts::new("weir_store_fsync_seconds", "fdatasync latency of the commit log")
            .buckets(STORE_BUCKETS.to_vec());
        let fsync_seconds = prometheus::Histogram::with_opts(opts).expect("valid histogram");
        let opts = prometheus::HistogramOpts::new(
            "weir_store_commit_seconds",
            "Time from handing records to the commit log until they are published (written, fdatasynced for Sync, indexed)",
        )
        .buckets(STORE_BUCKETS.to_vec());
        let commit_seconds = prometheus::HistogramVec::new(opts, &["durability"]).expect("valid histogram");
        let commit_sync = commit_seconds.with_label_values(&["sync"]);
        let commit_async = commit_seconds.with_label_values(&["async"]);
        let cache_released_bytes = prometheus::IntCounter::new(
            "weir_store_cache_released_bytes_total",
            "Bytes of synced commit log let go of from the page cache, more than the log cache window behind the newest data",
        )
        .expect("valid counter");
        let direct_read_bytes = prometheus::IntCounter::new(
            "weir_store_direct_read_bytes_total",
            "Bytes of commit log read past the page cache (O_DIRECT): log the page cache let go of, read by consumers far behind",
        )
        .expect("valid counter");
        let groups = prometheus::IntCounter::new(
            "weir_store_groups_total",
            "Groups the group commit wrote to the commit log (appends per group: the count of weir_store_commit_seconds over this)",
        )
        .expect("valid counter");
        Self {
            fsync_seconds,
            commit_seconds,
            commit_sync,
            commit_async,
            cache_released_bytes,
            direct_read_bytes,
            groups,
        }
    }
}

impl StoreMetrics {
    /// Registers every instrument with `registry`.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.fsync_seconds.clone()))?;
        registry.register(Box::new(self.commit_seconds.clone()))?;
        registry.register(Box::new(self.cache_released_bytes.clone()))?;
        registry.register(Box::new(self.direct_read_bytes.clone()))?;
        registry.register(Box::new(self.groups.clone()))
    }

    fn observe_fsync(&self, d: Duration) {
        self.fsync_seconds.observe(d.as_secs_f64());
    }

    fn observe_commit(&self, durability: Durability, d: Duration) {
        let histogram = match durability {
            Durability::Sync => &self.commit_sync,
            Durability::Async => &self.commit_async,
        };
        histogram.observe(d.as_secs_f64());
    }
}

/// One partition (RocketMQ message queue) of a topic: its index and offsets.
#[derive(Debug)]
pub struct Partition {
    topic: Arc<str>,
    id: u32,
    /// The partition's index.
    pub index: PartitionIndex,
    /// Bumped when messages of this partition's topic are published (shared by its partitions).
    topic_news: Arc<watch::Sender<u64>>,
}

impl Partition {
    /// Topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Next queue offset to be assigned (= one past the newest readable message).
    pub fn end_offset(&self) -> u64 {
        self.index.end()
    }

    /// Oldest retained queue offset.
    pub fn start_offset(&self) -> u64 {
        self.index.start()
    }
}

/// Publications that may make messages of one topic deliverable: its own messages, and its
/// consumers' progress records (an acknowledgement frees the next message of a FIFO group).
/// Messages and progress of other topics, delayed and half messages and transaction outcomes do
/// not wake it: every waiting receive of the broker used to wake on every publication. Progress
/// appended without a topic ([`AppendRecord::state`]) and [`Store::announce_state`] wake every
/// topic.
#[derive(Debug)]
pub struct News {
    messages: watch::Receiver<u64>,
    state: watch::Receiver<u64>,
}

impl News {
    /// Marks everything so far as seen, and says how far that is.
    pub fn mark_seen(&mut self) -> NewsSeen {
        NewsSeen { messages: *self.messages.borrow_and_update(), state: *self.state.borrow_and_update() }
    }

    /// Whether something was published since [`Self::mark_seen`].
    pub fn has_changed(&self) -> bool {
        self.messages.has_changed().unwrap_or(true) || self.state.has_changed().unwrap_or(true)
    }

    /// Waits until something is published; false once the store is gone.
    pub async fn changed(&mut self) -> bool {
        tokio::select! {
            changed = self.messages.changed() => changed.is_ok(),
            changed = self.state.changed() => changed.is_ok(),
        }
    }
}

/// How much of a topic's news a [`News`] had seen: its message and state announcements so far.
/// Both only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NewsSeen {
    messages: u64,
    state: u64,
}

impl NewsSeen {
    /// Whether everything `other` had seen was seen here too.
    pub fn covers(&self, other: NewsSeen) -> bool {
        self.messages >= other.messages && self.state >= other.state
    }

    /// What either had seen.
    pub fn max(self, other: NewsSeen) -> NewsSeen {
        NewsSeen { messages: self.messages.max(other.messages), state: self.state.max(other.state) }
    }
}

type PartitionKey = (Arc<str>, u32);

pub(crate) struct StoreInner {
    config: StoreConfig,
    /// Retention in force (starts as `config.retention`; a broker in Kubernetes learns its topic's
    /// retention after it has opened the store).
    retention: Mutex<Retention>,
    log: CommitLog,
    partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    state: Arc<dyn StateMachine>,
    metrics: StoreMetrics,
    /// Per topic: bumped when messages of the topic are published (see [`News`]).
    topic_news: Mutex<HashMap<Arc<str>, Arc<watch::Sender<u64>>>>,
    /// Bumped for every topic at once: consumer progress that names no topic, and
    /// [`Store::announce_state`].
    state_news: watch::Sender<u64>,
    /// Replay position of the newest checkpoint on disk; retention never deletes past it.
    checkpointed: AtomicU64,
    poison: OnceLock<String>,
    fatal_hook: Box<dyn Fn(&str) + Send + Sync>,
    /// Who reads the log, once the broker is built ([`Store::follow_readers`]).
    readers: OnceLock<Weak<dyn LogReaders>>,
}

impl StoreInner {
    fn poisoned(&self) -> Option<String> {
        self.poison.get().cloned()
    }

    fn poison(&self, reason: String) {
        if self.poison.set(reason.clone()).is_ok() {
            tracing::error!(%reason, "storage failed; refusing further writes");
            (self.fatal_hook)(&reason);
        }
    }

    fn topic_news(&self, topic: &str) -> Arc<watch::Sender<u64>> {
        let mut news = self.topic_news.lock();
        if let Some(sender) = news.get(topic) {
            return sender.clone();
        }
        let sender = Arc::new(watch::channel(0).0);
        news.insert(Arc::from(topic), sender.clone());
        sender
    }

    fn partition(&self, topic: &str, id: u32) -> Result<Arc<Partition>, StorageError> {
        if let Some(p) = self.partitions.read().get(&(Arc::from(topic), id)) {
            return Ok(p.clone());
        }
        let mut map = self.partitions.write();
        let topic: Arc<str> = Arc::from(topic);
        if let Some(p) = map.get(&(topic.clone(), id)) {
            return Ok(p.clone());
        }
        let dir = self.config.dir.join("index").join(&*topic).join(id.to_string());
        let topic_news = self.topic_news(&topic);
        let p = Arc::new(Partition { topic: topic.clone(), id, index: PartitionIndex::open(dir)?, topic_news });
        map.insert((topic, id), p.clone());
        Ok(p)
    }
}

/// Largest span of the log a batch may cover for [`Store::prefetch`] to read it (and as much
/// again) ahead.
const MAX_PREFETCH_SPAN: u64 = 16 << 20;

/// A handle to an open store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
    committer: Arc<Committer>,
    tx: Arc<Mutex<Option<std::sync::mpsc::Sender<Command>>>>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    upkeep: Arc<Mutex<Option<LogUpkeep>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.inner.config.dir).finish()
    }
}

/// The fields of a stored message that recovery needs, decoded without copying the body.
#[derive(Clone, PartialEq, prost::Message)]
struct MessageRouting {
    #[prost(string, tag = "1")]
    topic: String,
    #[prost(uint32, tag = "2")]
    partition: u32,
    #[prost(string, tag = "4")]
    tag: String,
    #[prost(string, tag = "6")]
    message_group: String,
    #[prost(int64, tag = "10")]
    store_timestamp_ms: i64,
}

impl Store {
    /// Opens the store in `config.dir`: loads the checkpoint, recovers the log past it (torn tail cut,
    /// corruption reported, indexes and `state` rebuilt) and starts the writer thread.
    ///
    /// `fatal_hook` runs once if durability is lost (a failed fsync); the broker exits there.
    pub fn open(
        config: StoreConfig,
        state: Arc<dyn StateMachine>,
        metrics: StoreMetrics,
        fatal_hook: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Result<(Self, RecoveryReport), StorageError> {
        config.validate()?;
        std::fs::create_dir_all(&config.dir).map_err(|e| StorageError::io("create data dir", &config.dir, e))?;
        let checkpoint = Checkpoint::load(&config.dir)?;
        let replay_from = checkpoint.as_ref().map(|c| c.replay_from).unwrap_or(0);
        if let Some(c) = &checkpoint {
            state.restore(&c.state).map_err(|reason| StorageError::Corrupt { position: None, reason })?;
        }
        let log = CommitLog::open(
            &config.dir.join("commitlog"),
            config.segment_bytes,
            config.max_frame_bytes,
            replay_from,
            metrics.direct_read_bytes.clone(),
        )?;
        let inner = Arc::new(StoreInner {
            retention: Mutex::new(config.retention),
            log,
            partitions: RwLock::new(HashMap::new()),
            state,
            metrics,
            topic_news: Mutex::new(HashMap::new()),
            state_news: watch::channel(0).0,
            checkpointed: AtomicU64::new(replay_from),
            poison: OnceLock::new(),
            fatal_hook,
            readers: OnceLock::new(),
            config,
        });
        inner.load_partitions()?;
        let report = inner.recover(replay_from.max(inner.log.start()))?;

        let (tx, rx) = std::sync::mpsc::channel();
        let committer = Arc::new(Committer::new(inner.clone()));
        let thread_committer = committer.clone();
        let writer = std::thread::Builder::new()
            .name("weir-log-writer".into())
            .spawn(move || writer::run(thread_committer, rx))
            .map_err(|e| StorageError::io("start writer thread", &inner.config.dir, e))?;
        let upkeep =
            LogUpkeep::start(Arc::downgrade(&inner), inner.config.zero_fill_ahead, inner.config.log_cache_window)
                .map_err(|e| StorageError::io("start log upkeep thread", &inner.config.dir, e))?;
        let store = Self {
            inner,
            committer,
            tx: Arc::new(Mutex::new(Some(tx))),
            writer: Arc::new(Mutex::new(Some(writer))),
            upkeep: Arc::new(Mutex::new(upkeep)),
        };
        Ok((store, report))
    }

    /// Lets the page cache go of synced log once `readers` have all finished with it, ahead of the
    /// cache window (see `cache_window.rs`). Set once, when the readers exist; held weakly.
    pub fn follow_readers(&self, readers: Weak<dyn LogReaders>) {
        let _ = self.inner.readers.set(readers);
    }

    /// The partition `id` of `topic`, created on first use.
    pub fn partition(&self, topic: &str, id: u32) -> Result<Arc<Partition>, StorageError> {
        self.inner.partition(topic, id)
    }

    /// Every partition the store knows.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.inner.partitions.read().values().cloned().collect()
    }

    /// Appends records; resolves when they are durable as asked and visible to readers.
    pub async fn append(
        &self,
        records: Vec<AppendRecord>,
        durability: Durability,
    ) -> Result<Vec<Appended>, StorageError> {
        if let Some(reason) = self.inner.poisoned() {
            return Err(StorageError::Fatal(reason));
        }
        let (reply, rx) = oneshot::channel();
        let started = Instant::now();
        // Written here (or by whoever holds the writer); the writer thread runs the fdatasync a
        // Sync append waits for, or starts its flush timer. Once it has stopped, the append was
        // refused anyway, so a failed wake-up changes nothing.
        let append = Append { records, durability, reply };
        if !staging::on_current_thread_runtime() {
            self.committer.queue(append);
            self.commit_waiting();
        } else if let Some(first) = staging::Staged::stage(self, append) {
            // The first append of this thread's turn: the thread's other ready requests stage
            // theirs behind it meanwhile, and it writes them all (see `staging`).
            tokio::task::yield_now().await;
            drop(first);
        }
        let appended = rx.await.map_err(|_| self.closed_error())??;
        self.inner.metrics.observe_commit(durability, started.elapsed());
        Ok(appended)
    }

    /// Tells this store's staged appends from another's on the same thread.
    fn identity(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Writes what is queued if this thread can take the writer, and wakes the writer thread if
    /// a written group needs it.
    fn commit_waiting(&self) {
        if self.committer.commit_waiting() {
            let _ = self.send(Command::Wake);
        }
    }

    fn send(&self, cmd: Command) -> Result<(), StorageError> {
        if let Some(reason) = self.inner.poisoned() {
            return Err(StorageError::Fatal(reason));
        }
        let guard = self.tx.lock();
        let tx = guard.as_ref().ok_or(StorageError::Closed)?;
        tx.send(cmd).map_err(|_| StorageError::Closed)
    }

    fn closed_error(&self) -> StorageError {
        self.inner.poisoned().map(StorageError::Fatal).unwrap_or(StorageError::Closed)
    }

    /// Reads the frame an index entry points at and returns its body.
    pub fn read(&self, entry: &IndexEntry) -> Result<Bytes, StorageError> {
        self.inner.log.read_frame(entry.position, entry.length).map(|(_, body)| body)
    }

    /// Reads the bodies of the frames `entries` point at, answering in their order; frames close
    /// together in the log are read at once (see [`CommitLog::read_frames`]).
    pub fn read_many<'a>(&self, entries: impl IntoIterator<Item = &'a IndexEntry>) -> Vec<Result<Bytes, StorageError>> {
        let frames: Vec<(u64, u32)> = entries.into_iter().map(|e| (e.position, e.length)).collect();
        self.inner.log.read_frames(&frames).into_iter().map(|r| r.map(|(_, body)| body)).collect()
    }

    /// Starts reading the frames of `entries`, and as much of the log again after them, into the
    /// page cache in the background. A consumer reading a cold part of the log (a backlog evicted
    /// from memory) otherwise waits for the disk read after read: its messages are interleaved
    /// with other partitions', which the kernel's sequential readahead does not recognise. Reading
    /// the next span ahead lets the disk work while this batch is being delivered. Log the cache
    /// let go of is not read ahead: it is read past the cache when asked (`cache_window.rs`).
    pub fn prefetch<'a>(&self, entries: impl IntoIterator<Item = &'a IndexEntry>) {
        let span = entries.into_iter().filter(|e| !e.is_hole()).fold(None, |span: Option<(u64, u64)>, e| {
            let (start, end) = (e.position, e.position + u64::from(e.length));
            Some(span.map_or((start, end), |(s, t)| (s.min(start), t.max(end))))
        });
        // A batch whose messages lie far apart (most of the log filtered out) is read as it comes.
        if let Some((start, end)) = span.filter(|(s, t)| t - s <= MAX_PREFETCH_SPAN) {
            self.inner.log.prefetch(start, end + (end - start));
        }
    }

    /// Reads the body of the frame of `length` bytes at log `position` (any record kind).
    pub fn read_at(&self, position: u64, length: u32) -> Result<Bytes, StorageError> {
        self.inner.log.read_frame(position, length).map(|(_, body)| body)
    }

    /// What a long poll on `topic` waits for: its messages, or its consumers' progress that may
    /// free some.
    pub fn news(&self, topic: &str) -> News {
        News { messages: self.inner.topic_news(topic).subscribe(), state: self.inner.state_news.subscribe() }
    }

    /// Wakes the long polls on `topic`: something not in the log made messages deliverable (a
    /// lease shortened in memory).
    pub fn announce(&self, topic: &str) {
        self.inner.topic_news(topic).send_modify(|n| *n += 1);
    }

    /// Wakes every long poll: state not in the log changed for many topics (a client's leases
    /// released).
    pub fn announce_state(&self) {
        self.inner.state_news.send_modify(|n| *n += 1);
    }

    /// Forces an fdatasync of everything written so far.
    pub async fn flush(&self) -> Result<u64, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Flush { reply })?;
        rx.await.map_err(|_| self.closed_error())?
    }

    /// Writes a checkpoint: syncs the log and the indexes and stores the state snapshot, so the next
    /// start replays only what comes after. Returns the checkpoint's replay position.
    pub async fn checkpoint(&self) -> Result<u64, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Capture { reply })?;
        let (position, state) = rx.await.map_err(|_| self.closed_error())??;
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            for p in store.partitions() {
                p.index.sync()?;
            }
            Checkpoint { replay_from: position, state }.store(&store.inner.config.dir)?;
            store.inner.checkpointed.store(position, Ordering::Release);
            Ok(position)
        })
        .await
        .map_err(|e| StorageError::Fatal(format!("checkpoint task failed: {e}")))?
    }

    /// Changes the retention limits (applied at the next [`Store::enforce_retention`]).
    pub fn set_retention(&self, retention: Retention) {
        *self.inner.retention.lock() = retention;
    }

    /// Deletes sealed segments past the retention limits (never beyond the checkpoint), then drops
    /// index entries that pointed into them. Returns the bytes freed. Blocking.
    pub fn enforce_retention(&self, now: SystemTime) -> Result<u64, StorageError> {
        let Retention { time, bytes } = *self.inner.retention.lock();
        let log = &self.inner.log;
        let before = log.total_bytes();
        let mut excess = bytes.map(|b| before.saturating_sub(b)).unwrap_or(0);
        let limit = self.inner.checkpointed.load(Ordering::Acquire);
        let start = log.delete_segments(limit, |s| {
            let old = time.is_some_and(|t| {
                std::fs::metadata(s.path())
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| now.duration_since(m).unwrap_or_default() > t)
            });
            let over = excess > 0;
            if old || over {
                excess = excess.saturating_sub(s.len());
                true
            } else {
                false
            }
        })?;
        for p in self.partitions() {
            p.index.retain_from_position(start)?;
        }
        Ok(before - log.total_bytes())
    }

    /// Bytes in the commit log.
    pub fn log_bytes(&self) -> u64 {
        self.inner.log.total_bytes()
    }

    /// Capacity and available bytes of the volume holding the data directory (None if the
    /// file system cannot tell).
    pub fn volume_space(&self) -> Option<(u64, u64)> {
        let stat = rustix::fs::statvfs(&self.inner.config.dir).ok()?;
        Some((stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize))
    }

    /// Position range of the log: (first retained, end written).
    pub fn log_range(&self) -> (u64, u64) {
        (self.inner.log.start(), self.inner.log.end())
    }

    /// Why the store stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<String> {
        self.inner.poisoned()
    }

    /// Stops the writer after it finished queued work, syncs, and writes a final checkpoint.
    pub async fn shutdown(&self) -> Result<(), StorageError> {
        if self.inner.poisoned().is_none() {
            self.checkpoint().await?;
        }
        let upkeep = self.upkeep.lock().take();
        if let Some(upkeep) = upkeep {
            tokio::task::spawn_blocking(move || drop(upkeep))
                .await
                .map_err(|e| StorageError::Fatal(format!("log upkeep thread: {e}")))?;
        }
        self.tx.lock().take();
        let handle = self.writer.lock().take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| StorageError::Fatal(format!("writer thread: {e}")))?
                .map_err(|_| StorageError::Fatal("writer thread panicked".into()))?;
        }
        // Without its zero-filled space the next start need not scan it (it would cope).
        let active = self.inner.log.active();
        if let Err(e) = active.seal() {
            tracing::warn!(segment = %active.path().display(), error = %e, "sealing the commit log at shutdown failed");
        }
        Ok(())
    }
}

impl StoreInner {
    /// Opens the indexes of every partition found on disk.
    fn load_partitions(&self) -> Result<(), StorageError> {
        let root = self.config.dir.join("index");
        let Ok(topics) = std::fs::read_dir(&root) else {
            return Ok(());
        };
        for topic in topics {
            let topic = topic.map_err(|e| StorageError::io("list index dir", &root, e))?.path();
            let Some(name) = topic.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            for part in std::fs::read_dir(&topic).map_err(|e| StorageError::io("list index dir", &topic, e))? {
                let part = part.map_err(|e| StorageError::io("list index dir", &topic, e))?.path();
                if let Some(id) = part.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()) {
                    self.partition(&name, id)?;
                }
            }
        }
        Ok(())
    }

    /// Replays the log from `from`: rebuilds index entries, re-applies state records, then drops any
    /// index entry that points past the recovered end of the log.
    fn recover(&self, from: u64) -> Result<RecoveryReport, StorageError> {
        let report = recovery::scan(&self.log, from, |header, body| {
            match header.kind {
                RecordKind::Message => {
                    let routing = MessageRouting::decode(body).map_err(|e| StorageError::Corrupt {
                        position: Some(header.position),
                        reason: format!("message record does not decode: {e}"),
                    })?;
                    let partition = self.partition(&routing.topic, routing.partition)?;
                    let entry = IndexEntry {
                        position: header.position,
                        length: header.length,
                        tag_hash: index::tag_hash(&routing.tag),
                        store_time_ms: routing.store_timestamp_ms.max(0) as u64,
                        group_hash: index::tag_hash(&routing.message_group),
                    };
                    partition.index.put_recovered(header.sequence, entry)?;
                    self.state.replayed_message(&partition, header.sequence, body);
                }
                kind => self.state.apply(kind, header.position, body),
            }
            Ok(())
        })?;
        for range in &report.corrupt_ranges {
            for p in self.partitions.read().values() {
                p.index.punch_holes(range.start, range.end)?;
            }
            tracing::error!(
                start = range.start,
                end = range.end,
                reason = %range.reason,
                "corrupt commit log range skipped; the records after it were kept"
            );
        }
        if let Some(t) = &report.torn_tail {
            tracing::warn!(position = t.position, bytes = t.bytes_dropped, "torn tail of the commit log cut off");
        }
        for p in self.partitions.read().values() {
            p.index.truncate_from_position(report.log_end)?;
        }
        Ok(report)
    }
}
