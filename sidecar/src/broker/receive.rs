//! Receiving: long polling, leasing messages to consumers (in order for FIFO groups), acks and
//! invisibility changes.

use super::dead_letter::{DEAD_LETTER_GRACE, Exhausted};
use super::*;

impl Broker {
    /// Hands out up to `req.batch` messages, waiting (long polling) until some are available or
    /// `req.poll_until` passes. An empty result means nothing arrived in time.
    pub async fn receive(&self, req: &ReceiveRequest) -> Result<Vec<Delivery>, BrokerError> {
        let topic = self.catalog.topic(&req.topic)?;
        if !topic.config.access.readable() {
            return Err(BrokerError::Forbidden(format!("topic {} is write-only (spec.permission)", topic.config.name)));
        }
        let group = self.catalog.consumer(&req.group, &req.client)?;
        // A broadcast client now holds a position of its own: it must be known, to be forgotten
        // later, and must not look silent while it waits here.
        let _polling = group.broadcast.then(|| self.clients.polling(&req.client));
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
        let mut news = self.store.news(&topic.config.name);
        let drained = self.drained.of(&group.name, &topic.config.name);
        let counters = &self.metrics.long_poll;
        let mut stopping = self.stopping();
        let mut next_deadline: Option<Instant> = None;
        // The first pass looks, and so does every wake-up by the timer (a lease ran out).
        let mut by_timer = true;
        loop {
            let seen = news.mark_seen();
            let covered = !by_timer && drained.covers(seen);
            if group.consume_enabled && !covered {
                let pass = self.claim(&topic, &group, req, batch, invisible).await?;
                if pass.drained {
                    drained.drained(seen);
                }
                next_deadline = pass.next_deadline;
                if !pass.deliveries.is_empty() {
                    counters.delivered.inc();
                    return Ok(pass.deliveries);
                }
                counters.empty.inc();
            } else if covered {
                counters.skipped.inc();
            }
            let now = Instant::now();
            if now >= req.poll_until {
                return Ok(Vec::new());
            }
            let wake = next_deadline.map_or(req.poll_until, |d| d.min(req.poll_until));
            tokio::select! {
                alive = news.changed() => {
                    if !alive {
                        return Ok(Vec::new());
                    }
                    by_timer = false;
                }
                _ = tokio::time::sleep_until(wake.into()) => by_timer = true,
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

    /// One pass over the topic's partitions: expired leases first, then messages given back by a
    /// dead-letter resend, then (FIFO) messages whose group became free, then new messages.
    async fn claim(
        &self,
        topic: &Topic,
        group: &GroupConfig,
        req: &ReceiveRequest,
        batch: usize,
        invisible: Duration,
    ) -> Result<Pass, BrokerError> {
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
        // Room left: every partition was read to its end.
        let drained = claimer.room() > 0;
        let Claimer { claimed, exhausted, .. } = claimer;
        if !exhausted.is_empty() {
            // Past max attempts: to the dead-letter queue instead of another delivery. A failure
            // leaves them leased, so they are retried when the lease runs out.
            if let Err(e) = self.dead_letter(group, exhausted).await {
                tracing::error!(group = group.name, error = %e, "moving messages to the dead-letter queue failed");
            }
        }
        let mut deliveries = Vec::with_capacity(claimed.len());
        let mut delivered_bytes = 0;
        let messages = self.read_claimed(&claimed).await?;
        for (Claimed { partition, offset, lease, .. }, message) in claimed.into_iter().zip(messages) {
            match message {
                Ok(message) if req.filter.matches_stored(&message) => {
                    delivered_bytes += message.body_len() as u64;
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
                        receipt,
                        attempt: lease.attempt,
                        invisible,
                    });
                }
                Ok(_) => {
                    // Excluded by the filter after all (a tag-hash collision, or a SQL filter).
                    self.finish_without_delivery(group, &partition, offset);
                }
                Err(e) => {
                    tracing::error!(topic = partition.topic(), partition = partition.id(), offset, error = %e, "unreadable message skipped");
                    self.metrics.corrupt_records.with_label_values(&[partition.topic()]).inc();
                    self.finish_without_delivery(group, &partition, offset);
                }
            }
        }
        if !deliveries.is_empty() {
            // Counted once per batch: a label lookup hashes both labels.
            let labels = [topic.config.name.as_str(), group.label.as_str()];
            self.metrics.messages_out.with_label_values(&labels).inc_by(deliveries.len() as u64);
            self.metrics.throughput_out.with_label_values(&labels).inc_by(delivered_bytes);
        }
        Ok(Pass { deliveries, next_deadline, drained })
    }

    /// Reads the claimed messages and finds their fields, in their order, after asking the kernel
    /// to read their span and as much again after it ahead. A pass of [`BULK_READ_BYTES`] or
    /// more does it on a blocking thread (see there).
    async fn read_claimed(&self, claimed: &[Claimed]) -> Result<Vec<Result<StoredView, BrokerError>>, BrokerError> {
        let bytes: u64 = claimed.iter().map(|c| u64::from(c.entry.length)).sum();
        if bytes < BULK_READ_BYTES {
            return Ok(Self::read_and_view(&self.store, claimed.iter().map(|c| (&*c.partition, &c.entry))));
        }
        let store = self.store.clone();
        let wanted: Vec<(Arc<Partition>, IndexEntry)> =
            claimed.iter().map(|c| (c.partition.clone(), c.entry)).collect();
        self.metrics.bulk_reads.inc();
        tokio::task::spawn_blocking(move || Self::read_and_view(&store, wanted.iter().map(|(p, e)| (&**p, e))))
            .await
            .map_err(|e| BrokerError::internal(format!("reading a batch of messages failed: {e}")))
    }

    fn read_and_view<'a>(
        store: &Store,
        claimed: impl Iterator<Item = (&'a Partition, &'a IndexEntry)> + Clone,
    ) -> Vec<Result<StoredView, BrokerError>> {
        store.prefetch(claimed.clone().map(|(_, entry)| entry));
        let bodies = store.read_many(claimed.clone().map(|(_, entry)| entry));
        claimed.zip(bodies).map(|((partition, _), body)| Self::view_stored(partition, body)).collect()
    }

    fn finish_without_delivery(&self, group: &GroupConfig, partition: &Partition, offset: u64) {
        let key = ProgressKeyRef { group: &group.name, topic: partition.topic(), partition: partition.id() };
        if let Some(p) = self.consumers.get(&key) {
            p.lock().mark_done(offset);
        }
    }

    /// Acknowledges messages by receipt handle; one result per handle. Acks are as durable as the
    /// topic's messages when this returns (synced for `Sync` topics).
    pub async fn ack(
        &self,
        group: &str,
        client: &str,
        topic: &str,
        handles: &[&str],
    ) -> Result<Vec<Result<(), BrokerError>>, BrokerError> {
        let topic = self.catalog.topic(topic)?;
        let group = self.catalog.consumer(group, client)?;
        let receipts: Vec<Result<Receipt, BrokerError>> = handles.iter().map(|h| self.receipt_of(&topic, h)).collect();
        let mut results = Vec::with_capacity(handles.len());
        let mut by_partition: HashMap<u32, Vec<u64>> = HashMap::new();
        let mut held = HeldLeases(Vec::new());
        // A batch's handles come in runs of one partition (a receive claims a partition's messages
        // together): a run's progress is looked up and locked once, not once per handle.
        let same_partition = |a: &Result<Receipt, _>, b: &Result<Receipt, _>| matches!((a, b), (Ok(a), Ok(b)) if a.partition == b.partition);
        for run in receipts.chunk_by(same_partition) {
            let progress = match &run[0] {
                Ok(first) => self.progress_of(&group, &topic, first.partition),
                Err(e) => Err(e.clone()),
            };
            let progress = match progress {
                Ok(progress) => progress,
                Err(e) => {
                    results.extend(run.iter().map(|_| Err(e.clone())));
                    continue;
                }
            };
            let mut holding = Vec::with_capacity(run.len());
            let mut p = progress.lock();
            for receipt in run.iter().flatten() {
                results.push(match p.hold(receipt.offset, receipt.generation) {
                    Ok(()) => {
                        holding.push(*receipt);
                        Ok(())
                    }
                    // Acknowledging something already done is harmless (a retried ack).
                    Err(LeaseError::NotLeased) if p.is_done(receipt.offset) => Ok(()),
                    Err(LeaseError::NotLeased) => Err(BrokerError::InvalidReceiptHandle(
                        "the message is not delivered under this handle (it expired or was never delivered)".into(),
                    )),
                    Err(LeaseError::Superseded) => Err(BrokerError::InvalidReceiptHandle(
                        "a newer receipt handle replaced this one (redelivery or invisibility change)".into(),
                    )),
                });
            }
            drop(p);
            if let Some(first) = holding.first() {
                by_partition.entry(first.partition).or_default().extend(holding.iter().map(|r| r.offset));
                held.0.push((progress, holding));
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
            && let Err(e) = self.append_progress_as(records, topic.config.durability).await
        {
            return Ok(results.into_iter().map(|r| r.and(Err(e.clone()))).collect());
        }
        // Written: applying the records marks the offsets done, which ends the holds.
        held.0.clear();
        Ok(results)
    }

    /// Changes how long a delivered message stays invisible; returns the new receipt handle (the old
    /// one stops working).
    pub fn change_invisible(
        &self,
        group: &str,
        client: &str,
        topic: &str,
        handle: &str,
        invisible: Duration,
    ) -> Result<String, BrokerError> {
        let topic = self.catalog.topic(topic)?;
        let group = self.catalog.consumer(group, client)?;
        let invisible = self.check_invisible(invisible, Duration::ZERO)?;
        let (progress, receipt) = self.lease_of(&group, &topic, handle)?;
        let generation = self.consumers.next_generation();
        let mut p = progress.lock();
        // The client now decides when the message comes back (a push consumer's nack), so the broker
        // stops renewing it.
        match p.renew(receipt.offset, receipt.generation, Instant::now() + invisible, generation) {
            Ok(_) => {
                drop(p);
                // Waiting receives planned their next look by the old deadline.
                self.store.announce(&topic.config.name);
                Ok(Receipt { generation, ..receipt }.encode())
            }
            Err(LeaseError::Superseded) => {
                Err(BrokerError::InvalidReceiptHandle("a newer receipt handle replaced this one".into()))
            }
            Err(LeaseError::NotLeased) => {
                Err(BrokerError::InvalidReceiptHandle("the message is no longer delivered under this handle".into()))
            }
        }
    }
}

/// What a claim pass found.
struct Pass {
    deliveries: Vec<Delivery>,
    /// The earliest lease deadline seen (when something may become visible again).
    next_deadline: Option<Instant>,
    /// It took everything there was when it started.
    drained: bool,
}

/// Leases held while their acks are written, by partition progress; released (to expire as they
/// would have) if the write fails or the ack is abandoned before it is written.
struct HeldLeases(Vec<(Arc<Mutex<Progress>>, Vec<Receipt>)>);

impl Drop for HeldLeases {
    fn drop(&mut self) {
        for (progress, receipts) in self.0.drain(..) {
            let mut p = progress.lock();
            for receipt in receipts {
                p.unhold(receipt.offset, receipt.generation);
            }
        }
    }
}

/// A receive pass that reads this much log or more reads it (and finds its fields) on a
/// blocking thread, not on the serving thread of the consumer's connection:
///
/// - a read that misses the page cache (a backlog drained from disk) would otherwise stall every
///   connection served by that thread, producers' included, until the disk answers; so would
///   the read-ahead request for the next span, which allocates its pages and queues their reads
///   before it returns (10% of that thread's time in a drain from disk);
/// - draining a backlog was bound by that one thread (BENCHMARKS.md, "Deep backlog"): while this
///   pass is read elsewhere, it encodes and writes the pass before. (Encoding the answer here
///   too was slower: with both cores busy, reading and encoding in series on one thread loses
///   that overlap.)
///
/// Smaller passes (a consumer keeping up gets what just arrived) stay where they are: for them
/// the two thread hand-overs would cost more than the read. A receive dropped while its pass is
/// read elsewhere leaves the pass's messages leased, as a lost answer does: they are delivered
/// again when the lease runs out.
const BULK_READ_BYTES: u64 = 128 << 10;

/// A message leased by a receive, waiting to be read and sent.
struct Claimed {
    partition: Arc<Partition>,
    offset: u64,
    entry: IndexEntry,
    lease: Lease,
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
            broker.metrics.redeliveries.with_label_values(&[partition.topic(), self.group.label.as_str()]).inc();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::testing::broker;

    /// A receive of 128 KiB of messages or more reads them on the runtime's blocking
    /// thread and delivers them as a small receive does: every one, in partition order, intact.
    #[tokio::test]
    async fn a_bulk_receive_reads_elsewhere_and_delivers_every_message_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, _) = broker(dir.path());
        let body = |i: usize| Bytes::from(format!("{i:04}").repeat(256));
        let messages = (0..300)
            .map(|i| IncomingMessage {
                topic: "u".into(),
                message_id: format!("m{i}"),
                body: body(i),
                partition_hint: Some(0),
                ..Default::default()
            })
            .collect();
        assert!(broker.send(messages).await.iter().all(Result::is_ok));
        let group = GroupConfig { subscriptions: vec!["u".into()], ..GroupConfig::auto("g") };
        broker.catalog.put_group(group).unwrap();
        let receive = |batch| ReceiveRequest {
            group: "g".into(),
            topic: "u".into(),
            client: "c".into(),
            filter: Filter::All,
            batch,
            invisible: Some(Duration::from_secs(60)),
            auto_renew: false,
            poll_until: Instant::now(),
        };

        let small = broker.receive(&receive(10)).await.unwrap();
        assert_eq!(broker.metrics.bulk_reads.get(), 0, "10 KiB are read on the receive's own thread");
        let bulk = broker.receive(&receive(290)).await.unwrap();
        assert_eq!(broker.metrics.bulk_reads.get(), 1, "290 KiB are read on the blocking thread");

        let delivered: Vec<_> =
            small.iter().chain(&bulk).map(|d| (d.offset, d.message.message_id().to_vec(), d.message.body())).collect();
        assert_eq!(delivered.len(), 300);
        for (i, (offset, id, message_body)) in delivered.into_iter().enumerate() {
            assert_eq!((offset, id), (i as u64, format!("m{i}").into_bytes()));
            assert_eq!(message_body, body(i), "body of message {i}");
        }
    }
}
