//! `rocketmq_rpc_latency` for the RPCs that carry messages, with the series of their successful
//! answers looked up once.
//!
//! Finding a labelled series hashes its three labels under the family's lock, and the response
//! code had to be formatted into a string first: about as much work as a one-message send's own
//! bookkeeping, on every request. A successful answer, nearly every one, now goes straight to its
//! series; other codes are looked up as before.

use std::time::Instant;

use prometheus::{Histogram, HistogramVec};
use weir_proto::rocketmq::v2::Code;

/// The RPCs whose handler latency is observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rpc {
    QueryRoute,
    SendMessage,
    ReceiveMessage,
    AckMessage,
    ChangeInvisibleDuration,
}

impl Rpc {
    const ALL: [Rpc; 5] =
        [Rpc::QueryRoute, Rpc::SendMessage, Rpc::ReceiveMessage, Rpc::AckMessage, Rpc::ChangeInvisibleDuration];

    /// The `request_code` label.
    fn label(self) -> &'static str {
        match self {
            Rpc::QueryRoute => "QueryRoute",
            Rpc::SendMessage => "SendMessage",
            Rpc::ReceiveMessage => "ReceiveMessage",
            Rpc::AckMessage => "AckMessage",
            Rpc::ChangeInvisibleDuration => "ChangeInvisibleDuration",
        }
    }
}

/// The family, and each RPC's series for `response_code` OK.
#[derive(Debug, Clone)]
pub(super) struct RpcLatency {
    family: HistogramVec,
    ok: [Histogram; Rpc::ALL.len()],
}

/// The `protocol_type` label.
const PROTOCOL: &str = "grpc";

impl RpcLatency {
    pub(super) fn new(family: &HistogramVec) -> Self {
        let ok_code = (Code::Ok as i32).to_string();
        let ok = Rpc::ALL.map(|rpc| family.with_label_values(&[PROTOCOL, rpc.label(), &ok_code]));
        Self { family: family.clone(), ok }
    }

    /// Observes a handler of `rpc` that started at `started` and answered `code`, in milliseconds.
    pub(super) fn observe(&self, rpc: Rpc, code: i32, started: Instant) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if code == Code::Ok as i32 {
            self.ok[rpc as usize].observe(ms);
        } else {
            self.family.with_label_values(&[PROTOCOL, rpc.label(), &code.to_string()]).observe(ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers land in the series of their RPC and code, OK or not.
    #[test]
    fn each_answer_is_counted_under_its_rpc_and_code() {
        let family = HistogramVec::new(
            prometheus::HistogramOpts::new("rpc_latency", "test"),
            &["protocol_type", "request_code", "response_code"],
        )
        .unwrap();
        let latency = RpcLatency::new(&family);
        let started = Instant::now();
        for rpc in Rpc::ALL {
            latency.observe(rpc, Code::Ok as i32, started);
        }
        latency.observe(Rpc::SendMessage, Code::Ok as i32, started);
        latency.observe(Rpc::AckMessage, Code::InvalidReceiptHandle as i32, started);
        let count =
            |rpc: &str, code: i32| family.with_label_values(&["grpc", rpc, &code.to_string()]).get_sample_count();
        let ok = Code::Ok as i32;
        assert_eq!(count("SendMessage", ok), 2);
        for rpc in ["QueryRoute", "ReceiveMessage", "AckMessage", "ChangeInvisibleDuration"] {
            assert_eq!(count(rpc, ok), 1, "{rpc}");
        }
        assert_eq!(count("AckMessage", Code::InvalidReceiptHandle as i32), 1);
        assert_eq!(count("SendMessage", Code::InvalidReceiptHandle as i32), 0);
    }
}
