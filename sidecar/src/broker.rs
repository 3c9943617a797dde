//! The broker: what a send, a receive, an ack and an invisibility change do, independent of the wire
//! protocol. The gRPC layer translates RocketMQ requests into these calls and the results back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use md5::{Digest, Md5};
use parking_lot::Mutex;
use prost::Message as _;

use crate::catalog::{Catalog, DEAD_LETTER_PREFIX, GroupConfig, MessageType, StartFrom, Topic};
use crate::clients::Clients;
use crate::consume::filter::Filter;
use crate::consume::progress::{Lease, LeaseError, Progress};
use crate::consume::receipt::Receipt;
use crate::consume::{Consumers, ProgressKey, ProgressRecord};
use crate::error::BrokerError;
use crate::metrics::Metrics;
use crate::storage::frame::RecordKind;
use crate::storage::index::{IndexEntry, tag_hash};
use crate::storage::record::{DeadLetterOrigin, StoredMessage, StoredMessageType};
use crate::storage::{AppendRecord, Durability, Partition, Store};

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
        }
    }
}

/// Properties RocketMQ reserves for itself; producers may not set them as user properties.
const RESERVED_PROPERTIES: &[&str] = &[
    "KEYS",
    "TAGS",
    "WAIT",
    "DELAY",
    "RETRY_TOPIC",
    "REAL_TOPIC",
    "REAL_QID",
    "TRAN_MSG",
    "PGROUP",
    "MIN_OFFSET",
    "MAX_OFFSET",
    "BUYER_ID",
    "ORIGIN_MESSAGE_ID",
    "TRANSFER_FLAG",
    "CORRECTION_FLAG",
    "MQ2_FLAG",
    "RECONSUME_TIME",
    "MSG_REGION",
    "TRACE_ON",
    "UNIQ_KEY",
    "MAX_RECONSUME_TIMES",
    "CONSUME_START_TIME",
    "__STARTDELIVERTIME",
    "TIMER_DELIVER_MS",
    "TIMER_DELAY_SEC",
    "TIMER_DELAY_MS",
    "SHARDING_KEY",
    "INNER_NUM",
    "INNER_BASE",
    "CLUSTER",
    "__SHARDINGKEY",
    "__BORNHOST",
];
/// Index group hash shared by every message of a topic with global FIFO order.
const GLOBAL_ORDER_HASH: u32 = 1;
/// User properties per message at most.
const MAX_PROPERTIES: usize = 128;
/// Bytes of user property keys and values per message at most.
const MAX_PROPERTY_BYTES: usize = 16 * 1024;
/// Longest message id, tag, key or message group.
const MAX_FIELD_LEN: usize = 128;

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
    /// The client's message id.
    pub message_id: String,
    /// Partition.
    pub partition: u32,
    /// Queue offset.
    pub offset: u64,
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
    /// The stored message.
    pub message: StoredMessage,
    /// Partition.
    pub partition: u32,
    /// Queue offset.
    pub offset: u64,
    /// Handle for ack / change invisibility.
    pub receipt: String,
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

/// Recent sends by (topic, message id), so a client's retry of a send that did succeed is answered
/// with the original result instead of storing the message twice.
#[derive(Debug, Default)]
struct SendDedup {
    seen: HashMap<(Arc<str>, String), (SendReceipt, Instant)>,
    order: VecDeque<((Arc<str>, String), Instant)>,
}

const DEDUP_CAPACITY: usize = 100_000;
const DEDUP_WINDOW: Duration = Duration::from_secs(300);

impl SendDedup {
    fn get(&self, topic: &str, id: &str) -> Option<SendReceipt> {
        let (r, at) = self.seen.get(&(Arc::from(topic), id.to_owned()))?;
        (at.elapsed() < DEDUP_WINDOW).then(|| r.clone())
    }

    fn insert(&mut self, topic: Arc<str>, receipt: SendReceipt) {
        let now = Instant::now();
        let key = (topic, receipt.message_id.clone());
        self.order.push_back((key.clone(), now));
        self.seen.insert(key, (receipt, now));
        while self.order.len() > DEDUP_CAPACITY || self.order.front().is_some_and(|(_, t)| t.elapsed() > DEDUP_WINDOW) {
            let (k, t) = self.order.pop_front().expect("non-empty");
            if self.seen.get(&k).is_some_and(|(_, at)| *at == t) {
                self.seen.remove(&k);
            }
        }
    }
}

/// The broker.
pub struct Broker {
    config: BrokerConfig,
    store: Store,
    catalog: Catalog,
    consumers: Arc<Consumers>,
    clients: Clients,
    metrics: Metrics,
    dedup: Mutex<SendDedup>,
    round_robin: AtomicUsize,
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
        consumers: Arc<Consumers>,
        clients: Clients,
        metrics: Metrics,
    ) -> Self {
        Self {
            config,
            store,
            catalog,
            consumers,
            clients,
            metrics,
            dedup: Mutex::new(SendDedup::default()),
            round_robin: AtomicUsize::new(0),
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

    /// Stores messages. One result per message, in order; the valid ones share one group commit.
    pub async fn send(&self, messages: Vec<IncomingMessage>) -> Vec<Result<SendReceipt, BrokerError>> {
        let started = Instant::now();
        let mut results: Vec<Option<Result<SendReceipt, BrokerError>>> = vec![None; messages.len()];
        let mut records = Vec::new();
        let mut pending = Vec::new();
        let mut durability = Durability::Async;
        for (slot, message) in messages.into_iter().enumerate() {
            match self.prepare(message) {
                Ok(Prepared::Duplicate(receipt)) => results[slot] = Some(Ok(receipt)),
                Ok(Prepared::New { record, topic, partition, message_id, body_len, message_type }) => {
                    if topic.config.durability == Durability::Sync {
                        durability = Durability::Sync;
                    }
                    pending.push((slot, topic, partition, message_id, body_len, message_type));
                    records.push(record);
                }
                Err(e) => results[slot] = Some(Err(e)),
            }
        }
        if !records.is_empty() {
            match self.store.append(records, durability).await {
                Ok(appended) => {
                    let mut dedup = self.dedup.lock();
                    for ((slot, topic, partition, message_id, body_len, message_type), a) in
                        pending.into_iter().zip(appended)
                    {
                        let name = topic.config.name.as_str();
                        let labels = [name, message_type.label()];
                        self.metrics.messages_in.with_label_values(&labels).inc();
                        self.metrics.throughput_in.with_label_values(&labels).inc_by(body_len as u64);
                        self.metrics.message_size.with_label_values(&labels).observe(body_len as f64);
                        self.metrics.send_latency.with_label_values(&[name]).observe(started.elapsed().as_secs_f64());
                        let receipt = SendReceipt { message_id, partition, offset: a.queue_offset };
                        dedup.insert(Arc::from(name), receipt.clone());
                        results[slot] = Some(Ok(receipt));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "send failed in storage");
                    for (slot, ..) in pending {
                        results[slot] = Some(Err(BrokerError::Storage(e.clone())));
                    }
                }
            }
        }
        results.into_iter().map(|r| r.expect("every slot answered")).collect()
    }

    /// Validates a message and encodes its record, or finds that it was already stored.
    fn prepare(&self, m: IncomingMessage) -> Result<Prepared, BrokerError> {
        let topic = self.catalog.topic(&m.topic)?;
        if m.message_id.is_empty() {
            return Err(BrokerError::IllegalMessageId("the message id is empty".into()));
        }
        if m.message_id.len() > MAX_FIELD_LEN {
            return Err(BrokerError::IllegalMessageId(format!("longer than {MAX_FIELD_LEN} characters")));
        }
        if let Some(receipt) = self.dedup.lock().get(&topic.config.name, &m.message_id) {
            return Ok(Prepared::Duplicate(receipt));
        }
        if m.body.is_empty() {
            return Err(BrokerError::BodyEmpty);
        }
        if m.body.len() > self.config.max_body_bytes {
            return Err(BrokerError::BodyTooLarge { len: m.body.len(), max: self.config.max_body_bytes });
        }
        let tag = m.tag.unwrap_or_default();
        if m_tag_invalid(&tag) {
            return Err(BrokerError::IllegalTag(format!("{tag:?}: tags must not be blank or contain `|`")));
        }
        if let Some(k) = m.keys.iter().find(|k| k.trim().is_empty() || k.len() > MAX_FIELD_LEN) {
            return Err(BrokerError::IllegalKey(format!(
                "{k:?}: keys must not be blank or longer than {MAX_FIELD_LEN}"
            )));
        }
        validate_properties(&m.user_properties)?;
        let message_type = m.message_type.unwrap_or(MessageType::Normal);
        if !topic.accepts(message_type) {
            let accepted: Vec<&str> = topic.config.accepts.iter().map(|t| t.label()).collect();
            return Err(BrokerError::MessageTypeConflict(format!(
                "topic {} accepts {} messages, not {}",
                topic.config.name,
                accepted.join("/"),
                message_type.label()
            )));
        }
        let group = m.message_group.unwrap_or_default();
        if group.len() > MAX_FIELD_LEN {
            return Err(BrokerError::IllegalMessageGroup(format!("longer than {MAX_FIELD_LEN} characters")));
        }
        let count = topic.partitions.len() as u32;
        let partition = match message_type {
            // Order lives per message group, so the broker, not the client, picks the partition.
            MessageType::Fifo => partition_of_group(&group, count),
            _ => match m.partition_hint {
                Some(p) if p < count => p,
                _ => (self.round_robin.fetch_add(1, Ordering::Relaxed) % count as usize) as u32,
            },
        };
        let body_len = m.body.len();
        let store_time = now_ms();
        let stored = StoredMessage {
            topic: topic.config.name.clone(),
            partition,
            message_id: m.message_id.clone(),
            tag,
            keys: m.keys,
            message_group: group,
            message_type: stored_type(message_type) as i32,
            born_timestamp_ms: m.born_timestamp_ms,
            born_host: m.born_host,
            store_timestamp_ms: store_time,
            delivery_timestamp_ms: m.delivery_timestamp_ms.unwrap_or(0),
            user_properties: m.user_properties,
            body_md5: Bytes::copy_from_slice(&Md5::digest(&m.body)),
            body: m.body,
            trace_context: m.trace_context,
            dead_letter: None,
        };
        // Global FIFO: every message in one order, whatever group the client named.
        let group_hash = if topic.config.fifo_global { GLOBAL_ORDER_HASH } else { tag_hash(&stored.message_group) };
        let record = AppendRecord::message(
            topic.partitions[partition as usize].clone(),
            tag_hash(&stored.tag),
            group_hash,
            store_time as u64,
            stored.encode_to_vec(),
        );
        Ok(Prepared::New { record, topic, partition, message_id: m.message_id, body_len, message_type })
    }

    /// Hands out up to `req.batch` messages, waiting (long polling) until some are available or
    /// `req.poll_until` passes. An empty result means nothing arrived in time.
    pub async fn receive(&self, req: &ReceiveRequest) -> Result<Vec<Delivery>, BrokerError> {
        let topic = self.catalog.topic(&req.topic)?;
        let group = self.catalog.group(&req.group)?;
        let invisible = match (req.invisible, req.auto_renew) {
            (Some(d), _) => self.check_invisible(d, self.config.min_invisible)?,
            (None, true) => self.config.auto_renew_lease,
            (None, false) => {
                return Err(BrokerError::IllegalInvisibleTime(
                    "invisible_duration is required unless auto_renew is set".into(),
                ));
            }
        };
        if req.batch == 0 {
            return Err(BrokerError::BadRequest("batch_size must be at least 1".into()));
        }
        let batch = req.batch.min(self.config.max_batch);
        let mut published = self.store.subscribe();
        let mut stopping = self.stopping();
        loop {
            published.borrow_and_update();
            let (deliveries, next_deadline) = if group.consume_enabled {
                self.claim(&topic, &group, req, batch, invisible).await?
            } else {
                (Vec::new(), None)
            };
            if !deliveries.is_empty() {
                return Ok(deliveries);
            }
            let now = Instant::now();
            if now >= req.poll_until {
                return Ok(Vec::new());
            }
            let wake = next_deadline.map_or(req.poll_until, |d| d.min(req.poll_until));
            tokio::select! {
                changed = published.changed() => {
                    if changed.is_err() {
                        return Ok(Vec::new());
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = stopping.wait_for(|s| *s) => return Ok(Vec::new()),
            }
        }
    }

    fn check_invisible(&self, d: Duration, min: Duration) -> Result<Duration, BrokerError> {
        if d < min || d > self.config.max_invisible {
            return Err(BrokerError::IllegalInvisibleTime(format!(
                "{} ms is outside the allowed range of {} ms to {} ms",
                d.as_millis(),
                min.as_millis(),
                self.config.max_invisible.as_millis()
            )));
        }
        Ok(d)
    }

    /// The progress of `group` on `partition`, starting it (durably) on first use.
    async fn progress(&self, group: &GroupConfig, partition: &Partition) -> Result<Arc<Mutex<Progress>>, BrokerError> {
        let key = ProgressKey::new(&group.name, partition.topic(), partition.id());
        if let Some(p) = self.consumers.get(&key) {
            return Ok(p);
        }
        let _guard = self.starting.lock().await;
        if let Some(p) = self.consumers.get(&key) {
            return Ok(p);
        }
        let start = match group.start_from {
            StartFrom::Earliest => partition.start_offset(),
            StartFrom::Latest => partition.end_offset(),
            StartFrom::Timestamp(ms) => partition.index.offset_for_time(ms)?,
        };
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

    async fn append_progress(&self, records: Vec<ProgressRecord>) -> Result<(), BrokerError> {
        let records = records.into_iter().map(|r| AppendRecord::state(RecordKind::Ack, r.encode_to_vec())).collect();
        self.store.append(records, Durability::Sync).await?;
        Ok(())
    }

    /// One pass over the topic's partitions: expired leases first, then messages given back by a
    /// dead-letter resend, then (FIFO) messages whose group became free, then new messages. Returns
    /// the deliveries and the earliest lease deadline seen (when something may become visible again).
    async fn claim(
        &self,
        topic: &Topic,
        group: &GroupConfig,
        req: &ReceiveRequest,
        batch: usize,
        invisible: Duration,
    ) -> Result<(Vec<Delivery>, Option<Instant>), BrokerError> {
        let count = topic.partitions.len();
        let first = self.round_robin.fetch_add(1, Ordering::Relaxed);
        let mut claimer =
            Claimer { broker: self, req, group, invisible, batch, claimed: Vec::new(), exhausted: Vec::new() };
        let mut next_deadline: Option<Instant> = None;
        for i in 0..count {
            if claimer.room() == 0 {
                break;
            }
            let partition = &topic.partitions[(first + i) % count];
            let progress = self.progress(group, partition).await?;
            let mut p = progress.lock();
            let now = Instant::now();
            claimer.expired(&mut p, partition, now)?;
            claimer.revived(&mut p, partition, now)?;
            if group.fifo {
                claimer.deferred(&mut p, partition, now)?;
            }
            claimer.fresh(&mut p, partition, now)?;
            if let Some(d) = p.next_deadline() {
                next_deadline = Some(next_deadline.map_or(d, |n| n.min(d)));
            }
        }
        let Claimer { claimed, exhausted, .. } = claimer;
        if !exhausted.is_empty() {
            // Past max attempts: to the dead-letter queue instead of another delivery. A failure
            // leaves them leased, so they are retried when the lease runs out.
            if let Err(e) = self.dead_letter(group, exhausted).await {
                tracing::error!(group = group.name, error = %e, "moving messages to the dead-letter queue failed");
            }
        }
        let mut deliveries = Vec::with_capacity(claimed.len());
        for Claimed { partition, offset, entry, lease } in claimed {
            match self.load(&partition, &entry) {
                Ok(message) if req.filter.matches(&message.tag) => {
                    let labels = [topic.config.name.as_str(), group.name.as_str()];
                    self.metrics.messages_out.with_label_values(&labels).inc();
                    self.metrics.throughput_out.with_label_values(&labels).inc_by(message.body.len() as u64);
                    let receipt = Receipt {
                        broker: self.config.broker_id,
                        partition: partition.id(),
                        offset,
                        generation: lease.generation,
                    };
                    deliveries.push(Delivery {
                        message,
                        partition: partition.id(),
                        offset,
                        receipt: receipt.encode(),
                        attempt: lease.attempt,
                        invisible,
                    });
                }
                Ok(_) => {
                    // A tag-hash collision: the message does not match after all.
                    self.finish_without_delivery(group, &partition, offset);
                }
                Err(e) => {
                    tracing::error!(topic = partition.topic(), partition = partition.id(), offset, error = %e, "unreadable message skipped");
                    self.metrics.corrupt_records.with_label_values(&[partition.topic()]).inc();
                    self.finish_without_delivery(group, &partition, offset);
                }
            }
        }
        Ok((deliveries, next_deadline))
    }

    fn finish_without_delivery(&self, group: &GroupConfig, partition: &Partition, offset: u64) {
        if let Some(p) = self.consumers.get(&ProgressKey::new(&group.name, partition.topic(), partition.id())) {
            p.lock().mark_done(offset);
        }
    }

    fn load(&self, partition: &Partition, entry: &IndexEntry) -> Result<StoredMessage, BrokerError> {
        let body = self.store.read(entry)?;
        let message = StoredMessage::decode(body)
            .map_err(|e| BrokerError::internal(format!("stored message does not decode: {e}")))?;
        if message.topic != partition.topic() || message.partition != partition.id() {
            return Err(BrokerError::internal("index entry points at a message of another partition"));
        }
        Ok(message)
    }

    /// Acknowledges messages by receipt handle; one result per handle. Acks are durable when this
    /// returns.
    pub async fn ack(
        &self,
        group: &str,
        topic: &str,
        handles: &[String],
    ) -> Result<Vec<Result<(), BrokerError>>, BrokerError> {
        let topic = self.catalog.topic(topic)?;
        let group = self.catalog.group(group)?;
        let mut results = Vec::with_capacity(handles.len());
        let mut by_partition: HashMap<u32, Vec<u64>> = HashMap::new();
        for handle in handles {
            let checked = self.lease_of(&group, &topic, handle).and_then(|(progress, receipt)| {
                let p = progress.lock();
                match p.check(receipt.offset, receipt.generation) {
                    Ok(_) => Ok(Some(receipt)),
                    // Acknowledging something already done is harmless (a retried ack).
                    Err(LeaseError::NotLeased) if p.is_done(receipt.offset) => Ok(None),
                    Err(LeaseError::NotLeased) => Err(BrokerError::InvalidReceiptHandle(
                        "the message is not delivered under this handle (it expired or was never delivered)".into(),
                    )),
                    Err(LeaseError::Superseded) => Err(BrokerError::InvalidReceiptHandle(
                        "a newer receipt handle replaced this one (redelivery or invisibility change)".into(),
                    )),
                }
            });
            match checked {
                Ok(Some(receipt)) => {
                    by_partition.entry(receipt.partition).or_default().push(receipt.offset);
                    results.push(Ok(()));
                }
                Ok(None) => results.push(Ok(())),
                Err(e) => results.push(Err(e)),
            }
        }
        let records: Vec<ProgressRecord> = by_partition
            .into_iter()
            .map(|(partition, done)| ProgressRecord {
                group: group.name.clone(),
                topic: topic.config.name.clone(),
                partition,
                done,
                ..Default::default()
            })
            .collect();
        if !records.is_empty()
            && let Err(e) = self.append_progress(records).await
        {
            return Ok(results.into_iter().map(|r| r.and(Err(e.clone()))).collect());
        }
        Ok(results)
    }

    /// The progress and parsed receipt a handle refers to.
    fn lease_of(
        &self,
        group: &GroupConfig,
        topic: &Topic,
        handle: &str,
    ) -> Result<(Arc<Mutex<Progress>>, Receipt), BrokerError> {
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
        let key = ProgressKey::new(&group.name, &topic.config.name, receipt.partition);
        let progress = self.consumers.get(&key).ok_or_else(|| {
            BrokerError::InvalidReceiptHandle(format!("group {} has received nothing from this partition", group.name))
        })?;
        Ok((progress, receipt))
    }

    /// Changes how long a delivered message stays invisible; returns the new receipt handle (the old
    /// one stops working).
    pub fn change_invisible(
        &self,
        group: &str,
        topic: &str,
        handle: &str,
        invisible: Duration,
    ) -> Result<String, BrokerError> {
        let topic = self.catalog.topic(topic)?;
        let group = self.catalog.group(group)?;
        let invisible = self.check_invisible(invisible, Duration::ZERO)?;
        let (progress, receipt) = self.lease_of(&group, &topic, handle)?;
        let generation = self.consumers.next_generation();
        let mut p = progress.lock();
        // The client now decides when the message comes back (a push consumer's nack), so the broker
        // stops renewing it.
        match p.renew(receipt.offset, receipt.generation, Instant::now() + invisible, generation) {
            Ok(_) => Ok(Receipt { generation, ..receipt }.encode()),
            Err(LeaseError::Superseded) => {
                Err(BrokerError::InvalidReceiptHandle("a newer receipt handle replaced this one".into()))
            }
            Err(LeaseError::NotLeased) => {
                Err(BrokerError::InvalidReceiptHandle("the message is no longer delivered under this handle".into()))
            }
        }
    }

    /// Moves messages that used up their attempts to the group's dead-letter queue (`%DLQ%<group>`)
    /// and marks them done, in one durable append. With dead-lettering off they are only dropped.
    pub(crate) async fn dead_letter(&self, group: &GroupConfig, items: Vec<Exhausted>) -> Result<(), BrokerError> {
        let mut records = Vec::new();
        let mut done: HashMap<(String, u32), Vec<u64>> = HashMap::new();
        let dlq = if group.dead_letter { Some(self.catalog.dead_letter_topic(&group.name)?) } else { None };
        let now = now_ms();
        for item in &items {
            done.entry((item.partition.topic().to_owned(), item.partition.id())).or_default().push(item.offset);
            let Some(dlq) = &dlq else {
                tracing::warn!(
                    group = group.name,
                    topic = item.partition.topic(),
                    offset = item.offset,
                    "message dropped after its last attempt (dead-lettering is off)"
                );
                continue;
            };
            let original = match self.load(&item.partition, &item.entry) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable message cannot be dead-lettered; dropping it");
                    continue;
                }
            };
            let copy = StoredMessage {
                topic: dlq.config.name.clone(),
                partition: 0,
                store_timestamp_ms: now,
                dead_letter: Some(DeadLetterOrigin {
                    group: group.name.clone(),
                    topic: original.topic.clone(),
                    partition: original.partition,
                    offset: item.offset,
                    attempts: item.attempts,
                    moved_at_ms: now,
                }),
                ..original
            };
            records.push(AppendRecord::message(
                dlq.partitions[0].clone(),
                tag_hash(&copy.tag),
                0,
                now as u64,
                copy.encode_to_vec(),
            ));
            self.metrics.dead_lettered.with_label_values(&[item.partition.topic(), group.name.as_str()]).inc();
        }
        for ((topic, partition), offsets) in done {
            let record =
                ProgressRecord { group: group.name.clone(), topic, partition, done: offsets, ..Default::default() };
            records.push(AppendRecord::state(RecordKind::Ack, record.encode_to_vec()));
        }
        self.store.append(records, Durability::Sync).await?;
        Ok(())
    }

    /// A consumer gave up on a message (`ForwardMessageToDeadLetterQueue`, sent by push consumers
    /// of FIFO groups after their local retries): move it to the dead-letter queue now, which also
    /// frees its message group.
    pub async fn forward_to_dead_letter(&self, group: &str, topic: &str, handle: &str) -> Result<(), BrokerError> {
        let topic = self.catalog.topic(topic)?;
        let group = self.catalog.group(group)?;
        let (progress, receipt) = self.lease_of(&group, &topic, handle)?;
        let attempts = {
            let p = progress.lock();
            match p.check(receipt.offset, receipt.generation) {
                Ok(lease) => lease.attempt,
                Err(_) => {
                    return Err(BrokerError::InvalidReceiptHandle(
                        "the message is no longer delivered under this handle".into(),
                    ));
                }
            }
        };
        let partition = topic.partitions[receipt.partition as usize].clone();
        let entry = partition
            .index
            .get(receipt.offset)?
            .ok_or_else(|| BrokerError::InvalidReceiptHandle("the message was deleted by retention".into()))?;
        self.dead_letter(&group, vec![Exhausted { partition, offset: receipt.offset, entry, attempts }]).await
    }

    /// Up to `limit` messages of the group's dead-letter queue from `from` on, with their offsets.
    pub fn dead_letters(&self, group: &str, from: u64, limit: usize) -> Result<Vec<(u64, StoredMessage)>, BrokerError> {
        let name = format!("{DEAD_LETTER_PREFIX}{group}");
        let Some(topic) = self.catalog.existing_topic(&name) else { return Ok(Vec::new()) };
        let partition = &topic.partitions[0];
        let (first, entries) = partition.index.read(from, limit)?;
        let mut out = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            if !entry.is_hole() {
                out.push((first + i as u64, self.load(partition, entry)?));
            }
        }
        Ok(out)
    }

    /// Hands dead-lettered messages back to their group: the originals are delivered to it again
    /// (not to other groups). Returns how many were resent and why others were not.
    pub async fn resend_dead_letters(
        &self,
        group: &str,
        offsets: Option<Vec<u64>>,
    ) -> Result<(u32, Vec<String>), BrokerError> {
        let group_config = self.catalog.group(group)?;
        let name = format!("{DEAD_LETTER_PREFIX}{group}");
        let topic = self
            .catalog
            .existing_topic(&name)
            .ok_or_else(|| BrokerError::BadRequest(format!("group {group} has no dead-letter queue")))?;
        let partition = topic.partitions[0].clone();
        let wanted = offsets.unwrap_or_else(|| (partition.start_offset()..partition.end_offset()).collect());
        let mut failures = Vec::new();
        let mut revive: HashMap<(String, u32), Vec<u64>> = HashMap::new();
        for offset in wanted {
            let message = match partition.index.get(offset)? {
                Some(entry) if !entry.is_hole() => self.load(&partition, &entry)?,
                _ => {
                    failures.push(format!("offset {offset}: not in the dead-letter queue"));
                    continue;
                }
            };
            let Some(origin) = message.dead_letter else {
                failures.push(format!("offset {offset}: not a dead-lettered message"));
                continue;
            };
            let original = self
                .catalog
                .existing_topic(&origin.topic)
                .and_then(|t| t.partitions.get(origin.partition as usize).cloned());
            match original {
                Some(p) if origin.offset >= p.start_offset() => {
                    // Make sure the group has progress there (it has, unless its state was reset).
                    self.progress(&group_config, &p).await?;
                    revive.entry((origin.topic, origin.partition)).or_default().push(origin.offset);
                }
                _ => failures.push(format!(
                    "offset {offset} (message {}): the original in {}/{} was deleted by retention",
                    message.message_id, origin.topic, origin.partition
                )),
            }
        }
        let resent = revive.values().map(Vec::len).sum::<usize>() as u32;
        let records = revive
            .into_iter()
            .map(|((topic, partition), offsets)| ProgressRecord {
                group: group.to_owned(),
                topic,
                partition,
                revive: offsets,
                ..Default::default()
            })
            .collect();
        self.append_progress(records).await?;
        Ok((resent, failures))
    }

    /// Releases what `client` had leased (it terminated or its session ended).
    pub fn client_gone(&self, client: &str) {
        let released = self.consumers.release_client(client);
        self.clients.remove(client);
        if released > 0 {
            tracing::info!(client, released, "client left; its in-flight messages will be redelivered");
        }
    }

    /// Lag and in-flight per (group, topic).
    pub fn group_stats(&self) -> Vec<GroupStat> {
        let mut stats: HashMap<(Arc<str>, Arc<str>), GroupStat> = HashMap::new();
        for (key, progress) in self.consumers.entries() {
            let Some(topic) = self.catalog.existing_topic(&key.topic) else { continue };
            let Some(partition) = topic.partitions.get(key.partition as usize) else { continue };
            let p = progress.lock();
            let stat = stats.entry((key.group.clone(), key.topic.clone())).or_insert_with(|| GroupStat {
                group: key.group.to_string(),
                topic: key.topic.to_string(),
                lag: 0,
                inflight: 0,
            });
            stat.lag += p.lag(partition.end_offset());
            stat.inflight += p.leased() as u64;
        }
        let mut v: Vec<GroupStat> = stats.into_values().collect();
        v.sort_by(|a, b| (&a.group, &a.topic).cmp(&(&b.group, &b.topic)));
        v
    }
}

/// A message leased by a receive, waiting to be read and sent.
struct Claimed {
    partition: Arc<Partition>,
    offset: u64,
    entry: IndexEntry,
    lease: Lease,
}

/// A message that used up its delivery attempts.
pub(crate) struct Exhausted {
    pub(crate) partition: Arc<Partition>,
    pub(crate) offset: u64,
    pub(crate) entry: IndexEntry,
    pub(crate) attempts: u32,
}

/// The state of one receive while it walks the partitions, so each step reads as one decision.
struct Claimer<'a> {
    broker: &'a Broker,
    req: &'a ReceiveRequest,
    group: &'a GroupConfig,
    invisible: Duration,
    batch: usize,
    claimed: Vec<Claimed>,
    exhausted: Vec<Exhausted>,
}

/// How long an exhausted message stays leased while it is moved to the dead-letter queue.
const DEAD_LETTER_GRACE: Duration = Duration::from_secs(30);

impl Claimer<'_> {
    fn room(&self) -> usize {
        self.batch - self.claimed.len()
    }

    fn new_lease(&self, now: Instant, attempt: u32, group_hash: u32) -> Lease {
        Lease {
            deadline: now + self.invisible,
            attempt,
            generation: self.broker.consumers.next_generation(),
            client: self.req.client.clone(),
            auto_renew: self.req.auto_renew,
            group_hash: if self.group.fifo { group_hash } else { 0 },
        }
    }

    fn take(&mut self, p: &mut Progress, partition: &Arc<Partition>, offset: u64, entry: IndexEntry, lease: Lease) {
        p.lease(offset, lease.clone());
        self.claimed.push(Claimed { partition: partition.clone(), offset, entry, lease });
    }

    /// Expired leases: extended for live auto-renew clients, dead-lettered past max attempts,
    /// otherwise delivered again with attempt + 1 (for FIFO the same message, keeping its group).
    fn expired(&mut self, p: &mut Progress, partition: &Arc<Partition>, now: Instant) -> Result<(), BrokerError> {
        let broker = self.broker;
        for (offset, lease) in p.expired(now, usize::MAX) {
            if lease.auto_renew && broker.clients.alive(&lease.client) {
                p.lease(offset, Lease { deadline: now + broker.config.auto_renew_lease, ..lease });
                continue;
            }
            let Some(entry) = partition.index.get(offset)? else {
                p.mark_done(offset); // deleted by retention meanwhile
                continue;
            };
            if lease.attempt >= self.group.max_attempts {
                p.lease(offset, Lease { deadline: now + DEAD_LETTER_GRACE, auto_renew: false, ..lease.clone() });
                self.exhausted.push(Exhausted { partition: partition.clone(), offset, entry, attempts: lease.attempt });
                continue;
            }
            if self.room() == 0 {
                break;
            }
            let renewed = self.new_lease(now, lease.attempt + 1, lease.group_hash);
            broker.metrics.redeliveries.with_label_values(&[partition.topic(), self.group.name.as_str()]).inc();
            self.take(p, partition, offset, entry, renewed);
        }
        Ok(())
    }

    /// Messages a dead-letter resend handed back to the group.
    fn revived(&mut self, p: &mut Progress, partition: &Arc<Partition>, now: Instant) -> Result<(), BrokerError> {
        for offset in p.revived_ready(self.room()) {
            match partition.index.get(offset)? {
                Some(entry) if !entry.is_hole() => {
                    let lease = self.new_lease(now, 1, entry.group_hash);
                    self.take(p, partition, offset, entry, lease);
                }
                _ => {
                    p.mark_done(offset);
                }
            }
        }
        Ok(())
    }

    /// FIFO: the next message of each group whose previous message is done.
    fn deferred(&mut self, p: &mut Progress, partition: &Arc<Partition>, now: Instant) -> Result<(), BrokerError> {
        for offset in p.deferred_ready(self.room()) {
            let Some(entry) = partition.index.get(offset)? else {
                p.mark_done(offset);
                continue;
            };
            let lease = self.new_lease(now, 1, entry.group_hash);
            self.take(p, partition, offset, entry, lease);
        }
        Ok(())
    }

    /// New messages from the cursor on, skipping holes and what the filter excludes; for FIFO
    /// groups, a message whose group is busy is parked instead.
    fn fresh(&mut self, p: &mut Progress, partition: &Arc<Partition>, now: Instant) -> Result<(), BrokerError> {
        let broker = self.broker;
        if p.watermark() < partition.start_offset() {
            p.skip_to(partition.start_offset()); // retention removed what the group had not consumed
        }
        let cap = broker.config.max_leases_per_partition;
        loop {
            let room = self.room().min(cap.saturating_sub(p.leased() + p.deferred()));
            if room == 0 {
                return Ok(());
            }
            let (from, entries) = partition.index.read(p.cursor(), (room * 4).clamp(16, 1024))?;
            if entries.is_empty() {
                return Ok(());
            }
            let end = from + entries.len() as u64;
            while self.room() > 0 && p.leased() + p.deferred() < cap {
                let Some(offset) = p.next_new(end) else { break };
                let entry = entries[(offset - from) as usize];
                if entry.is_hole() || !self.req.filter.may_match(entry.tag_hash) {
                    p.mark_done(offset);
                } else if self.group.fifo && p.group_busy(entry.group_hash) {
                    p.defer(offset, entry.group_hash);
                } else {
                    let lease = self.new_lease(now, 1, entry.group_hash);
                    self.take(p, partition, offset, entry, lease);
                }
            }
            if p.cursor() < end {
                return Ok(());
            }
        }
    }
}

enum Prepared {
    Duplicate(SendReceipt),
    New {
        record: AppendRecord,
        topic: Arc<Topic>,
        partition: u32,
        message_id: String,
        body_len: usize,
        message_type: MessageType,
    },
}

fn m_tag_invalid(tag: &str) -> bool {
    !tag.is_empty() && (tag.trim().is_empty() || tag.contains('|') || tag.len() > MAX_FIELD_LEN)
}

fn validate_properties(props: &HashMap<String, String>) -> Result<(), BrokerError> {
    if props.len() > MAX_PROPERTIES {
        return Err(BrokerError::PropertiesTooLarge(format!("{} properties, at most {MAX_PROPERTIES}", props.len())));
    }
    let bytes: usize = props.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_PROPERTY_BYTES {
        return Err(BrokerError::PropertiesTooLarge(format!(
            "{bytes} bytes of properties, at most {MAX_PROPERTY_BYTES}"
        )));
    }
    for key in props.keys() {
        if key.trim().is_empty() {
            return Err(BrokerError::IllegalProperty("a property key is blank".into()));
        }
        if RESERVED_PROPERTIES.contains(&key.as_str()) {
            return Err(BrokerError::IllegalProperty(format!("{key:?} is reserved by RocketMQ")));
        }
    }
    Ok(())
}

fn stored_type(t: MessageType) -> StoredMessageType {
    match t {
        MessageType::Normal => StoredMessageType::Normal,
        MessageType::Fifo => StoredMessageType::Fifo,
        MessageType::Delay => StoredMessageType::Delay,
        MessageType::Transaction => StoredMessageType::Transaction,
    }
}
