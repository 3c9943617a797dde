//! What the operator asks of a broker: the backlog left on each partition (a partition moves off a
//! pod only once it is drained there), declarative offset resets and forgetting a deleted group.

use super::*;
use crate::catalog::group_label;

/// Where an offset reset moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    /// The oldest retained message.
    Earliest,
    /// After the newest message.
    Latest,
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(u64),
    /// This queue offset, clamped to what is retained.
    Offset(u64),
}

/// The backlog of one partition on this broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionBacklog {
    /// Partition id.
    pub partition: u32,
    /// Next offset to be written here.
    pub end_offset: u64,
    /// The most any group of the topic still has to consume or acknowledge here.
    pub backlog: u64,
}

impl Broker {
    /// Per partition of `topic`, the largest backlog of any consumer group: groups with a position
    /// count what they have not acknowledged; declared groups that never received count what
    /// they would start with; delayed and half messages still pending on this broker count too.
    pub fn partition_backlog(&self, topic: &str) -> Result<Vec<PartitionBacklog>, BrokerError> {
        let topic = self.catalog.existing_topic(topic).ok_or_else(|| BrokerError::TopicNotFound(topic.to_owned()))?;
        let mut backlog: Vec<PartitionBacklog> = topic
            .partitions
            .iter()
            .map(|p| PartitionBacklog { partition: p.id(), end_offset: p.end_offset(), backlog: 0 })
            .collect();
        let mut started: HashSet<String> = HashSet::new();
        for (key, progress) in self.consumers.entries() {
            if *key.topic != *topic.config.name {
                continue;
            }
            let Some(entry) = backlog.get_mut(key.partition as usize) else { continue };
            entry.backlog = entry.backlog.max(progress.lock().lag(entry.end_offset));
            started.insert(group_label(&key.group).to_owned());
        }
        let waiting = self.catalog.groups();
        let waiting = waiting
            .iter()
            .filter(|g| !g.broadcast && !started.contains(&g.name) && g.subscriptions.contains(&topic.config.name));
        for group in waiting {
            for (entry, partition) in backlog.iter_mut().zip(&topic.partitions) {
                let start = start_offset(group.start_from, partition).unwrap_or(entry.end_offset);
                entry.backlog = entry.backlog.max(entry.end_offset.saturating_sub(start));
            }
        }
        // Delayed and half messages are stored apart from their partition until due or committed;
        // the timer does not say for which partition, so any pending one holds every partition
        // of this broker back (safe: a drain waits for them rather than stranding them).
        let pending = self.delayed_waiting() + self.open_transactions() as u64;
        for entry in &mut backlog {
            entry.backlog += pending;
        }
        Ok(backlog)
    }

    /// Moves `group`'s position on every partition of `topic` to `target` (forwards or back);
    /// leases in flight are dropped. Returns how many partitions it set.
    pub async fn reset_offset(&self, group: &str, topic: &str, target: ResetTarget) -> Result<u32, BrokerError> {
        let group = self.catalog.group(group)?;
        if group.broadcast {
            return Err(BrokerError::BadRequest(format!(
                "group {} is broadcasting: each client keeps its own position, there is none to reset",
                group.name
            )));
        }
        let topic = self.catalog.existing_topic(topic).ok_or_else(|| BrokerError::TopicNotFound(topic.to_owned()))?;
        let mut records = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let (first, end) = (p.start_offset(), p.end_offset());
            let at = match target {
                ResetTarget::Earliest => first,
                ResetTarget::Latest => end,
                ResetTarget::Timestamp(ms) => p.index.offset_for_time(ms)?,
                ResetTarget::Offset(o) => o.clamp(first, end),
            };
            records.push(ProgressRecord {
                group: group.name.clone(),
                topic: topic.config.name.clone(),
                partition: p.id(),
                start_at: Some(at),
                reset: true,
                ..Default::default()
            });
        }
        let count = records.len() as u32;
        tracing::info!(group = %group.name, topic = %topic.config.name, ?target, "consumer offsets reset");
        self.append_progress(records).await?;
        Ok(count)
    }

    /// Forgets everything about `group` (positions of all its clients, leases, retry state).
    /// Returns whether there was anything.
    pub async fn delete_group(&self, group: &str) -> Result<bool, BrokerError> {
        let forgotten = self.forget_progress(|g| group_label(g) == group).await?;
        if forgotten > 0 {
            tracing::info!(group, entries = forgotten, "consumer group deleted");
        }
        self.catalog.remove_group(group);
        Ok(forgotten > 0)
    }
}
