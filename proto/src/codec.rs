//! The gRPC codec of every generated service: prost encoding, with buffers sized for sends.
//!
//! tonic allocates an 8 KiB buffer per RPC and grows it by reallocation (copying what it holds)
//! when a message is larger. A batch of 16 messages of 1 KiB is about 17 KiB, so every batched send
//! was copied twice on its way in at the broker, and once more on its way out at a client. Send
//! requests therefore get buffers of [`SEND_BUFFER_BYTES`], held only while a send is in flight
//! (1,024 sends in flight on a connection: 48 MiB). Every other RPC keeps tonic's default, which
//! matters for streams that stay open for a client's lifetime (Telemetry): each keeps its buffers.

use std::any::TypeId;
use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::rocketmq::v2::SendMessageRequest;

/// Buffer for a send request: a batch of 16 messages of 1 KiB (about 17 KiB) is decoded without
/// growing it. tonic reserves a message's whole length on top of what it already holds of it (up
/// to an HTTP/2 frame, 16 KiB), so 32 KiB would not do.
pub const SEND_BUFFER_BYTES: usize = 48 << 10;

/// tonic's defaults (not exported): an 8 KiB buffer, and encoded stream messages gathered up to
/// 32 KiB before they are handed to HTTP/2.
const DEFAULT_BUFFER_BYTES: usize = 8 << 10;
const YIELD_THRESHOLD_BYTES: usize = 32 << 10;

/// [`ProstCodec`] with buffers sized per message type (see the module documentation).
#[derive(Debug, Clone)]
pub struct WeirCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WeirCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for WeirCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(buffer_bytes_for::<T>(), YIELD_THRESHOLD_BYTES))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(buffer_bytes_for::<U>(), YIELD_THRESHOLD_BYTES))
    }
}

/// The buffer an RPC gets for encoding or decoding messages of type `M`.
fn buffer_bytes_for<M: 'static>() -> usize {
    if TypeId::of::<M>() == TypeId::of::<SendMessageRequest>() { SEND_BUFFER_BYTES } else { DEFAULT_BUFFER_BYTES }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rocketmq::v2::{SendMessageResponse, TelemetryCommand};

    #[test]
    fn send_requests_get_the_large_buffer_and_everything_else_the_default() {
        assert_eq!(buffer_bytes_for::<SendMessageRequest>(), SEND_BUFFER_BYTES);
        assert_eq!(buffer_bytes_for::<SendMessageResponse>(), DEFAULT_BUFFER_BYTES);
        assert_eq!(buffer_bytes_for::<TelemetryCommand>(), DEFAULT_BUFFER_BYTES);
    }
}
