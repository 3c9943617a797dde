//! The broker as the reader of its log: where its consumers have finished, so the page cache can
//! let go of what none of them needs any more (`storage/cache_window.rs`).

use super::*;
use crate::storage::LogReaders;

impl LogReaders for Broker {
    /// Over every partition of this broker, the log position of the first message a consumer
    /// still needs:
    ///
    /// - for a group that consumes the partition, its first message not yet done (its watermark;
    ///   messages acknowledged out of order after it stay cached until it is done too);
    /// - for a declared group that has not started on the partition yet (one of its subscribed
    ///   topics), where it starts. A broadcasting group never counts as started: its clients
    ///   keep positions under names of their own, and a new one may start at any time.
    ///
    /// Partitions no group reads, and partitions read to their end, need nothing.
    fn finished_before(&self) -> u64 {
        let mut needed: HashMap<(Arc<str>, u32), u64> = HashMap::new();
        let mut need = |topic: Arc<str>, partition: u32, offset: u64| {
            needed.entry((topic, partition)).and_modify(|n| *n = (*n).min(offset)).or_insert(offset);
        };
        let mut started: HashSet<ProgressKey> = HashSet::new();
        for (key, progress) in self.consumers.entries() {
            need(key.topic.clone(), key.partition, progress.lock().watermark());
            started.insert(key);
        }
        for group in self.catalog.groups() {
            for topic in group.subscriptions.iter().filter_map(|name| self.catalog.existing_topic(name)) {
                for partition in &topic.partitions {
                    let key = ProgressKey::new(&group.name, partition.topic(), partition.id());
                    if !started.contains(&key) {
                        let start = start_offset(group.start_from, partition).unwrap_or_default();
                        need(key.topic, key.partition, start);
                    }
                }
            }
        }
        let first_needed = |partition: &Partition| {
            let offset = needed.get(&(Arc::from(partition.topic()), partition.id()))?;
            let offset = (*offset).max(partition.start_offset());
            if offset >= partition.end_offset() {
                return None;
            }
            // An index that cannot be read keeps all of the log cached: the cache only saves work.
            Some(partition.index.get(offset).ok().flatten().map_or(0, |entry| entry.position))
        };
        self.store.partitions().iter().filter_map(|p| first_needed(p)).min().unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::testing::broker;
    use crate::storage::StateMachine;

    fn declared(name: &str, start_from: StartFrom, broadcast: bool) -> GroupConfig {
        GroupConfig { start_from, broadcast, subscriptions: vec!["t".into()], ..GroupConfig::auto(name) }
    }

    /// `group`'s progress on partition `partition` of `t` as the store applies it once logged.
    fn progress(consumers: &Consumers, group: &str, partition: u32, start_at: Option<u64>, done: Vec<u64>) {
        let (group, topic) = (group.into(), "t".into());
        let record = ProgressRecord { group, topic, partition, start_at, done, ..Default::default() };
        consumers.apply(RecordKind::Ack, 0, &record.encode_to_vec());
    }

    /// Declared groups that have not started hold the log from where they would start; a group
    /// that consumes holds it from its first message not done; a topic nobody reads, a group
    /// starting at the latest message and partitions read to the end hold nothing; a
    /// broadcasting group holds its topic from where a new client would start.
    #[tokio::test]
    async fn the_log_is_needed_from_the_first_message_a_consumer_has_not_finished() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, consumers) = broker(dir.path());
        let send = |topic: &str, partition: u32| IncomingMessage {
            topic: topic.into(),
            message_id: format!("{topic}-{partition}-{}", broker.round_robin.fetch_add(1, Ordering::Relaxed)),
            body: Bytes::from_static(b"m"),
            partition_hint: Some(partition),
            ..Default::default()
        };
        let messages = (0..4).flat_map(|_| [send("u", 0), send("t", 0), send("t", 1)]).collect();
        assert!(broker.send(messages).await.iter().all(Result::is_ok));
        let position = |partition: u32, offset: u64| {
            let p = broker.store.partition("t", partition).unwrap();
            p.index.get(offset).unwrap().unwrap().position
        };
        assert_eq!(broker.finished_before(), u64::MAX, "no group reads anything yet");

        broker.catalog.put_group(declared("late", StartFrom::Latest, false)).unwrap();
        assert_eq!(broker.finished_before(), u64::MAX, "a group starting at the latest message needs none of it");
        broker.catalog.put_group(declared("g", StartFrom::Earliest, false)).unwrap();
        assert_eq!(broker.finished_before(), position(0, 0), "g will start at the first message of t");

        progress(&consumers, "g", 0, Some(0), vec![0, 1, 3]);
        assert_eq!(broker.finished_before(), position(1, 0), "g has not started on partition 1");
        assert!(position(1, 0) < position(0, 2));
        progress(&consumers, "g", 1, Some(0), vec![0]);
        assert_eq!(broker.finished_before(), position(0, 2).min(position(1, 1)));
        progress(&consumers, "g", 0, None, vec![2]);
        progress(&consumers, "g", 1, None, vec![1, 2, 3]);
        assert_eq!(broker.finished_before(), u64::MAX, "g has read t to its end and nobody reads u");

        broker.catalog.put_group(declared("b", StartFrom::Earliest, true)).unwrap();
        for partition in [0, 1] {
            progress(&consumers, &format!("b{BROADCAST_SEPARATOR}client-1"), partition, Some(0), (0..4).collect());
        }
        assert_eq!(broker.finished_before(), position(0, 0), "a new client of b would start at the first message");
    }
}
