//! What an appended record's body is made of: bytes its caller encoded, or a sent message that
//! is digested and encoded only on its way into the log.
//!
//! A sent message needs the MD5 of its body (see `crate::digest`) before it can be encoded, and
//! MD5 is fast only when many bodies are hashed together, one SIMD lane each. A request of one
//! message (what the RocketMQ SDKs send by default) hashed alone used one lane of sixteen. Left
//! to the write, the digests of every message a serving thread stages in one turn are computed
//! together, and the record is encoded straight into the group's buffer instead of into a buffer
//! of its own first:
//!
//! ```text
//!  send ──► RecordBody::sent(message)            digest placeholder, encoded length known
//!  turn ends (staging) ──► digest_sent(turn)     every staged body hashed at once
//!  group commit ──► write_into(group buffer)      encoded in place: one copy of the body
//! ```

use bytes::Bytes;
use prost::Message as _;

use super::record::StoredMessage;

/// Stands in for a sent message's digest until [`digest_sent`] computes it: the same length, so
/// the record's encoded length does not change.
const UNSET_DIGEST: [u8; 16] = [0; 16];

/// The body of an appended record.
#[derive(Debug)]
pub enum RecordBody {
    /// Encoded by its caller.
    Encoded(Vec<u8>),
    /// A sent message, digested by [`digest_sent`] before it is queued and encoded by the write.
    Sent {
        /// Boxed: most records (acknowledgements) are small.
        message: Box<StoredMessage>,
        /// Its encoded length, digest included.
        len: usize,
    },
}

impl RecordBody {
    /// A sent message whose body digest is still to be computed.
    pub fn sent(mut message: StoredMessage) -> Self {
        message.body_md5 = Bytes::from_static(&UNSET_DIGEST);
        let len = message.encoded_len();
        Self::Sent { message: Box::new(message), len }
    }

    /// Length of the encoded body.
    pub fn len(&self) -> usize {
        match self {
            Self::Encoded(bytes) => bytes.len(),
            Self::Sent { len, .. } => *len,
        }
    }

    /// Whether the encoded body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the encoded body ([`Self::len`] bytes) to `out`.
    pub fn write_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Encoded(bytes) => out.extend_from_slice(bytes),
            // Its length was computed when it was made (`encode` would compute it again): a
            // `Vec` grows as needed, and the frame checks that `len` bytes were written.
            Self::Sent { message, .. } => message.encode_raw(out),
        }
    }

    /// The encoded body as bytes of its own; `written` is what [`Self::write_into`] wrote.
    pub fn into_bytes(self, written: &[u8]) -> Vec<u8> {
        match self {
            Self::Encoded(bytes) => bytes,
            Self::Sent { .. } => written.to_vec(),
        }
    }
}

impl From<Vec<u8>> for RecordBody {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Encoded(bytes)
    }
}

/// Computes the body digests of the sent messages among `bodies`, all in one pass.
pub fn digest_sent<'a>(bodies: impl IntoIterator<Item = &'a mut RecordBody>) {
    let mut sent: Vec<&mut StoredMessage> = bodies
        .into_iter()
        .filter_map(|body| match body {
            RecordBody::Sent { message, .. } => Some(&mut **message),
            RecordBody::Encoded(_) => None,
        })
        .collect();
    if sent.is_empty() {
        return;
    }
    let digests = {
        let payloads: Vec<&[u8]> = sent.iter().map(|m| m.body.as_ref()).collect();
        crate::digest::md5_of_each(&payloads)
    };
    for (message, digest) in sent.iter_mut().zip(digests) {
        message.body_md5 = Bytes::copy_from_slice(&digest);
    }
}

#[cfg(test)]
mod tests {
    use md5::{Digest, Md5};
    use proptest::prelude::*;

    use super::*;
    use crate::storage::stored_view::strategies::stored_message;

    proptest! {
        /// Sent messages among encoded records come out, after one `digest_sent`, as their encoding
        /// with the MD5 of each body, at the length announced beforehand; encoded records as they were.
        #[test]
        fn sent_messages_encode_with_their_digests(
            messages in prop::collection::vec((stored_message(), any::<bool>()), 0..24)
        ) {
            let mut bodies: Vec<RecordBody> = messages
                .iter()
                .map(|(m, sent)| if *sent { RecordBody::sent(m.clone()) } else { m.encode_to_vec().into() })
                .collect();
            let announced: Vec<usize> = bodies.iter().map(RecordBody::len).collect();
            digest_sent(bodies.iter_mut());
            for (((m, sent), body), len) in messages.iter().zip(&bodies).zip(announced) {
                let mut out = vec![7];
                body.write_into(&mut out);
                prop_assert_eq!(out.len() - 1, len);
                let expected = if *sent {
                    StoredMessage { body_md5: Bytes::copy_from_slice(&Md5::digest(&m.body)), ..m.clone() }
                } else {
                    m.clone()
                };
                prop_assert_eq!(StoredMessage::decode(&out[1..]).unwrap(), expected);
            }
        }
    }
}
