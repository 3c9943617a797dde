//! The broker admin API (`weir.admin.v1.Admin`) as the operator uses it, behind a trait so that
//! reconciles can run against [`FakeBrokerAdmin`] in tests and against real brokers over gRPC
//! ([`GrpcBrokerAdmin`]) in a cluster.
//!
//! Every call addresses one broker pod by its stable StatefulSet DNS name
//! (`<pod>.<set>.<ns>.svc.<cluster-domain>:8081`), because partitions live on specific pods.
//! When the brokers serve TLS the calls use it, checking the pod's certificate against that name;
//! when they enforce access control the calls are signed with the operator's (super-user)
//! credentials.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::Channel;
use weir_crds::naming;
use weir_proto::client_tls::{self, ClientTls};
use weir_proto::signature::Credentials;
use weir_proto::weir::admin::v1 as pb;
use weir_proto::weir::admin::v1::admin_client::AdminClient;

/// One broker pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerPod {
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name, e.g. `orders-broker-0`.
    pub pod: String,
}

impl BrokerPod {
    /// The pod `pod` in `namespace`.
    pub fn new(namespace: impl Into<String>, pod: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), pod: pod.into() }
    }
}

impl std::fmt::Display for BrokerPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.pod)
    }
}

/// Where a consumer group's position is moved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetTarget {
    /// The oldest retained message.
    Earliest,
    /// After the newest message.
    Latest,
    /// The first message stored at or after this time (ms since the epoch).
    TimestampMs(i64),
    /// This queue offset in every partition.
    Offset(u64),
}

/// A consumer group's figures for one topic on one pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupTopicStats {
    /// Messages stored and not yet consumed by the group.
    pub lag: u64,
    /// Messages delivered and not yet acknowledged.
    pub inflight: u64,
    /// Connected clients of the group.
    pub members: u32,
}

/// A failed admin call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The pod could not be reached (down, not yet started, network).
    #[error("broker {pod} is unreachable: {message}")]
    Unavailable {
        /// The pod.
        pod: String,
        /// The transport error.
        message: String,
    },
    /// The pod answered with an error.
    #[error("broker {pod} refused: {message}")]
    Refused {
        /// The pod.
        pod: String,
        /// The gRPC status.
        message: String,
    },
}

/// The admin calls the operator makes. Object-safe so a `dyn BrokerAdmin` can be shared.
pub trait BrokerAdmin: Send + Sync {
    /// Per partition the pod holds of `topic`, the most any consumer group still has to consume
    /// there (0: drained on that pod). Partitions the pod never held are absent.
    fn partition_backlog<'a>(
        &'a self,
        pod: &'a BrokerPod,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<u32, u64>, AdminError>>;

    /// The group's lag, in-flight messages and members for `topic` on the pod (zeros if the pod
    /// knows nothing of the group).
    fn group_stats<'a>(
        &'a self,
        pod: &'a BrokerPod,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<GroupTopicStats, AdminError>>;

    /// Moves the group's position on every partition of `topic` the pod holds; returns how many
    /// partitions moved.
    fn reset_offset<'a>(
        &'a self,
        pod: &'a BrokerPod,
        group: &'a str,
        topic: &'a str,
        target: ResetTarget,
    ) -> BoxFuture<'a, Result<u32, AdminError>>;

    /// Forgets the group on the pod; returns whether it had anything for it.
    fn delete_group<'a>(&'a self, pod: &'a BrokerPod, group: &'a str) -> BoxFuture<'a, Result<bool, AdminError>>;
}

/// Maps a pod to the `host:port` of its admin endpoint.
pub type Resolver = Arc<dyn Fn(&BrokerPod) -> Option<String> + Send + Sync>;

/// [`BrokerAdmin`] over gRPC. Channels are created lazily and kept per endpoint.
pub struct GrpcBrokerAdmin {
    resolver: Resolver,
    tls: Option<ClientTls>,
    credentials: Option<Credentials>,
    channels: Mutex<HashMap<String, Channel>>,
    timeout: Duration,
}

impl GrpcBrokerAdmin {
    /// Reaches pods at their StatefulSet DNS names under `cluster_domain`, port 8081, over TLS
    /// with `tls`.
    pub fn new(cluster_domain: impl Into<String>, tls: Option<ClientTls>) -> Self {
        let domain = cluster_domain.into();
        Self::with_resolver(
            Arc::new(move |pod: &BrokerPod| {
                naming::pod_host(&pod.pod, &pod.namespace, &domain).map(|h| format!("{h}:{}", naming::GRPC_PORT))
            }),
            tls,
        )
    }

    /// Reaches pods wherever `resolver` says (tests run brokers on loopback ports).
    pub fn with_resolver(resolver: Resolver, tls: Option<ClientTls>) -> Self {
        Self { resolver, tls, credentials: None, channels: Mutex::new(HashMap::new()), timeout: Duration::from_secs(5) }
    }

    /// Signs every call with `credentials` (a super user of the brokers' access control).
    pub fn with_credentials(self, credentials: Option<Credentials>) -> Self {
        Self { credentials, ..self }
    }

    /// `message` as a request, signed when credentials are set.
    fn request<T>(&self, pod: &BrokerPod, message: T) -> Result<tonic::Request<T>, AdminError> {
        let mut request = tonic::Request::new(message);
        if let Some(credentials) = &self.credentials {
            credentials
                .sign(request.metadata_mut())
                .map_err(|e| AdminError::Refused { pod: pod.to_string(), message: e.to_string() })?;
        }
        Ok(request)
    }

    fn client(&self, pod: &BrokerPod) -> Result<AdminClient<Channel>, AdminError> {
        let unavailable = |message: String| AdminError::Unavailable { pod: pod.to_string(), message };
        let address = (self.resolver)(pod).ok_or_else(|| unavailable("no address for this pod name".into()))?;
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(&address) {
            return Ok(AdminClient::new(channel.clone()));
        }
        let channel = client_tls::endpoint(&address, self.tls.as_ref())
            .map_err(|e| unavailable(e.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(self.timeout)
            .connect_lazy();
        channels.insert(address, channel.clone());
        Ok(AdminClient::new(channel))
    }
}

/// Classifies a gRPC failure: transport-level codes mean the pod is unreachable, the rest that it
/// answered and refused.
fn status_error(pod: &BrokerPod, status: tonic::Status) -> AdminError {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown => {
            AdminError::Unavailable { pod: pod.to_string(), message }
        }
        _ => AdminError::Refused { pod: pod.to_string(), message },
    }
}

impl BrokerAdmin for GrpcBrokerAdmin {
    fn partition_backlog<'a>(
        &'a self,
        pod: &'a BrokerPod,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<u32, u64>, AdminError>> {
        Box::pin(async move {
            let mut client = self.client(pod)?;
            let response = client
                .get_partition_backlog(self.request(pod, pb::GetPartitionBacklogRequest { topic: topic.to_owned() })?)
                .await
                .map_err(|s| status_error(pod, s))?;
            Ok(response.into_inner().partitions.into_iter().map(|p| (p.partition, p.backlog)).collect())
        })
    }

    fn group_stats<'a>(
        &'a self,
        pod: &'a BrokerPod,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<GroupTopicStats, AdminError>> {
        Box::pin(async move {
            let mut client = self.client(pod)?;
            let response = client
                .get_stats(self.request(pod, pb::GetStatsRequest { topic: topic.to_owned(), group: group.to_owned() })?)
                .await
                .map_err(|s| status_error(pod, s))?;
            let mut stats = GroupTopicStats::default();
            for g in response.into_inner().groups.iter().filter(|g| g.group == group && g.topic == topic) {
                stats.lag += g.lag;
                stats.inflight += g.inflight;
                stats.members = stats.members.max(g.members);
            }
            Ok(stats)
        })
    }

    fn reset_offset<'a>(
        &'a self,
        pod: &'a BrokerPod,
        group: &'a str,
        topic: &'a str,
        target: ResetTarget,
    ) -> BoxFuture<'a, Result<u32, AdminError>> {
        use pb::reset_offset_request::Target;
        Box::pin(async move {
            let mut client = self.client(pod)?;
            let target = match target {
                ResetTarget::Earliest => Target::Earliest(true),
                ResetTarget::Latest => Target::Latest(true),
                ResetTarget::TimestampMs(ms) => Target::TimestampMs(ms),
                ResetTarget::Offset(offset) => Target::Offset(offset),
            };
            let request =
                pb::ResetOffsetRequest { group: group.to_owned(), topic: topic.to_owned(), target: Some(target) };
            let response = client.reset_offset(self.request(pod, request)?).await.map_err(|s| status_error(pod, s))?;
            Ok(response.into_inner().partitions)
        })
    }

    fn delete_group<'a>(&'a self, pod: &'a BrokerPod, group: &'a str) -> BoxFuture<'a, Result<bool, AdminError>> {
        Box::pin(async move {
            let mut client = self.client(pod)?;
            let response = client
                .delete_group(self.request(pod, pb::DeleteGroupRequest { group: group.to_owned() })?)
                .await
                .map_err(|s| status_error(pod, s))?;
            Ok(response.into_inner().existed)
        })
    }
}

/// A call the fake received, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCall {
    /// `GetPartitionBacklog`.
    PartitionBacklog {
        /// Pod name.
        pod: String,
        /// Topic.
        topic: String,
    },
    /// `GetStats`.
    GroupStats {
        /// Pod name.
        pod: String,
        /// Topic.
        topic: String,
        /// Group.
        group: String,
    },
    /// `ResetOffset`.
    ResetOffset {
        /// Pod name.
        pod: String,
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Target.
        target: ResetTarget,
    },
    /// `DeleteGroup`.
    DeleteGroup {
        /// Pod name.
        pod: String,
        /// Group.
        group: String,
    },
}

#[derive(Default)]
struct FakeState {
    backlogs: BTreeMap<(String, String), BTreeMap<u32, u64>>,
    stats: BTreeMap<(String, String, String), GroupTopicStats>,
    failures: BTreeMap<String, AdminError>,
    calls: Vec<AdminCall>,
}

/// An in-memory [`BrokerAdmin`] keyed by pod name: backlogs and stats are what the test set
/// (absent: empty backlog, zero stats), failures are injected per pod, and every call is logged.
#[derive(Default)]
pub struct FakeBrokerAdmin {
    state: Mutex<FakeState>,
}

impl FakeBrokerAdmin {
    /// An empty fake: every pod answers, with nothing to drain and no groups.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the backlog of `partition` of `topic` on `pod`.
    pub fn set_backlog(&self, pod: &str, topic: &str, partition: u32, backlog: u64) {
        self.state().backlogs.entry((pod.to_owned(), topic.to_owned())).or_default().insert(partition, backlog);
    }

    /// Sets the stats of `group` on `topic` on `pod`.
    pub fn set_stats(&self, pod: &str, topic: &str, group: &str, stats: GroupTopicStats) {
        self.state().stats.insert((pod.to_owned(), topic.to_owned(), group.to_owned()), stats);
    }

    /// Makes every call to `pod` fail: unreachable if `refuse` is false, refused otherwise.
    pub fn fail(&self, pod: &str, refuse: bool) {
        let (pod, message) = (pod.to_owned(), "injected by the test".to_owned());
        let error = if refuse {
            AdminError::Refused { pod: pod.clone(), message }
        } else {
            AdminError::Unavailable { pod: pod.clone(), message }
        };
        self.state().failures.insert(pod, error);
    }

    /// Ends the failure of `pod`.
    pub fn heal(&self, pod: &str) {
        self.state().failures.remove(pod);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<AdminCall> {
        self.state().calls.clone()
    }

    fn record(&self, pod: &BrokerPod, call: AdminCall) -> Result<(), AdminError> {
        let mut state = self.state();
        state.calls.push(call);
        state.failures.get(&pod.pod).cloned().map_or(Ok(()), Err)
    }
}

impl BrokerAdmin for FakeBrokerAdmin {
    fn partition_backlog<'a>(
        &'a self,
        pod: &'a BrokerPod,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<u32, u64>, AdminError>> {
        let result = self
            .record(pod, AdminCall::PartitionBacklog { pod: pod.pod.clone(), topic: topic.to_owned() })
            .map(|()| self.state().backlogs.get(&(pod.pod.clone(), topic.to_owned())).cloned().unwrap_or_default());
        Box::pin(async move { result })
    }

    fn group_stats<'a>(
        &'a self,
        pod: &'a BrokerPod,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<GroupTopicStats, AdminError>> {
        let call = AdminCall::GroupStats { pod: pod.pod.clone(), topic: topic.to_owned(), group: group.to_owned() };
        let result = self.record(pod, call).map(|()| {
            self.state().stats.get(&(pod.pod.clone(), topic.to_owned(), group.to_owned())).copied().unwrap_or_default()
        });
        Box::pin(async move { result })
    }

    fn reset_offset<'a>(
        &'a self,
        pod: &'a BrokerPod,
        group: &'a str,
        topic: &'a str,
        target: ResetTarget,
    ) -> BoxFuture<'a, Result<u32, AdminError>> {
        let call =
            AdminCall::ResetOffset { pod: pod.pod.clone(), group: group.to_owned(), topic: topic.to_owned(), target };
        let result = self.record(pod, call).map(|()| {
            let state = self.state();
            state.backlogs.get(&(pod.pod.clone(), topic.to_owned())).map_or(0, |b| b.len() as u32)
        });
        Box::pin(async move { result })
    }

    fn delete_group<'a>(&'a self, pod: &'a BrokerPod, group: &'a str) -> BoxFuture<'a, Result<bool, AdminError>> {
        let result =
            self.record(pod, AdminCall::DeleteGroup { pod: pod.pod.clone(), group: group.to_owned() }).map(|()| {
                let mut state = self.state();
                let before = state.stats.len();
                state.stats.retain(|(p, _, g), _| !(p == &pod.pod && g == group));
                state.stats.len() != before
            });
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_records_calls_and_injects_failures() {
        let fake = FakeBrokerAdmin::new();
        let pod = BrokerPod::new("ns", "orders-broker-0");
        fake.set_backlog("orders-broker-0", "orders", 3, 7);
        assert_eq!(fake.partition_backlog(&pod, "orders").await.unwrap(), BTreeMap::from([(3, 7)]));
        fake.fail("orders-broker-0", true);
        assert!(matches!(fake.delete_group(&pod, "g").await, Err(AdminError::Refused { .. })));
        fake.heal("orders-broker-0");
        assert_eq!(fake.delete_group(&pod, "g").await, Ok(false));
        assert_eq!(fake.calls().len(), 3);
    }

    #[tokio::test]
    async fn grpc_client_reports_an_unreachable_pod() {
        let admin = GrpcBrokerAdmin::with_resolver(Arc::new(|_: &BrokerPod| Some("127.0.0.1:1".to_owned())), None);
        let err = admin.partition_backlog(&BrokerPod::new("ns", "t-broker-0"), "t").await.unwrap_err();
        assert!(matches!(err, AdminError::Unavailable { .. }), "{err}");
        let bad = GrpcBrokerAdmin::new("cluster.local", None);
        let err = bad.delete_group(&BrokerPod::new("ns", "not-a-pod-name"), "g").await.unwrap_err();
        assert!(err.to_string().contains("no address"), "{err}");
    }
}
