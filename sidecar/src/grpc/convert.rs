//! Translation between RocketMQ wire messages and the broker's own types.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weir_proto::rocketmq::v2 as pb;

use crate::broker::IncomingMessage;
use crate::catalog::MessageType;
use crate::error::BrokerError;
use crate::storage::record::{StoredMessage, StoredMessageType};

/// A wire timestamp in ms since the epoch.
pub fn timestamp_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos) / 1_000_000)
}

/// A wire timestamp for ms since the epoch.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// The current time on the wire.
pub fn now() -> prost_types::Timestamp {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    timestamp(ms)
}

/// A wire duration as a std duration; negative values are an error.
pub fn duration(d: &prost_types::Duration) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A std duration on the wire.
pub fn wire_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// The topic or group name of a resource (namespaces are not supported and ignored).
pub fn name(r: &Option<pb::Resource>) -> &str {
    r.as_ref().map(|r| r.name.as_str()).unwrap_or("")
}

fn message_type(t: i32) -> Result<Option<MessageType>, BrokerError> {
    Ok(match pb::MessageType::try_from(t) {
        Ok(pb::MessageType::Unspecified) => None,
        Ok(pb::MessageType::Normal) => Some(MessageType::Normal),
        Ok(pb::MessageType::Fifo) => Some(MessageType::Fifo),
        Ok(pb::MessageType::Delay) => Some(MessageType::Delay),
        Ok(pb::MessageType::Transaction) => Some(MessageType::Transaction),
        _ => return Err(BrokerError::MessageTypeConflict(format!("message type {t} is not supported by this broker"))),
    })
}

/// The wire enum for a stored message type.
pub fn wire_message_type(t: i32) -> pb::MessageType {
    match StoredMessageType::try_from(t) {
        Ok(StoredMessageType::Fifo) => pb::MessageType::Fifo,
        Ok(StoredMessageType::Delay) => pb::MessageType::Delay,
        Ok(StoredMessageType::Transaction) => pb::MessageType::Transaction,
        _ => pb::MessageType::Normal,
    }
}

/// The wire enum for a topic's message type.
pub fn wire_topic_type(t: MessageType) -> pb::MessageType {
    match t {
        MessageType::Normal => pb::MessageType::Normal,
        MessageType::Fifo => pb::MessageType::Fifo,
        MessageType::Delay => pb::MessageType::Delay,
        MessageType::Transaction => pb::MessageType::Transaction,
    }
}

/// A producer's message, validated for what only the wire format can get wrong.
pub fn incoming(m: pb::Message, max_body: usize) -> Result<IncomingMessage, BrokerError> {
    let sys = m.system_properties.ok_or_else(|| BrokerError::BadRequest("message has no system_properties".into()))?;
    let body = match pb::Encoding::try_from(sys.body_encoding) {
        Ok(pb::Encoding::Gzip) => gunzip(&m.body, max_body)?,
        Ok(pb::Encoding::Identity) | Ok(pb::Encoding::Unspecified) => m.body,
        Err(_) => return Err(BrokerError::BadRequest(format!("unknown body encoding {}", sys.body_encoding))),
    };
    Ok(IncomingMessage {
        topic: m.topic.map(|r| r.name).unwrap_or_default(),
        message_id: sys.message_id,
        message_type: message_type(sys.message_type)?,
        tag: sys.tag,
        keys: sys.keys,
        message_group: sys.message_group,
        delivery_timestamp_ms: sys.delivery_timestamp.as_ref().map(timestamp_ms),
        born_timestamp_ms: sys.born_timestamp.as_ref().map(timestamp_ms).unwrap_or(0),
        born_host: sys.born_host,
        user_properties: m.user_properties,
        body,
        partition_hint: u32::try_from(sys.queue_id).ok(),
        trace_context: sys.trace_context.unwrap_or_default(),
    })
}

/// Decompresses a GZIP body, refusing to inflate past the body limit (a zip bomb stays small).
fn gunzip(body: &[u8], max: usize) -> Result<bytes::Bytes, BrokerError> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(body).take(max as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| BrokerError::BadRequest(format!("GZIP body does not decompress: {e}")))?;
    if out.len() > max {
        return Err(BrokerError::BodyTooLarge { len: out.len(), max });
    }
    Ok(out.into())
}

/// A stored message on the wire, without a lease: what a check-back command shows the producer.
/// Deliveries to consumers are encoded from the record instead (`grpc::delivery`), with the same
/// fields and a lease's.
pub fn stored_to_wire(m: StoredMessage, store_host: &str) -> pb::Message {
    let sys = pb::SystemProperties {
        tag: (!m.tag.is_empty()).then_some(m.tag),
        keys: m.keys,
        message_id: m.message_id,
        body_digest: Some(pb::Digest {
            r#type: pb::DigestType::Md5 as i32,
            checksum: const_hex::encode_upper(&m.body_md5),
        }),
        body_encoding: pb::Encoding::Identity as i32,
        message_type: wire_message_type(m.message_type) as i32,
        born_timestamp: Some(timestamp(m.born_timestamp_ms)),
        born_host: m.born_host,
        store_timestamp: Some(timestamp(m.store_timestamp_ms)),
        store_host: store_host.to_owned(),
        delivery_timestamp: (m.delivery_timestamp_ms > 0).then(|| timestamp(m.delivery_timestamp_ms)),
        queue_id: m.partition as i32,
        message_group: (!m.message_group.is_empty()).then_some(m.message_group),
        trace_context: (!m.trace_context.is_empty()).then_some(m.trace_context),
        ..Default::default()
    };
    pb::Message {
        topic: Some(pb::Resource { resource_namespace: String::new(), name: m.topic }),
        user_properties: m.user_properties,
        system_properties: Some(sys),
        body: m.body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(timestamp_ms(&timestamp(ms)), ms);
        }
    }

    /// The clients verify a body against its digest: MD5, upper-case hex (deliveries, encoded
    /// elsewhere, are checked against this).
    #[test]
    fn a_stored_message_on_the_wire_carries_the_md5_of_its_body_in_upper_case_hex() {
        let body = b"abc";
        let stored = StoredMessage {
            body: bytes::Bytes::from_static(body),
            body_md5: bytes::Bytes::copy_from_slice(&crate::digest::md5_of_each(&[body])[0]),
            ..Default::default()
        };
        let digest = stored_to_wire(stored, "host").system_properties.unwrap().body_digest.unwrap();
        assert_eq!(digest.r#type, pb::DigestType::Md5 as i32);
        assert_eq!(digest.checksum, "900150983CD24FB0D6963F7D28E17F72");
    }

    #[test]
    fn gzip_bomb_is_refused() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 1 << 20]).unwrap();
        let small = enc.finish().unwrap();
        assert!(matches!(gunzip(&small, 1000), Err(BrokerError::BodyTooLarge { .. })));
        assert_eq!(gunzip(&small, 2 << 20).unwrap().len(), 1 << 20);
    }
}
