//! Standalone mode: the broker's topics and groups come from Topic / ConsumerGroup manifests on
//! disk (the same YAML users `kubectl apply`) plus whatever is auto-created.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use weir_crds::consumer_group::{ConsumerGroup, ConsumptionMode, Ordering, StartPosition};
use weir_crds::manifest::{Manifests, load_manifests};
use weir_crds::topic::{self, Topic};

use crate::catalog::{GroupConfig, MessageType, StartFrom, TopicConfig};
use crate::storage::Durability;

/// What the manifests declare, in the broker's terms.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    /// Topics.
    pub topics: Vec<TopicConfig>,
    /// Consumer groups.
    pub groups: Vec<GroupConfig>,
    /// Longest retention time any topic asks for (the shared log keeps data that long).
    pub retention_time: Option<Duration>,
    /// Largest retention size any topic asks for.
    pub retention_bytes: Option<u64>,
}

/// Loads every file (or directory of YAML files) and converts it.
pub fn load(paths: &[impl AsRef<Path>]) -> Result<Declared> {
    let mut all = Manifests::default();
    for path in paths {
        let path = path.as_ref();
        let m = load_manifests(path).with_context(|| format!("loading {}", path.display()))?;
        all.topics.extend(m.topics);
        all.consumer_groups.extend(m.consumer_groups);
    }
    let problems = all.check_references();
    if !problems.is_empty() {
        bail!("the manifests do not fit together:\n  - {}", problems.join("\n  - "));
    }
    let mut declared = Declared::default();
    for t in &all.topics {
        let (config, time, bytes) = topic_config(t)?;
        declared.retention_time = declared.retention_time.max(Some(time));
        declared.retention_bytes = declared.retention_bytes.max(bytes);
        declared.topics.push(config);
    }
    for g in &all.consumer_groups {
        declared.groups.push(group_config(g, &all)?);
    }
    Ok(declared)
}

/// A Topic object in the broker's terms, with its retention time and size.
pub fn topic_config(t: &Topic) -> Result<(TopicConfig, Duration, Option<u64>)> {
    let name = t.effective_name().context("a Topic has neither spec.topicName nor metadata.name")?.to_owned();
    let spec = &t.spec;
    let accepts = vec![match spec.message_type {
        topic::MessageType::Normal => MessageType::Normal,
        topic::MessageType::Fifo => MessageType::Fifo,
        topic::MessageType::Delay => MessageType::Delay,
        topic::MessageType::Transaction => MessageType::Transaction,
    }];
    let durability = match spec.durability {
        topic::Durability::Sync => Durability::Sync,
        topic::Durability::Async => Durability::Async,
    };
    let time = spec.retention_time().with_context(|| format!("topic {name}"))?;
    let bytes = spec.retention_bytes().with_context(|| format!("topic {name}"))?;
    let partitions =
        u32::try_from(spec.partitions).with_context(|| format!("topic {name}: partitions must be positive"))?;
    let mut config = TopicConfig::new(name, partitions, accepts, durability);
    config.fifo_global = spec.fifo_scope() == Some(topic::FifoScope::Global);
    config.access = spec.permission.into();
    if let Some(max) = spec.max_delay().with_context(|| format!("topic {}", config.name))? {
        config.max_delay_ms = max.as_millis() as u64;
    }
    if let Some((interval, checks)) = spec.transaction_checks().with_context(|| format!("topic {}", config.name))? {
        config.txn_check_interval_ms = interval.as_millis() as u64;
        config.txn_max_checks = checks;
    }
    Ok((config, time, bytes))
}

/// A ConsumerGroup object in the broker's terms (`all` resolves its topic references).
pub fn group_config(g: &ConsumerGroup, all: &Manifests) -> Result<GroupConfig> {
    let name = g.effective_name().context("a ConsumerGroup has neither spec.groupName nor metadata.name")?.to_owned();
    let spec = &g.spec;
    let start_from = match spec.start_from.position {
        StartPosition::Earliest => StartFrom::Earliest,
        StartPosition::Latest => StartFrom::Latest,
        StartPosition::Timestamp => {
            let t = spec
                .start_from
                .timestamp
                .as_ref()
                .with_context(|| format!("group {name}: startFrom.timestamp is missing"))?;
            StartFrom::Timestamp(t.0.as_millisecond().max(0) as u64)
        }
    };
    Ok(GroupConfig {
        label: name.clone(),
        name,
        broadcast: spec.consumption_mode == ConsumptionMode::Broadcasting,
        fifo: spec.ordering == Ordering::Orderly,
        max_attempts: u32::try_from(spec.retry.max_attempts).unwrap_or(1).max(1),
        start_from,
        consume_enabled: spec.consume_enabled,
        // A topicRef names a Topic object; its RocketMQ name may differ (spec.topicName).
        subscriptions: spec
            .subscriptions
            .iter()
            .map(|s| {
                all.topic(&s.topic_ref.name).and_then(|t| t.effective_name()).unwrap_or(&s.topic_ref.name).to_owned()
            })
            .collect(),
        dead_letter: spec.retry.dead_letter.enabled,
    })
}
