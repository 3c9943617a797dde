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
    /// TLS of the broker pods; None: plaintext (chosen explicitly, `--plaintext`).
    pub broker_tls: Option<BrokerTls>,
    /// Access control of the broker pods: the Secret (in each Topic's namespace) whose
    /// [`weir_crds::naming::ACL_FILE_KEY`] is their `--acl-file`. None: no access control.
    pub broker_acl_secret: Option<String>,
}

/// How the broker pods serve TLS. Every Topic's pods mount the Secret
/// [`weir_crds::naming::tls_secret_name`] (`<topic>-broker-tls`, cert-manager layout: `tls.crt`,
/// `tls.key`, `ca.crt`) from the Topic's namespace; the operator never reads it. All brokers of an
/// operator share the choice because one client Service spans every Topic of a namespace and
/// brokers forward to each other across Topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokerTls {
    /// Clients (and peers, and the operator) must present a certificate signed by `ca.crt`.
    pub client_auth: bool,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            broker_image_repository: DEFAULT_BROKER_IMAGE_REPOSITORY.to_owned(),
            broker_image_tag: crate::VERSION.to_owned(),
            broker_cluster_role: DEFAULT_BROKER_CLUSTER_ROLE.to_owned(),
            broker_tls: None,
            broker_acl_secret: None,
        }
    }
}
