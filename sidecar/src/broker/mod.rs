//! The broker: what a send, a receive, an ack and an invisibility change do, independent of the wire
//! protocol. The gRPC layer translates RocketMQ requests into these calls and the results back.

mod admin;
pub use admin::{PartitionBacklog, ResetTarget};
mod dead_letter;
mod dedup;
mod drained;
mod log_readers;
mod receive;
mod send;
#[cfg(test)]
mod testing;
mod timer;
mod transaction;

pub use transaction::Resolution;

use dedup::SendDedup;
use drained::DrainMarks;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;

use crate::catalog::{
    BROADCAST_SEPARATOR, Catalog, DEAD_LETTER_PREFIX, GroupConfig, MessageType, StartFrom, Topic, group_label,
};
use crate::clients::Clients;
use crate::consume::filter::Filter;
use crate::consume::progress::{Lease, LeaseError, Progress};
use crate::consume::receipt::Receipt;
use crate::consume::{Consumers, ProgressKey, ProgressKeyRef, ProgressRecord};
use crate::delay::Timer;
use crate::error::BrokerError;
use crate::metrics::Metrics;
use crate::state::BrokerState;
use crate::storage::frame::RecordKind;
use crate::storage::index::{IndexEntry, tag_hash};
use crate::storage::record::{DeadLetterOrigin, StoredMessage, StoredMessageType};
use crate::storage::stored_view::StoredView;
use crate::storage::{AppendRecord, Durability, Partition, RecordBody, StorageError, Store};
use crate::txn::Transactions;

/// Limits and defaults of the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Ordinal of this broker (0 standalone); goes into receipt handles.
    pub broker_id: u32,
    /// Largest message body accepted (advertised to clients as `max_body_size`).
    pub max_body_bytes: usize,
    /// Longest long poll; clients asking for more get this.
    pub max_long_poll: Duration,
    /// Shortest invisible duration a receive may ask for.
    pub min_invisible: Duration,
    /// Longest invisible duration (receive and change).
    pub max_invisible: Duration,
    /// Lease length for auto-renewed (push consumer) receives; renewed while the client lives.
    pub auto_renew_lease: Duration,
    /// Leased messages per (group, partition) at most; beyond it only redeliveries are handed out.
    pub max_leases_per_partition: usize,
    /// Messages one receive returns at most.
    pub max_batch: usize,
    /// A client silent (no heartbeat, no request, no Telemetry stream) this long is gone: its
    /// in-flight messages are released and its broadcast positions forgotten.
    pub client_ttl: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            broker_id: 0,
            max_body_bytes: 4_000_000,
            max_long_poll: Duration::from_secs(20),
            min_invisible: Duration::from_secs(1),
            max_invisible: Duration::from_secs(12 * 3600),
            auto_renew_lease: Duration::from_secs(30),
            max_leases_per_partition: 65_536,
            max_batch: 1024,
            client_ttl: Duration::from_secs(120),
        }
    }
}

/// Where a group with no position yet starts on `partition`.
fn start_offset(from: StartFrom, partition: &Partition) -> Result<u64, BrokerError> {
    Ok(match from {
        StartFrom::Earliest => partition.start_offset(),
        StartFrom::Latest => partition.end_offset(),
        StartFrom::Timestamp(ms) => partition.index.offset_for_time(ms)?,
    })
}

/// A message as a producer sent it.
#[derive(Debug, Clone, Default)]
pub struct IncomingMessage {
    /// Topic.
    pub topic: String,
    /// Client-generated id.
    pub message_id: String,
    /// Declared type.
    pub message_type: Option<MessageType>,
    /// Tag.
    pub tag: Option<String>,
    /// Keys.
    pub keys: Vec<String>,
    /// FIFO sharding key.
    pub message_group: Option<String>,
    /// Requested delivery time (ms since epoch).
    pub delivery_timestamp_ms: Option<i64>,
    /// When the producer created it (ms since epoch).
    pub born_timestamp_ms: i64,
    /// Producer host.
    pub born_host: String,
    /// Application properties.
    pub user_properties: HashMap<String, String>,
    /// Payload.
    pub body: Bytes,
    /// The partition the client picked (a hint).
    pub partition_hint: Option<u32>,
    /// Trace context.
    pub trace_context: String,
}

/// Where a sent message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// Partition.
    pub partition: u32,
    /// Queue offset (0 for delayed and half messages, which have none yet).
    pub offset: u64,
    /// Transaction id of a half message; empty otherwise.
    pub transaction_id: String,
}

/// A receive request.
#[derive(Debug, Clone)]
pub struct ReceiveRequest {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Requesting client.
    pub client: Arc<str>,
    /// Subscription filter.
    pub filter: Filter,
    /// Messages wanted at most.
    pub batch: usize,
    /// Invisibility asked for; `None` with `auto_renew` lets the broker manage it.
    pub invisible: Option<Duration>,
    /// Keep the lease alive while the client lives (push consumers).
    pub auto_renew: bool,
    /// Give up waiting for messages at this instant.
    pub poll_until: Instant,
}

/// A message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stored message, read in place.
    pub message: StoredView,
    /// Partition.
    pub partition: u32,
    /// Queue offset.
    pub offset: u64,
    /// What its handle for ack / change invisibility identifies.
    pub receipt: Receipt,
    /// 1 on first delivery.
    pub attempt: u32,
    /// How long it stays invisible.
    pub invisible: Duration,
}

/// Lag and in-flight of one group on one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStat {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Messages not yet consumed.
    pub lag: u64,
    /// Messages delivered and not acknowledged.
    pub inflight: u64,
}

/// The broker.
pub struct Broker {
    config: BrokerConfig,
    store: Store,
    catalog: Catalog,
    consumers: Arc<Consumers>,
    timer: Arc<Timer>,
    transactions: Arc<Transactions>,
    clients: Clients,
    metrics: Metrics,
    dedup: SendDedup,
    /// What each group's long polls have drained (so one look serves the wake-ups of all).
    drained: DrainMarks,
    round_robin: AtomicUsize,
    transaction_seq: AtomicU64,
    /// Serialises the creation of a group's progress on a partition.
    starting: tokio::sync::Mutex<()>,
    /// Set when the broker shuts down: long polls return and client streams end.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("broker_id", &self.config.broker_id).finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Index group hash shared by every message of a topic with global FIFO order.
const GLOBAL_ORDER_HASH: u32 = 1;

/// The message-group hash a message is indexed with: its group's, or one shared by the whole topic
/// when the topic is globally ordered.
fn index_group_hash(topic: &Topic, group: &str) -> u32 {
    if topic.config.fifo_global { GLOBAL_ORDER_HASH } else { tag_hash(group) }
}

/// Stable hash of a message group to a partition (the same on every broker and restart).
pub fn partition_of_group(group: &str, partitions: u32) -> u32 {
    crc32c::crc32c(group.as_bytes()) % partitions.max(1)
}

impl Broker {
    /// Assembles a broker from its parts.
    pub fn new(
        config: BrokerConfig,
        store: Store,
        catalog: Catalog,
        state: Arc<BrokerState>,
        clients: Clients,
        metrics: Metrics,
    ) -> Self {
        Self {
            config,
            store,
            catalog,
            consumers: state.consumers.clone(),
            timer: state.timer.clone(),
            transactions: state.transactions.clone(),
            clients,
            metrics,
            dedup: SendDedup::default(),
            drained: DrainMarks::default(),
            round_robin: AtomicUsize::new(0),
            transaction_seq: AtomicU64::new(
                SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0),
            ),
            starting: tokio::sync::Mutex::new(()),
            stopping: tokio::sync::watch::channel(false).0,
        }
    }

    /// Ends long polls and client streams (the server is going down).
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves-when-stopping signal for long-lived handlers.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Topics and groups.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The storage engine.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Client sessions.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The progress of `group` on `partition`, starting it (durably) on first use.
    async fn progress(&self, group: &GroupConfig, partition: &Partition) -> Result<Arc<Mutex<Progress>>, BrokerError> {
        let key = ProgressKeyRef { group: &group.name, topic: partition.topic(), partition: partition.id() };
        if let Some(p) = self.consumers.get(&key) {
            return Ok(p);
        }
        let _guard = self.starting.lock().await;
        if let Some(p) = self.consumers.get(&key) {
            return Ok(p);
        }
        let start = start_offset(group.start_from, partition)?;
        let record = ProgressRecord {
            group: group.name.clone(),
            topic: partition.topic().into(),
            partition: partition.id(),
            start_at: Some(start),
            ..Default::default()
        };
        self.append_progress(vec![record]).await?;
        self.consumers
            .get(&key)
            .ok_or_else(|| BrokerError::internal("consumer progress missing after its start was logged"))
    }

    /// Logs consumer progress, synced before this returns.
    async fn append_progress(&self, records: Vec<ProgressRecord>) -> Result<(), BrokerError> {
        self.append_progress_as(records, Durability::Sync).await
    }

    /// Logs consumer progress with `durability`: acknowledgements are kept as durably as the
    /// topic keeps its messages, so an `Async` topic's acks cost no fdatasync (a power loss may
    /// then deliver its last acknowledged messages again: at least once, never lost).
    async fn append_progress_as(
        &self,
        records: Vec<ProgressRecord>,
        durability: Durability,
    ) -> Result<(), BrokerError> {
        let records = records.into_iter().map(|r| AppendRecord::progress(&r.topic, r.encode_to_vec())).collect();
        self.store.append(records, durability).await?;
        Ok(())
    }

    fn load(&self, partition: &Partition, entry: &IndexEntry) -> Result<StoredMessage, BrokerError> {
        Self::decode_stored(partition, self.store.read(entry))
    }

    /// Finds the fields of a stored message read from `partition`'s index, checking it belongs
    /// there.
    fn view_stored(partition: &Partition, read: Result<Bytes, StorageError>) -> Result<StoredView, BrokerError> {
        let view = StoredView::parse(read?).map_err(|e| BrokerError::internal(e.to_string()))?;
        if view.topic() != partition.topic().as_bytes() || view.partition != partition.id() {
            return Err(BrokerError::internal("index entry points at a message of another partition"));
        }
        Ok(view)
    }

    /// Decodes a stored message read from `partition`'s index, checking it belongs there.
    fn decode_stored(partition: &Partition, read: Result<Bytes, StorageError>) -> Result<StoredMessage, BrokerError> {
        let body = read?;
        let message = StoredMessage::decode(body)
            .map_err(|e| BrokerError::internal(format!("stored message does not decode: {e}")))?;
        if message.topic != partition.topic() || message.partition != partition.id() {
            return Err(BrokerError::internal("index entry points at a message of another partition"));
        }
        Ok(message)
    }

    /// The progress and parsed receipt a handle refers to.
    fn lease_of(
        &self,
        group: &GroupConfig,
        topic: &Topic,
        handle: &str,
    ) -> Result<(Arc<Mutex<Progress>>, Receipt), BrokerError> {
        let receipt = self.receipt_of(topic, handle)?;
        Ok((self.progress_of(group, topic, receipt.partition)?, receipt))
    }

    /// The receipt a handle encodes, if it names a partition of `topic`.
    fn receipt_of(&self, topic: &Topic, handle: &str) -> Result<Receipt, BrokerError> {
        let receipt = Receipt::parse(handle)
            .ok_or_else(|| BrokerError::InvalidReceiptHandle("not a receipt handle issued by this broker".into()))?;
        if receipt.partition as usize >= topic.partitions.len() {
            return Err(BrokerError::InvalidReceiptHandle(format!(
                "the handle names partition {} but topic {} has {}",
                receipt.partition,
                topic.config.name,
                topic.partitions.len()
            )));
        }
        Ok(receipt)
    }

    /// The group's progress on a partition it received from (handles of others are invalid).
    fn progress_of(
        &self,
        group: &GroupConfig,
        topic: &Topic,
        partition: u32,
    ) -> Result<Arc<Mutex<Progress>>, BrokerError> {
        let key = ProgressKeyRef { group: &group.name, topic: &topic.config.name, partition };
        self.consumers.get(&key).ok_or_else(|| {
            BrokerError::InvalidReceiptHandle(format!("group {} has received nothing from this partition", group.name))
        })
    }

    /// Releases what `client` had leased: its Telemetry stream ended, so nobody renews or acks those
    /// messages. The session stays until the TTL, so a client that reconnects keeps its place.
    pub fn release_client(&self, client: &str) {
        let released = self.consumers.release_client(client);
        if released > 0 {
            self.store.announce_state();
            tracing::info!(client, released, "client left; its in-flight messages will be redelivered");
        }
    }

    /// `client` is gone for good (it terminated, or was silent past the TTL): its leases are
    /// released, its session dropped and the positions it held in broadcasting groups forgotten
    /// (client ids are per process, so nobody will resume from them).
    pub async fn client_gone(&self, client: &str) -> Result<(), BrokerError> {
        self.release_client(client);
        self.clients.remove(client);
        self.forget_broadcast_client(client).await
    }

    /// Delayed messages waiting for their time.
    pub fn delayed_waiting(&self) -> u64 {
        self.timer.waiting()
    }

    /// Transactions waiting for their outcome.
    pub fn open_transactions(&self) -> usize {
        self.transactions.len()
    }

    /// Lag and in-flight per (group, topic). For a broadcasting group the lag is the largest of its
    /// clients' and the in-flight count their sum.
    pub fn group_stats(&self) -> Vec<GroupStat> {
        let mut per_consumer: HashMap<(Arc<str>, Arc<str>), (u64, u64)> = HashMap::new();
        for (key, progress) in self.consumers.entries() {
            let Some(topic) = self.catalog.existing_topic(&key.topic) else { continue };
            let Some(partition) = topic.partitions.get(key.partition as usize) else { continue };
            let p = progress.lock();
            let entry = per_consumer.entry((key.group.clone(), key.topic.clone())).or_default();
            entry.0 += p.lag(partition.end_offset());
            entry.1 += p.leased() as u64;
        }
        // Declared subscriptions the group never received from yet: everything it would get is lag
        // (what a burst with no consumer running looks like).
        for group in self.catalog.groups().iter().filter(|g| !g.broadcast) {
            for name in &group.subscriptions {
                let Some(topic) = self.catalog.existing_topic(name) else { continue };
                let key = (Arc::<str>::from(group.name.as_str()), Arc::<str>::from(name.as_str()));
                if per_consumer.contains_key(&key) {
                    continue;
                }
                let mut lag = 0;
                for p in &topic.partitions {
                    let start = start_offset(group.start_from, p).unwrap_or(p.end_offset());
                    lag += p.end_offset().saturating_sub(start);
                }
                per_consumer.insert(key, (lag, 0));
            }
        }
        let mut stats: HashMap<(String, String), GroupStat> = HashMap::new();
        for ((group, topic), (lag, inflight)) in per_consumer {
            let label = group_label(&group).to_owned();
            let stat = stats.entry((label.clone(), topic.to_string())).or_insert_with(|| GroupStat {
                group: label,
                topic: topic.to_string(),
                lag: 0,
                inflight: 0,
            });
            stat.lag = stat.lag.max(lag);
            stat.inflight += inflight;
        }
        let mut v: Vec<GroupStat> = stats.into_values().collect();
        v.sort_by(|a, b| (&a.group, &a.topic).cmp(&(&b.group, &b.topic)));
        v
    }

    /// Drops the progress a broadcasting group kept for `client`.
    async fn forget_broadcast_client(&self, client: &str) -> Result<(), BrokerError> {
        let suffix = format!("{BROADCAST_SEPARATOR}{client}");
        let forgotten = self.forget_progress(|group| group.ends_with(&suffix)).await?;
        if forgotten > 0 {
            tracing::info!(client, entries = forgotten, "forgot a departed broadcast consumer");
        }
        Ok(())
    }

    /// Durably drops every progress entry whose group name passes `which`; returns how many.
    async fn forget_progress(&self, which: impl Fn(&str) -> bool) -> Result<usize, BrokerError> {
        let records: Vec<ProgressRecord> = self
            .consumers
            .entries()
            .into_iter()
            .filter(|(k, _)| which(&k.group))
            .map(|(k, _)| ProgressRecord {
                group: k.group.to_string(),
                topic: k.topic.to_string(),
                partition: k.partition,
                forget: true,
                ..Default::default()
            })
            .collect();
        let count = records.len();
        if count > 0 {
            self.append_progress(records).await?;
        }
        Ok(count)
    }
}
