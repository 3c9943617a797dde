//! Sending: validation of what producers send, de-duplication of retried sends, and the record
//! each message becomes.

use super::*;
use dedup::SendKey;

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

/// User properties per message at most.
const MAX_PROPERTIES: usize = 128;

/// Bytes of user property keys and values per message at most.
const MAX_PROPERTY_BYTES: usize = 16 * 1024;

/// Longest message id, tag, key or message group.
const MAX_FIELD_LEN: usize = 128;

/// The send metrics of one (topic, message type) for a run of a request's messages: looked up
/// once per run, and counted locally and added to the shared metrics once, when the run ends
/// (dropped). Per message, the shared counters and histograms cost ten atomic operations, which
/// both request threads contend for.
struct SendMetrics {
    topic: Arc<Topic>,
    message_type: MessageType,
    messages: prometheus::IntCounter,
    bytes: prometheus::IntCounter,
    size: prometheus::local::LocalHistogram,
    latency: prometheus::local::LocalHistogram,
    counted: u64,
    counted_bytes: u64,
}

impl SendMetrics {
    fn of(metrics: &crate::metrics::Metrics, topic: &Arc<Topic>, message_type: MessageType) -> Self {
        let name = topic.config.name.as_str();
        let labels = [name, message_type.label()];
        Self {
            latency: metrics.send_latency.with_label_values(&[name]).local(),
            topic: topic.clone(),
            message_type,
            messages: metrics.messages_in.with_label_values(&labels),
            bytes: metrics.throughput_in.with_label_values(&labels),
            size: metrics.message_size.with_label_values(&labels).local(),
            counted: 0,
            counted_bytes: 0,
        }
    }

    fn record(&mut self, body_len: usize, latency: f64) {
        self.counted += 1;
        self.counted_bytes += body_len as u64;
        self.size.observe(body_len as f64);
        self.latency.observe(latency);
    }
}

impl Drop for SendMetrics {
    /// Adds the run to the shared metrics (the local histograms flush themselves when dropped).
    fn drop(&mut self) {
        self.messages.inc_by(self.counted);
        self.bytes.inc_by(self.counted_bytes);
    }
}

impl Broker {
    /// Stores messages. One result per message, in order; the valid ones share one group commit.
    pub async fn send(&self, messages: Vec<IncomingMessage>) -> Vec<Result<SendReceipt, BrokerError>> {
        let started = Instant::now();
        let mut results: Vec<Option<Result<SendReceipt, BrokerError>>> = vec![None; messages.len()];
        let mut records = Vec::new();
        let mut pending = Vec::new();
        let mut durability = Durability::Async;
        // One store time for the request's messages: they arrived together.
        let store_time = now_ms();
        let mut topic: Option<Arc<Topic>> = None;
        let prepared: Vec<_> = messages
            .into_iter()
            .map(|message| {
                // A request's messages mostly go to one topic: resolved once per run of them.
                let t = match topic.take() {
                    Some(t) if t.config.name == message.topic => t,
                    _ => self.catalog.topic(&message.topic)?,
                };
                topic = Some(t.clone());
                self.prepare(t, message, store_time)
            })
            .collect();
        // Retries of sends already stored are looked up for the whole request under one lock.
        {
            let remembered = self.dedup.lock();
            remembered.warm(prepared.iter().filter_map(|p| p.as_ref().ok().map(|new| new.key)));
            let now = Instant::now();
            for (slot, p) in prepared.into_iter().enumerate() {
                match p {
                    Ok(New { key, .. }) if let Some(first) = remembered.find(key, now) => {
                        results[slot] = Some(Ok(first));
                    }
                    Ok(New { record, topic, receipt, key, body_len, message_type }) => {
                        if topic.config.durability == Durability::Sync {
                            durability = Durability::Sync;
                        }
                        let indexed = record.kind == RecordKind::Message;
                        pending.push((slot, topic, receipt, key, body_len, message_type, indexed));
                        records.push(record);
                    }
                    Err(e) => results[slot] = Some(Err(e)),
                }
            }
        }
        if !records.is_empty() {
            match self.store.append(records, durability).await {
                Ok(appended) => {
                    let now = Instant::now();
                    let latency = (now - started).as_secs_f64();
                    let mut metrics: Option<SendMetrics> = None;
                    let mut remembered = self.dedup.lock();
                    remembered.warm(pending.iter().map(|(_, _, _, key, ..)| *key));
                    for ((slot, topic, mut receipt, key, body_len, message_type, indexed), a) in
                        pending.into_iter().zip(appended)
                    {
                        let mut m = match metrics.take() {
                            Some(m) if Arc::ptr_eq(&m.topic, &topic) && m.message_type == message_type => m,
                            _ => SendMetrics::of(&self.metrics, &topic, message_type),
                        };
                        m.record(body_len, latency);
                        metrics = Some(m);
                        if indexed {
                            receipt.offset = a.queue_offset;
                        }
                        remembered.remember(key, &receipt, now);
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

    /// The partition a message goes to. Order lives per message group, so for FIFO the broker,
    /// not the client, picks it; other messages take the client's choice or round robin, among
    /// the partitions this broker owns.
    fn place(
        &self,
        topic: &Topic,
        message_type: MessageType,
        group: &str,
        hint: Option<u32>,
    ) -> Result<u32, BrokerError> {
        let count = topic.partitions.len() as u32;
        let owned = topic.config.owned.as_deref();
        let not_owner = |partition| BrokerError::NotOwner { topic: topic.config.name.clone(), partition };
        if message_type == MessageType::Fifo {
            let p = partition_of_group(group, count);
            return match owned {
                Some(owned) if !owned.contains(&p) => Err(not_owner(Some(p))),
                _ => Ok(p),
            };
        }
        let next = || self.round_robin.fetch_add(1, Ordering::Relaxed);
        match (owned, hint) {
            (None, Some(p)) if p < count => Ok(p),
            (None, _) => Ok((next() % count as usize) as u32),
            (Some(owned), Some(p)) if owned.contains(&p) => Ok(p),
            (Some([]), _) => Err(not_owner(None)),
            (Some(owned), _) => Ok(owned[next() % owned.len()]),
        }
    }

    /// Validates a message for `topic` and makes its record (digested and encoded by the store, see
    /// [`RecordBody::sent`]); whether it was already stored is looked up by the caller, for a whole
    /// request at once.
    fn prepare(&self, topic: Arc<Topic>, m: IncomingMessage, store_time: i64) -> Result<New, BrokerError> {
        if !topic.config.access.writable() {
            return Err(BrokerError::Forbidden(format!("topic {} is read-only (spec.permission)", topic.config.name)));
        }
        if m.message_id.is_empty() {
            return Err(BrokerError::IllegalMessageId("the message id is empty".into()));
        }
        if m.message_id.len() > MAX_FIELD_LEN {
            return Err(BrokerError::IllegalMessageId(format!("longer than {MAX_FIELD_LEN} characters")));
        }
        let key = self.dedup.key_of(&topic.config.name, &m.message_id);
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
        let kind = self.record_kind(&topic, message_type, &group, m.delivery_timestamp_ms, store_time)?;
        let partition = self.place(&topic, message_type, &group, m.partition_hint)?;
        let body_len = m.body.len();
        let transaction_id = if kind == RecordKind::Half { self.new_transaction_id() } else { String::new() };
        let stored = StoredMessage {
            // The catalog found the topic by this very name: moved, not copied.
            topic: m.topic,
            partition,
            message_id: m.message_id,
            tag,
            keys: m.keys,
            message_group: group,
            message_type: stored_type(message_type) as i32,
            born_timestamp_ms: m.born_timestamp_ms,
            born_host: m.born_host,
            store_timestamp_ms: store_time,
            delivery_timestamp_ms: m.delivery_timestamp_ms.unwrap_or(0),
            user_properties: m.user_properties,
            // Computed by the store with the rest of the turn's (`RecordBody::sent`).
            body_md5: Bytes::new(),
            body: m.body,
            trace_context: m.trace_context,
            dead_letter: None,
            transaction_id,
        };
        let group_hash = index_group_hash(&topic, &stored.message_group);
        let tag_hash = tag_hash(&stored.tag);
        let receipt = SendReceipt { partition, offset: 0, transaction_id: stored.transaction_id.clone() };
        let body = RecordBody::sent(stored);
        let record = match kind {
            RecordKind::Message => AppendRecord::message(
                topic.partitions[partition as usize].clone(),
                tag_hash,
                group_hash,
                store_time as u64,
                body,
            ),
            // Delayed and half messages stay out of the partitions until they are due or committed.
            other => AppendRecord::state(other, body),
        };
        Ok(New { record, topic, receipt, key, body_len, message_type })
    }

    /// Which record a message becomes, after checking the rules of its type: a plain message, a
    /// delayed one waiting in the timer (`Scheduled`), or a transaction's `Half` message.
    fn record_kind(
        &self,
        topic: &Topic,
        message_type: MessageType,
        group: &str,
        delivery_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<RecordKind, BrokerError> {
        match message_type {
            MessageType::Delay => {
                let due = delivery_ms.ok_or_else(|| {
                    BrokerError::IllegalDeliveryTime("a DELAY message needs a delivery timestamp".into())
                })?;
                let max = topic.config.max_delay_ms as i64;
                if due - now_ms > max {
                    return Err(BrokerError::IllegalDeliveryTime(format!(
                        "delivery is {} s away; topic {} allows at most {} s",
                        (due - now_ms) / 1000,
                        topic.config.name,
                        max / 1000
                    )));
                }
                // A time already (or almost) reached is delivered at once.
                Ok(if due > now_ms + IMMEDIATE_DELIVERY_MS { RecordKind::Scheduled } else { RecordKind::Message })
            }
            _ if delivery_ms.is_some() => {
                Err(BrokerError::MessageTypeConflict("only DELAY messages may carry a delivery timestamp".into()))
            }
            MessageType::Transaction if !group.is_empty() => {
                Err(BrokerError::MessageTypeConflict("a transactional message cannot have a message group".into()))
            }
            MessageType::Transaction => Ok(RecordKind::Half),
            MessageType::Fifo if group.is_empty() && !topic.config.fifo_global => {
                Err(BrokerError::IllegalMessageGroup("a FIFO message needs a message group".into()))
            }
            _ => Ok(RecordKind::Message),
        }
    }

    /// A transaction id that names this broker, so any broker can route `EndTransaction` to it.
    fn new_transaction_id(&self) -> String {
        let seq = self.transaction_seq.fetch_add(1, Ordering::Relaxed);
        format!("{:x}-{seq:016x}", self.config.broker_id)
    }
}

/// A valid message, encoded, and what its send will answer once stored.
struct New {
    record: AppendRecord,
    topic: Arc<Topic>,
    receipt: SendReceipt,
    key: SendKey,
    body_len: usize,
    message_type: MessageType,
}

/// Delivery times closer than this are treated as "now".
const IMMEDIATE_DELIVERY_MS: i64 = 50;

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
