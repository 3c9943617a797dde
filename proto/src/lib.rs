//! Generated gRPC types for Weir.
//!
//! * [`weir::admin::v1`]: Weir's admin API (topics, offsets, storage, consumer lag).
//! * [`rocketmq::v2`]: the Apache RocketMQ 5 wire protocol (`apache.rocketmq.v2`), the messages and the
//!   `MessagingService` server trait and client that the official RocketMQ 5 SDKs talk to.
//!
//! Everything is generated at build time from this crate's own `.proto` files (`apache/rocketmq/v2/`)
//! with `protox` and `tonic-prost-build`; no system `protoc` is needed. `bytes` fields, notably
//! `Message.body`, are [`bytes::Bytes`], so a decoded body shares the request buffer instead of being
//! copied.
//!
//! Every service and client decodes with [`codec::ProstCodec`]: prost's, with a send's decoding
//! buffer sized from the sends before it, so a batch is not copied through tonic's reallocations.
//!
//! [`client_tls`] turns a broker address and an optional trust setting into a tonic endpoint;
//! [`signature`] signs requests for brokers that enforce access control. [`raw_codec`] carries message
//! bytes unchanged, for callers without generated types. [`receive_response`] is the one message
//! written by hand: its stream carries messages a broker encoded itself.
//!
//! [`FILE_DESCRIPTOR_SET`] holds the encoded descriptors of every compiled file (and the well-known
//! types they import), for gRPC server reflection.

pub mod client_tls;
pub mod codec;
pub mod raw_codec;
pub mod receive_response;
pub mod signature;

/// The Apache RocketMQ namespace.
pub mod rocketmq {
    /// `apache.rocketmq.v2`: messages, enums, and the `MessagingService` server and client.
    #[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
    pub mod v2 {
        tonic::include_proto!("apache.rocketmq.v2");

        pub use crate::receive_response::{EncodedMessage, ReceiveMessageResponse, receive_message_response};
    }
}

/// Weir's own APIs.
pub mod weir {
    /// Weir's admin API.
    pub mod admin {
        /// `weir.admin.v1`: topics, offsets, storage and consumer lag for weirctl and the operator.
        #[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
        pub mod v1 {
            tonic::include_proto!("weir.admin.v1");
        }
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of every `.proto` file in this crate, with its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));
