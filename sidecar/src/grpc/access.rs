//! What each RocketMQ request needs from the ACL ([`crate::acl`]), read from the request itself:
//!
//! | request | needs |
//! |---|---|
//! | SendMessage | Pub on the topic of **every** message of the batch |
//! | EndTransaction | Pub on the topic |
//! | QueryRoute | Pub or Sub on the topic |
//! | ReceiveMessage, AckMessage, ChangeInvisibleDuration, ForwardMessageToDeadLetterQueue, QueryAssignment | Sub on the group and the topic |
//! | Heartbeat of a consumer | Sub on the group |
//! | Telemetry | a signed request; then its settings: Pub on every declared topic (producers receive check-backs of them), Sub on the group and its topics (`session::answer_settings`) |
//! | NotifyClientTermination, unsupported RPCs | a signed request only |

use tonic::Streaming;
use weir_proto::rocketmq::v2 as pb;

use super::convert::name;
use crate::acl::{Action, Denied, Resource, User};

/// What a request needs.
#[derive(Debug)]
pub enum Need<'a> {
    /// Only that the caller is known.
    Signed,
    /// `action` on every resource.
    All(Action, Vec<Resource<'a>>),
    /// Pub or Sub on one resource.
    PubOrSub(Resource<'a>),
}

impl Need<'_> {
    /// Whether `user` may make the request.
    pub fn check(&self, user: &User) -> Result<(), Denied> {
        match self {
            Need::Signed => Ok(()),
            Need::All(action, resources) => user.check(resources, *action),
            Need::PubOrSub(resource) => {
                let resources = std::slice::from_ref(resource);
                user.check(resources, Action::Pub).or_else(|_| user.check(resources, Action::Sub))
            }
        }
    }
}

/// A request the ACL can judge.
pub trait Guarded {
    /// What it needs.
    fn need(&self) -> Need<'_>;
}

fn consume<'a>(group: &'a Option<pb::Resource>, topic: &'a str) -> Need<'a> {
    Need::All(Action::Sub, vec![Resource::Group(name(group)), Resource::Topic(topic)])
}

impl Guarded for pb::SendMessageRequest {
    fn need(&self) -> Need<'_> {
        Need::All(Action::Pub, self.messages.iter().map(|m| Resource::Topic(name(&m.topic))).collect())
    }
}

impl Guarded for pb::EndTransactionRequest {
    fn need(&self) -> Need<'_> {
        Need::All(Action::Pub, vec![Resource::Topic(name(&self.topic))])
    }
}

impl Guarded for pb::QueryRouteRequest {
    fn need(&self) -> Need<'_> {
        Need::PubOrSub(Resource::Topic(name(&self.topic)))
    }
}

impl Guarded for pb::ReceiveMessageRequest {
    fn need(&self) -> Need<'_> {
        consume(&self.group, self.message_queue.as_ref().map_or("", |q| name(&q.topic)))
    }
}

/// Requests of a consumer group on a topic (both in `group` and `topic` fields).
macro_rules! consuming {
    ($($t:ty),* $(,)?) => {$(
        impl Guarded for $t {
            fn need(&self) -> Need<'_> {
                consume(&self.group, name(&self.topic))
            }
        }
    )*};
}

consuming!(
    pb::AckMessageRequest,
    pb::ChangeInvisibleDurationRequest,
    pb::ForwardMessageToDeadLetterQueueRequest,
    pb::QueryAssignmentRequest,
);

impl Guarded for pb::HeartbeatRequest {
    fn need(&self) -> Need<'_> {
        let consumer = [pb::ClientType::PushConsumer, pb::ClientType::SimpleConsumer, pb::ClientType::PullConsumer]
            .iter()
            .any(|t| *t as i32 == self.client_type);
        match name(&self.group) {
            group if consumer && !group.is_empty() => Need::All(Action::Sub, vec![Resource::Group(group)]),
            _ => Need::Signed,
        }
    }
}

/// Requests that only need a known caller.
macro_rules! signed_only {
    ($($t:ty),* $(,)?) => {$(
        impl Guarded for $t {
            fn need(&self) -> Need<'_> {
                Need::Signed
            }
        }
    )*};
}

signed_only!(
    Streaming<pb::TelemetryCommand>,
    pb::NotifyClientTerminationRequest,
    pb::PullMessageRequest,
    pb::UpdateOffsetRequest,
    pb::GetOffsetRequest,
    pb::QueryOffsetRequest,
    pb::RecallMessageRequest,
    pb::SyncLiteSubscriptionRequest,
);
