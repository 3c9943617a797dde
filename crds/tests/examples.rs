//! Every example manifest loads with `load_manifests`, validates against the generated
//! openAPIV3Schema, and passes the CEL rules.

mod support;

use kube::core::cel::validate_cel;
use weir_crds::{ConsumerGroup, Topic, load_manifests};

fn example_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(support::crate_dir().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_expected_examples_exist() {
    let names: Vec<_> = example_files().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in [
        "orders-topic.yaml",
        "fifo-topic.yaml",
        "delay-topic.yaml",
        "transaction-topic.yaml",
        "billing-group.yaml",
        "price-cache-broadcast.yaml",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing {expected}");
    }
}

#[test]
fn every_example_loads_and_matches_the_schema_and_cel_rules() {
    let topic_schema = support::spec_validator::<Topic>();
    let group_schema = support::spec_validator::<ConsumerGroup>();
    let mut objects = 0;
    for file in example_files() {
        let manifests = load_manifests(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!manifests.is_empty(), "{}: no objects", file.display());

        // The raw documents, as an API server would receive them (no Rust defaults applied).
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in text.split("\n---\n") {
            let raw = support::yaml(doc);
            let validator = match raw["kind"].as_str() {
                Some("Topic") => &topic_schema,
                Some("ConsumerGroup") => &group_schema,
                other => panic!("{}: unexpected kind {other:?}", file.display()),
            };
            let errors = support::schema_errors(validator, &raw["spec"]);
            assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
            objects += 1;
        }

        // The typed objects (with defaults) against the schema and the CEL rules.
        for topic in &manifests.topics {
            let spec = serde_json::to_value(&topic.spec).unwrap();
            let errors = support::schema_errors(&topic_schema, &spec);
            assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
            validate_cel(topic).unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
        }
        for group in &manifests.consumer_groups {
            let spec = serde_json::to_value(&group.spec).unwrap();
            let errors = support::schema_errors(&group_schema, &spec);
            assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
            validate_cel(group).unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
        }
    }
    assert!(objects >= 10, "only {objects} example objects");
}

#[test]
fn the_examples_directory_loads_as_one_set() {
    let all = load_manifests(&support::crate_dir().join("examples")).unwrap();
    assert!(all.topics.len() >= 6);
    assert!(all.consumer_groups.len() >= 4);
    assert_eq!(all.check_references(), Vec::<String>::new());
    for group in &all.consumer_groups {
        for sub in &group.spec.subscriptions {
            assert!(
                all.topic(&sub.topic_ref.name).is_some(),
                "group {:?} subscribes to {} which no example defines",
                group.metadata.name,
                sub.topic_ref.name
            );
        }
    }
}

#[test]
fn the_schema_rejects_what_it_should() {
    let topic_schema = support::spec_validator::<Topic>();
    let group_schema = support::spec_validator::<ConsumerGroup>();
    let bad_topics = [
        ("partitions: three", "partitions"),
        ("partitions: 0", "partitions"),
        ("partitions: 1025", "partitions"),
        ("replicationFactor: 4", "replicationFactor"),
        ("messageType: Fifo", "messageType"),
        ("topicName: a.b", "topicName"),
        ("topicName: ''", "topicName"),
        ("retention: {time: 3 days}", "retention/time"),
        ("retention: {bytes: 50GB}", "retention/bytes"),
        ("brokers: {storage: {size: fifty}}", "brokers/storage/size"),
        ("brokers: {storage: {zeroFillAhead: lots}}", "brokers/storage/zeroFillAhead"),
        ("durability: Eventually", "durability"),
        ("transaction: {maxChecks: 0}", "transaction/maxChecks"),
    ];
    for (spec, path) in bad_topics {
        let errors = support::schema_errors(&topic_schema, &support::yaml(spec));
        assert!(errors.iter().any(|e| e.starts_with(&format!("/{path}:"))), "{spec}: {errors:?}");
    }
    let long = "a".repeat(128);
    assert!(!support::schema_errors(&topic_schema, &serde_json::json!({ "topicName": long })).is_empty());

    let sub = "subscriptions: [{topicRef: {name: orders}}]";
    let bad_groups = [
        ("subscriptions: []", "subscriptions"),
        ("{}", ""),
        (&format!("{{{sub}, consumptionMode: Broadcast}}"), "consumptionMode"),
        (&format!("{{{sub}, retry: {{maxAttempts: 0}}}}"), "retry/maxAttempts"),
        (&format!("{{{sub}, retry: {{backoff: {{initial: soon}}}}}}"), "retry/backoff/initial"),
        (&format!("{{{sub}, retry: {{backoff: {{levels: [1s, 2 min]}}}}}}"), "retry/backoff/levels/1"),
        (&format!("{{{sub}, groupName: {}}}", "g".repeat(121)), "groupName"),
        ("subscriptions: [{topicRef: {name: orders}, filter: {type: SQL}}]", "subscriptions/0/filter/type"),
    ];
    for (spec, path) in bad_groups {
        let errors = support::schema_errors(&group_schema, &support::yaml(spec));
        let prefix = if path.is_empty() { ":".to_owned() } else { format!("/{path}:") };
        assert!(errors.iter().any(|e| e.starts_with(&prefix)), "{spec}: {errors:?}");
    }
    // Integers are fine for sizes (int-or-string).
    assert!(support::schema_errors(&topic_schema, &support::yaml("retention: {bytes: 1048576}")).is_empty());
}
