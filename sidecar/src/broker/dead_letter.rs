//! Dead-letter queues: messages a group gave up on move to `%DLQ%<group>`, and can be handed back
//! to that group.

use super::*;

impl Broker {
    /// Moves messages that used up their attempts to the group's dead-letter queue (`%DLQ%<group>`)
    /// and marks them done, in one durable append. With dead-lettering off they are only dropped.
    pub(crate) async fn dead_letter(&self, group: &GroupConfig, items: Vec<Exhausted>) -> Result<(), BrokerError> {
        let mut records = Vec::new();
        let mut done: HashMap<(String, u32), Vec<u64>> = HashMap::new();
        let dlq = if group.dead_letter { Some(self.catalog.dead_letter_topic(&group.label)?) } else { None };
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
            self.metrics.dead_lettered.with_label_values(&[item.partition.topic(), group.label.as_str()]).inc();
        }
        for ((topic, partition), offsets) in done {
            let record =
                ProgressRecord { group: group.name.clone(), topic, partition, done: offsets, ..Default::default() };
            records.push(AppendRecord::progress(&record.topic, record.encode_to_vec()));
        }
        self.store.append(records, Durability::Sync).await?;
        Ok(())
    }

    /// A consumer gave up on a message (`ForwardMessageToDeadLetterQueue`, sent by push consumers
    /// of FIFO groups after their local retries): move it to the dead-letter queue now, which also
    /// frees its message group.
    pub async fn forward_to_dead_letter(
        &self,
        group: &str,
        client: &str,
        topic: &str,
        handle: &str,
    ) -> Result<(), BrokerError> {
        let topic = self.catalog.topic(topic)?;
        let group = self.catalog.consumer(group, client)?;
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
        self.catalog.group(group)?;
        let name = format!("{DEAD_LETTER_PREFIX}{group}");
        let topic = self
            .catalog
            .existing_topic(&name)
            .ok_or_else(|| BrokerError::BadRequest(format!("group {group} has no dead-letter queue")))?;
        let partition = topic.partitions[0].clone();
        let wanted = offsets.unwrap_or_else(|| (partition.start_offset()..partition.end_offset()).collect());
        let mut failures = Vec::new();
        // Keyed by the progress the message left (a broadcasting group's client, or the group).
        let mut revive: HashMap<(String, String, u32), Vec<u64>> = HashMap::new();
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
                    let key = ProgressKey::new(&origin.group, &origin.topic, origin.partition);
                    if self.consumers.get(&key).is_none() {
                        failures.push(format!("offset {offset}: {} no longer consumes {}", origin.group, origin.topic));
                        continue;
                    }
                    let _ = p;
                    revive.entry((origin.group, origin.topic, origin.partition)).or_default().push(origin.offset);
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
            .map(|((group, topic, partition), offsets)| ProgressRecord {
                group,
                topic,
                partition,
                revive: offsets,
                ..Default::default()
            })
            .collect();
        self.append_progress(records).await?;
        Ok((resent, failures))
    }
}

/// A message that used up its delivery attempts.
pub(crate) struct Exhausted {
    pub(crate) partition: Arc<Partition>,
    pub(crate) offset: u64,
    pub(crate) entry: IndexEntry,
    pub(crate) attempts: u32,
}

/// How long an exhausted message stays leased while it is moved to the dead-letter queue.
pub(super) const DEAD_LETTER_GRACE: Duration = Duration::from_secs(30);
