//! The per-Topic headless Service and the namespace-wide client Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_crds::naming;

use super::{TopicRef, labels};

fn port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The headless Service named like the StatefulSet: gives each pod a stable DNS name
/// (`<pod>.<set>.<ns>.svc`) before it is ready, because peers and the operator must reach a
/// starting broker (forwarding, drain checks).
pub fn build_headless_service(topic: &TopicRef) -> Service {
    Service {
        metadata: topic.child_meta(naming::broker_set(&topic.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(labels::selector_labels(&topic.name)),
            ports: Some(vec![port("grpc", naming::GRPC_PORT), port("metrics", naming::METRICS_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The client Service `weir` of a namespace: one address for every broker pod. Any pod answers
/// routes for any topic and forwards misdirected requests, so spreading clients over all of them
/// is right. It belongs to no Topic (it outlives each of them); it is labelled managed-by.
pub fn build_client_service(namespace: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(naming::CLIENT_SERVICE.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels::client_service_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels::all_brokers_selector()),
            ports: Some(vec![port("grpc", naming::GRPC_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
