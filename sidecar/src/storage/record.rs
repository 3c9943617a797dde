//! What frame bodies contain. Bodies are protobuf (prost) so fields can be added without a format
//! version bump; the frame header (see [`crate::storage::frame`]) carries everything the writer and
//! recovery need without decoding a body except the partition, which recovery reads from here.

use bytes::Bytes;
use prost::Message as _;

/// The message types RocketMQ 5 knows (same numbers as `apache.rocketmq.v2.MessageType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, prost::Enumeration)]
#[repr(i32)]
pub enum StoredMessageType {
    /// Not set (never written by this broker).
    Unspecified = 0,
    /// A plain message.
    Normal = 1,
    /// Ordered within its message group.
    Fifo = 2,
    /// Delivered at a given time.
    Delay = 3,
    /// Half message of a transaction.
    Transaction = 4,
}

/// A message as stored in the commit log (frame kind `Message`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredMessage {
    /// Topic name (without namespace decoration).
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Partition (RocketMQ queue id) within the topic.
    #[prost(uint32, tag = "2")]
    pub partition: u32,
    /// The client-generated message id, echoed back on delivery.
    #[prost(string, tag = "3")]
    pub message_id: String,
    /// Tag used by tag filters; empty when none.
    #[prost(string, tag = "4")]
    pub tag: String,
    /// Business keys, for lookup.
    #[prost(string, repeated, tag = "5")]
    pub keys: Vec<String>,
    /// FIFO sharding key; empty when none.
    #[prost(string, tag = "6")]
    pub message_group: String,
    /// Message type.
    #[prost(enumeration = "StoredMessageType", tag = "7")]
    pub message_type: i32,
    /// When the producer created it (ms since epoch).
    #[prost(int64, tag = "8")]
    pub born_timestamp_ms: i64,
    /// Producer host as reported by the client.
    #[prost(string, tag = "9")]
    pub born_host: String,
    /// When the broker stored it (ms since epoch).
    #[prost(int64, tag = "10")]
    pub store_timestamp_ms: i64,
    /// Requested delivery time (ms since epoch); 0 when none.
    #[prost(int64, tag = "11")]
    pub delivery_timestamp_ms: i64,
    /// Application properties.
    #[prost(map = "string, string", tag = "12")]
    pub user_properties: std::collections::HashMap<String, String>,
    /// Payload.
    #[prost(bytes = "bytes", tag = "13")]
    pub body: Bytes,
    /// MD5 of the body, computed once at send time and sent as the body digest on every delivery.
    #[prost(bytes = "bytes", tag = "14")]
    pub body_md5: Bytes,
    /// Client trace context, passed through.
    #[prost(string, tag = "15")]
    pub trace_context: String,
    /// For a dead-lettered copy: where the original was and why it was moved.
    #[prost(message, optional, tag = "16")]
    pub dead_letter: Option<DeadLetterOrigin>,
    /// For a transactional message: its transaction id.
    #[prost(string, tag = "17")]
    pub transaction_id: String,
}

/// The protobuf key of [`StoredMessage::body_md5`]: field 14, length-delimited.
const BODY_MD5_KEY: u8 = (14 << 3) | 2;

/// Length of an MD5 digest.
pub const DIGEST_LEN: usize = 16;

impl StoredMessage {
    /// Encodes the message with its body digest left as zeros, for the writer to fill in once it
    /// hashes the bodies of a whole group at once (see [`PendingDigest`]); returns the encoding
    /// and where the digest's bytes are in it. Once they are written there, the encoding is
    /// exactly what `encode_to_vec` gives with `body_md5` set: protobuf fields are encoded in
    /// field order, so the message is the fields before the digest, the digest field itself
    /// (key, length 16, digest) and the fields after it.
    pub fn encode_with_digest_slot(&mut self) -> (Vec<u8>, usize) {
        let after = StoredMessage {
            trace_context: std::mem::take(&mut self.trace_context),
            dead_letter: self.dead_letter.take(),
            transaction_id: std::mem::take(&mut self.transaction_id),
            ..Default::default()
        };
        let digest = std::mem::take(&mut self.body_md5);
        let mut out = Vec::with_capacity(self.encoded_len() + 2 + DIGEST_LEN + after.encoded_len());
        self.encode(&mut out).expect("a Vec grows as needed");
        out.extend_from_slice(&[BODY_MD5_KEY, DIGEST_LEN as u8]);
        let at = out.len();
        out.extend_from_slice(&[0; DIGEST_LEN]);
        after.encode(&mut out).expect("a Vec grows as needed");
        self.body_md5 = digest;
        self.trace_context = after.trace_context;
        self.dead_letter = after.dead_letter;
        self.transaction_id = after.transaction_id;
        (out, at)
    }
}

/// A body digest the writer computes: the MD5 of `body`, to be written at `at` in the encoded
/// record. A send of one message at a time would otherwise hash its lone body on its own (about
/// 1.1 µs per KiB, scalar), where the writer's group hashes many bodies in one SIMD pass (80-160
/// ns each).
#[derive(Debug, Clone)]
pub struct PendingDigest {
    /// Where the digest goes in the encoded record.
    pub at: usize,
    /// The message body it is the digest of.
    pub body: Bytes,
}

/// Where a dead-lettered message came from, so it can be handed back to its group.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeadLetterOrigin {
    /// Consumer group that gave up on it.
    #[prost(string, tag = "1")]
    pub group: String,
    /// Original topic.
    #[prost(string, tag = "2")]
    pub topic: String,
    /// Original partition.
    #[prost(uint32, tag = "3")]
    pub partition: u32,
    /// Original queue offset.
    #[prost(uint64, tag = "4")]
    pub offset: u64,
    /// Deliveries made before it was moved.
    #[prost(uint32, tag = "5")]
    pub attempts: u32,
    /// When it was moved (ms since the epoch).
    #[prost(int64, tag = "6")]
    pub moved_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// With the digest written into its slot, the encoding is byte for byte the ordinary one
        /// with `body_md5` set, whatever the other fields hold; the message is left as it was.
        #[test]
        fn the_digest_slot_gives_the_ordinary_encoding(
            topic in ".{0,20}",
            message_id in "[A-F0-9]{0,32}",
            keys in proptest::collection::vec(".{0,8}", 0..3),
            properties in proptest::collection::hash_map(".{0,6}", ".{0,6}", 0..3),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            digest in any::<[u8; DIGEST_LEN]>(),
            trace_context in ".{0,10}",
            dead_letter in proptest::option::of((".{0,8}", any::<u32>())),
            transaction_id in ".{0,10}",
            timestamps in any::<(i64, i64, i64)>(),
        ) {
            let mut m = StoredMessage {
                topic,
                partition: 3,
                message_id,
                keys,
                message_type: StoredMessageType::Normal as i32,
                born_timestamp_ms: timestamps.0,
                store_timestamp_ms: timestamps.1,
                delivery_timestamp_ms: timestamps.2,
                user_properties: properties,
                body: Bytes::from(body),
                trace_context,
                dead_letter: dead_letter.map(|(group, attempts)| DeadLetterOrigin { group, attempts, ..Default::default() }),
                transaction_id,
                ..Default::default()
            };
            let before = m.clone();
            let (mut slotted, at) = m.encode_with_digest_slot();
            prop_assert_eq!(&m, &before);
            slotted[at..at + DIGEST_LEN].copy_from_slice(&digest);
            m.body_md5 = Bytes::copy_from_slice(&digest);
            prop_assert_eq!(slotted, m.encode_to_vec());
        }
    }
}
