//! The codec of every generated service and client: prost's, with a send's decoding buffer sized
//! from the send decoded before it.
//!
//! tonic decodes each call into a buffer it allocates per call (8 KiB by default) and grows by
//! reallocation, copying what it holds. A send of 16 messages of 1 KiB (about 17 KiB) arrives in
//! one or two DATA frames, and tonic reserves the whole message's length beyond what it already
//! holds, so the default buffer was copied twice into larger ones on every such send. A send's
//! buffer therefore starts at what the last send decoded on the same thread needed (twice its
//! length, which holds the message plus that reservation), between tonic's 8 KiB and 64 KiB.
//! Sized from the traffic instead of fixed: one message per request (what the SDKs send by
//! default) keeps 8 KiB per call in flight; a fixed 64 KiB doubled the broker's peak RSS with
//! 1,024 such calls in flight. Every other call keeps 8 KiB: their requests are small, and a
//! stream keeps its buffer while it is open (each SDK client holds a Telemetry stream).
//!
//! ```text
//!   send of 17 KiB, buffer 8 KiB:   put frame -> realloc 17 KiB; reserve 17 KiB -> realloc 34 KiB
//!   next send, buffer 35 KiB:       put frame, reserve: no reallocation
//! ```

use std::any::TypeId;
use std::cell::Cell;
use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};

use crate::rocketmq::v2::SendMessageRequest;

/// tonic's defaults: the buffer a call starts with, and how much a server stream gathers before
/// its task yields.
const DEFAULT_BUFFER_BYTES: usize = 8 << 10;
const YIELD_THRESHOLD_BYTES: usize = 32 << 10;

/// The most a send's buffer starts with, whatever the last send was: the cap on what a call in
/// flight holds before its data arrives.
const MAX_SEND_BUFFER_BYTES: usize = 64 << 10;

/// Room beyond twice the message: its 5-byte gRPC prefix (compression flag, length), with slack.
const PREFIX_BYTES: usize = 64;

thread_local! {
    /// Length of the last send decoded on this thread: a connection's sends are served on one
    /// thread and tend to be alike.
    static LAST_SEND_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// [`tonic_prost::ProstCodec`] whose decoder sizes a send's buffer (see the module).
#[derive(Debug, Clone)]
pub struct ProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new()
    }
}

/// Decodes `U` with prost; for a send, remembers its length and starts with a sized buffer.
#[derive(Debug)]
pub struct ProstDecoder<U> {
    prost: tonic_prost::ProstDecoder<U>,
    /// Whether `U` is a send's request.
    send: bool,
}

impl<U: 'static> ProstDecoder<U> {
    fn new() -> Self {
        let send = TypeId::of::<U>() == TypeId::of::<SendMessageRequest>();
        Self { prost: tonic_prost::ProstDecoder::default(), send }
    }
}

impl<U: Message + Default + 'static> Decoder for ProstDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if self.send {
            LAST_SEND_BYTES.set(src.remaining());
        }
        self.prost.decode(src)
    }

    fn buffer_settings(&self) -> BufferSettings {
        let start = if self.send { send_buffer_bytes(LAST_SEND_BYTES.get()) } else { DEFAULT_BUFFER_BYTES };
        BufferSettings::new(start, YIELD_THRESHOLD_BYTES)
    }
}

/// The buffer a send starts with after one of `last` bytes: room for a message as long and for
/// tonic's reservation of its length beyond what it holds.
fn send_buffer_bytes(last: usize) -> usize {
    (2 * last + PREFIX_BYTES).clamp(DEFAULT_BUFFER_BYTES, MAX_SEND_BUFFER_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_buffer_holds_twice_the_last_send_within_bounds() {
        assert_eq!(send_buffer_bytes(0), DEFAULT_BUFFER_BYTES, "small sends keep tonic's default");
        assert_eq!(send_buffer_bytes(1_100), DEFAULT_BUFFER_BYTES);
        assert_eq!(send_buffer_bytes(17_000), 34_064, "16 messages of 1 KiB");
        assert_eq!(send_buffer_bytes(1 << 20), MAX_SEND_BUFFER_BYTES, "large sends grow as before");
    }
}
