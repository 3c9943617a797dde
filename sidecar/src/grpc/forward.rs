//! Forwarding to the broker that owns something: a request that reaches the wrong broker is
//! passed on to the owner instead of refused — an `EndTransaction` for a transaction another
//! broker holds (clients send it to their access point), or, in Kubernetes, a send for a partition
//! another pod owns (the client Service spreads requests over every pod).
//!
//! Peers are found by broker id: with `--peer ID=HOST:PORT` in standalone, or in Kubernetes by
//! the pod of that ordinal in the topic's StatefulSet. A forwarded request carries
//! [`FORWARDED_HEADER`]; a broker never forwards such a request again, so a stale view cannot
//! make requests circle. When the brokers serve TLS, forwarded requests use it too (`--peer-ca`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use weir_proto::client_tls::ClientTls;
use weir_proto::rocketmq::v2 as pb;
use weir_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;

use crate::cluster::ClusterView;
use crate::error::BrokerError;
use crate::grpc::context::Caller;

/// Header marking a request one broker passed on to another.
pub const FORWARDED_HEADER: &str = "x-weir-forwarded";

/// How long a forwarded request may take.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where the other brokers are.
#[derive(Debug)]
pub enum Directory {
    /// Fixed addresses by broker id (`--peer`).
    Static(HashMap<u32, String>),
    /// The pods of the namespace, from the watched Topics.
    Cluster(Arc<ClusterView>),
}

/// The other brokers and lazily opened channels to them.
#[derive(Debug)]
pub struct Peers {
    directory: Directory,
    tls: Option<ClientTls>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Where the channels' connection tasks run.
    runtime: MainRuntime,
}

/// Runs a channel's tasks on the runtime that made [`Peers`], not on the serving thread that
/// happened to open the channel first (`grpc::serving`): the channels serve every thread, and a
/// serving thread's runtime ends with its connections at shutdown.
#[derive(Debug, Clone)]
struct MainRuntime(tokio::runtime::Handle);

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for MainRuntime {
    fn execute(&self, task: F) {
        self.0.spawn(task);
    }
}

/// The broker id a transaction id names (`<broker hex>-<sequence hex>`).
pub fn transaction_owner(transaction_id: &str) -> Option<u32> {
    let (owner, _) = transaction_id.split_once('-')?;
    u32::from_str_radix(owner, 16).ok()
}

impl Peers {
    /// Peers found through `directory`, reached over TLS with `tls`. Must be called on the
    /// runtime that lives as long as the broker.
    pub fn new(directory: Directory, tls: Option<ClientTls>) -> Self {
        let runtime = MainRuntime(tokio::runtime::Handle::current());
        Self { directory, tls, channels: Mutex::new(HashMap::new()), runtime }
    }

    /// `host:port` of broker `id` serving `topic`.
    pub fn broker_address(&self, topic: &str, id: u32) -> Result<String, BrokerError> {
        match &self.directory {
            Directory::Static(peers) => peers.get(&id).cloned().ok_or_else(|| {
                BrokerError::InvalidTransactionId(format!(
                    "the transaction belongs to broker {id}, which this broker does not know (no --peer for it)"
                ))
            }),
            Directory::Cluster(view) => view
                .host_of_ordinal(topic, id)
                .map(|host| format!("{host}:{}", weir_crds::naming::GRPC_PORT))
                .ok_or_else(|| BrokerError::TopicNotFound(topic.to_owned())),
        }
    }

    /// `host:port` of the pod named `pod` (Kubernetes mode).
    pub fn pod_address(&self, pod: &str) -> Result<String, BrokerError> {
        match &self.directory {
            Directory::Cluster(view) => view
                .me()
                .host_of(pod)
                .map(|host| format!("{host}:{}", weir_crds::naming::GRPC_PORT))
                .ok_or_else(|| BrokerError::internal(format!("{pod:?} is not a StatefulSet pod name"))),
            Directory::Static(_) => Err(BrokerError::internal("pods are only known in Kubernetes mode")),
        }
    }

    fn client(&self, address: &str) -> Result<MessagingServiceClient<Channel>, BrokerError> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(address) {
            return Ok(MessagingServiceClient::new(c.clone()));
        }
        let channel = weir_proto::client_tls::endpoint(address, self.tls.as_ref())
            .map_err(|e| BrokerError::internal(format!("peer: {e}")))?
            .timeout(FORWARD_TIMEOUT)
            .executor(self.runtime.clone())
            .connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(MessagingServiceClient::new(channel))
    }

    /// A request on behalf of `caller`, marked as forwarded.
    fn request<T>(caller: &Caller, body: T) -> Result<tonic::Request<T>, BrokerError> {
        let mut request = tonic::Request::new(body);
        let id = MetadataValue::try_from(caller.client_id.as_str())
            .map_err(|_| BrokerError::BadRequest("client id is not ASCII".into()))?;
        let metadata = request.metadata_mut();
        metadata.insert("x-mq-client-id", id);
        if let Ok(language) = MetadataValue::try_from(caller.language.as_str()) {
            metadata.insert("x-mq-language", language);
        }
        metadata.insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
        // The owner checks the client's signature itself.
        if let Some((authorization, date)) = &caller.signature {
            for (header, value) in [("authorization", authorization), ("x-mq-date-time", date)] {
                if let Ok(value) = MetadataValue::try_from(value.as_str()) {
                    metadata.insert(header, value);
                }
            }
        }
        Ok(request)
    }

    /// Passes `EndTransaction` on to the broker at `address` and returns its answer.
    pub async fn end_transaction(
        &self,
        address: &str,
        caller: &Caller,
        req: pb::EndTransactionRequest,
    ) -> Result<pb::Status, BrokerError> {
        let response = self
            .client(address)?
            .end_transaction(Self::request(caller, req)?)
            .await
            .map_err(|e| unreachable_peer(address, "EndTransaction", &e))?;
        Ok(response.into_inner().status.unwrap_or_else(crate::grpc::status::ok))
    }

    /// Passes `SendMessage` on to the broker at `address` and returns its answer.
    pub async fn send(
        &self,
        address: &str,
        caller: &Caller,
        req: pb::SendMessageRequest,
    ) -> Result<pb::SendMessageResponse, BrokerError> {
        let response = self
            .client(address)?
            .send_message(Self::request(caller, req)?)
            .await
            .map_err(|e| unreachable_peer(address, "SendMessage", &e))?;
        Ok(response.into_inner())
    }
}

fn unreachable_peer(address: &str, rpc: &str, e: &tonic::Status) -> BrokerError {
    BrokerError::Unavailable(format!("forwarding {rpc} to {address}: {}", e.message()))
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
