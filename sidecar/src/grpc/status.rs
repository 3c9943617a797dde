//! The one place where broker errors become RocketMQ status codes.
//!
//! Every RPC answers in band (gRPC status OK, a `Status{code, message}` in the body) so the official
//! clients see a code they branch on. Codes the Rust SDK 5.0.0 does not know make it panic, so they
//! are replaced by BAD_REQUEST for Rust clients.

use weir_proto::rocketmq::v2::{Code, Status};

use crate::error::BrokerError;
use crate::storage::StorageError;

/// The status for a success.
pub fn ok() -> Status {
    Status { code: Code::Ok as i32, message: "OK".into() }
}

/// A status with a code and message.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status { code: code as i32, message: message.into() }
}

/// The code for a broker error.
pub fn code_of(e: &BrokerError) -> Code {
    match e {
        BrokerError::BadRequest(_) => Code::BadRequest,
        BrokerError::ClientIdRequired => Code::ClientIdRequired,
        BrokerError::IllegalTopic { .. } => Code::IllegalTopic,
        BrokerError::IllegalGroup { .. } => Code::IllegalConsumerGroup,
        BrokerError::TopicNotFound(_) => Code::TopicNotFound,
        BrokerError::GroupNotFound(_) => Code::ConsumerGroupNotFound,
        BrokerError::IllegalMessageId(_) => Code::IllegalMessageId,
        BrokerError::IllegalTag(_) => Code::IllegalMessageTag,
        BrokerError::IllegalKey(_) => Code::IllegalMessageKey,
        BrokerError::IllegalMessageGroup(_) => Code::IllegalMessageGroup,
        BrokerError::IllegalProperty(_) => Code::IllegalMessagePropertyKey,
        BrokerError::PropertiesTooLarge(_) => Code::MessagePropertiesTooLarge,
        BrokerError::BodyTooLarge { .. } => Code::MessageBodyTooLarge,
        BrokerError::BodyEmpty => Code::MessageBodyEmpty,
        BrokerError::MessageTypeConflict(_) => Code::MessagePropertyConflictWithType,
        BrokerError::IllegalFilter(_) => Code::IllegalFilterExpression,
        BrokerError::IllegalInvisibleTime(_) => Code::IllegalInvisibleTime,
        BrokerError::IllegalPollingTime(_) => Code::IllegalPollingTime,
        BrokerError::IllegalDeliveryTime(_) => Code::IllegalDeliveryTime,
        BrokerError::InvalidReceiptHandle(_) => Code::InvalidReceiptHandle,
        BrokerError::InvalidTransactionId(_) => Code::InvalidTransactionId,
        BrokerError::TooManyRequests(_) => Code::TooManyRequests,
        BrokerError::Unsupported(_) => Code::NotImplemented,
        BrokerError::NotOwner { .. } | BrokerError::Unavailable(_) => Code::HaNotAvailable,
        BrokerError::Forbidden(_) => Code::Forbidden,
        BrokerError::Unauthorized(_) => Code::Unauthorized,
        BrokerError::Storage(StorageError::TooLarge { .. }) => Code::MessageBodyTooLarge,
        BrokerError::Storage(_) | BrokerError::Internal(_) => Code::InternalServerError,
    }
}

/// The status for a broker error, as a client speaking `language` can take it.
pub fn error_status(e: &BrokerError, language: &str) -> Status {
    status(for_language(code_of(e), language), e.to_string())
}

/// Codes the Rust SDK 5.0.0 cannot decode (it unwraps the enum conversion and panics).
const UNKNOWN_TO_RUST_5_0_0: &[Code] = &[
    Code::IllegalOffset,
    Code::IllegalLiteTopic,
    Code::InvalidClientProperties,
    Code::OffsetNotFound,
    Code::MessageBodyEmpty,
    Code::LiteTopicQuotaExceeded,
    Code::LiteSubscriptionQuotaExceeded,
];

/// Replaces codes a client cannot decode by the closest one it can.
pub fn for_language(code: Code, language: &str) -> Code {
    if language.eq_ignore_ascii_case("RUST") && UNKNOWN_TO_RUST_5_0_0.contains(&code) {
        if code == Code::OffsetNotFound { Code::NotFound } else { Code::BadRequest }
    } else {
        code
    }
}

/// The top-level status of a batch: the entries' status when they all have the same code (OK when
/// every entry is), MULTIPLE_RESULTS otherwise (the Rust client treats anything but OK as a failure
/// anyway). Borrows the entries' statuses: only the one answered is copied.
pub fn batch_status<'a>(entries: impl IntoIterator<Item = &'a Status>) -> Status {
    let mut entries = entries.into_iter();
    let Some(first) = entries.next() else { return ok() };
    if entries.all(|s| s.code == first.code) {
        first.clone()
    } else {
        status(Code::MultipleResults, "entries have different results; see each entry's status")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_clients_never_see_codes_they_cannot_decode() {
        assert_eq!(for_language(Code::MessageBodyEmpty, "RUST"), Code::BadRequest);
        assert_eq!(for_language(Code::MessageBodyEmpty, "PYTHON"), Code::MessageBodyEmpty);
        assert_eq!(for_language(Code::TopicNotFound, "RUST"), Code::TopicNotFound);
    }

    #[test]
    fn batch_statuses() {
        assert_eq!(batch_status(&[ok(), ok()]), ok());
        let bad = status(Code::IllegalTopic, "x");
        assert_eq!(batch_status([&bad]), bad);
        assert_eq!(batch_status([&bad, &bad]), bad);
        assert_eq!(batch_status([]).code, Code::Ok as i32);
        assert_eq!(batch_status(&[ok(), bad]).code, Code::MultipleResults as i32);
    }
}
