//! The broker pods' identity: a ServiceAccount per Topic and a RoleBinding that grants it the
//! read-only broker ClusterRole in the Topic's namespace (brokers watch the Topics and
//! ConsumerGroups of their namespace). The operator creates both, so a Topic works in any
//! namespace without the user preparing accounts; they go with the Topic (owner reference).
//!
//! The operator may only bind the one ClusterRole named by `--broker-cluster-role` (RBAC `bind`
//! with `resourceNames`), so it cannot hand out more than brokers need.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use weir_crds::naming;

use super::TopicRef;

/// The ServiceAccount of the Topic's broker pods, named like the StatefulSet.
pub fn build_service_account(topic_ref: &TopicRef) -> ServiceAccount {
    ServiceAccount {
        metadata: topic_ref.child_meta(naming::broker_set(&topic_ref.name)),
        // The brokers talk to the API server (watch), so they need the token.
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    }
}

/// Binds `cluster_role` to the Topic's ServiceAccount, in the Topic's namespace only.
pub fn build_role_binding(topic_ref: &TopicRef, cluster_role: &str) -> RoleBinding {
    let name = naming::broker_set(&topic_ref.name);
    RoleBinding {
        metadata: topic_ref.child_meta(name.clone()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "ClusterRole".to_owned(),
            name: cluster_role.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name,
            namespace: Some(topic_ref.namespace.clone()),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn the_binding_grants_the_broker_role_to_the_topics_account_only() {
        let topic = fixtures::topic_yaml("orders", "{partitions: 4}");
        let topic_ref = TopicRef::of(&topic).unwrap();
        let account = build_service_account(&topic_ref);
        let binding = build_role_binding(&topic_ref, "weir-broker");
        assert_eq!(account.metadata.name.as_deref(), Some("orders-broker"));
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(binding.role_ref.name, "weir-broker");
        let subjects = binding.subjects.unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].name, "orders-broker");
        assert_eq!(subjects[0].namespace.as_deref(), Some("shop"));
        for meta in [&account.metadata, &binding.metadata] {
            assert_eq!(meta.namespace.as_deref(), Some("shop"));
            assert_eq!(meta.owner_references.as_ref().unwrap()[0].name, "orders");
        }
    }
}
