//! Label sets. The selector of a Topic's StatefulSet is immutable, so it is the smallest set that
//! identifies the Topic's pods; the client Service selects every broker pod of the namespace.

use std::collections::BTreeMap;

use weir_crds::naming::labels::{COMPONENT, INSTANCE, MANAGED_BY, NAME, TOPIC};

/// `app.kubernetes.io/name` of everything Weir runs.
pub const APP_NAME: &str = "weir";
/// `app.kubernetes.io/component` of broker pods and their per-Topic objects.
pub const COMPONENT_BROKER: &str = "broker";
/// `app.kubernetes.io/component` of the shared client Service.
pub const COMPONENT_CLIENT: &str = "client";

fn map<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Selector of a Topic's pods (StatefulSet, headless Service, PodDisruptionBudget).
pub fn selector_labels(topic: &str) -> BTreeMap<String, String> {
    map([(NAME, APP_NAME), (COMPONENT, COMPONENT_BROKER), (TOPIC, topic)])
}

/// Labels of everything that belongs to a Topic (including its pods and PVCs).
pub fn topic_labels(topic: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(topic);
    labels.extend(map([(INSTANCE, topic), (MANAGED_BY, crate::FIELD_MANAGER)]));
    labels
}

/// Selector of the client Service: every broker pod of the namespace.
pub fn all_brokers_selector() -> BTreeMap<String, String> {
    map([(NAME, APP_NAME), (COMPONENT, COMPONENT_BROKER)])
}

/// Labels of the client Service.
pub fn client_service_labels() -> BTreeMap<String, String> {
    map([(NAME, APP_NAME), (COMPONENT, COMPONENT_CLIENT), (MANAGED_BY, crate::FIELD_MANAGER)])
}

/// Label selector string of a Topic's PVCs and pods, for list calls.
pub fn topic_selector_string(topic: &str) -> String {
    format!("{TOPIC}={topic},{NAME}={APP_NAME}")
}

/// Label selector string of every object the operator manages (watch filter of owned objects).
pub fn managed_selector_string() -> String {
    format!("{MANAGED_BY}={}", crate::FIELD_MANAGER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_selector_matches_every_topic_pod() {
        let pod = topic_labels("orders");
        assert!(all_brokers_selector().iter().all(|(k, v)| pod.get(k) == Some(v)));
        assert!(selector_labels("orders").iter().all(|(k, v)| pod.get(k) == Some(v)));
    }
}
