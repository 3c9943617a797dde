//! A stored message read in place: where each field of a [`StoredMessage`] record lies, found in
//! one pass over its bytes, with nothing copied, allocated or validated beyond the wire format.
//!
//! Deliveries need a record's fields only to write them out again (see
//! `grpc::delivery`); decoding it into a [`StoredMessage`] would allocate a string per field and
//! a map for the properties, all dropped a moment later. The record was encoded from checked
//! strings and its frame's CRC passed when it was read, so its strings are passed on as they are.
//!
//! ```text
//!   record:  [key 1|len|topic][key 2|partition][key 3|len|message id] ... [key 13|len|body] ...
//!              └─ topic: 2..7    partition: 3     message_id: 12..48        body: 301..1325
//!   view:    ranges into the record for single fields, values for numbers; repeated fields
//!            (keys, user properties) are found again by walking the record when asked for
//! ```

use std::ops::Range;

use bytes::Bytes;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use super::record::StoredMessage;

/// Field numbers of [`StoredMessage`] the view reads.
mod field {
    pub const TOPIC: u32 = 1;
    pub const PARTITION: u32 = 2;
    pub const MESSAGE_ID: u32 = 3;
    pub const TAG: u32 = 4;
    pub const KEYS: u32 = 5;
    pub const MESSAGE_GROUP: u32 = 6;
    pub const MESSAGE_TYPE: u32 = 7;
    pub const BORN_TIMESTAMP: u32 = 8;
    pub const BORN_HOST: u32 = 9;
    pub const STORE_TIMESTAMP: u32 = 10;
    pub const DELIVERY_TIMESTAMP: u32 = 11;
    pub const USER_PROPERTIES: u32 = 12;
    pub const BODY: u32 = 13;
    pub const BODY_MD5: u32 = 14;
    pub const TRACE_CONTEXT: u32 = 15;
}

/// A record that is not a well-formed protobuf message.
#[derive(Debug, thiserror::Error)]
#[error("stored message record is malformed: {0}")]
pub struct MalformedRecord(String);

/// A stored message record and where its fields are. Numbers are read; strings and bytes are
/// ranges of the record (empty when the field is absent, as protobuf reads an absent field).
#[derive(Debug, Clone, Default)]
pub struct StoredView {
    record: Bytes,
    /// Partition (RocketMQ queue id).
    pub partition: u32,
    /// Message type (a [`super::record::StoredMessageType`] number).
    pub message_type: i32,
    /// When the producer created it (ms since the epoch).
    pub born_timestamp_ms: i64,
    /// When the broker stored it (ms since the epoch).
    pub store_timestamp_ms: i64,
    /// Requested delivery time (ms since the epoch); 0 when none.
    pub delivery_timestamp_ms: i64,
    topic: Range<usize>,
    message_id: Range<usize>,
    tag: Range<usize>,
    message_group: Range<usize>,
    born_host: Range<usize>,
    body: Range<usize>,
    body_md5: Range<usize>,
    trace_context: Range<usize>,
}

/// One field's value as the wire has it.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Calls `visit` with each field of `record` in order; other wire types than varint and
/// length-delimited are skipped.
fn walk(record: &[u8], mut visit: impl FnMut(u32, Value<'_>)) -> Result<(), MalformedRecord> {
    let malformed = |e: prost::DecodeError| MalformedRecord(e.to_string());
    let mut rest = record;
    while !rest.is_empty() {
        let (tag, wire_type) = decode_key(&mut rest).map_err(malformed)?;
        match wire_type {
            WireType::Varint => visit(tag, Value::Varint(decode_varint(&mut rest).map_err(malformed)?)),
            WireType::LengthDelimited => {
                let len = decode_varint(&mut rest).map_err(malformed)?;
                let len = usize::try_from(len).ok().filter(|&l| l <= rest.len()).ok_or_else(|| {
                    MalformedRecord(format!("field {tag} is {len} bytes long, {} are left", rest.len()))
                })?;
                let (value, after) = rest.split_at(len);
                visit(tag, Value::Bytes(value));
                rest = after;
            }
            other => skip_field(other, tag, &mut rest, DecodeContext::default()).map_err(malformed)?,
        }
    }
    Ok(())
}

impl StoredView {
    /// Finds the fields of `record`, a [`StoredMessage`] as the log holds it.
    pub fn parse(record: Bytes) -> Result<Self, MalformedRecord> {
        let base = record.as_ptr() as usize;
        let span = |value: &[u8]| {
            let start = value.as_ptr() as usize - base;
            start..start + value.len()
        };
        let mut view = Self::default();
        walk(&record, |tag, value| match (tag, value) {
            (field::PARTITION, Value::Varint(v)) => view.partition = v as u32,
            (field::MESSAGE_TYPE, Value::Varint(v)) => view.message_type = v as i32,
            (field::BORN_TIMESTAMP, Value::Varint(v)) => view.born_timestamp_ms = v as i64,
            (field::STORE_TIMESTAMP, Value::Varint(v)) => view.store_timestamp_ms = v as i64,
            (field::DELIVERY_TIMESTAMP, Value::Varint(v)) => view.delivery_timestamp_ms = v as i64,
            (field::TOPIC, Value::Bytes(b)) => view.topic = span(b),
            (field::MESSAGE_ID, Value::Bytes(b)) => view.message_id = span(b),
            (field::TAG, Value::Bytes(b)) => view.tag = span(b),
            (field::MESSAGE_GROUP, Value::Bytes(b)) => view.message_group = span(b),
            (field::BORN_HOST, Value::Bytes(b)) => view.born_host = span(b),
            (field::BODY, Value::Bytes(b)) => view.body = span(b),
            (field::BODY_MD5, Value::Bytes(b)) => view.body_md5 = span(b),
            (field::TRACE_CONTEXT, Value::Bytes(b)) => view.trace_context = span(b),
            _ => {}
        })?;
        view.record = record;
        Ok(view)
    }

    fn bytes(&self, range: &Range<usize>) -> &[u8] {
        &self.record[range.clone()]
    }

    /// Topic name.
    pub fn topic(&self) -> &[u8] {
        self.bytes(&self.topic)
    }

    /// The client's message id.
    pub fn message_id(&self) -> &[u8] {
        self.bytes(&self.message_id)
    }

    /// Tag; empty when none.
    pub fn tag(&self) -> &[u8] {
        self.bytes(&self.tag)
    }

    /// FIFO sharding key; empty when none.
    pub fn message_group(&self) -> &[u8] {
        self.bytes(&self.message_group)
    }

    /// Producer host.
    pub fn born_host(&self) -> &[u8] {
        self.bytes(&self.born_host)
    }

    /// MD5 of the body.
    pub fn body_md5(&self) -> &[u8] {
        self.bytes(&self.body_md5)
    }

    /// Client trace context; empty when none.
    pub fn trace_context(&self) -> &[u8] {
        self.bytes(&self.trace_context)
    }

    /// The body, sharing the record's memory.
    pub fn body(&self) -> Bytes {
        self.record.slice(self.body.clone())
    }

    /// Length of the body.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Each value of a repeated length-delimited field (`keys`, or the encoded entries of
    /// `user_properties`), in record order.
    fn each(&self, wanted: u32, mut f: impl FnMut(&[u8])) {
        // The record walked without an error in `parse`.
        let _ = walk(&self.record, |tag, value| {
            if let (true, Value::Bytes(b)) = (tag == wanted, value) {
                f(b);
            }
        });
    }

    /// Each business key.
    pub fn each_key(&self, f: impl FnMut(&[u8])) {
        self.each(field::KEYS, f);
    }

    /// Each user property as its encoded map entry (key field 1, value field 2, as in every
    /// protobuf `map<string, string>`).
    pub fn each_property_entry(&self, f: impl FnMut(&[u8])) {
        self.each(field::USER_PROPERTIES, f);
    }

    /// The whole message decoded, for what needs its fields as values (a SQL filter reads the
    /// properties).
    pub fn decode(&self) -> Result<StoredMessage, prost::DecodeError> {
        prost::Message::decode(self.record.clone())
    }
}

/// Arbitrary stored messages, for property tests of what reads records.
#[cfg(test)]
pub mod strategies {
    use proptest::prelude::*;

    use crate::storage::record::StoredMessage;

    /// Any stored message without a dead-letter origin: every field set or left empty (the
    /// delivery time often 0, as for most messages).
    pub fn stored_message() -> impl Strategy<Value = StoredMessage> {
        (
            ("[a-z]{0,8}", any::<u32>(), "[a-z0-9]{0,12}", "[a-z]{0,4}", prop::collection::vec("[a-z]{0,4}", 0..3)),
            (
                "[a-z]{0,4}",
                0i32..6,
                any::<i64>(),
                "[a-z.:0-9]{0,10}",
                any::<i64>(),
                prop_oneof![Just(0i64), any::<i64>()],
            ),
            (prop::collection::hash_map("[a-z]{0,4}", "[a-z]{0,4}", 0..3), prop::collection::vec(any::<u8>(), 0..64)),
            (prop::collection::vec(any::<u8>(), 0..17), "[a-z]{0,6}", "[a-z]{0,6}"),
        )
            .prop_map(
                |(
                    (topic, partition, id, tag, keys),
                    (group, ty, born, host, store, delivery),
                    (props, body),
                    (md5, trace, txn),
                )| {
                    StoredMessage {
                        topic,
                        partition,
                        message_id: id,
                        tag,
                        keys,
                        message_group: group,
                        message_type: ty,
                        born_timestamp_ms: born,
                        born_host: host,
                        store_timestamp_ms: store,
                        delivery_timestamp_ms: delivery,
                        user_properties: props,
                        body: body.into(),
                        body_md5: md5.into(),
                        trace_context: trace,
                        dead_letter: None,
                        transaction_id: txn,
                    }
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message as _;

    use super::strategies::stored_message;
    use super::*;

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    proptest! {
        /// The view reads every field as decoding the record does.
        #[test]
        fn reads_every_field_as_decoding_does(m in stored_message()) {
            let view = StoredView::parse(m.encode_to_vec().into()).unwrap();
            prop_assert_eq!(text(view.topic()), &m.topic);
            prop_assert_eq!(view.partition, m.partition);
            prop_assert_eq!(text(view.message_id()), &m.message_id);
            prop_assert_eq!(text(view.tag()), &m.tag);
            prop_assert_eq!(text(view.message_group()), &m.message_group);
            prop_assert_eq!(view.message_type, m.message_type);
            prop_assert_eq!(view.born_timestamp_ms, m.born_timestamp_ms);
            prop_assert_eq!(text(view.born_host()), &m.born_host);
            prop_assert_eq!(view.store_timestamp_ms, m.store_timestamp_ms);
            prop_assert_eq!(view.delivery_timestamp_ms, m.delivery_timestamp_ms);
            prop_assert_eq!(view.body(), m.body.clone());
            prop_assert_eq!(view.body_len(), m.body.len());
            prop_assert_eq!(view.body_md5(), &m.body_md5[..]);
            prop_assert_eq!(text(view.trace_context()), &m.trace_context);
            let mut keys = Vec::new();
            view.each_key(|k| keys.push(text(k).to_owned()));
            prop_assert_eq!(keys, m.keys.clone());
            let mut entries = 0;
            view.each_property_entry(|_| entries += 1);
            prop_assert_eq!(entries, m.user_properties.len());
            prop_assert_eq!(view.decode().unwrap(), m);
        }

        /// Cut or garbled records are refused or read, never a panic.
        #[test]
        fn damaged_records_never_panic(m in stored_message(), cut in any::<prop::sample::Index>(), noise in prop::collection::vec(any::<u8>(), 0..32)) {
            let mut bytes = m.encode_to_vec();
            bytes.truncate(cut.index(bytes.len() + 1));
            bytes.extend(noise);
            let _ = StoredView::parse(bytes.into());
        }
    }

    #[test]
    fn a_length_past_the_end_is_refused() {
        // Field 1 (topic), length-delimited, 9 bytes long, but 2 follow.
        let err = StoredView::parse(Bytes::from_static(&[0x0a, 9, b'a', b'b'])).unwrap_err();
        assert!(err.to_string().contains("field 1 is 9 bytes long, 2 are left"), "{err}");
    }
}
