//! Routes: which queues a topic has and where they live.
//!
//! Every partition of a topic becomes a `MessageQueue` with `id` = partition number, READ_WRITE
//! permission, on a broker with `id` 0 (the Python SDK keeps only broker id 0; the JS SDK only uses
//! queue id 0, so partition 0 must always be listed). The endpoint is the address this broker
//! advertises.

use std::net::IpAddr;

use weir_proto::rocketmq::v2 as pb;

use crate::broker::Broker;
use crate::catalog::Topic;
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
        pb::MessageQueue {
            topic: Some(pb::Resource { resource_namespace: String::new(), name: topic.config.name.clone() }),
            id,
            permission: pb::Permission::ReadWrite as i32,
            broker: Some(self.broker()),
            accept_message_types: topic.config.accepts.iter().map(|t| wire_topic_type(*t) as i32).collect(),
        }
    }
}

/// Answers QueryRoute.
pub fn query_route(
    broker: &Broker,
    advertised: &Advertised,
    req: &pb::QueryRouteRequest,
) -> Result<pb::QueryRouteResponse, BrokerError> {
    let topic = broker.catalog().topic(name(&req.topic))?;
    let message_queues = (0..topic.partitions.len() as i32).map(|id| advertised.queue(&topic, id)).collect();
    Ok(pb::QueryRouteResponse { status: Some(ok()), message_queues })
}

/// Answers QueryAssignment: one assignment per broker, queue id -1 meaning "any queue of this
/// broker" (receives are not bound to a queue; the broker pops from all its partitions).
pub fn query_assignment(
    broker: &Broker,
    advertised: &Advertised,
    req: &pb::QueryAssignmentRequest,
) -> Result<pb::QueryAssignmentResponse, BrokerError> {
    let topic = broker.catalog().topic(name(&req.topic))?;
    broker.catalog().group(name(&req.group))?;
    let assignments = vec![pb::Assignment { message_queue: Some(advertised.queue(&topic, -1)) }];
    Ok(pb::QueryAssignmentResponse { status: Some(ok()), assignments })
}
