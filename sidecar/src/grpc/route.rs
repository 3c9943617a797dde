//! Routes: which queues a topic has and where they live.
//!
//! Every partition of a topic becomes a `MessageQueue` with `id` = partition number, READ_WRITE
//! permission, on a broker with `id` 0 (the Python SDK keeps only broker id 0; the JS SDK only uses
//! queue id 0, so partition 0 must always be listed). The endpoint is the address this broker
//! advertises. In Kubernetes the queues of a topic are spread over the pods of its StatefulSet:
//! each pod is a broker (all with id 0, distinct names) at its stable DNS name, with READ_WRITE
//! queues for the partitions it owns and READ queues for those it still drains.

use std::net::IpAddr;

use weir_proto::rocketmq::v2 as pb;

use crate::broker::Broker;
use crate::catalog::{MessageType, Topic};
use crate::cluster::{ClusterView, Placement, TopicAccess};
use crate::error::BrokerError;
use crate::grpc::convert::{name, wire_topic_type};
use crate::grpc::status::ok;

/// Where clients reach this broker.
#[derive(Debug, Clone)]
pub struct Advertised {
    /// Host (IP address or DNS name).
    pub host: String,
    /// gRPC port.
    pub port: u16,
    /// Broker name in routes.
    pub broker_name: String,
}

impl Advertised {
    /// The endpoints message for this address.
    pub fn endpoints(&self) -> pb::Endpoints {
        let scheme = match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => pb::AddressScheme::IPv4,
            Ok(IpAddr::V6(_)) => pb::AddressScheme::IPv6,
            Err(_) => pb::AddressScheme::DomainName,
        };
        pb::Endpoints {
            scheme: scheme as i32,
            addresses: vec![pb::Address { host: self.host.clone(), port: i32::from(self.port) }],
        }
    }

    /// `host:port`, the store host reported on delivered messages.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn broker(&self) -> pb::Broker {
        pb::Broker { name: self.broker_name.clone(), id: 0, endpoints: Some(self.endpoints()) }
    }

    fn queue(&self, topic: &Topic, id: i32) -> pb::MessageQueue {
        let permission = wire_permission(topic.config.access);
        queue(&topic.config.name, id, permission, &self.broker(), &topic.config.accepts)
    }
}

/// The queue permission of a topic's access.
fn wire_permission(access: TopicAccess) -> pb::Permission {
    match access {
        TopicAccess::ReadWrite => pb::Permission::ReadWrite,
        TopicAccess::ReadOnly => pb::Permission::Read,
        TopicAccess::WriteOnly => pb::Permission::Write,
    }
}

/// A queue of `topic` on the broker `name` at `endpoints`.
fn queue(
    topic: &str,
    id: i32,
    permission: pb::Permission,
    broker: &pb::Broker,
    accepts: &[MessageType],
) -> pb::MessageQueue {
    pb::MessageQueue {
        topic: Some(pb::Resource { resource_namespace: String::new(), name: topic.to_owned() }),
        id,
        permission: permission as i32,
        broker: Some(broker.clone()),
        accept_message_types: accepts.iter().map(|t| wire_topic_type(*t) as i32).collect(),
    }
}

/// The broker entry of a pod.
fn pod_broker(view: &ClusterView, pod: &str) -> pb::Broker {
    let host = view.me().host_of(pod).unwrap_or_else(|| pod.to_owned());
    let endpoints = Advertised { host, port: weir_crds::naming::GRPC_PORT, broker_name: pod.to_owned() }.endpoints();
    pb::Broker { name: pod.to_owned(), id: 0, endpoints: Some(endpoints) }
}

/// Every queue of a placed topic, on the pods holding them.
fn placed_queues(view: &ClusterView, topic: &str, placement: &Placement) -> Vec<pb::MessageQueue> {
    let owned_permission = wire_permission(placement.permission);
    let mut queues = Vec::new();
    for holder in &placement.holders {
        let broker = pod_broker(view, &holder.pod);
        for &p in &holder.owned {
            queues.push(queue(topic, p as i32, owned_permission, &broker, &placement.accepts));
        }
        for &p in &holder.draining {
            queues.push(queue(topic, p as i32, pb::Permission::Read, &broker, &placement.accepts));
        }
    }
    queues
}

/// The placement of `topic` in the cluster, if it is a Topic of the namespace; an error if it is
/// one but no pod holds it yet.
fn placement(view: Option<&ClusterView>, topic: &str) -> Result<Option<Placement>, BrokerError> {
    let Some(placement) = view.and_then(|v| v.placement(topic)) else { return Ok(None) };
    if placement.holders.iter().all(|h| h.owned.is_empty() && h.draining.is_empty()) {
        return Err(BrokerError::Unavailable(format!(
            "topic {topic} has no partitions placed on broker pods yet (see the Topic's status)"
        )));
    }
    Ok(Some(placement))
}

/// Answers QueryRoute.
pub fn query_route(
    broker: &Broker,
    advertised: &Advertised,
    view: Option<&ClusterView>,
    req: &pb::QueryRouteRequest,
) -> Result<pb::QueryRouteResponse, BrokerError> {
    let name = name(&req.topic);
    let message_queues = match placement(view, name)? {
        Some(placement) => placed_queues(view.expect("placed"), name, &placement),
        // Standalone, or a broker-local topic such as a dead-letter queue.
        None => {
            let topic = broker.catalog().topic(name)?;
            (0..topic.partitions.len() as i32).map(|id| advertised.queue(&topic, id)).collect()
        }
    };
    Ok(pb::QueryRouteResponse { status: Some(ok()), message_queues })
}

/// Answers QueryAssignment: one assignment per broker, queue id -1 meaning "any queue of this
/// broker" (receives are not bound to a queue; the broker pops from all its partitions).
pub fn query_assignment(
    broker: &Broker,
    advertised: &Advertised,
    view: Option<&ClusterView>,
    req: &pb::QueryAssignmentRequest,
) -> Result<pb::QueryAssignmentResponse, BrokerError> {
    broker.catalog().group(name(&req.group))?;
    let topic_name = name(&req.topic);
    let assignments = match placement(view, topic_name)? {
        Some(placement) => {
            let view = view.expect("placed");
            let readable = placement.permission != TopicAccess::WriteOnly;
            placement
                .holders
                .iter()
                .filter(|h| readable && !(h.owned.is_empty() && h.draining.is_empty()))
                .map(|h| {
                    let broker = pod_broker(view, &h.pod);
                    let q = queue(topic_name, -1, pb::Permission::Read, &broker, &placement.accepts);
                    pb::Assignment { message_queue: Some(q) }
                })
                .collect()
        }
        None => {
            let topic = broker.catalog().topic(topic_name)?;
            vec![pb::Assignment { message_queue: Some(advertised.queue(&topic, -1)) }]
        }
    };
    Ok(pb::QueryAssignmentResponse { status: Some(ok()), assignments })
}
