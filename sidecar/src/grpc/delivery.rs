//! Delivered messages encoded straight from their log records.
//!
//! A delivery is the stored message plus its lease (receipt handle, offset, attempt, invisible
//! time), as the clients expect it: every field they dereference set (§3.2 of the protocol
//! notes), the body's MD5 in upper-case hex. Decoding the record into a [`StoredMessage`] and
//! building a `Message` to encode took a string allocation per field, a map, and two passes of
//! nested lengths for every message delivered; here the record's fields are written out as they
//! lie in it ([`StoredView`]) and the body is handed over as read:
//!
//! ```text
//!   head (one buffer per receive, split per message)              body (the record's own bytes)
//!   ┌──────────────┬───────────────────────┬─────────────────────┐ ┌──────────────┐
//!   │ 1 topic      │ 2 user_properties × n │ 3 system_properties │ │ 4 body       │
//!   │ (Resource)   │ (entries as stored)   │ (record + lease)    │ │              │
//!   └──────────────┴───────────────────────┴─────────────────────┘ └──────────────┘
//! ```
//!
//! Fields come out in field-number order and with proto3's presence rules, as prost writes a
//! `Message`, so a client decodes the same message either way (the tests compare the two).
//!
//! [`StoredMessage`]: crate::storage::record::StoredMessage

use bytes::{BufMut, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use weir_proto::rocketmq::v2 as pb;

use crate::broker::Delivery;
use crate::grpc::convert::{timestamp, wire_duration, wire_message_type};
use crate::storage::stored_view::StoredView;

/// Field numbers of `apache.rocketmq.v2.Message` and of what it nests.
mod field {
    pub mod message {
        pub const TOPIC: u32 = 1;
        pub const USER_PROPERTIES: u32 = 2;
        pub const SYSTEM_PROPERTIES: u32 = 3;
    }
    pub mod resource {
        pub const NAME: u32 = 2;
    }
    pub mod digest {
        pub const TYPE: u32 = 1;
        pub const CHECKSUM: u32 = 2;
    }
    pub mod system {
        pub const TAG: u32 = 1;
        pub const KEYS: u32 = 2;
        pub const MESSAGE_ID: u32 = 3;
        pub const BODY_DIGEST: u32 = 4;
        pub const BODY_ENCODING: u32 = 5;
        pub const MESSAGE_TYPE: u32 = 6;
        pub const BORN_TIMESTAMP: u32 = 7;
        pub const BORN_HOST: u32 = 8;
        pub const STORE_TIMESTAMP: u32 = 9;
        pub const STORE_HOST: u32 = 10;
        pub const DELIVERY_TIMESTAMP: u32 = 11;
        pub const RECEIPT_HANDLE: u32 = 12;
        pub const QUEUE_ID: u32 = 13;
        pub const QUEUE_OFFSET: u32 = 14;
        pub const INVISIBLE_DURATION: u32 = 15;
        pub const DELIVERY_ATTEMPT: u32 = 16;
        pub const MESSAGE_GROUP: u32 = 17;
        pub const TRACE_CONTEXT: u32 = 18;
    }
}

/// Head bytes reserved per message of a receive (a message's fields other than its body are
/// about 300 bytes); more is allocated when a message needs it.
const HEAD_BYTES_PER_MESSAGE: usize = 384;

/// Encodes the messages of one receive, sharing one buffer for their heads.
pub struct DeliveryEncoder<'a> {
    store_host: &'a str,
    heads: BytesMut,
    /// The system properties of the message being encoded (their length precedes them).
    system: Vec<u8>,
}

impl<'a> DeliveryEncoder<'a> {
    /// An encoder for `count` messages, naming `store_host` as the broker that stored them.
    pub fn new(store_host: &'a str, count: usize) -> Self {
        Self { store_host, heads: BytesMut::with_capacity(count * HEAD_BYTES_PER_MESSAGE), system: Vec::new() }
    }

    /// The delivery as the `Message` a client receives.
    pub fn encode(&mut self, d: Delivery) -> pb::EncodedMessage {
        let m = &d.message;
        self.system.clear();
        self.write_system_properties(&d);
        let head = &mut self.heads;
        // Resource { name = topic }; its namespace stays empty.
        let topic = m.topic();
        let resource_len = if topic.is_empty() { 0 } else { bytes_field_len(field::resource::NAME, topic.len()) };
        encode_key(field::message::TOPIC, WireType::LengthDelimited, head);
        encode_varint(resource_len as u64, head);
        put_string(head, field::resource::NAME, topic);
        m.each_property_entry(|entry| put_bytes(head, field::message::USER_PROPERTIES, entry));
        put_bytes(head, field::message::SYSTEM_PROPERTIES, &self.system);
        pb::EncodedMessage { fields: head.split().freeze(), body: m.body() }
    }

    fn write_system_properties(&mut self, d: &Delivery) {
        use field::system::*;
        let (m, out) = (&d.message, &mut self.system);
        put_string(out, TAG, m.tag());
        m.each_key(|key| put_bytes(out, KEYS, key));
        put_string(out, MESSAGE_ID, m.message_id());
        write_digest(out, m);
        put_varint(out, BODY_ENCODING, pb::Encoding::Identity as u64);
        put_varint(out, MESSAGE_TYPE, wire_message_type(m.message_type) as u64);
        prost::encoding::message::encode(BORN_TIMESTAMP, &timestamp(m.born_timestamp_ms), out);
        put_string(out, BORN_HOST, m.born_host());
        prost::encoding::message::encode(STORE_TIMESTAMP, &timestamp(m.store_timestamp_ms), out);
        put_string(out, STORE_HOST, self.store_host.as_bytes());
        if m.delivery_timestamp_ms > 0 {
            prost::encoding::message::encode(DELIVERY_TIMESTAMP, &timestamp(m.delivery_timestamp_ms), out);
        }
        put_bytes(out, RECEIPT_HANDLE, d.receipt.text().as_str().as_bytes());
        // int32 and int64 fields are varints of their sign-extended value, as prost writes them.
        put_varint(out, QUEUE_ID, i64::from(d.partition as i32) as u64);
        encode_key(QUEUE_OFFSET, WireType::Varint, out);
        encode_varint(d.offset, out);
        prost::encoding::message::encode(INVISIBLE_DURATION, &wire_duration(d.invisible), out);
        encode_key(DELIVERY_ATTEMPT, WireType::Varint, out);
        encode_varint(i64::from(d.attempt as i32) as u64, out);
        put_string(out, MESSAGE_GROUP, m.message_group());
        put_string(out, TRACE_CONTEXT, m.trace_context());
    }
}

/// `Digest { type: MD5, checksum: the body's MD5 in upper-case hex }`.
fn write_digest(out: &mut Vec<u8>, m: &StoredView) {
    let mut hex = [0u8; 32];
    let md5 = m.body_md5();
    let checksum = &mut hex[..md5.len().min(16) * 2];
    // The slice is exactly twice the input's length, so this cannot fail.
    let _ = const_hex::encode_to_slice_upper(&md5[..checksum.len() / 2], checksum);
    let md5_type = pb::DigestType::Md5 as u64;
    let type_len = key_len(field::digest::TYPE) + encoded_len_varint(md5_type);
    let checksum_len = if checksum.is_empty() { 0 } else { bytes_field_len(field::digest::CHECKSUM, checksum.len()) };
    encode_key(field::system::BODY_DIGEST, WireType::LengthDelimited, out);
    encode_varint((type_len + checksum_len) as u64, out);
    put_varint(out, field::digest::TYPE, md5_type);
    put_string(out, field::digest::CHECKSUM, checksum);
}

/// The length of a length-delimited field of `len` bytes, key and length included.
fn bytes_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A length-delimited field, written even when empty (a set `optional` field, a map entry).
fn put_bytes(out: &mut impl BufMut, tag: u32, value: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.put_slice(value);
}

/// A proto3 string field: left out when empty.
fn put_string(out: &mut impl BufMut, tag: u32, value: &[u8]) {
    if !value.is_empty() {
        put_bytes(out, tag, value);
    }
}

/// A proto3 number field: left out when zero.
fn put_varint(out: &mut impl BufMut, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use prost::Message as _;
    use weir_proto::rocketmq::v2::ReceiveMessageResponse;
    use weir_proto::rocketmq::v2::receive_message_response::Content;

    use super::*;
    use crate::consume::receipt::Receipt;
    use crate::grpc::convert::stored_to_wire;
    use crate::storage::record::StoredMessage;
    use crate::storage::stored_view::strategies::stored_message;

    /// The message a client decodes from an encoded delivery.
    fn received(encoded: pb::EncodedMessage) -> pb::Message {
        let response = ReceiveMessageResponse { content: Some(Content::Encoded(encoded)) };
        match ReceiveMessageResponse::decode(&*response.encode_to_vec()).unwrap().content {
            Some(Content::Message(m)) => m,
            other => panic!("decoded {other:?}"),
        }
    }

    /// What the broker sent before deliveries were encoded from records: the decoded record as a
    /// `Message`, with the lease's fields set.
    fn expected(m: StoredMessage, d: &Delivery, host: &str) -> pb::Message {
        let mut wire = stored_to_wire(m, host);
        let sys = wire.system_properties.as_mut().unwrap();
        sys.receipt_handle = Some(d.receipt.encode());
        sys.queue_id = d.partition as i32;
        sys.queue_offset = Some(d.offset as i64);
        sys.invisible_duration = Some(wire_duration(d.invisible));
        sys.delivery_attempt = Some(d.attempt as i32);
        wire
    }

    proptest! {
        /// A client decodes an encoded delivery as the message built field by field from the
        /// decoded record: every field, presence and order rule the same.
        #[test]
        fn a_delivery_decodes_as_the_message_built_from_the_record(
            m in stored_message(),
            partition in any::<u32>(),
            offset in any::<u64>(),
            attempt in 1u32..20,
            invisible_ms in 0u64..100_000_000,
            host in "[a-z0-9.:]{0,16}",
        ) {
            let d = Delivery {
                message: StoredView::parse(m.encode_to_vec().into()).unwrap(),
                partition,
                offset,
                receipt: Receipt { broker: 0, partition, offset, generation: attempt.into() },
                attempt,
                invisible: Duration::from_millis(invisible_ms),
            };
            let want = expected(m, &d, &host);
            let mut encoder = DeliveryEncoder::new(&host, 1);
            prop_assert_eq!(received(encoder.encode(d)), want);
        }
    }

    /// A receive's messages share the head buffer and each keeps its own bytes.
    #[test]
    fn messages_of_one_receive_keep_their_own_fields() {
        let messages: Vec<StoredMessage> = (0..40)
            .map(|i| StoredMessage {
                topic: "t".into(),
                message_id: format!("id-{i}"),
                body: format!("body {i}").into_bytes().into(),
                body_md5: vec![i as u8; 16].into(),
                ..Default::default()
            })
            .collect();
        let mut encoder = DeliveryEncoder::new("broker:8081", 2);
        let encoded: Vec<_> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let d = Delivery {
                    message: StoredView::parse(m.encode_to_vec().into()).unwrap(),
                    partition: 1,
                    offset: i as u64,
                    receipt: Receipt { broker: 0, partition: 1, offset: i as u64, generation: 7 },
                    attempt: 1,
                    invisible: Duration::from_secs(30),
                };
                let want = expected(m.clone(), &d, "broker:8081");
                (encoder.encode(d), want)
            })
            .collect();
        for (encoded, want) in encoded {
            assert_eq!(received(encoded), want);
        }
    }
}
