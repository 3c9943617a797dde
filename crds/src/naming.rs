//! Names and ports the operator and the brokers agree on: a Topic `orders` in namespace `shop`
//! becomes the StatefulSet and headless Service `orders-broker`, pods `orders-broker-0..N`, each
//! reachable at `orders-broker-0.orders-broker.shop.svc.cluster.local:8081`. One Service named
//! [`CLIENT_SERVICE`] per namespace selects every broker pod; clients use it as their endpoint.

/// Port of the RocketMQ 5 gRPC service in every broker pod.
pub const GRPC_PORT: u16 = 8081;
/// Port of `/metrics`, `/healthz` and `/readyz` in every broker pod.
pub const METRICS_PORT: u16 = 9090;
/// Name of the namespace-wide client Service (every broker pod behind one address).
pub const CLIENT_SERVICE: &str = "weir";
/// Where the broker's volume is mounted in its pod.
pub const DATA_MOUNT_PATH: &str = "/var/lib/weir";
/// Name of the volume claim template (PVCs are `data-<pod>`).
pub const DATA_VOLUME: &str = "data";
/// Where a broker pod's TLS Secret is mounted (`tls.crt`, `tls.key`, `ca.crt`).
pub const TLS_MOUNT_PATH: &str = "/var/run/weir/tls";
/// Name of the TLS volume in a broker pod.
pub const TLS_VOLUME: &str = "tls";
/// Where a broker pod's access-control Secret is mounted.
pub const ACL_MOUNT_PATH: &str = "/var/run/weir/acl";
/// Name of the access-control volume in a broker pod.
pub const ACL_VOLUME: &str = "acl";
/// The key of the access-control Secret holding the broker's `--acl-file` (users and policies).
pub const ACL_FILE_KEY: &str = "acl.yaml";
/// A name every broker certificate carries besides its DNS names, so that Prometheus, which
/// scrapes pods by IP, can check the certificate (`serverName` in the PodMonitor).
pub const BROKER_TLS_SERVER_NAME: &str = "weir-broker";
/// Default Kubernetes cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Label keys on everything the operator creates.
pub mod labels {
    /// `weir` on every object.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// `broker` on broker pods and their Services.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// The Topic's metadata.name.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// `weir-operator`.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The Topic's metadata.name on broker pods (selector of its StatefulSet and headless Service).
    pub const TOPIC: &str = "weir.dev/topic";
}

/// Suffix of a topic's StatefulSet and headless Service.
const BROKER_SUFFIX: &str = "-broker";
/// Longest StatefulSet name whose pods still get a valid `controller-revision-hash` label
/// (63 characters, minus the hash suffix Kubernetes adds).
pub const MAX_BROKER_SET_NAME: usize = 52;

/// The StatefulSet (and headless Service) of the Topic object `topic`.
pub fn broker_set(topic: &str) -> String {
    format!("{topic}{BROKER_SUFFIX}")
}

/// The Topic object a StatefulSet name belongs to, if it is one of ours.
pub fn topic_of_broker_set(set: &str) -> Option<&str> {
    set.strip_suffix(BROKER_SUFFIX).filter(|t| !t.is_empty())
}

/// The Secret holding the TLS certificate of the Topic object `topic`'s pods, when the brokers
/// serve TLS. Its certificate must name `*.<topic>-broker.<namespace>.svc.<domain>` (the pods),
/// `weir.<namespace>.svc.<domain>` (the client Service) and [`BROKER_TLS_SERVER_NAME`].
pub fn tls_secret_name(topic: &str) -> String {
    format!("{}-tls", broker_set(topic))
}

/// Pod `ordinal` of the Topic object `topic`.
pub fn pod_name(topic: &str, ordinal: u32) -> String {
    format!("{}-{ordinal}", broker_set(topic))
}

/// Splits a StatefulSet pod name into its set and ordinal (`orders-broker-2` -> (`orders-broker`, 2)).
pub fn split_pod_name(pod: &str) -> Option<(&str, u32)> {
    let (set, ordinal) = pod.rsplit_once('-')?;
    if set.is_empty() || ordinal.is_empty() || (ordinal.len() > 1 && ordinal.starts_with('0')) {
        return None;
    }
    Some((set, ordinal.parse().ok()?))
}

/// Stable DNS name of a StatefulSet pod behind its headless Service (named like the set).
pub fn pod_host(pod: &str, namespace: &str, cluster_domain: &str) -> Option<String> {
    let (set, _) = split_pod_name(pod)?;
    Some(format!("{pod}.{set}.{namespace}.svc.{cluster_domain}"))
}

/// DNS name of the namespace's client Service.
pub fn client_service_host(namespace: &str, cluster_domain: &str) -> String {
    format!("{CLIENT_SERVICE}.{namespace}.svc.{cluster_domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(broker_set("orders"), "orders-broker");
        assert_eq!(topic_of_broker_set("orders-broker"), Some("orders"));
        assert_eq!(topic_of_broker_set("-broker"), None);
        assert_eq!(pod_name("orders", 2), "orders-broker-2");
        assert_eq!(split_pod_name("orders-broker-12"), Some(("orders-broker", 12)));
        assert_eq!(split_pod_name("orders-broker-02"), None);
        assert_eq!(split_pod_name("orders"), None);
        assert_eq!(
            pod_host("orders-broker-1", "shop", DEFAULT_CLUSTER_DOMAIN).as_deref(),
            Some("orders-broker-1.orders-broker.shop.svc.cluster.local")
        );
        assert_eq!(client_service_host("shop", "cluster.local"), "weir.shop.svc.cluster.local");
    }
}
