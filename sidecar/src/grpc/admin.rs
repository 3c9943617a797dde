//! Weir's admin API (`weir.admin.v1.Admin`): topics, offsets, storage and consumer lag, for weirctl
//! and the operator. It reports; it never changes data.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use weir_proto::weir::admin::v1 as admin;
use weir_proto::weir::admin::v1::admin_server::Admin;

use crate::broker::Broker;
use crate::catalog::Topic;
use crate::storage::Durability;

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    broker: Arc<Broker>,
}

impl AdminService {
    /// Serves `broker`.
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }
}

fn topic_info(t: &Topic) -> admin::Topic {
    admin::Topic {
        name: t.config.name.clone(),
        message_types: t.config.accepts.iter().map(|m| m.label().to_owned()).collect(),
        durability: match t.config.durability {
            Durability::Sync => "Sync".into(),
            Durability::Async => "Async".into(),
        },
        partitions: t
            .partitions
            .iter()
            .map(|p| admin::Partition { id: p.id(), start_offset: p.start_offset(), end_offset: p.end_offset() })
            .collect(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_topics(
        &self,
        _: Request<admin::ListTopicsRequest>,
    ) -> Result<Response<admin::ListTopicsResponse>, Status> {
        let topics = self.broker.catalog().topics().iter().map(|t| topic_info(t)).collect();
        Ok(Response::new(admin::ListTopicsResponse { topics }))
    }

    async fn get_stats(
        &self,
        request: Request<admin::GetStatsRequest>,
    ) -> Result<Response<admin::GetStatsResponse>, Status> {
        let req = request.into_inner();
        if !req.topic.is_empty() && self.broker.catalog().existing_topic(&req.topic).is_none() {
            return Err(Status::not_found(format!("topic {:?} does not exist on this broker", req.topic)));
        }
        let wanted = |name: &str, filter: &str| filter.is_empty() || name == filter;
        let topics = self
            .broker
            .catalog()
            .topics()
            .iter()
            .filter(|t| wanted(&t.config.name, &req.topic))
            .map(|t| topic_info(t))
            .collect();
        let groups = self
            .broker
            .group_stats()
            .into_iter()
            .filter(|g| wanted(&g.topic, &req.topic) && wanted(&g.group, &req.group))
            .map(|g| admin::GroupStats {
                members: self.broker.clients().members(&g.group) as u32,
                group: g.group,
                topic: g.topic,
                lag: g.lag,
                inflight: g.inflight,
            })
            .collect();
        let store = self.broker.store();
        let (log_start, log_end) = store.log_range();
        let storage = Some(admin::Storage { log_bytes: store.log_bytes(), log_start, log_end });
        Ok(Response::new(admin::GetStatsResponse { topics, groups, storage }))
    }
}
