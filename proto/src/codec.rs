//! The codec of every generated service and client: prost's, with a decoding buffer that holds a
//! batched send.
//!
//! tonic decodes each call into a buffer it allocates per call (8 KiB by default) and grows by
//! reallocation, copying what it holds. A send of 16 messages of 1 KiB (about 17 KiB) arrives as
//! a 16 KiB DATA frame and the rest, and tonic reserves the whole message's length beyond what
//! it already holds, so the default buffer was copied twice into larger ones on every such send
//! (8 KiB, then 16 KiB). A send's buffer therefore starts at 64 KiB, which holds the first frame
//! plus that reservation. Every other call keeps tonic's 8 KiB: their requests are small, and a
//! stream keeps its buffer while it is open (each SDK client holds a Telemetry stream).

use std::any::TypeId;
use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};

use crate::rocketmq::v2::SendMessageRequest;

/// Bytes a send's decoding buffer starts with: a 16 KiB DATA frame and a message of up to
/// 48 KiB reserved behind it.
const SEND_DECODE_BUFFER_BYTES: usize = 64 << 10;

/// tonic's default: how much a server stream gathers before its task yields.
const YIELD_THRESHOLD_BYTES: usize = 32 << 10;

/// [`tonic_prost::ProstCodec`] whose decoder gives a send [`SEND_DECODE_BUFFER_BYTES`].
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
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(decode_buffer::<U>())
    }
}

/// How a call decoding `U` allocates its buffer.
fn decode_buffer<U: 'static>() -> BufferSettings {
    if TypeId::of::<U>() == TypeId::of::<SendMessageRequest>() {
        BufferSettings::new(SEND_DECODE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    } else {
        BufferSettings::default()
    }
}
