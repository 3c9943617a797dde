//! The RocketMQ 5 `MessagingService` over gRPC.
//!
//! Handlers read the caller from the headers ([`context`]), translate the request ([`convert`]), call
//! the [`Broker`], and answer in band with a RocketMQ status ([`status`]). Malformed requests get a
//! RocketMQ code, never a gRPC error, so every official SDK can report them; the process stays up.

pub mod access;
pub mod admin;
pub mod context;
pub mod convert;
pub mod delivery;
pub mod forward;
#[cfg(test)]
mod raw_service;
pub mod route;
mod rpc_latency;
mod send;
pub mod serving;
pub mod session;
pub mod socket;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use tonic::{Request, Response, Status as GrpcStatus, Streaming};
use weir_proto::rocketmq::v2 as pb;
use weir_proto::rocketmq::v2::messaging_service_server::MessagingService;
use weir_proto::rocketmq::v2::receive_message_response::Content;

use crate::acl::Acl;
use crate::broker::{Broker, ReceiveRequest, Resolution};
use crate::cluster::ClusterView;
use crate::consume::filter::{Filter, FilterKind};
use crate::error::BrokerError;
use access::Guarded;
use context::Caller;
use convert::name;
use delivery::DeliveryEncoder;
use forward::Peers;
use route::Advertised;
use rpc_latency::{Rpc, RpcLatency};
use status::{batch_status, error_status, ok};

/// Time kept back from the client's deadline so a long poll answers before the client gives up.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1000);

/// The service.
#[derive(Debug, Clone)]
pub struct Messaging {
    broker: Arc<Broker>,
    advertised: Arc<Advertised>,
    peers: Arc<Peers>,
    /// Kubernetes mode: the rest of the cluster.
    cluster: Option<Arc<ClusterView>>,
    /// Access control; None lets every caller do everything.
    acl: Option<Arc<Acl>>,
    rpc_latency: RpcLatency,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send>>;

impl Messaging {
    /// A service answering for `broker`, advertising `advertised` in routes; in Kubernetes,
    /// `cluster` is the view of the other pods.
    pub fn new(broker: Arc<Broker>, advertised: Advertised, peers: Peers, cluster: Option<Arc<ClusterView>>) -> Self {
        let rpc_latency = RpcLatency::new(&broker.metrics().rpc_latency);
        Self { broker, advertised: Arc::new(advertised), peers: Arc::new(peers), cluster, acl: None, rpc_latency }
    }

    /// Checks every request against `acl`.
    pub fn with_acl(mut self, acl: Option<Arc<Acl>>) -> Self {
        self.acl = acl;
        self
    }

    /// The caller of a request: from its headers, and, with access control on, authenticated
    /// and allowed to do what the request asks.
    fn caller<T: Guarded>(&self, req: &Request<T>) -> (String, Result<Caller, BrokerError>) {
        let (language, caller) = Caller::from_metadata(req.metadata());
        let Some(acl) = &self.acl else { return (language, caller) };
        let checked = caller.and_then(|mut caller| {
            let user = acl.authenticate(req.metadata())?;
            req.get_ref().need().check(&user)?;
            caller.user = Some(user);
            Ok(caller)
        });
        (language, checked)
    }

    /// Whether broker `owner` of `topic` is this broker (in Kubernetes, ordinals repeat across
    /// the StatefulSets of different topics).
    fn is_me(&self, topic: &str, owner: u32) -> bool {
        let same_set = match &self.cluster {
            Some(view) => view.placement(topic).is_none_or(|p| p.object == view.me().topic_object),
            None => true,
        };
        same_set && owner == self.broker.config().broker_id
    }

    async fn receive(
        &self,
        caller: &Caller,
        req: pb::ReceiveMessageRequest,
    ) -> Result<Vec<pb::EncodedMessage>, BrokerError> {
        let topic = req
            .message_queue
            .as_ref()
            .map(|q| name(&q.topic))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| BrokerError::BadRequest("message_queue.topic is required".into()))?;
        let filter = match &req.filter_expression {
            Some(f) => {
                let kind = match pb::FilterType::try_from(f.r#type) {
                    Ok(pb::FilterType::Sql) => FilterKind::Sql,
                    _ => FilterKind::Tag,
                };
                Filter::parse(kind, &f.expression)?
            }
            None => Filter::All,
        };
        let max_poll = self.broker.config().max_long_poll;
        let mut poll = req.long_polling_timeout.as_ref().and_then(convert::duration).unwrap_or(max_poll).min(max_poll);
        let now = Instant::now();
        if let Some(deadline) = caller.deadline {
            let remaining = deadline.saturating_duration_since(now);
            if remaining <= DEADLINE_MARGIN && !poll.is_zero() {
                return Err(BrokerError::IllegalPollingTime(format!(
                    "the request deadline leaves {} ms, too little for long polling",
                    remaining.as_millis()
                )));
            }
            poll = poll.min(remaining.saturating_sub(DEADLINE_MARGIN));
        }
        let invisible = match &req.invisible_duration {
            Some(d) => Some(
                convert::duration(d)
                    .ok_or_else(|| BrokerError::IllegalInvisibleTime("invisible_duration is negative".into()))?,
            ),
            None => None,
        };
        let request = ReceiveRequest {
            group: name(&req.group).to_owned(),
            topic: topic.to_owned(),
            client: Arc::from(caller.client_id.as_str()),
            filter,
            batch: usize::try_from(req.batch_size).unwrap_or(0),
            invisible,
            auto_renew: req.auto_renew,
            poll_until: now + poll,
        };
        let deliveries = self.broker.receive(&request).await?;
        let host = self.advertised.host_port();
        let mut encoder = DeliveryEncoder::new(&host, deliveries.len());
        Ok(deliveries.into_iter().map(|d| encoder.encode(d)).collect())
    }
}

fn unsupported(what: &str, language: &str) -> pb::Status {
    error_status(&BrokerError::Unsupported(format!("{what} is not offered by this broker")), language)
}

#[tonic::async_trait]
impl MessagingService for Messaging {
    async fn query_route(
        &self,
        request: Request<pb::QueryRouteRequest>,
    ) -> Result<Response<pb::QueryRouteResponse>, GrpcStatus> {
        let started = Instant::now();
        let (language, caller) = self.caller(&request);
        let req = request.into_inner();
        let response = caller
            .and_then(|_| route::query_route(&self.broker, &self.advertised, self.cluster.as_deref(), &req))
            .unwrap_or_else(|e| pb::QueryRouteResponse {
                status: Some(error_status(&e, &language)),
                message_queues: vec![],
            });
        self.rpc_latency.observe(Rpc::QueryRoute, response.status.as_ref().map_or(0, |s| s.code), started);
        Ok(Response::new(response))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, GrpcStatus> {
        let (language, caller) = self.caller(&request);
        let response = match caller {
            Ok(c) => session::heartbeat(&self.broker, &c, request.get_ref()),
            Err(e) => pb::HeartbeatResponse { status: Some(error_status(&e, &language)) },
        };
        Ok(Response::new(response))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, GrpcStatus> {
        let started = Instant::now();
        let (language, caller) = self.caller(&request);
        let req = request.into_inner();
        let refused =
            |e: BrokerError| pb::SendMessageResponse { status: Some(error_status(&e, &language)), entries: vec![] };
        let response = match caller {
            Err(e) => refused(e),
            Ok(_) if req.messages.is_empty() => {
                refused(BrokerError::BadRequest("SendMessage carries no messages".into()))
            }
            Ok(c) => {
                let entries = self.send(&c, req.messages).await;
                let status = batch_status(entries.iter().filter_map(|e| e.status.as_ref()));
                pb::SendMessageResponse { status: Some(status), entries }
            }
        };
        self.rpc_latency.observe(Rpc::SendMessage, response.status.as_ref().map_or(0, |s| s.code), started);
        Ok(Response::new(response))
    }

    async fn query_assignment(
        &self,
        request: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, GrpcStatus> {
        let (language, caller) = self.caller(&request);
        let response = caller
            .and_then(|_| {
                route::query_assignment(&self.broker, &self.advertised, self.cluster.as_deref(), request.get_ref())
            })
            .unwrap_or_else(|e| pb::QueryAssignmentResponse {
                status: Some(error_status(&e, &language)),
                assignments: vec![],
            });
        Ok(Response::new(response))
    }

    type ReceiveMessageStream = ResponseStream<pb::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, GrpcStatus> {
        let started = Instant::now();
        let (language, caller) = self.caller(&request);
        let req = request.into_inner();
        let result = match caller {
            Ok(c) => self.receive(&c, req).await,
            Err(e) => Err(e),
        };
        // Stream shape the clients accept: status first, then messages, then the server time.
        let (code, responses) = match result {
            Ok(messages) if messages.is_empty() => {
                let s = status::status(pb::Code::MessageNotFound, "no new message");
                (s.code, vec![Content::Status(s), Content::DeliveryTimestamp(convert::now())])
            }
            Ok(messages) => {
                let mut v = Vec::with_capacity(messages.len() + 2);
                v.push(Content::Status(ok()));
                v.extend(messages.into_iter().map(Content::Encoded));
                v.push(Content::DeliveryTimestamp(convert::now()));
                (pb::Code::Ok as i32, v)
            }
            Err(e) => {
                let s = error_status(&e, &language);
                (s.code, vec![Content::Status(s)])
            }
        };
        self.rpc_latency.observe(Rpc::ReceiveMessage, code, started);
        let stream =
            futures::stream::iter(responses.into_iter().map(|c| Ok(pb::ReceiveMessageResponse { content: Some(c) })));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ack_message(
        &self,
        request: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, GrpcStatus> {
        let started = Instant::now();
        let (language, caller) = self.caller(&request);
        let req = request.into_inner();
        let handles: Vec<&str> = req.entries.iter().map(|e| e.receipt_handle.as_str()).collect();
        let result = match caller {
            Ok(_) if req.entries.is_empty() => Err(BrokerError::BadRequest("AckMessage carries no entries".into())),
            Ok(c) => self.broker.ack(name(&req.group), &c.client_id, name(&req.topic), &handles).await,
            Err(e) => Err(e),
        };
        let response = match result {
            Ok(results) => {
                let entries: Vec<pb::AckMessageResultEntry> = req
                    .entries
                    .into_iter()
                    .zip(results)
                    .map(|(entry, r)| pb::AckMessageResultEntry {
                        message_id: entry.message_id,
                        receipt_handle: entry.receipt_handle,
                        status: Some(r.map_or_else(|e| error_status(&e, &language), |()| ok())),
                    })
                    .collect();
                let status = batch_status(entries.iter().filter_map(|e| e.status.as_ref()));
                pb::AckMessageResponse { status: Some(status), entries }
            }
            Err(e) => pb::AckMessageResponse { status: Some(error_status(&e, &language)), entries: vec![] },
        };
        self.rpc_latency.observe(Rpc::AckMessage, response.status.as_ref().map_or(0, |s| s.code), started);
        Ok(Response::new(response))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, GrpcStatus> {
        let (language, caller) = self.caller(&request);
        let req = request.into_inner();
        let result = match caller {
            Ok(c) => {
                self.broker
                    .forward_to_dead_letter(name(&req.group), &c.client_id, name(&req.topic), &req.receipt_handle)
                    .await
            }
            Err(e) => Err(e),
        };
        let status = result.map_or_else(|e| error_status(&e, &language), |()| ok());
        Ok(Response::new(pb::ForwardMessageToDeadLetterQueueResponse { status: Some(status) }))
    }

    type PullMessageStream = ResponseStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        request: Request<pb::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, GrpcStatus> {
        let (language, _) = self.caller(&request);
        let content = pb::pull_message_response::Content::Status(unsupported("PullMessage", &language));
        let stream = futures::stream::iter([Ok(pb::PullMessageResponse { content: Some(content) })]);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn update_offset(
        &self,
        request: Request<pb::UpdateOffsetRequest>,
    ) -> Result<Response<pb::UpdateOffsetResponse>, GrpcStatus> {
        let (language, _) = self.caller(&request);
        Ok(Response::new(pb::UpdateOffsetResponse { status: Some(unsupported("UpdateOffset", &language)) }))
    }

    async fn get_offset(
        &self,
        request: Request<pb::GetOffsetRequest>,
    ) -> Result<Response<pb::GetOffsetResponse>, GrpcStatus> {
        let (language, _) = self.caller(&request);
        Ok(Response::new(pb::GetOffsetResponse { status: Some(unsupported("GetOffset", &language)), offset: 0 }))
    }

    async fn query_offset(
        &self,
        request: Request<pb::QueryOffsetRequest>,
    ) -> Result<Response<pb::QueryOffsetResponse>, GrpcStatus> {
        let (language, _) = self.caller(&request);
        Ok(Response::new(pb::QueryOffsetResponse { status: Some(unsupported("QueryOffset", &language)), offset: 0 }))
    }

    async fn end_transaction(
        &self,
        request: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, GrpcStatus> {
        let (language, caller) = self.caller(&request);
        let req = request.into_inner();
        let resolution = match pb::TransactionResolution::try_from(req.resolution) {
            Ok(pb::TransactionResolution::Commit) => Resolution::Commit,
            Ok(pb::TransactionResolution::Rollback) => Resolution::Rollback,
            _ => Resolution::Unknown,
        };
        let topic = name(&req.topic).to_owned();
        let owner = forward::transaction_owner(&req.transaction_id).filter(|o| !self.is_me(&topic, *o));
        let status = match (caller, owner) {
            // Another broker holds the half message: pass the request on (once).
            (Ok(c), Some(owner)) if !c.forwarded => {
                let forwarded = match self.peers.broker_address(&topic, owner) {
                    Ok(address) => self.peers.end_transaction(&address, &c, req).await,
                    Err(e) => Err(e),
                };
                forwarded.unwrap_or_else(|e| error_status(&e, &language))
            }
            (Ok(_), _) => self
                .broker
                .end_transaction(&topic, &req.message_id, &req.transaction_id, resolution)
                .await
                .map_or_else(|e| error_status(&e, &language), |()| ok()),
            (Err(e), _) => error_status(&e, &language),
        };
        Ok(Response::new(pb::EndTransactionResponse { status: Some(status) }))
    }

    type TelemetryStream = session::TelemetryStream;

    async fn telemetry(
        &self,
        request: Request<Streaming<pb::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, GrpcStatus> {
        let (language, caller) = self.caller(&request);
        match caller {
            Ok(c) => Ok(Response::new(session::telemetry(
                self.broker.clone(),
                c,
                request.into_inner(),
                self.advertised.host_port(),
            ))),
            Err(e) => {
                let reply = pb::TelemetryCommand { status: Some(error_status(&e, &language)), command: None };
                Ok(Response::new(Box::pin(futures::stream::iter([Ok(reply)]))))
            }
        }
    }

    async fn notify_client_termination(
        &self,
        request: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, GrpcStatus> {
        let (language, caller) = self.caller(&request);
        let response = match caller {
            Ok(c) => session::terminate(&self.broker, &c).await,
            Err(e) => pb::NotifyClientTerminationResponse { status: Some(error_status(&e, &language)) },
        };
        Ok(Response::new(response))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, GrpcStatus> {
        let started = Instant::now();
        let (language, caller) = self.caller(&request);
        let req = request.into_inner();
        let result = caller.and_then(|c| {
            let invisible = req.invisible_duration.as_ref().and_then(convert::duration).ok_or_else(|| {
                BrokerError::IllegalInvisibleTime("invisible_duration is required and must not be negative".into())
            })?;
            self.broker.change_invisible(
                name(&req.group),
                &c.client_id,
                name(&req.topic),
                &req.receipt_handle,
                invisible,
            )
        });
        let response = match result {
            Ok(handle) => pb::ChangeInvisibleDurationResponse { status: Some(ok()), receipt_handle: handle },
            Err(e) => pb::ChangeInvisibleDurationResponse {
                status: Some(error_status(&e, &language)),
                receipt_handle: String::new(),
            },
        };
        self.rpc_latency.observe(Rpc::ChangeInvisibleDuration, response.status.as_ref().map_or(0, |s| s.code), started);
        Ok(Response::new(response))
    }

    async fn recall_message(
        &self,
        request: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, GrpcStatus> {
        let (language, _) = self.caller(&request);
        Ok(Response::new(pb::RecallMessageResponse {
            status: Some(unsupported("RecallMessage", &language)),
            message_id: String::new(),
        }))
    }

    async fn sync_lite_subscription(
        &self,
        request: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, GrpcStatus> {
        let (language, _) = self.caller(&request);
        Ok(Response::new(pb::SyncLiteSubscriptionResponse {
            status: Some(unsupported("SyncLiteSubscription", &language)),
        }))
    }
}
