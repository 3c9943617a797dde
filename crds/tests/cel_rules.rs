//! Every CEL rule of both CRDs, evaluated offline with kube's `cel` feature (kube-cel): one case
//! that passes and one that fails, on typed objects (so Rust's defaults play the part of the API
//! server's defaulting, which also runs before validation).

use kube::core::cel::{ValidationErrors, validate_cel, validate_cel_update};
use weir_crds::{ConsumerGroup, ConsumerGroupSpec, Topic, TopicSpec};

fn topic(name: &str, spec: &str) -> Topic {
    let spec: TopicSpec = serde_yaml::from_str(spec).unwrap();
    Topic::new(name, spec)
}

fn group(name: &str, spec: &str) -> ConsumerGroup {
    let spec: ConsumerGroupSpec = serde_yaml::from_str(spec).unwrap();
    ConsumerGroup::new(name, spec)
}

#[track_caller]
fn ok(result: Result<(), ValidationErrors>) {
    if let Err(errors) = result {
        panic!("expected no CEL errors, got {errors:#?}");
    }
}

#[track_caller]
fn fails(result: Result<(), ValidationErrors>, message: &str) {
    match result {
        Ok(()) => panic!("expected a CEL error containing {message:?}, got none"),
        Err(errors) => assert!(
            errors.iter().any(|e| e.to_string().contains(message)),
            "expected a CEL error containing {message:?}, got {errors:#?}"
        ),
    }
}

// ---- Topic, creation rules ----

#[test]
fn topic_metadata_name_must_be_a_rocketmq_name_unless_topic_name_is_set() {
    ok(validate_cel(&topic("orders", "{}")));
    fails(validate_cel(&topic("orders.v1", "{}")), "metadata.name is not a valid RocketMQ topic name");
    ok(validate_cel(&topic("orders.v1", "topicName: orders_v1")));
}

#[test]
fn topic_name_prefixes_are_reserved() {
    ok(validate_cel(&topic("t", "topicName: Orders%EU")));
    for reserved in ["'%RETRY%x'", "'%DLQ%x'", "rmq_sys_x"] {
        fails(
            validate_cel(&topic("t", &format!("topicName: {reserved}"))),
            "topicName must not start with %RETRY%, %DLQ% or rmq_sys_",
        );
    }
}

#[test]
fn fifo_block_only_with_fifo_type() {
    ok(validate_cel(&topic("t", "{messageType: FIFO, fifo: {scope: MessageGroup}}")));
    fails(
        validate_cel(&topic("t", "{messageType: Normal, fifo: {scope: MessageGroup}}")),
        "fifo is only allowed when messageType is FIFO",
    );
}

#[test]
fn global_fifo_needs_one_partition() {
    ok(validate_cel(&topic("t", "{messageType: FIFO, partitions: 1, fifo: {scope: Global}}")));
    fails(
        validate_cel(&topic("t", "{messageType: FIFO, partitions: 2, fifo: {scope: Global}}")),
        "fifo.scope Global (one total order) needs exactly 1 partition",
    );
}

#[test]
fn delay_block_only_with_delay_type() {
    ok(validate_cel(&topic("t", "{messageType: Delay, delay: {maxDelay: 48h}}")));
    fails(
        validate_cel(&topic("t", "{messageType: FIFO, delay: {maxDelay: 48h}}")),
        "delay is only allowed when messageType is Delay",
    );
}

#[test]
fn transaction_block_only_with_transaction_type() {
    ok(validate_cel(&topic("t", "{messageType: Transaction, transaction: {maxChecks: 3}}")));
    fails(
        validate_cel(&topic("t", "{messageType: Delay, transaction: {maxChecks: 3}}")),
        "transaction is only allowed when messageType is Transaction",
    );
}

#[test]
fn flush_interval_only_with_async() {
    ok(validate_cel(&topic("t", "{durability: Async, flushInterval: 1s}")));
    ok(validate_cel(&topic("t", "{durability: Async}")));
    fails(
        validate_cel(&topic("t", "{durability: Sync, flushInterval: 1s}")),
        "flushInterval is only allowed when durability is Async",
    );
}

#[test]
fn enough_pods_for_the_replication_factor() {
    ok(validate_cel(&topic("t", "{replicationFactor: 3, brokers: {replicas: 3}}")));
    fails(
        validate_cel(&topic("t", "{replicationFactor: 3, brokers: {replicas: 2}}")),
        "brokers.replicas must be at least replicationFactor",
    );
}

// ---- Topic, transition rules ----

#[test]
fn partitions_may_grow_but_shrink_only_when_allowed() {
    let old = topic("t", "partitions: 8");
    ok(validate_cel_update(&topic("t", "partitions: 16"), &old));
    ok(validate_cel_update(&topic("t", "partitions: 8"), &old));
    fails(
        validate_cel_update(&topic("t", "partitions: 4"), &old),
        "partitions cannot be decreased unless allowPartitionShrink is true",
    );
    ok(validate_cel_update(&topic("t", "{partitions: 4, allowPartitionShrink: true}"), &old));
}

#[test]
fn topic_name_is_immutable() {
    let old = topic("t", "topicName: Orders");
    ok(validate_cel_update(&topic("t", "{topicName: Orders, partitions: 9}"), &old));
    fails(validate_cel_update(&topic("t", "topicName: Orders2"), &old), "topicName is immutable");
    fails(validate_cel_update(&topic("t", "{}"), &old), "topicName cannot be added or removed after creation");
    fails(validate_cel_update(&old, &topic("t", "{}")), "topicName cannot be added or removed after creation");
}

#[test]
fn message_type_is_immutable() {
    let old = topic("t", "messageType: Normal");
    ok(validate_cel_update(&topic("t", "{messageType: Normal, partitions: 9}"), &old));
    fails(validate_cel_update(&topic("t", "messageType: FIFO"), &old), "messageType is immutable");
}

#[test]
fn replication_factor_is_immutable() {
    let old = topic("t", "{replicationFactor: 1, brokers: {replicas: 3}}");
    ok(validate_cel_update(&topic("t", "{replicationFactor: 1, brokers: {replicas: 2}}"), &old));
    fails(
        validate_cel_update(&topic("t", "{replicationFactor: 2, brokers: {replicas: 3}}"), &old),
        "replicationFactor is immutable",
    );
}

// ---- ConsumerGroup, creation rules ----

const SUB: &str = "subscriptions: [{topicRef: {name: orders}}]";

#[test]
fn group_metadata_name_must_be_a_rocketmq_name_unless_group_name_is_set() {
    ok(validate_cel(&group("billing", SUB)));
    fails(validate_cel(&group("billing.eu", SUB)), "metadata.name is not a valid RocketMQ group name");
    ok(validate_cel(&group("billing.eu", &format!("{{{SUB}, groupName: billing_eu}}"))));
}

#[test]
fn group_name_prefixes_are_reserved() {
    fails(
        validate_cel(&group("g", &format!("{{{SUB}, groupName: '%DLQ%g'}}"))),
        "groupName must not start with %RETRY%, %DLQ% or rmq_sys_",
    );
}

#[test]
fn each_topic_is_subscribed_once() {
    ok(validate_cel(&group("g", "subscriptions: [{topicRef: {name: a}}, {topicRef: {name: b}}]")));
    fails(
        validate_cel(&group(
            "g",
            "subscriptions: [{topicRef: {name: a}}, {topicRef: {name: a}, filter: {expression: x}}]",
        )),
        "each topic may be subscribed only once",
    );
}

#[test]
fn tag_filters_have_no_empty_tag() {
    for good in ["'*'", "TagA", "'TagA || TagB'"] {
        ok(validate_cel(&group(
            "g",
            &format!("subscriptions: [{{topicRef: {{name: a}}, filter: {{type: Tag, expression: {good}}}}}]"),
        )));
    }
    // SQL92 expressions are not split on ||.
    ok(validate_cel(&group(
        "g",
        "subscriptions: [{topicRef: {name: a}, filter: {type: SQL92, expression: \"a = 'x||'\"}}]",
    )));
    for bad in ["'TagA ||'", "'|| TagB'", "'TagA || || TagB'", "' '"] {
        fails(
            validate_cel(&group(
                "g",
                &format!("subscriptions: [{{topicRef: {{name: a}}, filter: {{type: Tag, expression: {bad}}}}}]"),
            )),
            "a Tag filter is * or tags separated by ||",
        );
    }
}

#[test]
fn start_from_timestamp_needs_a_timestamp() {
    ok(validate_cel(&group(
        "g",
        &format!("{{{SUB}, startFrom: {{position: Timestamp, timestamp: '2026-01-01T00:00:00Z'}}}}"),
    )));
    fails(
        validate_cel(&group("g", &format!("{{{SUB}, startFrom: {{position: Timestamp}}}}"))),
        "startFrom.timestamp is required when position is Timestamp",
    );
    fails(
        validate_cel(&group(
            "g",
            &format!("{{{SUB}, startFrom: {{position: Earliest, timestamp: '2026-01-01T00:00:00Z'}}}}"),
        )),
        "startFrom.timestamp is required when position is Timestamp",
    );
}

#[test]
fn customized_backoff_needs_levels() {
    ok(validate_cel(&group("g", &format!("{{{SUB}, retry: {{backoff: {{policy: Customized, levels: [1s]}}}}}}"))));
    ok(validate_cel(&group("g", &format!("{{{SUB}, retry: {{backoff: {{policy: Exponential, levels: []}}}}}}"))));
    fails(
        validate_cel(&group("g", &format!("{{{SUB}, retry: {{backoff: {{policy: Customized, levels: []}}}}}}"))),
        "backoff.levels must list at least one delay when policy is Customized",
    );
}

#[test]
fn backoff_max_is_not_below_initial() {
    ok(validate_cel(&group("g", &format!("{{{SUB}, retry: {{backoff: {{initial: 1s, max: 1h30m}}}}}}"))));
    fails(
        validate_cel(&group("g", &format!("{{{SUB}, retry: {{backoff: {{initial: 2m, max: 90s}}}}}}"))),
        "backoff.max must not be shorter than backoff.initial",
    );
}

#[test]
fn offset_reset_targets_need_their_value() {
    ok(validate_cel(&group(
        "g",
        &format!("{{{SUB}, offsetReset: {{requestId: r1, to: Timestamp, timestamp: '2026-01-01T00:00:00Z'}}}}"),
    )));
    ok(validate_cel(&group("g", &format!("{{{SUB}, offsetReset: {{requestId: r1, to: Offset, offset: 42}}}}"))));
    ok(validate_cel(&group("g", &format!("{{{SUB}, offsetReset: {{requestId: r1, to: Earliest}}}}"))));
    fails(
        validate_cel(&group("g", &format!("{{{SUB}, offsetReset: {{requestId: r1, to: Timestamp}}}}"))),
        "offsetReset.timestamp is required when to is Timestamp",
    );
    fails(
        validate_cel(&group("g", &format!("{{{SUB}, offsetReset: {{requestId: r1, to: Latest, offset: 3}}}}"))),
        "offsetReset.offset is required when to is Offset",
    );
}

// ---- ConsumerGroup, transition rules ----

#[test]
fn group_name_is_immutable() {
    let old = group("g", &format!("{{{SUB}, groupName: Billing}}"));
    ok(validate_cel_update(&group("g", &format!("{{{SUB}, groupName: Billing, consumeEnabled: false}}")), &old));
    fails(validate_cel_update(&group("g", &format!("{{{SUB}, groupName: Billing2}}")), &old), "groupName is immutable");
    fails(validate_cel_update(&group("g", SUB), &old), "groupName cannot be added or removed after creation");
}

#[test]
fn consumption_mode_is_immutable() {
    let old = group("g", &format!("{{{SUB}, consumptionMode: Clustering}}"));
    ok(validate_cel_update(&group("g", &format!("{{{SUB}, consumptionMode: Clustering, ordering: Orderly}}")), &old));
    fails(
        validate_cel_update(&group("g", &format!("{{{SUB}, consumptionMode: Broadcasting}}")), &old),
        "consumptionMode is immutable",
    );
}

#[test]
fn every_cel_rule_has_a_test() {
    // Counts the rules in the generated CRDs, so a new rule without a case above is noticed.
    fn count(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| if k == "x-kubernetes-validations" { v.as_array().map_or(0, Vec::len) } else { count(v) })
                .sum(),
            serde_json::Value::Array(items) => items.iter().map(count).sum(),
            _ => 0,
        }
    }
    use kube::CustomResourceExt;
    let topic_rules = count(&serde_json::to_value(Topic::crd()).unwrap());
    let group_rules = count(&serde_json::to_value(ConsumerGroup::crd()).unwrap());
    // Topic: root name, topicName x2, messageType, replicationFactor, 8 on the spec.
    assert_eq!(topic_rules, 13, "update the Topic CEL tests");
    // ConsumerGroup: root name, groupName x2, spec groupName presence, subscriptions,
    // consumptionMode, filter, startFrom, backoff x2, offsetReset x2.
    assert_eq!(group_rules, 12, "update the ConsumerGroup CEL tests");
}
