//! The Weir broker library: storage engine, RocketMQ 5 gRPC service, consumer state and metrics.

pub mod acl;
pub mod broker;
pub mod catalog;
pub mod clients;
pub mod cluster;
pub mod consume;
pub mod delay;
pub mod digest;
pub mod error;
pub mod grpc;
mod lock;
pub mod metrics;
pub mod server;
pub mod standalone;
pub mod state;
pub mod storage;
pub mod tls;
pub mod txn;
