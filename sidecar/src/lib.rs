//! The Weir broker library: storage engine, RocketMQ 5 gRPC service, consumer state and metrics.

pub mod consume;
pub mod storage;
