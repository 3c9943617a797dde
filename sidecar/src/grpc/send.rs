//! SendMessage: store what belongs here and, in Kubernetes, pass the rest to the pods that own
//! it. A batch may be split: each message is answered in its own entry, in order, whoever stored
//! it.

use std::collections::BTreeMap;

use weir_proto::rocketmq::v2 as pb;

use super::Messaging;
use super::context::Caller;
use super::convert;
use super::status::{error_status, ok};
use crate::broker::{SendReceipt, partition_of_group};
use crate::cluster::ClusterView;
use crate::error::BrokerError;

impl Messaging {
    /// Answers every message of a SendMessage request, in order.
    pub(super) async fn send(&self, caller: &Caller, messages: Vec<pb::Message>) -> Vec<pb::SendResultEntry> {
        let language = caller.language.as_str();
        // Every entry answers with its message's id, stored or not; the messages themselves move
        // into the store.
        let ids: Vec<String> = messages
            .iter()
            .map(|m| m.system_properties.as_ref().map(|s| s.message_id.clone()).unwrap_or_default())
            .collect();
        // Forwarding needs the messages as they came; only a clustered broker can forward.
        let originals = match &self.cluster {
            Some(view) if !caller.forwarded => Some((view.clone(), messages.clone())),
            _ => None,
        };
        let results = self.store(messages).await;
        let mut entries: Vec<Option<pb::SendResultEntry>> = Vec::with_capacity(results.len());
        let mut elsewhere: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (slot, (result, id)) in results.into_iter().zip(ids).enumerate() {
            let target = match (&result, &originals) {
                (Err(e), Some((view, originals))) => owner_elsewhere(view, e, &originals[slot], slot),
                _ => None,
            };
            match (target, result) {
                (Some(pod), _) => {
                    elsewhere.entry(pod).or_default().push(slot);
                    entries.push(None);
                }
                (None, Ok(r)) => entries.push(Some(pb::SendResultEntry {
                    status: Some(ok()),
                    message_id: id,
                    offset: r.offset as i64,
                    transaction_id: r.transaction_id,
                    ..Default::default()
                })),
                (None, Err(e)) => entries.push(Some(pb::SendResultEntry {
                    status: Some(error_status(&e, language)),
                    message_id: id,
                    ..Default::default()
                })),
            }
        }
        if let Some((_, originals)) = originals {
            for (pod, slots) in elsewhere {
                let batch = slots.iter().map(|&s| originals[s].clone()).collect();
                let answered = self.forward_send(&pod, caller, batch).await;
                for (slot, entry) in slots.into_iter().zip(answered) {
                    entries[slot] = Some(entry);
                }
            }
        }
        entries.into_iter().map(|e| e.expect("every message answered")).collect()
    }

    /// Stores what can be stored here; one result per message.
    async fn store(&self, messages: Vec<pb::Message>) -> Vec<Result<SendReceipt, BrokerError>> {
        let max_body = self.broker.config().max_body_bytes;
        let mut converted: Vec<Result<(), BrokerError>> = Vec::with_capacity(messages.len());
        let mut valid = Vec::with_capacity(messages.len());
        for m in messages {
            match convert::incoming(m, max_body) {
                Ok(m) => {
                    valid.push(m);
                    converted.push(Ok(()));
                }
                Err(e) => converted.push(Err(e)),
            }
        }
        let mut stored = self.broker.send(valid).await.into_iter();
        converted.into_iter().map(|c| c.and_then(|()| stored.next().expect("one result per valid message"))).collect()
    }

    /// Sends `batch` to `pod`; one entry per message, failures included.
    async fn forward_send(&self, pod: &str, caller: &Caller, batch: Vec<pb::Message>) -> Vec<pb::SendResultEntry> {
        let count = batch.len();
        let failed = |e: &BrokerError, batch: &[pb::Message]| {
            batch
                .iter()
                .map(|m| pb::SendResultEntry {
                    status: Some(error_status(e, &caller.language)),
                    message_id: m.system_properties.as_ref().map(|s| s.message_id.clone()).unwrap_or_default(),
                    ..Default::default()
                })
                .collect()
        };
        let address = match self.peers.pod_address(pod) {
            Ok(a) => a,
            Err(e) => return failed(&e, &batch),
        };
        let ids = batch.clone();
        match self.peers.send(&address, caller, pb::SendMessageRequest { messages: batch }).await {
            Ok(response) if response.entries.len() == count => response.entries,
            Ok(response) => {
                let e = BrokerError::internal(format!(
                    "{pod} answered {} entries for {count} forwarded messages",
                    response.entries.len()
                ));
                failed(&e, &ids)
            }
            Err(e) => failed(&e, &ids),
        }
    }
}

/// The pod a message refused here belongs to, if another pod owns it.
fn owner_elsewhere(view: &ClusterView, e: &BrokerError, message: &pb::Message, slot: usize) -> Option<String> {
    let (topic, partition) = match e {
        BrokerError::NotOwner { topic, partition } => (topic.as_str(), *partition),
        // A topic of another StatefulSet: this pod does not store it at all.
        BrokerError::TopicNotFound(topic) => (topic.as_str(), None),
        _ => return None,
    };
    let placement = view.placement(topic)?;
    let sys = message.system_properties.as_ref()?;
    let fifo = sys.message_type == pb::MessageType::Fifo as i32;
    let partition = partition
        .or_else(|| fifo.then(|| partition_of_group(sys.message_group.as_deref().unwrap_or(""), placement.partitions)));
    let owner = match partition {
        Some(p) => placement.owner(p)?.to_owned(),
        None => {
            // Any owner will do; spread the messages of a batch over them.
            let owners: Vec<&str> =
                placement.holders.iter().filter(|h| !h.owned.is_empty()).map(|h| h.pod.as_str()).collect();
            (*owners.get(slot % owners.len().max(1))?).to_owned()
        }
    };
    (owner != view.me().pod).then_some(owner)
}
