//! The standalone loader: multi-document files, clear errors naming the file and document.

use std::path::Path;

use weir_crds::{LoadError, Manifests, MessageType, load_manifests, load_manifests_from_str};

fn err(yaml: &str) -> String {
    load_manifests_from_str("topics.yaml", yaml).unwrap_err().to_string()
}

#[test]
fn multi_document_files_with_empty_documents() {
    let yaml = "
---
# nothing but a comment
---
apiVersion: weir.dev/v1alpha1
kind: Topic
metadata: {name: orders}
spec: {partitions: 4}
---
---
apiVersion: weir.dev/v1alpha1
kind: ConsumerGroup
metadata: {name: billing, namespace: shop}
spec:
  subscriptions: [{topicRef: {name: orders}}]
---
apiVersion: weir.dev/v1alpha1
kind: Topic
metadata: {name: events}
spec: {messageType: FIFO}
";
    let m = load_manifests_from_str("x.yaml", yaml).unwrap();
    assert_eq!(m.topics.len(), 2);
    assert_eq!(m.consumer_groups.len(), 1);
    assert_eq!(m.topics[0].spec.partitions, 4);
    assert_eq!(m.topics[1].spec.message_type, MessageType::Fifo);
    assert_eq!(m.consumer_groups[0].metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(m.topic("orders").unwrap().effective_name(), Some("orders"));
    assert!(m.topic_by_rocketmq_name("events").is_some());
    assert!(m.consumer_group_by_rocketmq_name("billing").is_some());

    let parsed: Manifests = yaml.parse().unwrap();
    assert_eq!(parsed, m);
    assert!(load_manifests_from_str("empty.yaml", "").unwrap().is_empty());
    assert!(load_manifests_from_str("empty.yaml", "---\n---\n").unwrap().is_empty());
}

#[test]
fn other_kinds_and_versions_are_rejected_with_file_and_document() {
    let deployment = "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: a}\nspec: {}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n";
    assert_eq!(
        err(deployment),
        "topics.yaml: document 2: is apps/v1 Deployment; only apiVersion weir.dev/v1alpha1 with kind Topic or ConsumerGroup is accepted"
    );
    let old_version = "apiVersion: weir.dev/v1beta9\nkind: Topic\nmetadata: {name: a}\nspec: {}\n";
    assert!(
        err(old_version).starts_with(
            "topics.yaml: document 1: is weir.dev/v1beta9 Topic, a version this build does not understand (it reads weir.dev/v1alpha1)"
        ),
        "{}",
        err(old_version)
    );
    let foreign_group = "apiVersion: mq.example.io/v1alpha1\nkind: Topic\nmetadata: {name: a}\n";
    assert!(err(foreign_group).contains("is mq.example.io/v1alpha1 Topic;"));
    assert!(err("kind: Topic\nmetadata: {name: a}\n").contains("document 1: is a Topic without apiVersion"));
    assert!(err("- a\n- b\n").contains("document 1: is not an object"));
}

#[test]
fn bad_yaml_is_reported_with_its_position() {
    let message = err("apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: a\nspec: {}\n");
    assert!(message.starts_with("topics.yaml: document 1: not valid YAML:"), "{message}");
    assert!(message.contains("line"), "{message}");
}

#[test]
fn wrong_types_name_the_field() {
    let message =
        err("apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec:\n  partitions: three\n");
    assert!(message.starts_with("topics.yaml: document 1 (Topic orders): spec.partitions: invalid type"), "{message}");
    let message =
        err("apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec:\n  messageType: Fifo\n");
    assert!(
        message.contains("spec.messageType: unknown variant `Fifo`, expected one of `Normal`, `FIFO`"),
        "{message}"
    );
}

#[test]
fn unknown_fields_are_rejected() {
    let message = err(
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders, lables: {a: b}}\nspec:\n  partition: 3\n  retention: {time: 1h, size: 1Gi}\n  config: {}\n",
    );
    assert!(message.starts_with("topics.yaml: document 1 (Topic orders) is invalid:"), "{message}");
    for path in ["metadata.lables", "spec.partition", "spec.retention.size"] {
        assert!(message.contains(&format!("  - {path}: unknown field")), "{path}: {message}");
    }
    assert!(!message.contains("spec.config"), "{message}");
}

#[test]
fn invalid_objects_list_every_problem() {
    let yaml = "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: ledger}\nspec:\n  messageType: FIFO\n  partitions: 2\n  fifo: {scope: Global}\n  retention: {time: 3 days}\n";
    let error = load_manifests_from_str("t.yaml", yaml).unwrap_err();
    let LoadError::Invalid { at, kind, name, problems } = &error else { panic!("{error:?}") };
    assert_eq!((at.file.as_str(), at.document, *kind, name.as_str()), ("t.yaml", 1, "Topic", "ledger"));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(
        error.to_string(),
        "t.yaml: document 1 (Topic ledger) is invalid:\n  \
         - spec.fifo.scope: Global (one total order) needs exactly 1 partition, but partitions is 2\n  \
         - spec.retention.time \"3 days\": expected a duration like 72h, 30m, 10s or 500ms \
         (a number followed by one of the units ns, us, ms, s, m, h; combine them as in 1h30m; \
         there is no d unit, write 168h for 7 days)"
    );
}

#[test]
fn duplicate_names_are_rejected() {
    let two = "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: a}\nspec: {topicName: Orders}\n---\napiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: b}\nspec: {topicName: Orders}\n";
    assert_eq!(
        err(two),
        "topics.yaml: document 2 (Topic Orders): RocketMQ name \"Orders\" is already used by topics.yaml: document 1"
    );
    let same_object = "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: a}\nspec: {topicName: A1}\n---\napiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: a}\nspec: {topicName: A2}\n";
    assert!(err(same_object).contains("metadata.name \"a\" is already used by topics.yaml: document 1"));
    // A topic and a group may share a name.
    let mixed = "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: a}\nspec: {}\n---\napiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: a}\nspec: {subscriptions: [{topicRef: {name: a}}]}\n";
    assert!(load_manifests_from_str("m.yaml", mixed).is_ok());
}

#[test]
fn files_and_directories() {
    let dir = std::env::temp_dir().join(format!("weir-crds-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("b.yaml"), "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: b}\nspec: {}\n")
        .unwrap();
    std::fs::write(dir.join("a.yml"), "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: a}\nspec: {}\n")
        .unwrap();
    std::fs::write(dir.join("notes.txt"), "not yaml: [").unwrap();
    let m = load_manifests(&dir).unwrap();
    let names: Vec<_> = m.topics.iter().map(|t| t.effective_name().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    let single = load_manifests(&dir.join("b.yaml")).unwrap();
    assert_eq!(single.topics.len(), 1);

    std::fs::write(dir.join("c.yaml"), "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: a}\nspec: {}\n")
        .unwrap();
    let message = load_manifests(&dir).unwrap_err().to_string();
    assert!(message.contains("c.yaml: document 1 (Topic a): RocketMQ name \"a\" is already used by"), "{message}");
    assert!(message.contains("a.yml: document 1"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();

    let missing = load_manifests(Path::new("/nonexistent/weir.yaml")).unwrap_err();
    assert!(matches!(missing, LoadError::Io { .. }));
    assert!(missing.to_string().starts_with("/nonexistent/weir.yaml: cannot read:"), "{missing}");
}

#[test]
fn orderly_groups_need_fifo_topics() {
    let yaml = "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: plain}\nspec: {}\n---\napiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: g}\nspec: {ordering: Orderly, subscriptions: [{topicRef: {name: plain}}, {topicRef: {name: elsewhere}}]}\n";
    let m = load_manifests_from_str("m.yaml", yaml).unwrap();
    assert_eq!(
        m.check_references(),
        ["ConsumerGroup g: ordering Orderly needs FIFO topics, but Topic plain is Normal"]
    );
}
