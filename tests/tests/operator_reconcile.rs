//! Reconcile tests of `weir-operator` against an **in-memory fake Kubernetes API server**
//! (`weir_tests::fake_kube::FakeKube`): no real kube-apiserver can run here (no cluster, no etcd,
//! no container runtime), so the operator's unmodified `kube::Client`, finalizer helper, event
//! `Recorder` and `controller::run` talk HTTP to the fake instead. The fake implements
//! server-side apply, the status subresource, generations, watches, finalizers with
//! `deletionTimestamp`, owner-reference garbage collection and namespace termination, but no
//! controllers: these tests play the StatefulSet controller and the kubelet (Pods, PVCs and the
//! StatefulSet's status are written through the fake's test handle). The brokers' admin API is
//! `FakeBrokerAdmin`, which records every call and injects failures, and time is a `ManualClock`.
//!
//! Most tests drive `reconcile::reconcile_topic` / `reconcile_group` one step at a time, so every
//! intermediate state can be asserted exactly; `controller_run_end_to_end` runs the real
//! controllers and waits for conditions by polling.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use weir_crds::{ConsumerGroup, ConsumerGroupStatus, FINALIZER, FORCE_DELETE_ANNOTATION, Topic, TopicStatus, naming};
use weir_operator::broker_admin::{AdminCall, FakeBrokerAdmin, GroupTopicStats, ResetTarget};
use weir_operator::clock::{Clock, ManualClock, SystemClock};
use weir_operator::config::OperatorConfig;
use weir_operator::controller::{self, Health, Scope};
use weir_operator::metrics::Metrics;
use weir_operator::plan::{DEFAULT_RESYNC, PROGRESS_REQUEUE};
use weir_operator::reconcile::{self, Context};
use weir_tests::fake_kube::FakeKube;
use weir_tests::wait_for;

/// The namespace every test works in.
const NS: &str = "shop";
/// Where the manual clock starts (seconds since the epoch).
const T0: i64 = 1_800_000_000;
/// Upper bound of every condition wait.
const WAIT: Duration = Duration::from_secs(20);

/// The namespaced kinds the tests read and write.
trait Object:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned
{
}
impl<K> Object for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned
{
}

/// The fake API server, the fake brokers, the manual clock and a reconcile context around them.
struct Harness {
    fake: FakeKube,
    admin: Arc<FakeBrokerAdmin>,
    clock: Arc<ManualClock>,
    ctx: Arc<Context>,
}

impl Harness {
    async fn start() -> Self {
        let fake = FakeKube::start().await;
        fake.create_namespace(NS);
        let admin = Arc::new(FakeBrokerAdmin::new());
        let clock = Arc::new(ManualClock::at_second(T0));
        let ctx = context(&fake, &admin, clock.clone());
        Self { fake, admin, clock, ctx }
    }

    fn api<K: Object>(&self) -> Api<K> {
        Api::namespaced(self.ctx.client.clone(), NS)
    }

    /// The stored object, read through the fake's handle (not the operator's client).
    fn get<K: Object>(&self, name: &str) -> Option<K> {
        self.fake.get_typed::<K>(Some(NS), name)
    }

    fn must_get<K: Object>(&self, name: &str) -> K {
        self.get(name).unwrap_or_else(|| panic!("{} {NS}/{name} does not exist", K::kind(&())))
    }

    /// Sorted names of the stored objects of a kind.
    fn names<K: Object>(&self) -> Vec<String> {
        let mut names: Vec<String> = self.fake.list_typed::<K>(Some(NS)).iter().map(|o| o.name_any()).collect();
        names.sort();
        names
    }

    /// Creates a Topic or ConsumerGroup through the API (so it gets a uid, a creation time and
    /// generation 1) from the YAML of its spec.
    async fn create<K: Object>(&self, name: &str, spec_yaml: &str) -> K {
        let spec: Value = serde_yaml::from_str(spec_yaml).expect("test spec is YAML");
        let object: K = serde_json::from_value(json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }))
        .expect("test spec deserializes");
        self.api::<K>().create(&PostParams::default(), &object).await.expect("create")
    }

    /// A JSON merge patch through the API, as `kubectl patch --type merge` would send it.
    async fn patch<K: Object>(&self, name: &str, patch: Value) -> K {
        self.api::<K>().patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.expect("merge patch")
    }

    /// A `kubectl delete`: with the operator's finalizer the object stays, marked for deletion.
    async fn delete<K: Object>(&self, name: &str) {
        self.api::<K>().delete(name, &DeleteParams::default()).await.expect("delete");
    }

    /// One reconcile of the Topic as it is stored now.
    async fn reconcile_topic(&self, name: &str) -> weir_operator::Result<Action> {
        reconcile::reconcile_topic(Arc::new(self.must_get(name)), self.ctx.clone()).await
    }

    /// One reconcile of the ConsumerGroup as it is stored now.
    async fn reconcile_group(&self, name: &str) -> weir_operator::Result<Action> {
        reconcile::reconcile_group(Arc::new(self.must_get(name)), self.ctx.clone()).await
    }

    fn topic_status(&self, name: &str) -> TopicStatus {
        self.must_get::<Topic>(name).status.expect("the Topic has a status")
    }

    fn group_status(&self, name: &str) -> ConsumerGroupStatus {
        self.must_get::<ConsumerGroup>(name).status.expect("the ConsumerGroup has a status")
    }

    /// Creates a Topic, reconciles it (finalizer, then children), runs all its broker pods ready
    /// and reconciles it to Ready=True Serving.
    async fn converge_topic(&self, name: &str, spec_yaml: &str) -> Topic {
        self.create::<Topic>(name, spec_yaml).await;
        for _ in 0..2 {
            self.reconcile_topic(name).await.expect("reconcile");
        }
        let replicas = self.must_get::<StatefulSet>(&naming::broker_set(name)).spec.replicas.unwrap_or(1);
        self.run_brokers(name, replicas as u32);
        self.reconcile_topic(name).await.expect("reconcile");
        assert_eq!(
            kstatus(&self.topic_status(name).conditions, 1),
            "Ready=True/Serving Reconciling=False Stalled=False"
        );
        self.must_get(name)
    }

    /// Creates a ConsumerGroup and reconciles it twice (finalizer, then status).
    async fn converge_group(&self, name: &str, spec_yaml: &str) -> ConsumerGroupStatus {
        self.create::<ConsumerGroup>(name, spec_yaml).await;
        for _ in 0..2 {
            self.reconcile_group(name).await.expect("reconcile");
        }
        self.group_status(name)
    }

    /// Plays the StatefulSet controller and the kubelet for the Topic's StatefulSet as it is now:
    /// one Pod per replica (owned by the set; the first `ready` report Ready), one PVC per pod from
    /// the claim template, pods above `replicas` removed, and the set's status rolled out.
    fn run_brokers(&self, topic: &str, ready: u32) {
        let set_name = naming::broker_set(topic);
        let set: StatefulSet = self.must_get(&set_name);
        let replicas = set.spec.replicas.unwrap_or(1) as u32;
        let pod_labels = set.spec.template.metadata.as_ref().and_then(|m| m.labels.clone());
        let claim = set.spec.volume_claim_templates.as_ref().and_then(|t| t.first()).expect("a claim template");
        let requests = claim.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref());
        let size = &requests.expect("the claim requests storage")["storage"];
        let owner = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "name": set_name, "uid": set.uid(), "controller": true,
        });
        for ordinal in 0..replicas {
            let pod = naming::pod_name(topic, ordinal);
            let condition = if ordinal < ready { "True" } else { "False" };
            self.fake
                .put(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": NS, "labels": pod_labels, "ownerReferences": [owner]},
                    "spec": {"containers": [{"name": "broker"}]},
                    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": condition}]},
                }))
                .expect("write pod");
            self.fake
                .put(json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": format!("data-{pod}"), "namespace": NS, "labels": claim.metadata.labels},
                    "spec": claim.spec,
                    "status": {"phase": "Bound", "capacity": {"storage": size}},
                }))
                .expect("write PVC");
        }
        for pod in self.names::<Pod>() {
            if naming::split_pod_name(&pod).is_some_and(|(s, o)| s == set_name && o >= replicas) {
                self.fake.delete("v1", "pods", Some(NS), &pod).expect("remove pod");
            }
        }
        let generation = set.metadata.generation.unwrap_or(1);
        let revision = format!("{set_name}-{generation}");
        let status = json!({
            "replicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
            "updatedReplicas": replicas, "currentReplicas": replicas, "observedGeneration": generation,
            "currentRevision": revision, "updateRevision": revision,
        });
        self.fake.patch_status("apps/v1", "statefulsets", Some(NS), &set_name, status).expect("set status");
    }

    /// The broker admin calls so far that `keep` selects.
    fn broker_calls(&self, keep: fn(&AdminCall) -> bool) -> Vec<AdminCall> {
        self.admin.calls().into_iter().filter(keep).collect()
    }

    /// `<type>/<reason>` of every Event in the namespace, sorted.
    fn events(&self) -> Vec<String> {
        let events = self.fake.list("events.k8s.io/v1", "events", Some(NS));
        let mut events: Vec<String> = events
            .iter()
            .map(|e| format!("{}/{}", e["type"].as_str().unwrap_or(""), e["reason"].as_str().unwrap_or("")))
            .collect();
        events.sort();
        events
    }

    /// `<METHOD> <path>` of every write since the last `clear_writes` that changed the store.
    fn changing_writes(&self) -> Vec<String> {
        self.fake.writes().into_iter().filter(|w| w.changed).map(|w| format!("{} {}", w.method, w.path)).collect()
    }
}

fn context(fake: &FakeKube, admin: &Arc<FakeBrokerAdmin>, clock: Arc<dyn Clock>) -> Arc<Context> {
    let config = OperatorConfig { broker_image_tag: "1.0.0".to_owned(), ..OperatorConfig::default() };
    Arc::new(Context::new(fake.client(), admin.clone(), clock, config, Arc::new(Metrics::new()), Some("test".into())))
}

/// `Ready=<status>/<reason> Reconciling=<status> Stalled=<status>`, after checking that the three
/// kstatus conditions share the reason and were written for `generation`.
fn kstatus(conditions: &[Condition], generation: i64) -> String {
    let find = |t: &str| conditions.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("no {t} in {conditions:?}"));
    let (ready, reconciling, stalled) = (find("Ready"), find("Reconciling"), find("Stalled"));
    for c in [ready, reconciling, stalled] {
        assert_eq!((c.observed_generation, &c.reason), (Some(generation), &ready.reason), "{c:?}");
    }
    format!("Ready={}/{} Reconciling={} Stalled={}", ready.status, ready.reason, reconciling.status, stalled.status)
}

fn ready_message(conditions: &[Condition]) -> &str {
    conditions.iter().find(|c| c.type_ == "Ready").map_or("", |c| c.message.as_str())
}

/// `status.assignment` as `<pod>: [<owned>] [draining <partitions>]`.
fn assignment(status: &TopicStatus) -> Vec<String> {
    let entry = |a: &weir_crds::PartitionAssignment| {
        let draining = (!a.draining.is_empty()).then(|| format!("draining {}", a.draining));
        let parts: Vec<String> =
            [Some(a.partitions.clone()).filter(|p| !p.is_empty()), draining].into_iter().flatten().collect();
        format!("{}: {}", a.pod, parts.join(" "))
    };
    status.assignment.iter().map(entry).collect()
}

/// The controller owner reference every per-Topic child must carry.
fn owned_by(topic: &Topic) -> Vec<OwnerReference> {
    vec![topic.controller_owner_ref(&()).expect("stored Topic has a uid")]
}

fn is_reset(call: &AdminCall) -> bool {
    matches!(call, AdminCall::ResetOffset { .. })
}

fn is_delete_group(call: &AdminCall) -> bool {
    matches!(call, AdminCall::DeleteGroup { .. })
}

fn delete_group(pod: &str, group: &str) -> AdminCall {
    AdminCall::DeleteGroup { pod: pod.to_owned(), group: group.to_owned() }
}

/// API: in-memory fake (no API server can run here). Proves that creating a Topic first only
/// adds the finalizer, then yields the headless Service, the shared client Service, the PDB and
/// the StatefulSet with the right shape and owner references, and a Provisioning status with the
/// full assignment; once the pods are ready the Topic turns Ready=True Serving.
#[tokio::test]
async fn create_provisions_children_then_serves() {
    let h = Harness::start().await;
    let topic: Topic = h.create("orders", "partitions: 6\nbrokers: {replicas: 3}").await;

    assert_eq!(h.reconcile_topic("orders").await.unwrap(), Action::await_change());
    assert_eq!(h.must_get::<Topic>("orders").finalizers(), [FINALIZER]);
    assert!(h.get::<StatefulSet>("orders-broker").is_none(), "children wait until the finalizer is in place");
    assert!(h.must_get::<Topic>("orders").status.is_none());

    assert_eq!(h.reconcile_topic("orders").await.unwrap(), Action::requeue(PROGRESS_REQUEUE));
    let selector =
        json!({"app.kubernetes.io/component": "broker", "app.kubernetes.io/name": "weir", "weir.dev/topic": "orders"});

    let headless: Service = h.must_get("orders-broker");
    assert_eq!(headless.metadata.owner_references, Some(owned_by(&topic)));
    let spec = headless.spec.unwrap();
    assert_eq!((spec.cluster_ip.as_deref(), spec.publish_not_ready_addresses), (Some("None"), Some(true)));
    assert_eq!(json!(spec.selector), selector);
    let ports: Vec<(String, i32)> = spec.ports.unwrap().into_iter().map(|p| (p.name.unwrap(), p.port)).collect();
    assert_eq!(ports, [("grpc".to_owned(), 8081), ("metrics".to_owned(), 9090)]);

    let client: Service = h.must_get(naming::CLIENT_SERVICE);
    assert_eq!(client.metadata.owner_references, None, "the shared client Service outlives every Topic");
    let spec = client.spec.unwrap();
    assert_eq!(
        json!(spec.selector),
        json!({"app.kubernetes.io/component": "broker", "app.kubernetes.io/name": "weir"})
    );
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));

    let pdb: PodDisruptionBudget = h.must_get("orders-broker");
    assert_eq!(pdb.metadata.owner_references, Some(owned_by(&topic)));
    let spec = pdb.spec.unwrap();
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(json!(spec.selector.unwrap().match_labels), selector);

    // The pods get an account of their own, bound to the read-only broker role in this namespace.
    let account: ServiceAccount = h.must_get("orders-broker");
    assert_eq!(account.metadata.owner_references, Some(owned_by(&topic)));
    let binding: RoleBinding = h.must_get("orders-broker");
    assert_eq!(binding.metadata.owner_references, Some(owned_by(&topic)));
    assert_eq!((binding.role_ref.kind.as_str(), binding.role_ref.name.as_str()), ("ClusterRole", "weir-broker"));
    let subjects = binding.subjects.unwrap();
    assert_eq!((subjects[0].kind.as_str(), subjects[0].name.as_str()), ("ServiceAccount", "orders-broker"));

    let set: StatefulSet = h.must_get("orders-broker");
    assert_eq!(set.metadata.owner_references, Some(owned_by(&topic)));
    let pod_spec = set.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod_spec.service_account_name.as_deref(), Some("orders-broker"));
    assert!(set.annotations().contains_key(reconcile::apply::APPLIED_HASH_ANNOTATION));
    assert_eq!(set.labels()["app.kubernetes.io/managed-by"], "weir-operator");
    assert_eq!((set.spec.replicas, set.spec.service_name.as_deref()), (Some(3), Some("orders-broker")));
    assert_eq!(json!(set.spec.selector.match_labels), selector);
    let retention = set.spec.persistent_volume_claim_retention_policy.clone().unwrap();
    assert_eq!((retention.when_deleted.as_deref(), retention.when_scaled.as_deref()), (Some("Retain"), Some("Delete")));
    let claim = &set.spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(
        claim.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "10Gi"
    );
    let container = &set.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("ghcr.io/weir-mq/weir-sidecar:1.0.0"));
    assert!(container.args.as_ref().unwrap().windows(2).any(|a| a == ["--topic", "orders"]));

    let status = h.topic_status("orders");
    assert_eq!(kstatus(&status.conditions, 1), "Ready=False/Provisioning Reconciling=True Stalled=False");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.topic_name.as_deref(), Some("orders"));
    assert_eq!(assignment(&status), ["orders-broker-0: 0-1", "orders-broker-1: 2-3", "orders-broker-2: 4-5"]);
    let partitions = status.partitions.unwrap();
    assert_eq!((partitions.desired, partitions.serving, partitions.writable), (6, 0, 0));
    assert_eq!(status.endpoints.unwrap().grpc.as_deref(), Some("weir.shop.svc.cluster.local:8081"));
    assert_eq!(status.last_sync_time.map(|t| t.0.as_second()), Some(T0));

    h.run_brokers("orders", 3);
    h.clock.advance(Duration::from_secs(10));
    assert_eq!(h.reconcile_topic("orders").await.unwrap(), Action::requeue(DEFAULT_RESYNC));
    let status = h.topic_status("orders");
    assert_eq!(kstatus(&status.conditions, 1), "Ready=True/Serving Reconciling=False Stalled=False");
    let partitions = status.partitions.unwrap();
    assert_eq!((partitions.desired, partitions.serving, partitions.writable), (6, 6, 6));
    let brokers = status.brokers.unwrap();
    assert_eq!((brokers.replicas, brokers.ready_replicas), (3, 3));
    assert_eq!(status.storage.unwrap().min_capacity.map(|q| q.0).as_deref(), Some("10Gi"));
    assert_eq!(h.events(), ["Normal/Provisioning", "Normal/Serving"]);
}

/// API: in-memory fake (no API server can run here). Proves that reconciling a converged,
/// unchanged Topic again sends no request that changes anything (children and status are
/// compared with what is stored, no Event is published), and that the check is not vacuous: once
/// the resync period has passed exactly one status write (lastSyncTime) happens.
#[tokio::test]
async fn unchanged_converged_topic_reconcile_writes_nothing() {
    let h = Harness::start().await;
    h.converge_topic("orders", "partitions: 4\nbrokers: {replicas: 2}").await;
    let before = h.topic_status("orders");

    h.fake.clear_writes();
    h.clock.advance(Duration::from_secs(60));
    h.reconcile_topic("orders").await.unwrap();
    assert_eq!(h.changing_writes(), Vec::<String>::new());
    assert_eq!(h.fake.writes(), [], "an unchanged object is not even re-applied");
    assert_eq!(h.topic_status("orders"), before);

    h.clock.advance(DEFAULT_RESYNC);
    h.reconcile_topic("orders").await.unwrap();
    assert_eq!(h.changing_writes(), ["PATCH /apis/weir.dev/v1alpha1/namespaces/shop/topics/orders/status"]);
    let after = h.topic_status("orders");
    assert_eq!(after.last_sync_time.map(|t| t.0.as_second()), Some(T0 + 60 + DEFAULT_RESYNC.as_secs() as i64));
    assert_eq!(after.conditions, before.conditions, "a resync moves no condition");
}

/// API: in-memory fake (no API server can run here). Proves that a spec update (image, PDB,
/// partitions) is re-applied to the children, that the status reports the new observedGeneration
/// on the Topic and on every condition, Provisioning while the StatefulSet rolls out, and that
/// new partitions are assigned.
#[tokio::test]
async fn spec_update_is_applied_with_the_new_generation() {
    let h = Harness::start().await;
    h.converge_topic("orders", "partitions: 4\nbrokers: {replicas: 2}").await;
    let brokers = json!({"image": {"tag": "9.9.9"}, "disruption": {"maxUnavailable": 0}});
    let updated: Topic = h.patch("orders", json!({"spec": {"partitions": 6, "brokers": brokers}})).await;
    assert_eq!(updated.metadata.generation, Some(2));

    h.reconcile_topic("orders").await.unwrap();
    let set: StatefulSet = h.must_get("orders-broker");
    let image = set.spec.template.spec.as_ref().unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("ghcr.io/weir-mq/weir-sidecar:9.9.9"));
    assert_eq!((set.spec.replicas, set.metadata.generation), (Some(2), Some(2)));
    let pdb: PodDisruptionBudget = h.must_get("orders-broker");
    assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(0)));
    let status = h.topic_status("orders");
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(kstatus(&status.conditions, 2), "Ready=False/Provisioning Reconciling=True Stalled=False");
    assert!(ready_message(&status.conditions).contains("rollout in progress"), "{:?}", status.conditions);
    assert_eq!(assignment(&status), ["orders-broker-0: 0-1,4", "orders-broker-1: 2-3,5"]);

    h.run_brokers("orders", 2);
    h.reconcile_topic("orders").await.unwrap();
    let status = h.topic_status("orders");
    assert_eq!(kstatus(&status.conditions, 2), "Ready=True/Serving Reconciling=False Stalled=False");
    assert_eq!(status.partitions.unwrap().serving, 6);
}

/// API: in-memory fake (no API server can run here). Proves scaling both ways: a scale-up grows
/// the StatefulSet first and hands partitions to a new pod only once it is ready (the previous
/// owner drains them); a scale-down moves the departing pod's partitions away at once but keeps
/// the pod (StatefulSet replicas unchanged, Draining) until the broker reports its backlog
/// drained, then shrinks the StatefulSet.
#[tokio::test]
async fn scale_up_and_down_move_partitions_through_drains() {
    let h = Harness::start().await;
    h.converge_topic("orders", "partitions: 4\nbrokers: {replicas: 2}").await;

    h.patch::<Topic>("orders", json!({"spec": {"brokers": {"replicas": 3}}})).await;
    h.reconcile_topic("orders").await.unwrap();
    assert_eq!(h.must_get::<StatefulSet>("orders-broker").spec.replicas, Some(3));
    let status = h.topic_status("orders");
    assert_eq!(assignment(&status), ["orders-broker-0: 0-1", "orders-broker-1: 2-3"], "pod 2 is not ready yet");
    assert_eq!(kstatus(&status.conditions, 2), "Ready=False/Provisioning Reconciling=True Stalled=False");

    h.run_brokers("orders", 3);
    h.reconcile_topic("orders").await.unwrap();
    let status = h.topic_status("orders");
    assert_eq!(assignment(&status), ["orders-broker-0: 0-1", "orders-broker-1: 2 draining 3", "orders-broker-2: 3"]);
    assert_eq!(kstatus(&status.conditions, 2), "Ready=False/Reassigning Reconciling=True Stalled=False");
    // The fake broker reports no backlog: the drain is over on the next look.
    h.reconcile_topic("orders").await.unwrap();
    let status = h.topic_status("orders");
    assert_eq!(assignment(&status), ["orders-broker-0: 0-1", "orders-broker-1: 2", "orders-broker-2: 3"]);
    assert_eq!(kstatus(&status.conditions, 2), "Ready=True/Serving Reconciling=False Stalled=False");

    h.patch::<Topic>("orders", json!({"spec": {"brokers": {"replicas": 2}}})).await;
    h.admin.set_backlog("orders-broker-2", "orders", 3, 7);
    h.reconcile_topic("orders").await.unwrap();
    let status = h.topic_status("orders");
    assert_eq!(assignment(&status), ["orders-broker-0: 0-1", "orders-broker-1: 2-3", "orders-broker-2: draining 3"]);
    assert_eq!(kstatus(&status.conditions, 3), "Ready=False/Draining Reconciling=True Stalled=False");
    assert_eq!(h.must_get::<StatefulSet>("orders-broker").spec.replicas, Some(3), "pod 2 stays while it drains");

    h.reconcile_topic("orders").await.unwrap();
    assert_eq!(h.must_get::<StatefulSet>("orders-broker").spec.replicas, Some(3), "backlog 7 is left on pod 2");
    let asked = AdminCall::PartitionBacklog { pod: "orders-broker-2".into(), topic: "orders".into() };
    assert!(h.admin.calls().contains(&asked), "{:?}", h.admin.calls());

    h.admin.set_backlog("orders-broker-2", "orders", 3, 0);
    h.reconcile_topic("orders").await.unwrap();
    assert_eq!(h.must_get::<StatefulSet>("orders-broker").spec.replicas, Some(2));
    let status = h.topic_status("orders");
    assert_eq!(assignment(&status), ["orders-broker-0: 0-1", "orders-broker-1: 2-3"]);
    assert_eq!(kstatus(&status.conditions, 3), "Ready=False/Provisioning Reconciling=True Stalled=False");
    assert!(ready_message(&status.conditions).contains("rollout in progress"), "the set shrinks only now");
    h.run_brokers("orders", 2);
    assert_eq!(h.names::<Pod>(), ["orders-broker-0", "orders-broker-1"]);
    h.reconcile_topic("orders").await.unwrap();
    let status = h.topic_status("orders");
    assert_eq!(kstatus(&status.conditions, 3), "Ready=True/Serving Reconciling=False Stalled=False");
    assert_eq!(status.reassignment.unwrap().state, weir_crds::ReassignmentState::Idle);
}

/// API: in-memory fake (no API server can run here). Proves drift repair: fields the operator
/// sets that someone else changed (StatefulSet replicas, a Service selector) are put back, a
/// deleted PDB is recreated with its owner reference, fields others added are kept (server-side
/// apply, not replace), untouched children are not written, and afterwards nothing is written.
#[tokio::test]
async fn drift_is_repaired_and_foreign_fields_are_kept() {
    let h = Harness::start().await;
    let topic = h.converge_topic("orders", "partitions: 4\nbrokers: {replicas: 2}").await;

    h.patch::<StatefulSet>(
        "orders-broker",
        json!({"metadata": {"annotations": {"team": "payments"}}, "spec": {"replicas": 5}}),
    )
    .await;
    h.patch::<Service>("orders-broker", json!({"spec": {"selector": {"weir.dev/topic": "billing"}}})).await;
    h.delete::<PodDisruptionBudget>("orders-broker").await;
    assert!(h.get::<PodDisruptionBudget>("orders-broker").is_none());

    h.fake.clear_writes();
    h.reconcile_topic("orders").await.unwrap();
    let set: StatefulSet = h.must_get("orders-broker");
    assert_eq!(set.spec.replicas, Some(2));
    assert_eq!(set.annotations().get("team").map(String::as_str), Some("payments"));
    let selector = h.must_get::<Service>("orders-broker").spec.unwrap().selector.unwrap();
    assert_eq!(selector["weir.dev/topic"], "orders");
    let pdb: PodDisruptionBudget = h.must_get("orders-broker");
    assert_eq!(pdb.metadata.owner_references, Some(owned_by(&topic)));
    let writes = h.changing_writes();
    let prefix = "PATCH /api/v1/namespaces/shop/services";
    for expected in [
        format!("{prefix}/orders-broker"),
        "PATCH /apis/policy/v1/namespaces/shop/poddisruptionbudgets/orders-broker".to_owned(),
        "PATCH /apis/apps/v1/namespaces/shop/statefulsets/orders-broker".to_owned(),
    ] {
        assert!(writes.contains(&expected), "{expected} missing from {writes:?}");
    }
    assert!(!writes.iter().any(|w| w.starts_with(&format!("{prefix}/weir"))), "{writes:?}");

    h.run_brokers("orders", 2);
    h.reconcile_topic("orders").await.unwrap();
    h.fake.clear_writes();
    h.reconcile_topic("orders").await.unwrap();
    assert_eq!(h.changing_writes(), Vec::<String>::new(), "repaired children are stable");
}

/// API: in-memory fake (no API server can run here). Proves deletionPolicy Retain: deleting the
/// Topic waits for the finalizer, cleanup touches no broker and no volume, the finalizer is
/// removed, the owned children (StatefulSet, its pods, headless Service, PDB) are garbage
/// collected, and the PVCs and the shared client Service remain.
#[tokio::test]
async fn delete_with_retain_keeps_the_volumes() {
    let h = Harness::start().await;
    h.converge_topic("orders", "partitions: 2\nbrokers: {replicas: 2}").await;
    assert_eq!(h.names::<PersistentVolumeClaim>(), ["data-orders-broker-0", "data-orders-broker-1"]);

    h.delete::<Topic>("orders").await;
    let marked: Topic = h.must_get("orders");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(h.get::<StatefulSet>("orders-broker").is_some(), "children stay while the finalizer is there");

    h.reconcile_topic("orders").await.unwrap();
    assert!(h.get::<Topic>("orders").is_none());
    assert_eq!(h.names::<StatefulSet>(), Vec::<String>::new());
    assert_eq!(h.names::<Pod>(), Vec::<String>::new());
    assert_eq!(h.names::<PodDisruptionBudget>(), Vec::<String>::new());
    assert_eq!(h.names::<Service>(), [naming::CLIENT_SERVICE]);
    assert_eq!(h.names::<PersistentVolumeClaim>(), ["data-orders-broker-0", "data-orders-broker-1"]);
    assert_eq!(h.admin.calls(), [], "Retain asks no broker for anything");
}

/// API: in-memory fake (no API server can run here). Proves deletionPolicy Delete: cleanup
/// deletes the StatefulSet and exactly this Topic's PVCs (another Topic's volumes and StatefulSet
/// stay), publishes a Deleted event, then the finalizer goes and the Topic and its children are
/// gone.
#[tokio::test]
async fn delete_with_delete_removes_the_statefulset_and_its_volumes() {
    let h = Harness::start().await;
    h.converge_topic("orders", "partitions: 2\nbrokers: {replicas: 2}\ndeletionPolicy: Delete").await;
    h.converge_topic("payments", "partitions: 1").await;
    assert_eq!(
        h.names::<PersistentVolumeClaim>(),
        ["data-orders-broker-0", "data-orders-broker-1", "data-payments-broker-0"]
    );

    h.delete::<Topic>("orders").await;
    h.reconcile_topic("orders").await.unwrap();
    assert!(h.get::<Topic>("orders").is_none());
    assert_eq!(h.names::<PersistentVolumeClaim>(), ["data-payments-broker-0"]);
    assert_eq!(h.names::<StatefulSet>(), ["payments-broker"]);
    assert_eq!(h.names::<Pod>(), ["payments-broker-0"]);
    assert_eq!(h.names::<PodDisruptionBudget>(), ["payments-broker"]);
    assert_eq!(h.names::<Service>(), ["payments-broker", naming::CLIENT_SERVICE]);
    assert!(h.events().contains(&"Normal/Deleted".to_owned()), "{:?}", h.events());
}

/// API: in-memory fake (no API server can run here). Proves namespace termination: deleting the
/// namespace marks the Topic and the ConsumerGroup and removes what has no finalizer; the group's
/// cleanup then finishes without asking the brokers (which would refuse) although the Topic's
/// StatefulSet still exists, the Topic's cleanup finishes too, and the namespace disappears.
#[tokio::test]
async fn namespace_termination_releases_topics_and_groups() {
    let h = Harness::start().await;
    h.converge_topic("orders", "partitions: 2\nbrokers: {replicas: 2}\ndeletionPolicy: Delete").await;
    h.converge_group("billing", "subscriptions: [{topicRef: {name: orders}}]").await;
    h.admin.fail("orders-broker-0", true);
    h.admin.fail("orders-broker-1", true);
    // The namespace controller deletes content in no particular order: another controller's
    // finalizer keeps the StatefulSet (and so its pods) around while the group is cleaned up.
    let hold = |finalizers: Value| json!({"metadata": {"finalizers": finalizers}});
    h.patch::<StatefulSet>("orders-broker", hold(json!(["example.com/hold"]))).await;

    Api::<Namespace>::all(h.ctx.client.clone()).delete(NS, &DeleteParams::default()).await.unwrap();
    let ns = h.fake.get("v1", "namespaces", None, NS).expect("held by the finalizers");
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(h.must_get::<ConsumerGroup>("billing").metadata.deletion_timestamp.is_some());
    assert!(h.must_get::<Topic>("orders").metadata.deletion_timestamp.is_some());
    assert!(h.must_get::<StatefulSet>("orders-broker").metadata.deletion_timestamp.is_some());
    assert_eq!(h.names::<PersistentVolumeClaim>(), Vec::<String>::new());

    h.reconcile_group("billing").await.expect("cleanup does not wait for brokers in a terminating namespace");
    assert!(h.get::<ConsumerGroup>("billing").is_none());
    assert_eq!(h.broker_calls(is_delete_group), []);
    h.reconcile_topic("orders").await.unwrap();
    assert!(h.get::<Topic>("orders").is_none());
    h.patch::<StatefulSet>("orders-broker", hold(Value::Null)).await;
    assert!(h.fake.get("v1", "namespaces", None, NS).is_none(), "the empty namespace is gone");
}

/// API: in-memory fake (no API server can run here). Proves conflicting topic names: of two
/// Topics resolving to the same RocketMQ name, the younger one (even with the name that sorts
/// first) gets Ready=False ResourceConflict, Stalled, a Warning event and no children, while the
/// older one is provisioned; once the older one is deleted the younger one takes the name.
#[tokio::test]
async fn conflicting_topic_names_leave_the_younger_stalled() {
    let h = Harness::start().await;
    let older: Topic = h.create("v1-orders", "topicName: orders\npartitions: 2").await;
    let created = older.metadata.creation_timestamp.clone().unwrap().0.as_second();
    wait_for(WAIT, "the next second of the API server's clock", async || {
        (Timestamp::now().as_second() > created).then_some(())
    })
    .await;
    h.create::<Topic>("orders", "partitions: 2").await;
    for name in ["v1-orders", "orders", "v1-orders", "orders"] {
        h.reconcile_topic(name).await.unwrap();
    }

    assert_eq!(
        kstatus(&h.topic_status("v1-orders").conditions, 1),
        "Ready=False/Provisioning Reconciling=True Stalled=False"
    );
    assert!(h.get::<StatefulSet>("v1-orders-broker").is_some());
    let status = h.topic_status("orders");
    assert_eq!(kstatus(&status.conditions, 1), "Ready=False/ResourceConflict Reconciling=False Stalled=True");
    assert!(ready_message(&status.conditions).contains("\"v1-orders\""), "{:?}", status.conditions);
    assert!(status.assignment.is_empty());
    assert!(h.get::<StatefulSet>("orders-broker").is_none());
    assert!(h.get::<Service>("orders-broker").is_none());
    assert!(h.get::<PodDisruptionBudget>("orders-broker").is_none());
    assert!(h.events().contains(&"Warning/ResourceConflict".to_owned()), "{:?}", h.events());

    h.delete::<Topic>("v1-orders").await;
    h.reconcile_topic("v1-orders").await.unwrap();
    assert_eq!(h.reconcile_topic("orders").await.unwrap(), Action::requeue(PROGRESS_REQUEUE));
    let status = h.topic_status("orders");
    assert_eq!(kstatus(&status.conditions, 1), "Ready=False/Provisioning Reconciling=True Stalled=False");
    let set: StatefulSet = h.must_get("orders-broker");
    assert_eq!(set.metadata.owner_references, Some(owned_by(&h.must_get("orders"))));
}

/// API: in-memory fake (no API server can run here). Proves ConsumerGroup validation against the
/// Topics: a missing Topic gives Ready=False TopicNotFound (not stalled) until it is created, then
/// Active; an Orderly group on a Normal topic is InvalidSpec and Stalled; on a FIFO topic it is
/// Active.
#[tokio::test]
async fn group_is_validated_against_its_topics() {
    let h = Harness::start().await;
    let status = h.converge_group("billing", "subscriptions: [{topicRef: {name: orders}}]").await;
    assert_eq!(h.must_get::<ConsumerGroup>("billing").finalizers(), [FINALIZER]);
    assert_eq!(kstatus(&status.conditions, 1), "Ready=False/TopicNotFound Reconciling=True Stalled=False");
    assert_eq!(ready_message(&status.conditions), "Topic orders not found in this namespace");
    assert_eq!((status.subscriptions[0].topic.as_str(), status.subscriptions[0].ready), ("orders", false));

    h.converge_topic("orders", "partitions: 4\nbrokers: {replicas: 2}").await;
    h.reconcile_group("billing").await.unwrap();
    let status = h.group_status("billing");
    assert_eq!(kstatus(&status.conditions, 1), "Ready=True/Active Reconciling=False Stalled=False");
    let sub = &status.subscriptions[0];
    assert_eq!((sub.topic.as_str(), sub.partitions, sub.ready), ("orders", 4, true));
    assert_eq!(status.group_name.as_deref(), Some("billing"));

    let status = h.converge_group("audit", "subscriptions: [{topicRef: {name: orders}}]\nordering: Orderly").await;
    assert_eq!(kstatus(&status.conditions, 1), "Ready=False/InvalidSpec Reconciling=False Stalled=True");
    assert!(ready_message(&status.conditions).contains("needs FIFO"), "{:?}", status.conditions);
    assert_eq!(h.reconcile_group("audit").await.unwrap(), Action::await_change());

    h.converge_topic("ledger", "messageType: FIFO\npartitions: 2").await;
    let status =
        h.converge_group("ledger-audit", "subscriptions: [{topicRef: {name: ledger}}]\nordering: Orderly").await;
    assert_eq!(kstatus(&status.conditions, 1), "Ready=True/Active Reconciling=False Stalled=False");
}

/// API: in-memory fake (no API server can run here). Proves pause: consumeEnabled false reports
/// Ready=True Paused; resuming reports Active for the new generation.
#[tokio::test]
async fn paused_group_reports_paused_until_resumed() {
    let h = Harness::start().await;
    h.converge_topic("orders", "partitions: 2").await;
    let status =
        h.converge_group("billing", "subscriptions: [{topicRef: {name: orders}}]\nconsumeEnabled: false").await;
    assert_eq!(kstatus(&status.conditions, 1), "Ready=True/Paused Reconciling=False Stalled=False");

    h.patch::<ConsumerGroup>("billing", json!({"spec": {"consumeEnabled": true}})).await;
    h.reconcile_group("billing").await.unwrap();
    let status = h.group_status("billing");
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(kstatus(&status.conditions, 2), "Ready=True/Active Reconciling=False Stalled=False");
}

/// API: in-memory fake (no API server can run here). Proves the declarative offset reset:
/// ResetOffset is called on every assigned pod exactly once per requestId (later reconciles call
/// nothing), the outcome lands in status.lastOffsetReset; a new requestId waits (ResetBlocked, no
/// call) while consumers are online, and runs once when forced.
#[tokio::test]
async fn offset_reset_runs_once_per_request_id() {
    let h = Harness::start().await;
    h.converge_topic("orders", "partitions: 4\nbrokers: {replicas: 2}").await;
    let spec = "subscriptions: [{topicRef: {name: orders}}]\noffsetReset: {requestId: r1, to: Earliest}";
    let status = h.converge_group("billing", spec).await;
    let reset = |pod: &str, target| AdminCall::ResetOffset {
        pod: pod.to_owned(),
        group: "billing".into(),
        topic: "orders".into(),
        target,
    };
    let first = [reset("orders-broker-0", ResetTarget::Earliest), reset("orders-broker-1", ResetTarget::Earliest)];
    assert_eq!(h.broker_calls(is_reset), first);
    let last = status.last_offset_reset.unwrap();
    assert_eq!((last.request_id.as_str(), last.result), ("r1", weir_crds::OffsetResetResult::Succeeded));
    assert_eq!(last.completed_at.map(|t| t.0.as_second()), Some(T0));
    assert_eq!(kstatus(&status.conditions, 1), "Ready=True/Active Reconciling=False Stalled=False");

    for _ in 0..2 {
        h.reconcile_group("billing").await.unwrap();
    }
    assert_eq!(h.broker_calls(is_reset), first, "a handled requestId is not executed again");

    let online = GroupTopicStats { lag: 0, inflight: 0, members: 2 };
    h.admin.set_stats("orders-broker-0", "orders", "billing", online);
    h.patch::<ConsumerGroup>(
        "billing",
        json!({"spec": {"offsetReset": {"requestId": "r2", "to": "Offset", "offset": 42}}}),
    )
    .await;
    h.reconcile_group("billing").await.unwrap();
    let status = h.group_status("billing");
    assert_eq!(kstatus(&status.conditions, 2), "Ready=False/ResetBlocked Reconciling=True Stalled=False");
    assert_eq!(status.last_offset_reset.unwrap().request_id, "r1");
    assert_eq!(h.broker_calls(is_reset), first);

    h.patch::<ConsumerGroup>("billing", json!({"spec": {"offsetReset": {"force": true}}})).await;
    for _ in 0..3 {
        h.reconcile_group("billing").await.unwrap();
    }
    let second = [reset("orders-broker-0", ResetTarget::Offset(42)), reset("orders-broker-1", ResetTarget::Offset(42))];
    assert_eq!(h.broker_calls(is_reset), [first, second].concat());
    let status = h.group_status("billing");
    assert_eq!(status.last_offset_reset.unwrap().request_id, "r2");
    assert_eq!(kstatus(&status.conditions, 3), "Ready=True/Active Reconciling=False Stalled=False");
}

/// API: in-memory fake (no API server can run here). Proves ConsumerGroup deletionPolicy Delete:
/// cleanup calls DeleteGroup on every pod of the subscribed Topic; while one broker refuses, the
/// reconcile fails, the finalizer stays and the status says Stalled/CleanupBlocked (with a
/// Warning event); once the broker heals, the next reconcile removes the finalizer.
#[tokio::test]
async fn group_delete_is_blocked_by_a_refusing_broker_until_it_heals() {
    let h = Harness::start().await;
    h.converge_topic("orders", "partitions: 4\nbrokers: {replicas: 2}").await;
    h.converge_group("billing", "subscriptions: [{topicRef: {name: orders}}]").await;
    h.admin.fail("orders-broker-1", true);
    h.delete::<ConsumerGroup>("billing").await;

    let both = [delete_group("orders-broker-0", "billing"), delete_group("orders-broker-1", "billing")];
    for attempt in 1..=2 {
        let error = h.reconcile_group("billing").await.expect_err("a refusing broker blocks the cleanup");
        assert_eq!(error.metric_label(), "cleanup_blocked", "{error}");
        assert_eq!(h.broker_calls(is_delete_group), vec![both.clone(); attempt].concat());
        let group: ConsumerGroup = h.must_get("billing");
        assert_eq!(group.finalizers(), [FINALIZER]);
        let status = group.status.unwrap();
        assert_eq!(kstatus(&status.conditions, 1), "Ready=False/CleanupBlocked Reconciling=False Stalled=True");
        assert!(ready_message(&status.conditions).contains(FORCE_DELETE_ANNOTATION), "{:?}", status.conditions);
    }
    assert!(h.events().contains(&"Warning/CleanupBlocked".to_owned()), "{:?}", h.events());

    h.admin.heal("orders-broker-1");
    h.reconcile_group("billing").await.unwrap();
    assert!(h.get::<ConsumerGroup>("billing").is_none());
    assert_eq!(h.broker_calls(is_delete_group), vec![both; 3].concat());
}

/// API: in-memory fake (no API server can run here). Proves the two ways a group's cleanup
/// finishes despite a refusing broker: the force-delete annotation (DeleteGroup is still tried on
/// every pod, failures are ignored) and deletionPolicy Retain (no broker call at all).
#[tokio::test]
async fn force_delete_annotation_and_retain_finish_without_the_brokers() {
    let h = Harness::start().await;
    h.converge_topic("orders", "partitions: 4\nbrokers: {replicas: 2}").await;
    h.converge_group("forced", "subscriptions: [{topicRef: {name: orders}}]").await;
    h.converge_group("kept", "subscriptions: [{topicRef: {name: orders}}]\ndeletionPolicy: Retain").await;
    h.admin.fail("orders-broker-0", true);

    h.patch::<ConsumerGroup>("forced", json!({"metadata": {"annotations": {(FORCE_DELETE_ANNOTATION): "true"}}})).await;
    h.delete::<ConsumerGroup>("forced").await;
    h.reconcile_group("forced").await.expect("force-delete ignores the refusing broker");
    assert!(h.get::<ConsumerGroup>("forced").is_none());
    let tried = [delete_group("orders-broker-0", "forced"), delete_group("orders-broker-1", "forced")];
    assert_eq!(h.broker_calls(is_delete_group), tried);

    h.delete::<ConsumerGroup>("kept").await;
    h.reconcile_group("kept").await.unwrap();
    assert!(h.get::<ConsumerGroup>("kept").is_none());
    assert_eq!(h.broker_calls(is_delete_group), tried, "Retain asks no broker to forget the group");
}

/// API: in-memory fake (no API server can run here); the real `controller::run` watches it. Proves
/// the controllers end to end: a created Topic gets its finalizer, StatefulSet and a Provisioning
/// status without any direct call; once the test (playing kubelet and StatefulSet controller)
/// reports the pods ready, the StatefulSet watch brings the Topic to Ready=True Serving; a
/// ConsumerGroup turns Active and its deletion calls DeleteGroup on both pods; deleting the Topic
/// (policy Delete) removes it, its StatefulSet and its PVCs; shutdown stops the controllers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_run_end_to_end() {
    let h = Harness::start().await;
    let ctx = context(&h.fake, &h.admin, Arc::new(SystemClock));
    let health = Arc::new(Health::default());
    health.set_leading(true);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    }
    .boxed()
    .shared();
    let scope = Scope::Namespaces(vec![NS.to_owned()]);
    let controllers = tokio::spawn(controller::run(ctx, scope, health.clone(), shutdown));
    wait_for(WAIT, "the controllers' caches to sync", async || health.ready().then_some(())).await;

    h.create::<Topic>("orders", "partitions: 4\nbrokers: {replicas: 2}\ndeletionPolicy: Delete").await;
    let topic_kstatus = |h: &Harness| Some(kstatus(&h.get::<Topic>("orders")?.status?.conditions, 1));
    wait_for(WAIT, "the StatefulSet and a Provisioning status", async || {
        let set = h.get::<StatefulSet>("orders-broker")?;
        let provisioning = topic_kstatus(&h)? == "Ready=False/Provisioning Reconciling=True Stalled=False";
        (provisioning && set.spec.replicas == Some(2)).then_some(())
    })
    .await;
    assert_eq!(h.must_get::<Topic>("orders").finalizers(), [FINALIZER]);

    h.run_brokers("orders", 2);
    wait_for(WAIT, "Ready=True Serving", async || {
        (topic_kstatus(&h)? == "Ready=True/Serving Reconciling=False Stalled=False").then_some(())
    })
    .await;
    assert_eq!(assignment(&h.topic_status("orders")), ["orders-broker-0: 0-1", "orders-broker-1: 2-3"]);

    h.create::<ConsumerGroup>("billing", "subscriptions: [{topicRef: {name: orders}}]").await;
    wait_for(WAIT, "the group to be Active", async || {
        let status = h.get::<ConsumerGroup>("billing")?.status?;
        (kstatus(&status.conditions, 1) == "Ready=True/Active Reconciling=False Stalled=False").then_some(())
    })
    .await;
    h.delete::<ConsumerGroup>("billing").await;
    wait_for(WAIT, "the group to be gone", async || h.get::<ConsumerGroup>("billing").is_none().then_some(())).await;
    let deleted = [delete_group("orders-broker-0", "billing"), delete_group("orders-broker-1", "billing")];
    assert_eq!(h.broker_calls(is_delete_group), deleted);

    h.delete::<Topic>("orders").await;
    wait_for(WAIT, "the Topic, its StatefulSet and its PVCs to be gone", async || {
        let gone = h.get::<Topic>("orders").is_none()
            && h.names::<StatefulSet>().is_empty()
            && h.names::<PersistentVolumeClaim>().is_empty();
        gone.then_some(())
    })
    .await;

    stop.send(()).expect("the controllers are running");
    tokio::time::timeout(WAIT, controllers).await.expect("the controllers stop on shutdown").unwrap();
    assert!(!health.ready());
}
