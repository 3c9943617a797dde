//! Transactions: `EndTransaction` (commit, rollback, unknown) and check-backs of orphaned half
//! messages through the Telemetry stream of a live producer that declared the topic.

use super::*;
use crate::clients::ServerCommand;
use crate::txn::{Outcome, OutcomeRecord, Pending};

/// A half message is first checked back this long after it was stored (RocketMQ's transaction
/// timeout), or after the topic's check interval if that is shorter.
const FIRST_CHECK_MS: i64 = 6_000;

/// How a producer resolved a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Deliver the message.
    Commit,
    /// Discard it.
    Rollback,
    /// Not decided yet: keep it and check back later.
    Unknown,
}

impl Broker {
    /// Ends (or keeps open, for `Unknown`) the transaction `transaction_id` of `message_id`.
    pub async fn end_transaction(
        &self,
        topic: &str,
        message_id: &str,
        transaction_id: &str,
        resolution: Resolution,
    ) -> Result<(), BrokerError> {
        let Some(pending) = self.transactions.get(transaction_id) else {
            return match self.transactions.resolved(transaction_id) {
                // A retried EndTransaction after it took effect: same answer again.
                Some(Outcome::Commit) if resolution == Resolution::Commit => Ok(()),
                Some(Outcome::Rollback) if resolution != Resolution::Commit => Ok(()),
                Some(o) => Err(BrokerError::InvalidTransactionId(format!(
                    "transaction {transaction_id} already ended ({o:?})"
                ))),
                None => Err(BrokerError::InvalidTransactionId(format!("no open transaction {transaction_id:?}"))),
            };
        };
        let wrong = |what: &str| {
            BrokerError::InvalidTransactionId(format!("transaction {transaction_id} is for another {what}"))
        };
        if !message_id.is_empty() && message_id != pending.message_id {
            return Err(wrong("message"));
        }
        if !topic.is_empty() && topic != pending.topic {
            return Err(wrong("topic"));
        }
        let outcome = match resolution {
            Resolution::Unknown => return Ok(()),
            Resolution::Commit => Outcome::Commit,
            Resolution::Rollback => Outcome::Rollback,
        };
        if !self.transactions.begin_resolve(transaction_id) {
            return Ok(()); // another EndTransaction for it is being applied right now
        }
        let result = self.finish(transaction_id, &pending, outcome, "").await;
        self.transactions.end_resolve(transaction_id);
        result
    }

    /// Logs the outcome; a commit also copies the half message into its partition, atomically.
    async fn finish(&self, id: &str, pending: &Pending, outcome: Outcome, reason: &str) -> Result<(), BrokerError> {
        let mut records = Vec::with_capacity(2);
        if outcome == Outcome::Commit {
            let message = StoredMessage::decode(self.store.read_at(pending.position, pending.length)?)
                .map_err(|e| BrokerError::internal(format!("half message does not decode: {e}")))?;
            let topic = self.catalog.topic(&message.topic)?;
            let partition = topic.partitions[message.partition as usize % topic.partitions.len()].clone();
            let tag = tag_hash(&message.tag);
            let message = StoredMessage { partition: partition.id(), ..message };
            records.push(AppendRecord::message(partition, tag, 0, now_ms() as u64, message.encode_to_vec()));
        }
        let record = OutcomeRecord {
            transaction_id: id.to_owned(),
            outcome: outcome as i32,
            at_ms: now_ms(),
            reason: reason.to_owned(),
        };
        records.push(AppendRecord::state(RecordKind::TxnOutcome, record.encode_to_vec()));
        self.store.append(records, Durability::Sync).await?;
        let counter = if outcome == Outcome::Commit { &self.metrics.commits } else { &self.metrics.rollbacks };
        counter.with_label_values(&[pending.topic.as_str()]).inc();
        Ok(())
    }

    /// Checks back orphaned half messages once a second, until the broker shuts down.
    pub async fn run_transaction_checks(self: Arc<Self>) {
        let mut stopping = self.stopping();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.check_transactions().await {
                tracing::error!(error = %e, "transaction check-back failed");
            }
        }
    }

    /// One pass: ask a producer about every half message due for a check, and roll back those
    /// that used up their checks.
    pub async fn check_transactions(&self) -> Result<(), BrokerError> {
        let interval =
            |topic: &str| self.catalog.existing_topic(topic).map_or(30_000, |t| t.config.txn_check_interval_ms as i64);
        let first = |topic: &str| FIRST_CHECK_MS.min(interval(topic));
        let due = self.transactions.due_for_check(now_ms(), first, interval);
        for (id, pending) in due {
            let max_checks = self.catalog.existing_topic(&pending.topic).map_or(15, |t| t.config.txn_max_checks);
            if !self.transactions.begin_resolve(&id) {
                continue;
            }
            let result = if pending.checks >= max_checks {
                tracing::warn!(
                    transaction = id,
                    checks = pending.checks,
                    "no outcome after the last check-back; rolling back"
                );
                self.finish(&id, &pending, Outcome::Rollback, "no outcome after the last check-back").await
            } else {
                self.check_back(&id, &pending).await
            };
            self.transactions.end_resolve(&id);
            result?;
        }
        Ok(())
    }

    async fn check_back(&self, id: &str, pending: &Pending) -> Result<(), BrokerError> {
        let message = StoredMessage::decode(self.store.read_at(pending.position, pending.length)?)
            .map_err(|e| BrokerError::internal(format!("half message does not decode: {e}")))?;
        let command =
            ServerCommand::RecoverOrphanedTransaction { message: Box::new(message), transaction_id: id.to_owned() };
        if !self.clients.send_to_producer(&pending.topic, command) {
            tracing::info!(
                transaction = id,
                topic = pending.topic,
                "no producer of the topic is connected to check back with"
            );
        }
        // Every check counts toward the limit, answered or not, so an abandoned transaction ends.
        let record = OutcomeRecord {
            transaction_id: id.to_owned(),
            outcome: Outcome::Checked as i32,
            at_ms: now_ms(),
            reason: String::new(),
        };
        self.store
            .append(vec![AppendRecord::state(RecordKind::TxnOutcome, record.encode_to_vec())], Durability::Sync)
            .await?;
        Ok(())
    }
}
