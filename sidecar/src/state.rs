//! The broker's state derived from log records other than messages: consumer progress, the timer
//! index of delayed messages and the table of open transactions. The storage engine applies records
//! here in log order and snapshots it at checkpoints.

use std::sync::Arc;

use prost::Message as _;

use crate::consume::Consumers;
use crate::delay::{Due, FiredRecord, Timer};
use crate::storage::frame::{HEADER_LEN, RecordKind};
use crate::storage::{Partition, StateMachine};
use crate::txn::Transactions;

/// The delivery time of a scheduled message, decoded from its `Scheduled` record.
#[derive(Clone, PartialEq, prost::Message)]
struct ScheduledRouting {
    #[prost(int64, tag = "11")]
    delivery_timestamp_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Snapshot {
    #[prost(bytes = "vec", tag = "1")]
    consumers: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    timer: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    transactions: Vec<u8>,
}

/// Everything the log's state records build.
#[derive(Debug)]
pub struct BrokerState {
    /// Consumer progress.
    pub consumers: Arc<Consumers>,
    /// Delayed messages.
    pub timer: Arc<Timer>,
    /// Open transactions.
    pub transactions: Arc<Transactions>,
}

impl StateMachine for BrokerState {
    fn apply(&self, kind: RecordKind, position: u64, body: &[u8]) {
        let length = (HEADER_LEN + body.len()) as u32;
        match kind {
            RecordKind::Ack => self.consumers.apply(kind, position, body),
            RecordKind::Scheduled => match ScheduledRouting::decode(body) {
                Ok(r) => {
                    let due = Due { due_ms: r.delivery_timestamp_ms.max(0) as u64, position, length };
                    if let Err(e) = self.timer.schedule(due) {
                        tracing::error!(error = %e, position, "could not index a delayed message; it fires after the next restart");
                    }
                }
                Err(e) => tracing::error!(error = %e, position, "undecodable scheduled message skipped"),
            },
            RecordKind::TimerFired => match FiredRecord::decode(body) {
                Ok(r) => self.timer.fired(&r),
                Err(e) => tracing::error!(error = %e, "undecodable timer record skipped"),
            },
            RecordKind::Half => self.transactions.half(position, length, body),
            RecordKind::TxnOutcome => self.transactions.outcome(body),
            RecordKind::Message => {}
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        if let Err(e) = self.timer.sync() {
            tracing::error!(error = %e, "timer index sync failed; it is rebuilt from the log after a crash");
        }
        Snapshot {
            consumers: self.consumers.snapshot(),
            timer: self.timer.snapshot(),
            transactions: self.transactions.snapshot(),
        }
        .encode_to_vec()
    }

    fn restore(&self, bytes: &[u8]) -> Result<(), String> {
        let s = Snapshot::decode(bytes).map_err(|e| format!("state snapshot does not decode: {e}"))?;
        self.consumers.restore(&s.consumers)?;
        self.timer.restore(&s.timer)?;
        self.transactions.restore(&s.transactions)
    }

    fn replayed_message(&self, _partition: &Partition, _queue_offset: u64, _body: &[u8]) {}
}
