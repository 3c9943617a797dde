//! Publication: written groups become visible, and their senders are answered, in log order.
//!
//! A group is written (`pwrite`) by whichever thread holds the writer, but a group with `Sync`
//! appends may be published only once an fdatasync has covered it. The fdatasync runs on the writer
//! thread while the next groups are being written, so groups wait here, in log order, until they
//! can go:
//!
//! ```text
//!            written, oldest first                          durable end (last fdatasync)
//!   ┌─────────────┬──────────────┬─────────────┐                 │
//!   │ g7 Sync     │ g8 Async     │ g9 Sync     │   g7 goes when  ▼ passes its end; g8 right
//!   └─────────────┴──────────────┴─────────────┘   after it (an Async group needs no sync but
//!                                                  may not overtake); g9 at the next sync
//! ```
//!
//! Publishing a group appends its index entries (the messages become readable), applies its state
//! records (acknowledgements and the like) and then answers its waiters, so an answered send is
//! always readable and an answered acknowledgement always applied.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::lock::Mutex;
use tokio::sync::{oneshot, watch};

use crate::storage::frame::RecordKind;
use crate::storage::{Appended, Partition, StorageError, StoreInner};

/// Where the result of an append goes.
pub(crate) type Reply = oneshot::Sender<Result<Vec<Appended>, StorageError>>;

/// An append of a written group, waiting for its answer.
pub(crate) struct Waiter {
    pub(crate) reply: Reply,
    pub(crate) results: Vec<Appended>,
}

/// A group that is in the log but not yet visible.
pub(crate) struct WrittenGroup {
    /// Log position just past the group.
    pub(crate) end: u64,
    /// Whether it may be published only after an fdatasync reached `end`.
    pub(crate) needs_sync: bool,
    /// Encoded index entries per partition, in queue-offset order.
    pub(crate) index_runs: Vec<(Arc<Partition>, Vec<u8>)>,
    /// State records, in log order.
    pub(crate) state_records: Vec<StateRecord>,
    pub(crate) waiters: Vec<Waiter>,
}

/// A state record of a written group.
pub(crate) struct StateRecord {
    pub(crate) kind: RecordKind,
    /// Its log position.
    pub(crate) position: u64,
    pub(crate) body: Vec<u8>,
    /// See [`AppendRecord::wakes`](crate::storage::AppendRecord::wakes).
    pub(crate) wakes: Option<Box<str>>,
}

/// The groups written but not yet published, oldest first.
pub(crate) struct Publisher {
    inner: Arc<StoreInner>,
    queue: Mutex<Queue>,
}

struct Queue {
    groups: VecDeque<WrittenGroup>,
    /// Log position up to which every record is published (state applied, index readable).
    published_end: u64,
}

impl Publisher {
    /// A publisher for a log whose records up to `end` are all published (recovered).
    pub(crate) fn new(inner: Arc<StoreInner>, end: u64) -> Self {
        Self { inner, queue: Mutex::new(Queue { groups: VecDeque::new(), published_end: end }) }
    }

    /// Whether some written group is not yet published (it waits for an fdatasync).
    pub(crate) fn has_unpublished(&self) -> bool {
        !self.queue.lock().groups.is_empty()
    }

    /// Queues a group just written (groups must come in log order) and publishes what can go.
    /// Returns whether everything written is now published.
    pub(crate) fn push(&self, group: WrittenGroup) -> bool {
        let mut queue = self.queue.lock();
        queue.groups.push_back(group);
        self.publish_ready(&mut queue);
        queue.groups.is_empty()
    }

    /// Publishes every group at the head of the queue that is durable enough, after a sync.
    pub(crate) fn publish_durable(&self) {
        self.publish_ready(&mut self.queue.lock());
    }

    fn publish_ready(&self, queue: &mut Queue) {
        let durable = self.inner.log.durable();
        while queue.groups.front().is_some_and(|g| !g.needs_sync || g.end <= durable) {
            let group = queue.groups.pop_front().expect("checked above");
            queue.published_end = group.end;
            self.publish(group);
        }
    }

    fn publish(&self, group: WrittenGroup) {
        for (partition, encoded) in &group.index_runs {
            if let Err(e) = partition.index.append(encoded) {
                // The log has the records and recovery rebuilds the index from it; stop taking writes.
                self.inner.poison(e.to_string());
            }
        }
        // Only progress records can make a message deliverable (an acknowledgement frees the next
        // message of a FIFO group), and only on their own topic; delayed and transactional
        // messages become deliverable as message records of their own.
        let mut every_topic = false;
        let mut progressed: Vec<Arc<watch::Sender<u64>>> = Vec::new();
        for record in group.state_records {
            self.inner.state.apply(record.kind, record.position, &record.body);
            if record.kind == RecordKind::Ack {
                match record.wakes {
                    Some(topic) => progressed.push(self.inner.topic_news(&topic)),
                    None => every_topic = true,
                }
            }
        }
        // Woken only now that every record of the group is applied, each topic once: its own
        // messages (the index runs above) and its consumers' progress.
        let of_messages = group.index_runs.iter().map(|(partition, _)| &partition.topic_news);
        let mut told: Vec<&Arc<watch::Sender<u64>>> = Vec::new();
        for news in of_messages.chain(&progressed) {
            if !told.iter().any(|t| Arc::ptr_eq(t, news)) {
                news.send_modify(|n| *n += 1);
                told.push(news);
            }
        }
        if every_topic {
            self.inner.state_news.send_modify(|n| *n += 1);
        }
        for w in group.waiters {
            let _ = w.reply.send(Ok(w.results));
        }
    }

    /// Fails every unpublished group (durability was lost: none of them may be acknowledged).
    pub(crate) fn fail_all(&self, e: &StorageError) {
        let failed = std::mem::take(&mut self.queue.lock().groups);
        for w in failed.into_iter().flat_map(|g| g.waiters) {
            let _ = w.reply.send(Err(e.clone()));
        }
    }

    /// Runs `f` while nothing is being published and returns the position up to which everything
    /// is published with what `f` returned: a state snapshot taken here matches that position.
    pub(crate) fn at_published_end<T>(&self, f: impl FnOnce() -> T) -> (u64, T) {
        let queue = self.queue.lock();
        (queue.published_end, f())
    }
}
