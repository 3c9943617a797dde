//! What frame bodies contain. Bodies are protobuf (prost) so fields can be added without a format
//! version bump; the frame header (see [`crate::storage::frame`]) carries everything the writer and
//! recovery need without decoding a body except the partition, which recovery reads from here.

use bytes::Bytes;

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
