//! `apache.rocketmq.v2.ReceiveMessageResponse`, written by hand instead of generated, so that a
//! broker can send a delivered message it encoded itself.
//!
//! A broker keeps messages as encoded records. Decoding one into a
//! [`Message`](crate::rocketmq::v2::Message) (a dozen strings and a map), then encoding that
//! again, costs more than the delivery's other work together; the
//! [`Content::Encoded`] variant lets the broker write the message's fields straight from its
//! record and hand over the body as it was read. On the wire it is the same as
//! [`Content::Message`]:
//!
//! ```text
//!   ReceiveMessageResponse
//!   └─ field 2 (message), length-delimited:
//!        ┌──────────────────────────────────────┬──────────────────────────────┐
//!        │ EncodedMessage::fields               │ field 4 (body): key, length, │
//!        │ (topic, user_properties,             │ EncodedMessage::body         │
//!        │  system_properties, encoded)         │ (left out when empty)        │
//!        └──────────────────────────────────────┴──────────────────────────────┘
//! ```
//!
//! Decoding never produces [`Content::Encoded`]: a client always gets [`Content::Message`].

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len, message};

/// One element of the ReceiveMessage stream. Never send one with nothing set: the Rust client
/// unwraps it.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct ReceiveMessageResponse {
    /// What this element carries.
    pub content: Option<receive_message_response::Content>,
}

/// The field numbers of the `content` oneof.
const STATUS: u32 = 1;
const MESSAGE: u32 = 2;
const DELIVERY_TIMESTAMP: u32 = 3;
/// `Message.body`.
const BODY: u32 = 4;

/// Nested types of [`ReceiveMessageResponse`] (where generated code would put them).
pub mod receive_message_response {
    use super::EncodedMessage;
    use crate::rocketmq::v2::{Message, Status};

    /// The `content` oneof.
    // As generated code has it: clients move the message out; boxing it would cost every
    // delivery an allocation.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, Debug)]
    pub enum Content {
        /// The receive's outcome, sent first.
        Status(Status),
        /// A delivered message.
        Message(Message),
        /// Server time, sent last.
        DeliveryTimestamp(prost_types::Timestamp),
        /// A delivered message the sender encoded itself (sent as [`Content::Message`]).
        Encoded(EncodedMessage),
    }
}

use receive_message_response::Content;

/// A `Message` encoded by its sender: every field but the body, and the body.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct EncodedMessage {
    /// The encoded fields of the message other than `body` (field 4).
    pub fields: Bytes,
    /// The body.
    pub body: Bytes,
}

impl EncodedMessage {
    /// The length of the message on the wire, without its own key and length.
    fn encoded_len(&self) -> usize {
        let body = if self.body.is_empty() { 0 } else { bytes_field_len(BODY, self.body.len()) };
        self.fields.len() + body
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.fields);
        if !self.body.is_empty() {
            encode_key(BODY, WireType::LengthDelimited, buf);
            encode_varint(self.body.len() as u64, buf);
            buf.put_slice(&self.body);
        }
    }
}

/// A nested message decoded from the field at hand, for a oneof variant not yet set.
fn decoded<M: prost::Message + Default>(
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<M, DecodeError> {
    let mut m = M::default();
    message::merge(wire_type, &mut m, buf, ctx)?;
    Ok(m)
}

/// The length of a length-delimited field of `len` bytes, key and length included.
fn bytes_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

impl prost::Message for ReceiveMessageResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.content {
            None => {}
            Some(Content::Status(status)) => message::encode(STATUS, status, buf),
            Some(Content::Message(m)) => message::encode(MESSAGE, m, buf),
            Some(Content::DeliveryTimestamp(t)) => message::encode(DELIVERY_TIMESTAMP, t, buf),
            Some(Content::Encoded(m)) => {
                encode_key(MESSAGE, WireType::LengthDelimited, buf);
                encode_varint(m.encoded_len() as u64, buf);
                m.encode_raw(buf);
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // As generated code does: a repeated oneof field merges into the variant already set,
        // another field replaces it.
        match (tag, &mut self.content) {
            (STATUS, Some(Content::Status(s))) => message::merge(wire_type, s, buf, ctx),
            (STATUS, _) => decoded(wire_type, buf, ctx).map(|s| self.content = Some(Content::Status(s))),
            (MESSAGE, Some(Content::Message(m))) => message::merge(wire_type, m, buf, ctx),
            (MESSAGE, _) => decoded(wire_type, buf, ctx).map(|m| self.content = Some(Content::Message(m))),
            (DELIVERY_TIMESTAMP, Some(Content::DeliveryTimestamp(t))) => message::merge(wire_type, t, buf, ctx),
            (DELIVERY_TIMESTAMP, _) => {
                decoded(wire_type, buf, ctx).map(|t| self.content = Some(Content::DeliveryTimestamp(t)))
            }
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        match &self.content {
            None => 0,
            Some(Content::Status(status)) => message::encoded_len(STATUS, status),
            Some(Content::Message(m)) => message::encoded_len(MESSAGE, m),
            Some(Content::DeliveryTimestamp(t)) => message::encoded_len(DELIVERY_TIMESTAMP, t),
            Some(Content::Encoded(m)) => bytes_field_len(MESSAGE, m.encoded_len()),
        }
    }

    fn clear(&mut self) {
        self.content = None;
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::rocketmq::v2::{Message, Resource, Status, SystemProperties};

    fn message(body: &'static [u8]) -> Message {
        Message {
            topic: Some(Resource { resource_namespace: String::new(), name: "t".into() }),
            user_properties: [("k".to_owned(), "v".to_owned())].into(),
            system_properties: Some(SystemProperties { message_id: "id".into(), ..Default::default() }),
            body: Bytes::from_static(body),
        }
    }

    /// An encoded message reads back as the message it was encoded from, with or without a body.
    #[test]
    fn an_encoded_message_decodes_as_the_message() {
        for body in [&b"payload"[..], b""] {
            let m = message(body);
            let fields = Message { body: Bytes::new(), ..m.clone() }.encode_to_vec().into();
            let encoded = ReceiveMessageResponse {
                content: Some(Content::Encoded(EncodedMessage { fields, body: m.body.clone() })),
            };
            let plain = ReceiveMessageResponse { content: Some(Content::Message(m)) };
            assert_eq!(encoded.encoded_len(), plain.encoded_len());
            assert_eq!(encoded.encode_to_vec(), plain.encode_to_vec());
            assert_eq!(ReceiveMessageResponse::decode(&*encoded.encode_to_vec()).unwrap(), plain);
        }
    }

    /// Every variant survives a round trip; a later field of the oneof replaces an earlier one.
    #[test]
    fn the_other_variants_round_trip() {
        for content in [
            Content::Status(Status { code: 20000, message: "OK".into() }),
            Content::Message(message(b"x")),
            Content::DeliveryTimestamp(prost_types::Timestamp { seconds: 5, nanos: 6 }),
        ] {
            let r = ReceiveMessageResponse { content: Some(content) };
            assert_eq!(ReceiveMessageResponse::decode(&*r.encode_to_vec()).unwrap(), r);
        }
        let mut both =
            ReceiveMessageResponse { content: Some(Content::Status(Status { code: 1, message: String::new() })) }
                .encode_to_vec();
        let last = ReceiveMessageResponse {
            content: Some(Content::DeliveryTimestamp(prost_types::Timestamp { seconds: 1, nanos: 0 })),
        };
        both.extend(last.encode_to_vec());
        assert_eq!(ReceiveMessageResponse::decode(&*both).unwrap(), last);
        assert_eq!(ReceiveMessageResponse::decode(&[][..]).unwrap(), ReceiveMessageResponse::default());
    }
}
