//! `validate()` (plain Rust, used without an API server) accepts and rejects the same specs as the
//! CRD schema plus its CEL rules, and says what is wrong.

mod support;

use kube::core::cel::{validate_cel, validate_cel_update};
use weir_crds::{ConsumerGroup, ConsumerGroupSpec, Topic, TopicSpec};

fn topic(name: &str, spec: &str) -> Topic {
    let spec: TopicSpec = serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    Topic::new(name, spec)
}

fn group(name: &str, spec: &str) -> ConsumerGroup {
    let spec: ConsumerGroupSpec = serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    ConsumerGroup::new(name, spec)
}

/// (metadata.name, spec, expected problem substring or "" when valid)
const TOPIC_CASES: &[(&str, &str, &str)] = &[
    ("orders", "{}", ""),
    ("orders", "partitions: 1024", ""),
    ("orders", "partitions: 0", "spec.partitions: must be between 1 and 1024, got 0"),
    ("orders", "partitions: 1025", "spec.partitions: must be between 1 and 1024"),
    ("orders", "replicationFactor: 0", "spec.replicationFactor: must be between 1 and 3"),
    ("orders", "{replicationFactor: 4, brokers: {replicas: 4}}", "spec.replicationFactor"),
    ("orders", "{replicationFactor: 2, brokers: {replicas: 1}}", "must be at least replicationFactor"),
    ("orders.v1", "{}", "metadata.name \"orders.v1\": character '.' is not allowed"),
    ("orders.v1", "topicName: orders_v1", ""),
    ("o", "topicName: 'a b'", "spec.topicName \"a b\": character ' ' is not allowed"),
    ("o", "topicName: '%DLQ%x'", "is reserved"),
    ("o", "topicName: ''", "spec.topicName: must not be empty"),
    ("o", "{messageType: FIFO, fifo: {scope: Global}, partitions: 1}", ""),
    (
        "o",
        "{messageType: FIFO, fifo: {scope: Global}, partitions: 2}",
        "Global (one total order) needs exactly 1 partition",
    ),
    ("o", "{messageType: Normal, fifo: {}}", "spec.fifo: only allowed when messageType is FIFO"),
    ("o", "{messageType: Delay, delay: {maxDelay: 168h}}", ""),
    ("o", "{messageType: Normal, delay: {}}", "spec.delay: only allowed when messageType is Delay"),
    ("o", "{messageType: Delay, delay: {maxDelay: 7d}}", "delay.maxDelay \"7d\": expected a duration like 72h"),
    ("o", "{messageType: Transaction, transaction: {checkInterval: 10s, maxChecks: 5}}", ""),
    ("o", "{messageType: FIFO, transaction: {}}", "spec.transaction: only allowed when messageType is Transaction"),
    ("o", "{messageType: Transaction, transaction: {maxChecks: 0}}", "spec.transaction.maxChecks"),
    ("o", "{durability: Async, flushInterval: 250ms}", ""),
    ("o", "{durability: Sync, flushInterval: 250ms}", "spec.flushInterval: only allowed when durability is Async"),
    ("o", "{durability: Async, flushInterval: quick}", "flushInterval \"quick\": expected a duration"),
    ("o", "retention: {time: 3 days}", "spec.retention.time \"3 days\": expected a duration like 72h"),
    ("o", "retention: {time: 72h, bytes: 50GB}", "spec.retention.bytes \"50GB\": expected a size like 50Gi"),
    ("o", "retention: {bytes: 1073741824}", ""),
    ("o", "brokers: {storage: {size: lots}}", "spec.brokers.storage.size \"lots\""),
    ("o", "brokers: {storage: {zeroFillAhead: 0}}", ""),
    ("o", "brokers: {storage: {zeroFillAhead: 32Mi}}", ""),
    ("o", "brokers: {storage: {zeroFillAhead: 8MB}}", "spec.brokers.storage.zeroFillAhead \"8MB\": expected a size"),
    ("o", "brokers: {replicas: 0}", "spec.brokers.replicas: must be between 1 and 1024"),
    ("o", "resyncInterval: 1 minute", "spec.resyncInterval"),
];

#[test]
fn topic_validate_accepts_and_rejects() {
    for (name, spec, expected) in TOPIC_CASES {
        let problems = topic(name, spec).validate();
        if expected.is_empty() {
            assert!(problems.is_empty(), "{name} {spec}: {problems:?}");
        } else {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{name} {spec}: expected {expected:?} in {problems:?}"
            );
        }
    }
}

#[test]
fn topic_validate_agrees_with_schema_and_cel() {
    let schema = support::spec_validator::<Topic>();
    for (name, spec, _) in TOPIC_CASES {
        let object = topic(name, spec);
        let by_rust = object.validate().is_empty();
        let by_schema = support::schema_errors(&schema, &serde_json::to_value(&object.spec).unwrap()).is_empty();
        let by_cel = validate_cel(&object).is_ok();
        assert_eq!(
            by_rust,
            by_schema && by_cel,
            "{name} {spec}: validate() says {by_rust}, schema {by_schema}, CEL {by_cel}"
        );
    }
}

/// (old spec, new spec, expected problem or "")
const TOPIC_UPDATES: &[(&str, &str, &str)] = &[
    ("partitions: 8", "partitions: 12", ""),
    ("partitions: 8", "partitions: 4", "spec.partitions: cannot decrease from 8 to 4 unless allowPartitionShrink"),
    ("partitions: 8", "{partitions: 4, allowPartitionShrink: true}", ""),
    ("topicName: A", "topicName: B", "spec.topicName: is immutable"),
    ("{}", "topicName: A", "spec.topicName: is immutable"),
    ("messageType: Normal", "messageType: Delay", "spec.messageType: is immutable"),
    (
        "{replicationFactor: 1, brokers: {replicas: 2}}",
        "{replicationFactor: 2, brokers: {replicas: 2}}",
        "spec.replicationFactor: is immutable",
    ),
    ("{durability: Sync}", "{durability: Async}", ""),
];

#[test]
fn topic_validate_update_agrees_with_cel_transition_rules() {
    for (old, new, expected) in TOPIC_UPDATES {
        let (old, new) = (topic("t", old), topic("t", new));
        let problems = new.spec.validate_update(&old.spec);
        if expected.is_empty() {
            assert!(problems.is_empty(), "{new:?}: {problems:?}");
        } else {
            assert!(problems.iter().any(|p| p.contains(expected)), "expected {expected:?} in {problems:?}");
        }
        assert_eq!(
            problems.is_empty(),
            validate_cel_update(&new, &old).is_ok(),
            "{expected}: validate_update and CEL disagree"
        );
    }
}

#[test]
fn storage_may_only_grow() {
    // Operator-checked, not a CEL rule (sizes are quantities).
    let old = topic("t", "brokers: {storage: {size: 20Gi}}");
    assert!(topic("t", "brokers: {storage: {size: 21474836480}}").spec.validate_update(&old.spec).is_empty());
    assert!(topic("t", "brokers: {storage: {size: 30Gi}}").spec.validate_update(&old.spec).is_empty());
    let problems = topic("t", "brokers: {storage: {size: 10Gi}}").spec.validate_update(&old.spec);
    assert_eq!(problems, ["spec.brokers.storage.size: may only grow (was 20Gi, now 10Gi)"]);
}

const SUB: &str = "subscriptions: [{topicRef: {name: orders}}]";

fn group_cases() -> Vec<(&'static str, String, &'static str)> {
    let with = |extra: &str| format!("{{{SUB}, {extra}}}");
    vec![
        ("billing", SUB.to_owned(), ""),
        ("billing", "subscriptions: []".to_owned(), "spec.subscriptions: at least one subscription is required"),
        ("billing.eu", SUB.to_owned(), "metadata.name \"billing.eu\": character '.' is not allowed"),
        ("billing.eu", with("groupName: billing_eu"), ""),
        ("g", with(&format!("groupName: {}", "g".repeat(121))), "at most 120 are allowed"),
        ("g", with(&format!("groupName: {}", "g".repeat(120))), ""),
        ("g", with("groupName: '%RETRY%g'"), "is reserved"),
        (
            "g",
            "subscriptions: [{topicRef: {name: a}}, {topicRef: {name: a}}]".to_owned(),
            "topic \"a\" is subscribed more than once",
        ),
        ("g", "subscriptions: [{topicRef: {name: a}, filter: {expression: 'A || B'}}]".to_owned(), ""),
        (
            "g",
            "subscriptions: [{topicRef: {name: a}, filter: {expression: 'A ||'}}]".to_owned(),
            "a Tag filter is * or tags separated by ||",
        ),
        ("g", "subscriptions: [{topicRef: {name: a}, filter: {type: SQL92, expression: 'a > 1 || b'}}]".to_owned(), ""),
        (
            "g",
            "subscriptions: [{topicRef: {name: a}, filter: {expression: ''}}]".to_owned(),
            "filter.expression: must be 1 to 4096 characters",
        ),
        (
            "g",
            with("startFrom: {position: Timestamp}"),
            "spec.startFrom.timestamp: required when position is Timestamp",
        ),
        ("g", with("startFrom: {position: Timestamp, timestamp: '2026-01-01T00:00:00Z'}"), ""),
        ("g", with("retry: {maxAttempts: 0}"), "spec.retry.maxAttempts: must be between 1 and 1000, got 0"),
        ("g", with("retry: {maxAttempts: 1000}"), ""),
        (
            "g",
            with("retry: {backoff: {policy: Customized, levels: []}}"),
            "spec.retry.backoff.levels: must list at least one delay",
        ),
        (
            "g",
            with("retry: {backoff: {levels: [1s, 1 minute]}}"),
            "spec.retry.backoff.levels[1] \"1 minute\": expected a duration",
        ),
        (
            "g",
            with("retry: {backoff: {policy: Exponential, initial: 10s, max: 5s}}"),
            "spec.retry.backoff.max: 5s is shorter than initial 10s",
        ),
        ("g", with("retry: {backoff: {multiplier: 11}}"), "spec.retry.backoff.multiplier: must be between 1 and 10"),
        ("g", with("offsetReset: {requestId: r1, to: Offset}"), "spec.offsetReset.offset: required when to is Offset"),
        ("g", with("offsetReset: {requestId: r1, to: Offset, offset: 0}"), ""),
        (
            "g",
            with("offsetReset: {requestId: r1, to: Earliest, timestamp: '2026-01-01T00:00:00Z'}"),
            "spec.offsetReset.timestamp: required when to is Timestamp",
        ),
        (
            "g",
            with("offsetReset: {requestId: '', to: Earliest}"),
            "spec.offsetReset.requestId: must be 1 to 63 characters",
        ),
    ]
}

#[test]
fn group_validate_accepts_and_rejects() {
    for (name, spec, expected) in group_cases() {
        let problems = group(name, &spec).validate();
        if expected.is_empty() {
            assert!(problems.is_empty(), "{name} {spec}: {problems:?}");
        } else {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{name} {spec}: expected {expected:?} in {problems:?}"
            );
        }
    }
}

#[test]
fn group_validate_agrees_with_schema_and_cel() {
    let schema = support::spec_validator::<ConsumerGroup>();
    for (name, spec, _) in group_cases() {
        let object = group(name, &spec);
        let by_rust = object.validate().is_empty();
        let by_schema = support::schema_errors(&schema, &serde_json::to_value(&object.spec).unwrap()).is_empty();
        let by_cel = validate_cel(&object).is_ok();
        assert_eq!(
            by_rust,
            by_schema && by_cel,
            "{name} {spec}: validate() says {by_rust}, schema {by_schema}, CEL {by_cel}"
        );
    }
}

#[test]
fn group_validate_update_agrees_with_cel_transition_rules() {
    let cases = [
        ("groupName: A", "groupName: A", ""),
        ("groupName: A", "groupName: B", "spec.groupName: is immutable"),
        ("consumptionMode: Clustering", "consumptionMode: Broadcasting", "spec.consumptionMode: is immutable"),
        ("ordering: Concurrent", "ordering: Orderly", ""),
    ];
    for (old, new, expected) in cases {
        let old = group("g", &format!("{{{SUB}, {old}}}"));
        let new = group("g", &format!("{{{SUB}, {new}}}"));
        let problems = new.spec.validate_update(&old.spec);
        if expected.is_empty() {
            assert!(problems.is_empty(), "{problems:?}");
        } else {
            assert!(problems.iter().any(|p| p.contains(expected)), "{problems:?}");
        }
        assert_eq!(problems.is_empty(), validate_cel_update(&new, &old).is_ok());
    }
}

#[test]
fn defaults_and_typed_accessors() {
    use std::time::Duration;
    use weir_crds::{BackoffPolicy, DeletionPolicy, Durability, FifoScope, MessageType};

    let t = topic("orders", "{}");
    assert_eq!(t.spec, TopicSpec::default());
    assert_eq!(t.effective_name(), Some("orders"));
    assert_eq!(t.spec.message_type, MessageType::Normal);
    assert_eq!(t.spec.partitions, 8);
    assert_eq!(t.spec.durability, Durability::Sync);
    assert_eq!(t.spec.deletion_policy, DeletionPolicy::Retain);
    assert_eq!(t.spec.retention_time().unwrap(), Duration::from_secs(72 * 3600));
    assert_eq!(t.spec.retention_bytes().unwrap(), None);
    assert_eq!(t.spec.storage_size().unwrap(), 10 << 30);
    assert_eq!(t.spec.flush_interval().unwrap(), None);
    assert_eq!(t.spec.fifo_scope(), None);
    assert_eq!(t.spec.max_delay().unwrap(), None);

    let t = topic("x", "{topicName: X, durability: Async, messageType: FIFO}");
    assert_eq!(t.effective_name(), Some("X"));
    assert_eq!(t.spec.flush_interval().unwrap(), Some(Duration::from_millis(500)));
    assert_eq!(t.spec.fifo_scope(), Some(FifoScope::MessageGroup));

    let t = topic("x", "messageType: Delay");
    assert_eq!(t.spec.max_delay().unwrap(), Some(Duration::from_secs(86400)));
    let t = topic("x", "messageType: Transaction");
    assert_eq!(t.spec.transaction_checks().unwrap(), Some((Duration::from_secs(60), 15)));

    let g = group("billing", SUB);
    assert_eq!(g.spec, ConsumerGroupSpec::for_topics(["orders"]));
    assert_eq!(g.effective_name(), Some("billing"));
    assert_eq!(g.spec.retry.max_attempts, 17);
    assert!(g.spec.consume_enabled);
    assert!(g.spec.retry.dead_letter.enabled);
    assert_eq!(g.spec.deletion_policy, DeletionPolicy::Delete);
    let backoff = &g.spec.retry.backoff;
    assert_eq!(backoff.policy, BackoffPolicy::Customized);
    assert_eq!(backoff.delay_after_attempt(1).unwrap(), Duration::from_secs(1));
    assert_eq!(backoff.delay_after_attempt(2).unwrap(), Duration::from_secs(5));
    assert_eq!(backoff.delay_after_attempt(18).unwrap(), Duration::from_secs(7200));
    assert_eq!(backoff.delay_after_attempt(99).unwrap(), Duration::from_secs(7200));

    let g = group(
        "g",
        &format!("{{{SUB}, retry: {{backoff: {{policy: Exponential, initial: 1s, max: 10s, multiplier: 3}}}}}}"),
    );
    let b = &g.spec.retry.backoff;
    assert_eq!(b.delay_after_attempt(1).unwrap(), Duration::from_secs(1));
    assert_eq!(b.delay_after_attempt(2).unwrap(), Duration::from_secs(3));
    assert_eq!(b.delay_after_attempt(3).unwrap(), Duration::from_secs(9));
    assert_eq!(b.delay_after_attempt(4).unwrap(), Duration::from_secs(10));
    assert_eq!(b.delay_after_attempt(4000).unwrap(), Duration::from_secs(10));
}

#[test]
fn serde_names_are_exact() {
    use weir_crds::{FilterType, MessageType};
    assert_eq!(serde_json::to_value(MessageType::Fifo).unwrap(), "FIFO");
    assert_eq!(serde_json::to_value(FilterType::Sql92).unwrap(), "SQL92");
    assert!(serde_yaml::from_str::<MessageType>("Fifo").is_err());
    let spec = serde_json::to_value(TopicSpec::default()).unwrap();
    for key in [
        "messageType",
        "partitions",
        "allowPartitionShrink",
        "replicationFactor",
        "retention",
        "brokers",
        "deletionPolicy",
        "resyncInterval",
    ] {
        assert!(spec.get(key).is_some(), "{key} missing from {spec}");
    }
}
