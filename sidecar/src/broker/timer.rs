//! Firing delayed messages: when a scheduled message is due, copy it into its partition and log
//! that it fired, in one group commit; consumers' long polls wake up as for any new message.

use super::*;
use crate::delay::{Due, FiredRecord};

/// Messages fired per group commit at most.
const FIRE_BATCH: usize = 1024;
/// The firing loop looks at the timer at least this often (new buckets come into range).
const MAX_SLEEP_MS: u64 = 1000;

impl Broker {
    /// Delivers delayed messages as they come due, until the broker shuts down.
    pub async fn run_timer(self: Arc<Self>) {
        let mut stopping = self.stopping();
        loop {
            let now = now_ms().max(0) as u64;
            match self.fire_due(now).await {
                Ok(n) if n == FIRE_BATCH => continue, // more may be due right now
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "delivering delayed messages failed; retrying");
                    tokio::time::sleep(Duration::from_millis(MAX_SLEEP_MS)).await;
                }
            }
            if let Err(e) = self.timer.compact(now) {
                tracing::warn!(error = %e, "could not delete a fired timer bucket");
            }
            let now = now_ms().max(0) as u64;
            let wait = self.timer.next_due().map_or(MAX_SLEEP_MS, |d| d.saturating_sub(now)).min(MAX_SLEEP_MS);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = self.timer.wake.notified() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// Fires what is due at `now`; returns how many.
    async fn fire_due(&self, now: u64) -> Result<usize, BrokerError> {
        let due = self.timer.take_due(now, FIRE_BATCH)?;
        if due.is_empty() {
            return Ok(0);
        }
        let result = self.fire(&due, now).await;
        if result.is_err() {
            self.timer.retry(&due);
        }
        result.map(|()| due.len())
    }

    async fn fire(&self, due: &[Due], now: u64) -> Result<(), BrokerError> {
        let mut records = Vec::with_capacity(due.len() + 1);
        let mut fired = FiredRecord::default();
        for d in due {
            fired.positions.push(d.position);
            fired.due_ms.push(d.due_ms);
            let message = match self.store.read_at(d.position, d.length).map(StoredMessage::decode) {
                Ok(Ok(m)) => m,
                other => {
                    tracing::error!(position = d.position, result = ?other.err(), "unreadable delayed message dropped");
                    continue;
                }
            };
            let Some(topic) = self.catalog.existing_topic(&message.topic) else {
                tracing::warn!(topic = message.topic, "delayed message dropped: its topic no longer exists");
                continue;
            };
            let partition = topic.partitions[message.partition as usize % topic.partitions.len()].clone();
            let group_hash = index_group_hash(&topic, &message.message_group);
            let tag = tag_hash(&message.tag);
            let message = StoredMessage { partition: partition.id(), ..message };
            records.push(AppendRecord::message(partition, tag, group_hash, now, message.encode_to_vec()));
        }
        let count = records.len() as u64;
        records.push(AppendRecord::state(RecordKind::TimerFired, fired.encode_to_vec()));
        self.store.append(records, Durability::Sync).await?;
        self.metrics.timer_fired.inc_by(count);
        Ok(())
    }
}
