//! Errors of the broker, in terms a client can act on. The gRPC layer maps each variant to exactly
//! one RocketMQ status code (`grpc::status`).

use crate::consume::filter::FilterError;
use crate::storage::StorageError;

/// Why a broker operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The request is malformed in a way no more specific variant covers.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The `x-mq-client-id` header is missing.
    #[error("the x-mq-client-id header is required")]
    ClientIdRequired,
    /// A topic name breaks the naming rules.
    #[error("illegal topic name {name:?}: {reason}")]
    IllegalTopic {
        /// The name.
        name: String,
        /// Which rule.
        reason: String,
    },
    /// A consumer group name breaks the naming rules.
    #[error("illegal consumer group name {name:?}: {reason}")]
    IllegalGroup {
        /// The name.
        name: String,
        /// Which rule.
        reason: String,
    },
    /// The topic does not exist and auto-creation is off.
    #[error("topic {0:?} does not exist; declare it with a Topic manifest or enable auto-creation")]
    TopicNotFound(String),
    /// The group does not exist and auto-creation is off.
    #[error("consumer group {0:?} does not exist; declare it with a ConsumerGroup manifest or enable auto-creation")]
    GroupNotFound(String),
    /// Empty or oversized message id.
    #[error("illegal message id: {0}")]
    IllegalMessageId(String),
    /// Bad tag.
    #[error("illegal message tag: {0}")]
    IllegalTag(String),
    /// Bad key.
    #[error("illegal message key: {0}")]
    IllegalKey(String),
    /// Bad message group.
    #[error("illegal message group: {0}")]
    IllegalMessageGroup(String),
    /// A user property uses a reserved key or is malformed.
    #[error("illegal message property: {0}")]
    IllegalProperty(String),
    /// Properties exceed the limits.
    #[error("message properties too large: {0}")]
    PropertiesTooLarge(String),
    /// The body exceeds the limit.
    #[error("message body of {len} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge {
        /// Body size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The body is empty.
    #[error("message body is empty")]
    BodyEmpty,
    /// The topic does not accept this message type.
    #[error("{0}")]
    MessageTypeConflict(String),
    /// The filter expression is invalid.
    #[error(transparent)]
    IllegalFilter(#[from] FilterError),
    /// Invisible duration out of range.
    #[error("illegal invisible duration: {0}")]
    IllegalInvisibleTime(String),
    /// The deadline leaves no room for long polling.
    #[error("illegal polling time: {0}")]
    IllegalPollingTime(String),
    /// Delivery timestamp out of range.
    #[error("illegal delivery time: {0}")]
    IllegalDeliveryTime(String),
    /// The transaction id is unknown, ended, or belongs to another message.
    #[error("invalid transaction id: {0}")]
    InvalidTransactionId(String),
    /// The receipt handle is malformed, expired or superseded.
    #[error("invalid receipt handle: {0}")]
    InvalidReceiptHandle(String),
    /// Too many requests or in-flight messages.
    #[error("too many requests: {0}")]
    TooManyRequests(String),
    /// A feature this broker does not offer.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The storage engine failed.
    #[error("storage failure: {0}")]
    Storage(#[from] StorageError),
    /// Any other server-side failure.
    #[error("partition {partition:?} of topic {topic} is served by another broker")]
    NotOwner {
        /// Topic.
        topic: String,
        /// The partition the message belongs in (FIFO), or None for "any partition".
        partition: Option<u32>,
    },

    #[error("forbidden: {0}")]
    Forbidden(String),

    /// The caller could not be authenticated (access control is on).
    #[error("unauthorized: {0}")]
    Unauthorized(String),

    #[error("unavailable: {0}")]
    Unavailable(String),

    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    /// An internal error with a message.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::Internal(msg.into())
    }
}

impl From<crate::acl::Denied> for BrokerError {
    fn from(denied: crate::acl::Denied) -> Self {
        match denied {
            crate::acl::Denied::Unauthenticated(why) => BrokerError::Unauthorized(why),
            crate::acl::Denied::Forbidden(why) => BrokerError::Forbidden(why),
        }
    }
}
