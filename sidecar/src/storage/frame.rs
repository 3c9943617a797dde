//! Record framing of the commit log.
//!
//! Every record in a segment is one frame. Frames start on 8-byte boundaries so that recovery can
//! resynchronise after a damaged frame by probing aligned positions.
//!
//! ```text
//!  0        4        8        12   13   14       16                 24                 32
//!  +--------+--------+--------+----+----+--------+------------------+------------------+-----------------+-----+
//!  | magic  | length | crc32c |kind|flag| spare  | position (u64)   | sequence (u64)   | body            | pad |
//!  | "WEIR" |  u32   |  u32   | u8 | u8 |  u16   | of this frame in | queue offset for | length-32 bytes | 0-7 |
//!  |        |        |        |    |    |        | the commit log   | messages, else 0 |                 |     |
//!  +--------+--------+--------+----+----+--------+------------------+------------------+-----------------+-----+
//!  all integers little endian; `length` counts header + body (not the padding);
//!  crc32c covers bytes 12..length (kind, flags, spare, position, sequence, body).
//! ```
//!
//! Why these fields:
//! - a non-zero magic and a rejected length of 0 mean zero-filled space never decodes as a record;
//! - `position` repeats where the frame was written, so a frame found at the wrong place (a stale or
//!   misdirected write) is rejected even though its CRC is valid;
//! - the CRC covers the position and sequence, so offsets cannot be silently damaged.

use crate::storage::StorageError;

/// Marks the start of a frame ("WEIR" read as a little-endian u32).
pub const MAGIC: u32 = u32::from_le_bytes(*b"WEIR");
/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 32;
/// Frames start at multiples of this.
pub const ALIGN: u64 = 8;

/// What a frame holds. Stored as one byte; unknown kinds are rejected on read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// A message of a partition; `sequence` is its queue offset.
    Message = 1,
    /// Consumer progress: acknowledgements of one (group, partition).
    Ack = 2,
    /// A delayed message waiting for its delivery time (not in any partition yet).
    Scheduled = 3,
    /// Delayed messages that were delivered into their partitions.
    TimerFired = 4,
    /// The half message of a transaction (not in any partition until committed).
    Half = 5,
    /// The end of a transaction (commit or rollback) or a check-back attempt.
    TxnOutcome = 6,
}

impl RecordKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Message),
            2 => Some(Self::Ack),
            3 => Some(Self::Scheduled),
            4 => Some(Self::TimerFired),
            5 => Some(Self::Half),
            6 => Some(Self::TxnOutcome),
            _ => None,
        }
    }
}

/// The decoded fixed part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Header plus body, without padding.
    pub length: u32,
    /// What the body is.
    pub kind: RecordKind,
    /// Where the frame starts in the commit log.
    pub position: u64,
    /// The queue offset of a message; 0 for other kinds.
    pub sequence: u64,
}

impl FrameHeader {
    /// Bytes the frame occupies in the segment, padding included.
    pub fn padded_len(&self) -> u64 {
        padded(self.length as u64)
    }
}

/// Rounds a frame length up to the alignment.
pub fn padded(len: u64) -> u64 {
    len.div_ceil(ALIGN) * ALIGN
}

/// Appends one frame (header, body, zero padding) to `out`.
///
/// The CRC is computed here, after `position` and `sequence` are known.
pub fn encode_into(out: &mut Vec<u8>, kind: RecordKind, position: u64, sequence: u64, body: &[u8]) {
    encode_with(out, kind, position, sequence, body.len(), |out| out.extend_from_slice(body));
}

/// Appends one frame whose body `write_body` writes straight into `out`: exactly `body_len` bytes,
/// known beforehand (a record encoded in place, with no buffer of its own to copy from).
pub fn encode_with(
    out: &mut Vec<u8>,
    kind: RecordKind,
    position: u64,
    sequence: u64,
    body_len: usize,
    write_body: impl FnOnce(&mut Vec<u8>),
) {
    let length = HEADER_LEN + body_len;
    let start = out.len();
    out.reserve(padded(length as u64) as usize);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(length as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled below
    out.push(kind as u8);
    out.push(0); // flags
    out.extend_from_slice(&[0; 2]); // spare
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    write_body(out);
    debug_assert_eq!(out.len() - start, length, "the body is the length announced");
    let crc = crc32c::crc32c(&out[start + 12..start + length]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    let pad = padded(length as u64) as usize - length;
    out.extend(std::iter::repeat_n(0u8, pad));
}

/// Why bytes at a position are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header remain.
    Truncated,
    /// All-zero header: unwritten space.
    Zero,
    /// The magic number is wrong.
    BadMagic,
    /// The length is below the header size, above the limit, or past the available bytes.
    BadLength(u32),
    /// The CRC does not match.
    BadChecksum,
    /// The frame says it belongs at another position.
    Misplaced { expected: u64, found: u64 },
    /// Unknown record kind.
    BadKind(u8),
}

/// Checks the frame at the start of `buf`, which was read from log position `position`.
///
/// `max_len` bounds the length field before anything is trusted, so a damaged length can never make
/// the caller read or allocate more than a legitimate frame could need.
pub fn decode_header(buf: &[u8], position: u64, max_len: u32) -> Result<FrameHeader, FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    let magic = u32_at(0);
    if magic != MAGIC {
        if buf[..HEADER_LEN].iter().all(|b| *b == 0) {
            return Err(FrameError::Zero);
        }
        return Err(FrameError::BadMagic);
    }
    let length = u32_at(4);
    if (length as usize) < HEADER_LEN || length > max_len {
        return Err(FrameError::BadLength(length));
    }
    if buf.len() < length as usize {
        return Err(FrameError::Truncated);
    }
    let crc = u32_at(8);
    if crc32c::crc32c(&buf[12..length as usize]) != crc {
        return Err(FrameError::BadChecksum);
    }
    let kind = RecordKind::from_u8(buf[12]).ok_or(FrameError::BadKind(buf[12]))?;
    let found = u64_at(16);
    if found != position {
        return Err(FrameError::Misplaced { expected: position, found });
    }
    Ok(FrameHeader { length, kind, position, sequence: u64_at(24) })
}

/// Reads just the length field, for callers that must size a read before validating.
pub fn peek_length(buf: &[u8]) -> Option<u32> {
    (buf.len() >= 8 && buf[0..4] == MAGIC.to_le_bytes())
        .then(|| u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")))
}

impl From<FrameError> for StorageError {
    fn from(e: FrameError) -> Self {
        StorageError::Corrupt { position: None, reason: format!("{e:?}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: RecordKind, pos: u64, seq: u64, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_into(&mut v, kind, pos, seq, body);
        v
    }

    #[test]
    fn round_trip_and_alignment() {
        let f = frame(RecordKind::Message, 4096, 7, b"hello");
        assert_eq!(f.len() % ALIGN as usize, 0);
        let h = decode_header(&f, 4096, 1 << 20).unwrap();
        assert_eq!(h, FrameHeader { length: 37, kind: RecordKind::Message, position: 4096, sequence: 7 });
        assert_eq!(h.padded_len(), 40);
        assert_eq!(&f[HEADER_LEN..h.length as usize], b"hello");
    }

    #[test]
    fn zeros_are_never_a_frame() {
        assert_eq!(decode_header(&[0; 64], 0, 1 << 20), Err(FrameError::Zero));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let f = frame(RecordKind::Ack, 64, 0, b"some consumer progress");
        for byte in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[byte] ^= 1 << bit;
                let len = u32::from_le_bytes(f[4..8].try_into().unwrap()) as usize;
                if byte >= len {
                    continue; // padding is not covered, and not needed
                }
                assert!(decode_header(&g, 64, 1 << 20).is_err(), "flip at byte {byte} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn misplaced_frame_is_rejected() {
        let f = frame(RecordKind::Message, 128, 1, b"x");
        assert_eq!(decode_header(&f, 256, 1 << 20), Err(FrameError::Misplaced { expected: 256, found: 128 }));
    }

    #[test]
    fn oversized_length_is_rejected_before_reading() {
        let mut f = frame(RecordKind::Message, 0, 1, b"x");
        f[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_header(&f, 0, 1 << 20), Err(FrameError::BadLength(u32::MAX)));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Whatever the bytes, decoding answers (a frame or an error) without panicking.
            #[test]
            fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..256), position in any::<u64>()) {
                let _ = decode_header(&buf, position, 1 << 20);
                let _ = peek_length(&buf);
            }

            /// Any single flipped bit in a valid frame is detected, never decoded as valid data.
            #[test]
            fn every_bit_flip_is_detected(body in proptest::collection::vec(any::<u8>(), 0..200), bit in any::<usize>(), position in 0u64..1 << 40) {
                let mut f = Vec::new();
                encode_into(&mut f, RecordKind::Message, position, 1, &body);
                let length = decode_header(&f, position, 1 << 20).expect("valid").length as usize;
                let bit = bit % (length * 8);
                f[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(decode_header(&f, position, 1 << 20).is_err());
            }
        }
    }
}
