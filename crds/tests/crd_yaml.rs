//! The committed CRD YAML must equal what the code generates.

mod support;

use weir_crds::generate::{REGENERATE_COMMAND, generated_files};

#[test]
fn committed_crd_yaml_is_up_to_date() {
    let mut stale = Vec::new();
    for (name, expected) in generated_files() {
        let path = support::crate_dir().join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != expected {
            stale.push(path.display().to_string());
        }
    }
    assert!(stale.is_empty(), "stale CRD YAML: {}; run `{REGENERATE_COMMAND}` and commit the result", stale.join(", "));
}

#[test]
fn crd_names_and_columns() {
    use kube::CustomResourceExt;
    use weir_crds::{ConsumerGroup, Topic};

    let topic = Topic::crd();
    assert_eq!(topic.metadata.name.as_deref(), Some("topics.weir.dev"));
    assert_eq!(topic.spec.scope, "Namespaced");
    assert_eq!(topic.spec.names.short_names, Some(vec!["wt".to_owned()]));
    assert_eq!(topic.spec.names.categories, Some(vec!["weir".to_owned()]));
    let columns: Vec<_> = topic.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.priority.unwrap_or(0)))
        .collect();
    assert_eq!(
        columns,
        [
            ("Type", 0),
            ("Partitions", 0),
            ("Serving", 0),
            ("Pods", 0),
            ("Reassign", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Message", 1),
            ("Age", 0)
        ]
    );
    assert!(topic.spec.versions[0].subresources.as_ref().unwrap().status.is_some());

    let group = ConsumerGroup::crd();
    assert_eq!(group.metadata.name.as_deref(), Some("consumergroups.weir.dev"));
    assert_eq!(group.spec.names.short_names, Some(vec!["wcg".to_owned()]));
    assert_eq!(group.spec.names.categories, Some(vec!["weir".to_owned()]));
    let columns: Vec<_> = group.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.priority.unwrap_or(0)))
        .collect();
    assert_eq!(
        columns,
        [
            ("Topic", 0),
            ("Mode", 0),
            ("Order", 1),
            ("Consumers", 0),
            ("Lag", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Age", 0)
        ]
    );
}

#[test]
fn every_spec_field_is_documented() {
    // `kubectl explain` shows these descriptions; a field without one is a documentation bug.
    fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                let child = format!("{path}.{name}");
                if prop.get("description").is_none() {
                    missing.push(child.clone());
                }
                walk(prop, &child, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&support::open_api_schema::<weir_crds::Topic>(), "topic", &mut missing);
    walk(&support::open_api_schema::<weir_crds::ConsumerGroup>(), "consumergroup", &mut missing);
    assert!(missing.is_empty(), "fields without description: {missing:#?}");
}
