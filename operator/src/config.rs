//! Settings the operator applies to every Topic, from its command line.

use weir_crds::naming::DEFAULT_CLUSTER_DOMAIN;

/// Default broker image repository (`--broker-image-repository`).
pub const DEFAULT_BROKER_IMAGE_REPOSITORY: &str = "ghcr.io/weir-mq/weir-sidecar";
/// Default ClusterRole bound to each Topic's broker ServiceAccount (`--broker-cluster-role`).
pub const DEFAULT_BROKER_CLUSTER_ROLE: &str = "weir-broker";

/// What the builders need to know beyond the Topic itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorConfig {
    /// Kubernetes cluster domain (pod DNS names and the client endpoint).
    pub cluster_domain: String,
    /// Broker image repository when `spec.brokers.image.repository` is unset.
    pub broker_image_repository: String,
    /// Broker image tag when `spec.brokers.image.tag` is unset.
    pub broker_image_tag: String,
    /// ClusterRole granted to the broker pods in their namespace (read-only access to Topics
    /// and ConsumerGroups, [`crate::rbac::BROKER_RULES`]).
    pub broker_cluster_role: String,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            broker_image_repository: DEFAULT_BROKER_IMAGE_REPOSITORY.to_owned(),
            broker_image_tag: crate::VERSION.to_owned(),
            broker_cluster_role: DEFAULT_BROKER_CLUSTER_ROLE.to_owned(),
        }
    }
}
