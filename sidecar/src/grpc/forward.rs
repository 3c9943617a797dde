//! Forwarding to the broker that owns something: a request that reaches the wrong broker (an
//! `EndTransaction` for a transaction another broker holds, e.g. because a client sends it to the
//! access point, or a Service spread it) is passed on to the owner instead of refused.
//!
//! Peers are known by broker id; in Kubernetes they are the StatefulSet pods, in standalone they can
//! be given with `--peer ID=HOST:PORT`.

use std::collections::HashMap;

use parking_lot::Mutex;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use weir_proto::rocketmq::v2 as pb;
use weir_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;

use crate::error::BrokerError;
use crate::grpc::context::Caller;

/// The other brokers of the cluster and lazily opened channels to them.
#[derive(Debug, Default)]
pub struct Peers {
    addresses: HashMap<u32, String>,
    channels: Mutex<HashMap<u32, Channel>>,
}

/// The broker id a transaction id names (`<broker hex>-<sequence hex>`).
pub fn transaction_owner(transaction_id: &str) -> Option<u32> {
    let (owner, _) = transaction_id.split_once('-')?;
    u32::from_str_radix(owner, 16).ok()
}

impl Peers {
    /// Peers by broker id, as `host:port`.
    pub fn new(addresses: HashMap<u32, String>) -> Self {
        Self { addresses, channels: Mutex::new(HashMap::new()) }
    }

    fn client(&self, broker: u32) -> Result<MessagingServiceClient<Channel>, BrokerError> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(&broker) {
            return Ok(MessagingServiceClient::new(c.clone()));
        }
        let address = self.addresses.get(&broker).ok_or_else(|| {
            BrokerError::InvalidTransactionId(format!(
                "the transaction belongs to broker {broker}, which this broker does not know (no --peer for it)"
            ))
        })?;
        let channel = Channel::from_shared(format!("http://{address}"))
            .map_err(|e| BrokerError::internal(format!("peer address {address}: {e}")))?
            .connect_lazy();
        channels.insert(broker, channel.clone());
        Ok(MessagingServiceClient::new(channel))
    }

    /// Passes `EndTransaction` on to `broker`, on behalf of `caller`, and returns its answer.
    pub async fn end_transaction(
        &self,
        broker: u32,
        caller: &Caller,
        req: pb::EndTransactionRequest,
    ) -> Result<pb::Status, BrokerError> {
        let mut client = self.client(broker)?;
        let mut request = tonic::Request::new(req);
        let id = MetadataValue::try_from(caller.client_id.as_str())
            .map_err(|_| BrokerError::BadRequest("client id is not ASCII".into()))?;
        request.metadata_mut().insert("x-mq-client-id", id);
        if let Ok(language) = MetadataValue::try_from(caller.language.as_str()) {
            request.metadata_mut().insert("x-mq-language", language);
        }
        let response = client.end_transaction(request).await.map_err(|e| {
            BrokerError::internal(format!("forwarding EndTransaction to broker {broker}: {}", e.message()))
        })?;
        Ok(response.into_inner().status.unwrap_or_else(crate::grpc::status::ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_transaction_ids() {
        assert_eq!(transaction_owner("0-0006610a70c410fb"), Some(0));
        assert_eq!(transaction_owner("1f-00"), Some(31));
        assert_eq!(transaction_owner("nonsense"), None);
    }
}
