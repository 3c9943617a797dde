//! The topics and consumer groups this broker serves, with their settings.
//!
//! Entries come from Topic / ConsumerGroup manifests (standalone `-f`, or the Kubernetes watch
//! later) or are created on first use when auto-creation is on. Auto-created topics are written to
//! `<data dir>/meta/topics/<name>.json` so their partition count survives a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::storage::{Durability, Partition, Store};

/// Longest topic name (RocketMQ's limit).
pub const MAX_TOPIC_LEN: usize = 127;
/// Prefix of dead-letter topics (RocketMQ's naming).
pub const DEAD_LETTER_PREFIX: &str = "%DLQ%";

/// Longest consumer group name (leaves room for the `%RETRY%`/`%DLQ%` prefixes).
pub const MAX_GROUP_LEN: usize = 120;

/// Message types a topic can accept (RocketMQ 5's TopicMessageType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageType {
    /// Plain messages.
    Normal,
    /// Ordered per message group.
    Fifo,
    /// Delivered at a set time.
    Delay,
    /// Transactional half messages.
    Transaction,
}

impl MessageType {
    /// Lower-case label for metrics (RocketMQ's `message_type` label values).
    pub fn label(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Fifo => "fifo",
            Self::Delay => "delay",
            Self::Transaction => "transaction",
        }
    }
}

/// Topic-level access (RocketMQ topic perm).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicAccess {
    /// Sends and receives.
    #[default]
    ReadWrite,
    /// Receives only.
    ReadOnly,
    /// Sends only.
    WriteOnly,
}

impl TopicAccess {
    /// Whether producers may send.
    pub fn writable(self) -> bool {
        self != Self::ReadOnly
    }

    /// Whether consumers may receive.
    pub fn readable(self) -> bool {
        self != Self::WriteOnly
    }
}

/// Settings of a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Name.
    pub name: String,
    /// Number of partitions (RocketMQ queues).
    pub partitions: u32,
    /// Message types producers may send to it.
    pub accepts: Vec<MessageType>,
    /// When sends are acknowledged.
    #[serde(with = "durability_serde")]
    pub durability: Durability,
    /// FIFO over the whole topic (one partition, every message in one order) instead of per
    /// message group.
    #[serde(default)]
    pub fifo_global: bool,
    /// Longest delay a DELAY message may ask for, in ms.
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
    /// Transactions: time between check-backs of an unresolved half message, in ms.
    #[serde(default = "default_check_interval_ms")]
    pub txn_check_interval_ms: u64,
    /// Transactions: check-backs before an unresolved half message is rolled back.
    #[serde(default = "default_max_checks")]
    pub txn_max_checks: u32,
    /// In Kubernetes, the partitions this broker takes sends for (the rest live on other pods);
    /// `None`: every partition (standalone).
    #[serde(skip)]
    pub owned: Option<Vec<u32>>,
    /// Sends and receives allowed (RocketMQ topic perm).
    #[serde(default)]
    pub access: TopicAccess,
}

fn default_max_delay_ms() -> u64 {
    24 * 3600 * 1000
}

fn default_check_interval_ms() -> u64 {
    30_000
}

fn default_max_checks() -> u32 {
    15
}

impl TopicConfig {
    /// A topic of `partitions` accepting `accepts`, with the other settings at their defaults.
    pub fn new(name: impl Into<String>, partitions: u32, accepts: Vec<MessageType>, durability: Durability) -> Self {
        Self {
            name: name.into(),
            partitions,
            accepts,
            durability,
            fifo_global: false,
            max_delay_ms: default_max_delay_ms(),
            txn_check_interval_ms: default_check_interval_ms(),
            txn_max_checks: default_max_checks(),
            owned: None,
            access: TopicAccess::ReadWrite,
        }
    }
}

mod durability_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::storage::Durability;

    pub fn serialize<S: Serializer>(d: &Durability, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match d {
            Durability::Sync => "Sync",
            Durability::Async => "Async",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Durability, D::Error> {
        match String::deserialize(d)?.as_str() {
            "Async" => Ok(Durability::Async),
            _ => Ok(Durability::Sync),
        }
    }
}

/// Where a group starts on a partition it never consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest retained message.
    Earliest,
    /// Only messages sent after the group first asks.
    Latest,
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(u64),
}

/// Separates a broadcasting group's name from a client id in the name of that client's progress.
pub const BROADCAST_SEPARATOR: char = '#';

/// Settings of a consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// Name under which progress is kept: the group's name, or for a broadcasting group
    /// `<group>#<client id>` (see [`GroupConfig::for_client`]).
    pub name: String,
    /// The group's configured name (metrics labels, dead-letter topic).
    pub label: String,
    /// Every client gets every message (broadcast consumption) instead of sharing them.
    pub broadcast: bool,
    /// Deliver messages of a message group one at a time, in order.
    pub fifo: bool,
    /// Delivery attempts before a message goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Start position on partitions the group never consumed.
    pub start_from: StartFrom,
    /// Paused groups receive nothing.
    pub consume_enabled: bool,
    /// Move messages past `max_attempts` to `%DLQ%<group>` (otherwise they are dropped).
    pub dead_letter: bool,
    /// Topics the group is declared to consume (its lag is reported before it first receives).
    pub subscriptions: Vec<String>,
}

impl GroupConfig {
    /// Settings for a group created on first use.
    pub fn auto(name: &str) -> Self {
        Self {
            name: name.into(),
            label: name.into(),
            broadcast: false,
            fifo: false,
            max_attempts: 17,
            start_from: StartFrom::Earliest,
            consume_enabled: true,
            dead_letter: true,
            subscriptions: Vec::new(),
        }
    }
}

impl GroupConfig {
    /// The consumer a client's requests act as: the group itself, or for a broadcasting group the
    /// client's own copy of it, with its own progress.
    pub fn for_client(self: &Arc<Self>, client: &str) -> Arc<Self> {
        if !self.broadcast {
            return self.clone();
        }
        Arc::new(Self { name: format!("{}{BROADCAST_SEPARATOR}{client}", self.label), ..(**self).clone() })
    }
}

/// The configured group a progress name belongs to (strips a broadcast client id).
pub fn group_label(progress_name: &str) -> &str {
    progress_name.split(BROADCAST_SEPARATOR).next().unwrap_or(progress_name)
}

/// A topic with its partitions.
#[derive(Debug)]
pub struct Topic {
    /// Its settings.
    pub config: TopicConfig,
    /// Its partitions, by id.
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    /// Whether producers may send this type.
    pub fn accepts(&self, t: MessageType) -> bool {
        self.config.accepts.contains(&t)
    }
}

/// Broker-wide catalog options.
#[derive(Debug, Clone)]
pub struct CatalogOptions {
    /// Create unknown topics on first send or route lookup.
    pub auto_create_topics: bool,
    /// Create unknown consumer groups on first use.
    pub auto_create_groups: bool,
    /// Partitions of auto-created topics.
    pub default_partitions: u32,
    /// Durability of auto-created topics.
    pub default_durability: Durability,
}

impl Default for CatalogOptions {
    fn default() -> Self {
        Self {
            auto_create_topics: true,
            auto_create_groups: true,
            default_partitions: 8,
            default_durability: Durability::Sync,
        }
    }
}

/// Topics and groups.
#[derive(Debug)]
pub struct Catalog {
    options: CatalogOptions,
    store: Store,
    meta_dir: PathBuf,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    groups: RwLock<HashMap<String, Arc<GroupConfig>>>,
    /// Held while a topic is created on first use: concurrent first sends to a new topic must
    /// not write its definition file at the same time.
    creating: Mutex<()>,
}

/// Checks a topic name against RocketMQ's rules.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    validate_name(name, MAX_TOPIC_LEN).map_err(|reason| BrokerError::IllegalTopic { name: name.into(), reason })
}

/// Checks a consumer group name against RocketMQ's rules.
pub fn validate_group_name(name: &str) -> Result<(), BrokerError> {
    validate_name(name, MAX_GROUP_LEN).map_err(|reason| BrokerError::IllegalGroup { name: name.into(), reason })
}

fn validate_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > max {
        return Err(format!("it is longer than {max} characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '_' | '-'))) {
        return Err(format!("character {c:?} is not allowed (use letters, digits, %, _ and -)"));
    }
    Ok(())
}

impl Catalog {
    /// A catalog over `store`, reloading auto-created topics from the data directory.
    pub fn open(store: Store, data_dir: &std::path::Path, options: CatalogOptions) -> Result<Self, BrokerError> {
        let meta_dir = data_dir.join("meta").join("topics");
        std::fs::create_dir_all(&meta_dir)
            .map_err(|e| BrokerError::internal(format!("create {}: {e}", meta_dir.display())))?;
        let catalog = Self {
            options,
            store,
            meta_dir,
            topics: RwLock::new(HashMap::new()),
            groups: RwLock::new(HashMap::new()),
            creating: Mutex::new(()),
        };
        let entries = std::fs::read_dir(&catalog.meta_dir)
            .map_err(|e| BrokerError::internal(format!("list {}: {e}", catalog.meta_dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes =
                    std::fs::read(&path).map_err(|e| BrokerError::internal(format!("read {}: {e}", path.display())))?;
                let config: TopicConfig = serde_json::from_slice(&bytes)
                    .map_err(|e| BrokerError::internal(format!("{} is not a topic definition: {e}", path.display())))?;
                catalog.put_topic(config)?;
            }
        }
        Ok(catalog)
    }

    /// Adds or replaces a declared topic. Partitions only grow: a smaller count keeps the existing ones.
    pub fn put_topic(&self, config: TopicConfig) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(&config.name)?;
        if config.partitions == 0 || config.partitions > 1024 {
            return Err(BrokerError::BadRequest(format!(
                "topic {}: partitions must be between 1 and 1024, got {}",
                config.name, config.partitions
            )));
        }
        let existing = self.topics.read().get(&config.name).map(|t| t.partitions.len() as u32).unwrap_or(0);
        let count = config.partitions.max(existing);
        let partitions = (0..count)
            .map(|id| self.store.partition(&config.name, id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(BrokerError::Storage)?;
        let topic = Arc::new(Topic { config: TopicConfig { partitions: count, ..config }, partitions });
        self.topics.write().insert(topic.config.name.clone(), topic.clone());
        Ok(topic)
    }

    /// Adds or replaces a declared consumer group.
    pub fn put_group(&self, config: GroupConfig) -> Result<(), BrokerError> {
        validate_group_name(&config.name)?;
        self.groups.write().insert(config.name.clone(), Arc::new(config));
        Ok(())
    }

    /// Drops a group's settings (it was deleted); returns whether it was known.
    pub fn remove_group(&self, name: &str) -> bool {
        self.groups.write().remove(name).is_some()
    }

    /// The topic, creating it if allowed.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(name)?;
        if let Some(t) = self.topics.read().get(name) {
            return Ok(t.clone());
        }
        if !self.options.auto_create_topics {
            return Err(BrokerError::TopicNotFound(name.into()));
        }
        // An auto-created topic takes every message type, like RocketMQ's mixed topics.
        let all = vec![MessageType::Normal, MessageType::Fifo, MessageType::Delay, MessageType::Transaction];
        let config = TopicConfig::new(name, self.options.default_partitions, all, self.options.default_durability);
        self.create_persisted(config)
    }

    /// The dead-letter topic of a group (`%DLQ%<group>`, one partition), created on first use
    /// whatever the auto-creation setting, and remembered across restarts.
    pub fn dead_letter_topic(&self, group: &str) -> Result<Arc<Topic>, BrokerError> {
        let name = format!("{DEAD_LETTER_PREFIX}{group}");
        if let Some(t) = self.existing_topic(&name) {
            return Ok(t);
        }
        self.create_persisted(TopicConfig::new(name, 1, vec![MessageType::Normal], Durability::Sync))
    }

    /// Creates a topic remembered across restarts, once: whoever comes second gets the first's.
    fn create_persisted(&self, config: TopicConfig) -> Result<Arc<Topic>, BrokerError> {
        let _creating = self.creating.lock();
        if let Some(t) = self.existing_topic(&config.name) {
            return Ok(t);
        }
        self.persist(&config)?;
        tracing::info!(topic = %config.name, partitions = config.partitions, "topic created on first use");
        self.put_topic(config)
    }

    /// The topic, only if it exists.
    pub fn existing_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    fn persist(&self, config: &TopicConfig) -> Result<(), BrokerError> {
        let path = self.meta_dir.join(format!("{}.json", config.name));
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(config).map_err(|e| BrokerError::internal(e.to_string()))?;
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| BrokerError::internal(format!("write {}: {e}", path.display())))?;
        crate::storage::sync_dir(&self.meta_dir).map_err(BrokerError::Storage)
    }

    /// The group a client acts as (its own copy for a broadcasting group).
    pub fn consumer(&self, name: &str, client: &str) -> Result<Arc<GroupConfig>, BrokerError> {
        Ok(self.group(name)?.for_client(client))
    }

    /// The group's settings, creating default ones if allowed.
    pub fn group(&self, name: &str) -> Result<Arc<GroupConfig>, BrokerError> {
        validate_group_name(name)?;
        if let Some(g) = self.groups.read().get(name) {
            return Ok(g.clone());
        }
        if !self.options.auto_create_groups {
            return Err(BrokerError::GroupNotFound(name.into()));
        }
        let mut groups = self.groups.write();
        Ok(groups.entry(name.into()).or_insert_with(|| Arc::new(GroupConfig::auto(name))).clone())
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self.topics.read().values().cloned().collect();
        v.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        v
    }

    /// All groups, sorted by name.
    pub fn groups(&self) -> Vec<Arc<GroupConfig>> {
        let mut v: Vec<_> = self.groups.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rocketmq_rules() {
        assert!(validate_topic_name("orders_v2-%x").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("bad name").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"t".repeat(128)).is_err());
        assert!(validate_group_name(&"g".repeat(120)).is_ok());
        assert!(validate_group_name(&"g".repeat(121)).is_err());
        assert!(validate_group_name("grp\u{e9}").is_err());
    }
}
