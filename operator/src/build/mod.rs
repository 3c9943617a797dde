//! Pure builders of the Kubernetes objects behind a Topic:
//!
//! ```text
//!   Topic orders (ns shop)
//!    ├── StatefulSet  orders-broker      pods orders-broker-N, PVC data-orders-broker-N
//!    ├── Service      orders-broker      headless: stable pod DNS for the admin API and routes
//!    ├── PDB          orders-broker      maxUnavailable from spec.brokers.disruption
//!    ├── ServiceAccount + RoleBinding orders-broker  the pods' read-only access (see identity)
//!    └─ (shared) Service weir            every broker pod of the namespace; owned by no Topic
//! ```
//!
//! Every object but the shared client Service carries a controller owner reference to its Topic,
//! so Kubernetes garbage-collects it with the Topic; all carry the [`labels`] the operator and the
//! chart select on.

pub mod identity;
pub mod labels;
pub mod pdb;
pub mod service;
pub mod statefulset;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use weir_crds::Topic;

pub use identity::{build_role_binding, build_service_account};
pub use pdb::build_pdb;
pub use service::{build_client_service, build_headless_service};
pub use statefulset::{BrokerSetShape, build_stateful_set};

/// A Topic that lacks what its children need.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// name, namespace or uid is not set (objects read from the API always have them).
    #[error("Topic has no metadata.{0}")]
    MissingMetadata(&'static str),
}

/// Name, namespace and owner reference of a Topic, checked once.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicRef {
    /// metadata.name.
    pub name: String,
    /// metadata.namespace.
    pub namespace: String,
    /// Controller owner reference to the Topic.
    pub owner: OwnerReference,
}

impl TopicRef {
    /// Reads the Topic's identity.
    pub fn of(topic: &Topic) -> Result<Self, BuildError> {
        let name = topic.metadata.name.clone().ok_or(BuildError::MissingMetadata("name"))?;
        let namespace = topic.metadata.namespace.clone().ok_or(BuildError::MissingMetadata("namespace"))?;
        let owner = topic.controller_owner_ref(&()).ok_or(BuildError::MissingMetadata("uid"))?;
        Ok(Self { name, namespace, owner })
    }

    /// Metadata of a child named `name`, owned by the Topic, with the Topic's labels.
    fn child_meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels::topic_labels(&self.name)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Topics for the builder and plan tests.

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use weir_crds::{Topic, TopicSpec};

    /// A Topic as read from the API: `spec` applied, name, namespace, uid and generation set.
    pub fn topic(name: &str, spec: TopicSpec) -> Topic {
        let mut topic = Topic::new(name, spec);
        topic.metadata = ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("shop".to_owned()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        topic
    }

    /// A Topic from YAML of its spec.
    pub fn topic_yaml(name: &str, spec_yaml: &str) -> Topic {
        topic(name, serde_yaml::from_str(spec_yaml).expect("test spec parses"))
    }
}
