//! Client sessions: who is connected, as what, and whether it is still alive.
//!
//! A client is keyed by its `x-mq-client-id`. It counts as alive while it has an open Telemetry
//! stream, is waiting in a long poll, or sent a request recently. When it goes away (stream closed, `NotifyClientTermination`,
//! or silence past the TTL) the messages leased to it are released for redelivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use crate::storage::record::StoredMessage;

/// Something the broker pushes to a client over one of its Telemetry streams.
#[derive(Debug, Clone)]
pub enum ServerCommand {
    /// Ask a producer whether a transaction committed (check-back of an orphaned half message).
    RecoverOrphanedTransaction {
        /// The half message.
        message: Box<StoredMessage>,
        /// Its transaction id.
        transaction_id: String,
    },
}

/// What kind of client a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientKind {
    /// Not told yet.
    #[default]
    Unknown,
    /// A producer.
    Producer,
    /// A push consumer.
    PushConsumer,
    /// A simple consumer.
    SimpleConsumer,
    /// A pull consumer.
    PullConsumer,
}

/// What the broker knows about one client.
#[derive(Debug, Default)]
pub struct ClientSession {
    /// Client type from its settings.
    pub kind: ClientKind,
    /// SDK language as the client reported it.
    pub language: String,
    /// Consumer group (consumers).
    pub group: Option<String>,
    /// Topics a producer declared.
    pub topics: Vec<String>,
    /// Open Telemetry streams.
    pub streams: usize,
    /// Receives waiting in a long poll: a client blocked in one is not silent.
    pub polling: usize,
    /// Last request of any kind.
    pub last_seen: Option<Instant>,
    /// Open Telemetry streams the broker can push commands on, by stream id.
    pub outbox: Vec<(u64, mpsc::Sender<ServerCommand>)>,
}

/// Keeps a client alive while one of its receives waits; see [`Clients::polling`].
#[derive(Debug)]
pub struct PollGuard {
    session: Arc<Mutex<ClientSession>>,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        let mut s = self.session.lock();
        s.polling = s.polling.saturating_sub(1);
        s.last_seen = Some(Instant::now());
    }
}

/// All sessions.
#[derive(Debug)]
pub struct Clients {
    sessions: RwLock<HashMap<Arc<str>, Arc<Mutex<ClientSession>>>>,
    ttl: Duration,
    next_stream: AtomicU64,
    round_robin: AtomicUsize,
}

impl Clients {
    /// A registry that forgets clients silent for longer than `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            sessions: RwLock::new(HashMap::new()),
            ttl,
            next_stream: AtomicU64::new(1),
            round_robin: AtomicUsize::new(0),
        }
    }

    /// The session of `id`, created on first sight; marks it seen.
    pub fn touch(&self, id: &str) -> Arc<Mutex<ClientSession>> {
        let existing = self.sessions.read().get(id).cloned();
        let session = match existing {
            Some(s) => s,
            None => self.sessions.write().entry(Arc::from(id)).or_default().clone(),
        };
        session.lock().last_seen = Some(Instant::now());
        session
    }

    /// Whether `id` is alive: an open stream, or seen within the TTL.
    pub fn alive(&self, id: &str) -> bool {
        let session = self.sessions.read().get(id).cloned();
        session.is_some_and(|s| self.is_alive(&s.lock()))
    }

    fn is_alive(&self, s: &ClientSession) -> bool {
        s.streams > 0 || s.polling > 0 || s.last_seen.is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// Marks `id` as busy in a long poll until the guard drops (then seen again).
    pub fn polling(&self, id: &str) -> PollGuard {
        let session = self.touch(id);
        session.lock().polling += 1;
        PollGuard { session }
    }

    /// Forgets `id`.
    pub fn remove(&self, id: &str) {
        self.sessions.write().remove(id);
    }

    /// Forgets clients that are no longer alive and returns their ids.
    pub fn expire(&self) -> Vec<Arc<str>> {
        let dead: Vec<Arc<str>> =
            self.sessions.read().iter().filter(|(_, s)| !self.is_alive(&s.lock())).map(|(id, _)| id.clone()).collect();
        let mut sessions = self.sessions.write();
        for id in &dead {
            sessions.remove(id);
        }
        dead
    }

    /// Number of live sessions per kind (for metrics).
    pub fn count(&self, kind: ClientKind) -> usize {
        self.sessions.read().values().filter(|s| s.lock().kind == kind).count()
    }

    /// An id for a new Telemetry stream.
    pub fn next_stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// Pushes `command` to one live producer that declared `topic` (round robin); false when no
    /// such producer is connected.
    pub fn send_to_producer(&self, topic: &str, command: ServerCommand) -> bool {
        let mut candidates: Vec<mpsc::Sender<ServerCommand>> = self
            .sessions
            .read()
            .values()
            .filter_map(|s| {
                let s = s.lock();
                let declared = s.kind == ClientKind::Producer && s.topics.iter().any(|t| t == topic);
                declared.then(|| s.outbox.iter().map(|(_, tx)| tx.clone()).collect::<Vec<_>>())
            })
            .flatten()
            .collect();
        if candidates.is_empty() {
            return false;
        }
        let start = self.round_robin.fetch_add(1, Ordering::Relaxed) % candidates.len();
        candidates.rotate_left(start);
        candidates.into_iter().any(|tx| tx.try_send(command.clone()).is_ok())
    }

    /// Clients of a consumer group.
    pub fn members(&self, group: &str) -> usize {
        self.sessions.read().values().filter(|s| s.lock().group.as_deref() == Some(group)).count()
    }
}
