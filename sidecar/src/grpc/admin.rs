//! Weir's admin API (`weir.admin.v1.Admin`): topics, offsets, storage and consumer lag, for weirctl
//! and the operator. Besides reporting, it lets the operator reset a group's offsets and forget a
//! deleted group; it never touches messages.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use weir_proto::weir::admin::v1 as admin;
use weir_proto::weir::admin::v1::admin_server::Admin;

use crate::acl::Acl;
use crate::broker::{Broker, ResetTarget};
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

/// Interceptor of the admin API: with access control on, only signed requests of super users.
pub fn admin_access(acl: Option<&Acl>, req: Request<()>) -> Result<Request<()>, Status> {
    let Some(acl) = acl else { return Ok(req) };
    let user = acl.authenticate(req.metadata()).map_err(|e| Status::unauthenticated(e.to_string()))?;
    user.check_admin().map_err(|e| Status::permission_denied(e.to_string()))?;
    Ok(req)
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

    async fn list_dead_letters(
        &self,
        request: Request<admin::ListDeadLettersRequest>,
    ) -> Result<Response<admin::ListDeadLettersResponse>, Status> {
        let req = request.into_inner();
        let limit = if req.limit == 0 { 100 } else { req.limit.min(10_000) } as usize;
        let found = self.broker.dead_letters(&req.group, req.from_offset, limit).map_err(internal)?;
        let next_offset = found.last().map_or(req.from_offset, |(o, _)| o + 1);
        let messages = found
            .into_iter()
            .map(|(offset, m)| {
                let origin = m.dead_letter.unwrap_or_default();
                admin::DeadLetter {
                    offset,
                    message_id: m.message_id,
                    topic: origin.topic,
                    partition: origin.partition,
                    original_offset: origin.offset,
                    attempts: origin.attempts,
                    moved_at_ms: origin.moved_at_ms,
                    tag: m.tag,
                    keys: m.keys,
                    properties: m.user_properties,
                    body: m.body,
                }
            })
            .collect();
        Ok(Response::new(admin::ListDeadLettersResponse { messages, next_offset }))
    }

    async fn resend_dead_letters(
        &self,
        request: Request<admin::ResendDeadLettersRequest>,
    ) -> Result<Response<admin::ResendDeadLettersResponse>, Status> {
        let req = request.into_inner();
        if !req.all && req.offsets.is_empty() {
            return Err(Status::invalid_argument("name the dead-letter offsets to resend, or ask for all"));
        }
        let offsets = (!req.all).then_some(req.offsets);
        let (resent, failures) = self.broker.resend_dead_letters(&req.group, offsets).await.map_err(internal)?;
        Ok(Response::new(admin::ResendDeadLettersResponse { resent, failures }))
    }

    async fn get_partition_backlog(
        &self,
        request: Request<admin::GetPartitionBacklogRequest>,
    ) -> Result<Response<admin::GetPartitionBacklogResponse>, Status> {
        let req = request.into_inner();
        let partitions = self
            .broker
            .partition_backlog(&req.topic)
            .map_err(internal)?
            .into_iter()
            .map(|b| admin::PartitionBacklog { partition: b.partition, end_offset: b.end_offset, backlog: b.backlog })
            .collect();
        Ok(Response::new(admin::GetPartitionBacklogResponse { partitions }))
    }

    async fn reset_offset(
        &self,
        request: Request<admin::ResetOffsetRequest>,
    ) -> Result<Response<admin::ResetOffsetResponse>, Status> {
        use admin::reset_offset_request::Target;
        let req = request.into_inner();
        let target = match req.target {
            Some(Target::Earliest(_)) => ResetTarget::Earliest,
            Some(Target::Latest(_)) => ResetTarget::Latest,
            Some(Target::TimestampMs(ms)) if ms >= 0 => ResetTarget::Timestamp(ms as u64),
            Some(Target::Offset(o)) => ResetTarget::Offset(o),
            Some(Target::TimestampMs(ms)) => {
                return Err(Status::invalid_argument(format!("timestamp_ms {ms} is before the epoch")));
            }
            None => {
                return Err(Status::invalid_argument(
                    "say where to reset to: earliest, latest, timestamp_ms or offset",
                ));
            }
        };
        let partitions = self.broker.reset_offset(&req.group, &req.topic, target).await.map_err(internal)?;
        Ok(Response::new(admin::ResetOffsetResponse { partitions }))
    }

    async fn delete_group(
        &self,
        request: Request<admin::DeleteGroupRequest>,
    ) -> Result<Response<admin::DeleteGroupResponse>, Status> {
        let req = request.into_inner();
        let existed = self.broker.delete_group(&req.group).await.map_err(internal)?;
        Ok(Response::new(admin::DeleteGroupResponse { existed }))
    }
}

fn internal(e: crate::error::BrokerError) -> Status {
    match e {
        crate::error::BrokerError::BadRequest(m) => Status::invalid_argument(m),
        e @ (crate::error::BrokerError::TopicNotFound(_) | crate::error::BrokerError::GroupNotFound(_)) => {
            Status::not_found(e.to_string())
        }
        other => Status::internal(other.to_string()),
    }
}
