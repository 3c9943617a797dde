//! Client sessions over gRPC: the Telemetry stream (settings handshake), heartbeats and termination.
//!
//! Every `Settings` a client sends is answered with `TelemetryCommand{status OK, settings}` where the
//! settings echo the client's and add what the broker decides (protocol notes §4): the retry policy,
//! `max_body_size` for producers, the group's FIFO flag, batch size and long-polling timeout for
//! consumers. The stream stays open until the client closes it; the broker never ends it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status as GrpcStatus, Streaming};
use weir_proto::rocketmq::v2 as pb;
use weir_proto::rocketmq::v2::telemetry_command::Command;

use crate::broker::Broker;
use crate::clients::{ClientKind, ServerCommand};
use crate::grpc::context::Caller;
use crate::grpc::convert::{self, name, wire_duration};
use crate::grpc::status::{error_status, ok, status};

/// The outgoing half of a Telemetry stream.
pub type TelemetryStream = Pin<Box<dyn Stream<Item = Result<pb::TelemetryCommand, GrpcStatus>> + Send>>;

/// RocketMQ's 18 delay levels, the retry schedule push consumers in most SDKs read (in seconds).
const RETRY_LEVELS_SECS: [u64; 18] =
    [1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200];

fn kind_of(client_type: i32) -> ClientKind {
    match pb::ClientType::try_from(client_type) {
        Ok(pb::ClientType::Producer) => ClientKind::Producer,
        Ok(pb::ClientType::PushConsumer | pb::ClientType::LitePushConsumer) => ClientKind::PushConsumer,
        Ok(pb::ClientType::SimpleConsumer | pb::ClientType::LiteSimpleConsumer) => ClientKind::SimpleConsumer,
        Ok(pb::ClientType::PullConsumer) => ClientKind::PullConsumer,
        _ => ClientKind::Unknown,
    }
}

/// Runs a Telemetry stream: answers settings, tracks the session, releases the client's leases when
/// its last stream ends.
pub fn telemetry(
    broker: Arc<Broker>,
    caller: Caller,
    mut inbound: Streaming<pb::TelemetryCommand>,
    store_host: String,
) -> TelemetryStream {
    // Boxed: a channel allocates its first block of 32 slots up front, and a slot of the 656-byte
    // command would make that 21 KB for every open stream, most of which stay idle for hours.
    let (tx, rx) = mpsc::channel::<Box<pb::TelemetryCommand>>(16);
    let (command_tx, mut commands) = mpsc::channel(64);
    let stream_id = broker.clients().next_stream_id();
    let session = broker.clients().touch(&caller.client_id);
    {
        let mut s = session.lock();
        s.streams += 1;
        s.outbox.push((stream_id, command_tx));
    }
    let mut stopping = broker.stopping();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = inbound.next() => next,
                Some(command) = commands.recv() => {
                    if tx.send(Box::new(server_command(command, &store_host))).await.is_err() {
                        break;
                    }
                    continue;
                }
                _ = stopping.wait_for(|s| *s).map(|_| ()) => break,
            };
            let Some(next) = next else { break };
            let command = match next {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(client = caller.client_id, error = %e, "telemetry stream broke");
                    break;
                }
            };
            broker.clients().touch(&caller.client_id);
            let reply = match command.command {
                Some(Command::Settings(settings)) => Some(answer_settings(&broker, &caller, settings)),
                Some(other) => {
                    tracing::debug!(client = caller.client_id, command = ?std::mem::discriminant(&other), "telemetry command ignored");
                    None
                }
                None => None,
            };
            if let Some(reply) = reply
                && tx.send(Box::new(reply)).await.is_err()
            {
                break;
            }
        }
        let last = {
            let mut s = session.lock();
            s.streams = s.streams.saturating_sub(1);
            s.outbox.retain(|(id, _)| *id != stream_id);
            s.streams == 0
        };
        if last {
            broker.release_client(&caller.client_id);
        }
    });
    Box::pin(ReceiverStream::new(rx).map(|command| Ok(*command)))
}

/// A broker-initiated command as the clients expect it on the stream.
fn server_command(command: ServerCommand, store_host: &str) -> pb::TelemetryCommand {
    match command {
        ServerCommand::RecoverOrphanedTransaction { message, transaction_id } => pb::TelemetryCommand {
            status: Some(ok()),
            command: Some(Command::RecoverOrphanedTransactionCommand(pb::RecoverOrphanedTransactionCommand {
                message: Some(convert::stored_to_wire(*message, store_host)),
                transaction_id,
            })),
        },
    }
}

/// With access control on, whether the caller may publish to (or consume) what its settings
/// declare: a producer's topics receive transaction check-backs carrying message bodies.
fn settings_allowed(caller: &Caller, settings: &pb::Settings) -> Result<(), crate::acl::Denied> {
    use crate::acl::{Action, Resource};
    let Some(user) = &caller.user else { return Ok(()) };
    match &settings.pub_sub {
        Some(pb::settings::PubSub::Publishing(p)) => {
            let topics: Vec<Resource<'_>> = p.topics.iter().map(|t| Resource::Topic(&t.name)).collect();
            user.check(&topics, Action::Pub)
        }
        Some(pb::settings::PubSub::Subscription(s)) => {
            let mut resources = vec![Resource::Group(name(&s.group))];
            resources.extend(s.subscriptions.iter().map(|e| Resource::Topic(name(&e.topic))));
            user.check(&resources, Action::Sub)
        }
        None => Ok(()),
    }
}

/// The broker's answer to a client's settings.
fn answer_settings(broker: &Broker, caller: &Caller, mut settings: pb::Settings) -> pb::TelemetryCommand {
    if let Err(denied) = settings_allowed(caller, &settings) {
        let error = crate::error::BrokerError::from(denied);
        return pb::TelemetryCommand { status: Some(error_status(&error, &caller.language)), command: None };
    }
    let kind = kind_of(settings.client_type.unwrap_or(0));
    let language = settings.user_agent.as_ref().map(|ua| ua.language).unwrap_or(0);
    {
        let session = broker.clients().touch(&caller.client_id);
        let mut s = session.lock();
        s.kind = kind;
        s.language = pb::Language::try_from(language).map(|l| l.as_str_name().to_owned()).unwrap_or_default();
        match &settings.pub_sub {
            Some(pb::settings::PubSub::Publishing(p)) => s.topics = p.topics.iter().map(|t| t.name.clone()).collect(),
            Some(pb::settings::PubSub::Subscription(sub)) => s.group = Some(name(&sub.group).to_owned()),
            None => {}
        }
    }
    match settings.pub_sub.take() {
        Some(pb::settings::PubSub::Publishing(mut publishing)) => {
            publishing.max_body_size = broker.config().max_body_bytes as i32;
            publishing.validate_message_type = true;
            settings.pub_sub = Some(pb::settings::PubSub::Publishing(publishing));
            settings.backoff_policy = Some(producer_retry_policy());
        }
        Some(pb::settings::PubSub::Subscription(mut subscription)) => {
            let group = broker.catalog().group(name(&subscription.group));
            let (fifo, max_attempts) = match &group {
                Ok(g) => (g.fifo, g.max_attempts),
                Err(_) => (false, 17),
            };
            subscription.fifo = Some(fifo);
            subscription.receive_batch_size = Some(32);
            subscription.long_polling_timeout = Some(wire_duration(broker.config().max_long_poll));
            settings.pub_sub = Some(pb::settings::PubSub::Subscription(subscription));
            settings.backoff_policy = Some(consumer_retry_policy(max_attempts, language));
        }
        None => {
            return pb::TelemetryCommand {
                status: Some(status(
                    pb::Code::BadRequest,
                    "settings must carry publishing (producers) or subscription (consumers)",
                )),
                command: None,
            };
        }
    }
    settings.metric = Some(pb::Metric { on: false, endpoints: None });
    pb::TelemetryCommand { status: Some(ok()), command: Some(Command::Settings(settings)) }
}

/// Producers retry a failed send 3 times with exponential backoff (the JS SDK asserts exponential).
fn producer_retry_policy() -> pb::RetryPolicy {
    pb::RetryPolicy {
        max_attempts: 3,
        strategy: Some(pb::retry_policy::Strategy::ExponentialBackoff(pb::ExponentialBackoff {
            initial: Some(wire_duration(Duration::from_millis(10))),
            max: Some(wire_duration(Duration::from_secs(1))),
            multiplier: 2.0,
        })),
    }
}

/// Consumers: the JS push consumer only understands exponential backoff, the others read the
/// customized RocketMQ levels.
fn consumer_retry_policy(max_attempts: u32, language: i32) -> pb::RetryPolicy {
    let strategy = if language == pb::Language::NodeJs as i32 {
        pb::retry_policy::Strategy::ExponentialBackoff(pb::ExponentialBackoff {
            initial: Some(wire_duration(Duration::from_secs(1))),
            max: Some(wire_duration(Duration::from_secs(60))),
            multiplier: 2.0,
        })
    } else {
        pb::retry_policy::Strategy::CustomizedBackoff(pb::CustomizedBackoff {
            next: RETRY_LEVELS_SECS.iter().map(|s| wire_duration(Duration::from_secs(*s))).collect(),
        })
    };
    pb::RetryPolicy { max_attempts: max_attempts as i32, strategy: Some(strategy) }
}

/// Heartbeat: marks the client alive and records its group and type.
pub fn heartbeat(broker: &Broker, caller: &Caller, req: &pb::HeartbeatRequest) -> pb::HeartbeatResponse {
    let session = broker.clients().touch(&caller.client_id);
    let mut s = session.lock();
    if s.kind == ClientKind::Unknown {
        s.kind = kind_of(req.client_type);
    }
    if req.group.is_some() {
        s.group = Some(name(&req.group).to_owned());
    }
    pb::HeartbeatResponse { status: Some(ok()) }
}

/// The client is shutting down: forget it and release its in-flight messages now.
pub async fn terminate(broker: &Broker, caller: &Caller) -> pb::NotifyClientTerminationResponse {
    if let Err(e) = broker.client_gone(&caller.client_id).await {
        tracing::warn!(error = %e, client = %caller.client_id, "could not forget a terminated client");
    }
    pb::NotifyClientTerminationResponse { status: Some(ok()) }
}
