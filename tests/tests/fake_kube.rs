//! The in-memory API server (`weir_tests::fake_kube`) driven through an unmodified `kube::Client`,
//! `kube::runtime` (watcher, Controller, finalizer helper, Recorder), a hand-written Lease election
//! and, from other processes, a kubeconfig: each semantic the operator tests rely on.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Request;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
    WatchEvent, WatchParams,
};
use kube::core::GroupVersionKind;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use weir_tests::fake_kube::{FakeKube, WriteRecord};
use weir_tests::wait_for;

const WAIT: Duration = Duration::from_secs(20);

fn config_map(name: &str, labels: Value, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
        .expect("valid ConfigMap")
}

/// The `Status` a request failed with.
fn status<T: Debug>(result: kube::Result<T>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(s)) => (s.code, s.reason, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn rv<K: Resource>(obj: &K) -> u64 {
    obj.meta().resource_version.as_deref().and_then(|v| v.parse().ok()).expect("numeric resourceVersion")
}

fn names<K: Resource>(list: &[K]) -> Vec<String> {
    let mut names: Vec<String> = list.iter().map(|o| o.meta().name.clone().unwrap_or_default()).collect();
    names.sort();
    names
}

fn topic_resource() -> ApiResource {
    ApiResource::erase::<weir_crds::Topic>(&())
}

#[tokio::test]
async fn crud_routing_and_errors() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    fake.create_namespace("a");
    fake.create_namespace("b");
    let pp = PostParams::default();
    let in_a: Api<ConfigMap> = Api::namespaced(client.clone(), "a");

    let one = in_a.create(&pp, &config_map("one", json!({}), json!({"k": "v"}))).await.expect("create");
    assert!(!one.uid().unwrap_or_default().is_empty());
    assert!(one.metadata.creation_timestamp.is_some());
    assert_eq!(one.metadata.generation, Some(1));
    assert_eq!(rv(&one), fake.resource_version());
    let (code, reason, message) = status(in_a.create(&pp, &config_map("one", json!({}), json!({}))).await);
    assert_eq!((code, reason.as_str(), message.as_str()), (409, "AlreadyExists", "configmaps \"one\" already exists"));

    let mut generated = config_map("", json!({}), json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let generated = in_a.create(&pp, &generated).await.expect("generateName");
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9, "{}", generated.name_any());

    assert!(in_a.get_opt("nope").await.expect("get_opt").is_none());
    let (code, reason, message) = status(in_a.get("nope").await);
    assert_eq!((code, reason.as_str(), message.as_str()), (404, "NotFound", "configmaps \"nope\" not found"));
    let missing_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "missing");
    assert_eq!(status(missing_ns.create(&pp, &config_map("x", json!({}), json!({}))).await).0, 404);

    // All-namespace list, list envelope, cluster-scoped kind.
    Api::<ConfigMap>::namespaced(client.clone(), "b")
        .create(&pp, &config_map("two", json!({}), json!({})))
        .await
        .unwrap();
    let all = Api::<ConfigMap>::all(client.clone()).list(&ListParams::default()).await.expect("list all");
    assert_eq!(names(&all.items), [generated.name_any().as_str(), "one", "two"]);
    let raw: Value =
        client.request(Request::get("/api/v1/configmaps?limit=500").body(Vec::new()).unwrap()).await.expect("raw list");
    assert_eq!((raw["kind"].as_str(), raw["apiVersion"].as_str()), (Some("ConfigMapList"), Some("v1")));
    assert_eq!(raw["metadata"]["resourceVersion"], fake.resource_version().to_string());
    let namespaces = Api::<Namespace>::all(client.clone()).list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&namespaces.items), ["a", "b", "default"]);
    assert_eq!(namespaces.items[0].status.as_ref().and_then(|s| s.phase.as_deref()), Some("Active"));

    // Grouped kinds: apps/v1 and Weir's custom resources.
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "broker"},
        "spec": {"serviceName": "broker", "selector": {"matchLabels": {"app": "b"}}, "template": {"metadata": {"labels": {"app": "b"}}}},
    }))
    .unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), "a").create(&pp, &sts).await.expect("statefulset");
    assert!(fake.get_typed::<StatefulSet>(Some("a"), "broker").is_some());
    let ar = topic_resource();
    let topics: Api<DynamicObject> = Api::namespaced_with(client.clone(), "a", &ar);
    let topic = DynamicObject::new("orders", &ar).data(json!({"spec": {"partitions": 4}}));
    topics.create(&pp, &topic).await.expect("create topic");
    let stored = fake.get("weir.dev/v1alpha1", "Topic", Some("a"), "orders").expect("stored topic");
    assert_eq!(stored["spec"]["partitions"], 4);
    let all_topics = Api::<DynamicObject>::all_with(client.clone(), &ar).list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&all_topics.items), ["orders"]);

    // A type outside the built-in table is learned from the first object written to it.
    let widgets = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets");
    let widget_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "b", &widgets);
    widget_api.create(&pp, &DynamicObject::new("w", &widgets).data(json!({"spec": {"size": 1}}))).await.unwrap();
    let listed = Api::<DynamicObject>::all_with(client.clone(), &widgets).list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&listed.items), ["w"]);
    assert!(fake.get("example.com/v1", "Widget", Some("b"), "w").is_some());

    // PUT with a stale resourceVersion conflicts.
    let mut fresh = one.clone();
    fresh.data = Some([("k".to_owned(), "v2".to_owned())].into());
    let replaced = in_a.replace("one", &pp, &fresh).await.expect("replace");
    assert!(rv(&replaced) > rv(&one));
    let (code, reason, _) = status(in_a.replace("one", &pp, &fresh).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // Metadata-only reads (Accept: PartialObjectMetadata) get full objects, which kube accepts.
    assert_eq!(in_a.get_metadata("one").await.unwrap().metadata.resource_version, replaced.metadata.resource_version);
    assert_eq!(in_a.list_metadata(&ListParams::default()).await.unwrap().items.len(), 2);

    // DELETE honours preconditions, then the object is gone.
    let stale_precondition = DeleteParams {
        preconditions: Some(Preconditions { resource_version: one.metadata.resource_version.clone(), uid: None }),
        ..DeleteParams::default()
    };
    assert_eq!(status(in_a.delete("one", &stale_precondition).await).1, "Conflict");
    in_a.delete("one", &DeleteParams::default()).await.expect("delete");
    assert_eq!(status(in_a.delete("one", &DeleteParams::default()).await).0, 404);
    assert!(fake.get("v1", "configmaps", Some("a"), "one").is_none());
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let fake = FakeKube::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(fake.client());
    for (name, labels) in [
        ("broker", json!({"app": "weir", "tier": "broker"})),
        ("proxy", json!({"app": "weir", "tier": "proxy"})),
        ("other", json!({"app": "other"})),
    ] {
        api.create(&PostParams::default(), &config_map(name, labels, json!({}))).await.unwrap();
    }
    let cases: [(&str, &[&str]); 8] = [
        ("app=weir", &["broker", "proxy"]),
        ("app==weir,tier=proxy", &["proxy"]),
        ("app!=weir", &["other"]),
        ("tier in (broker, x)", &["broker"]),
        ("tier notin (broker)", &["other", "proxy"]),
        ("tier", &["broker", "proxy"]),
        ("!tier", &["other"]),
        ("app in (weir),tier notin (proxy)", &["broker"]),
    ];
    for (selector, expected) in cases {
        let got = api.list(&ListParams::default().labels(selector)).await.expect(selector);
        assert_eq!(names(&got.items), expected, "labelSelector {selector}");
    }
    let by_name = api.list(&ListParams::default().fields("metadata.name=proxy")).await.unwrap();
    assert_eq!(names(&by_name.items), ["proxy"]);
    let all = Api::<ConfigMap>::all(fake.client());
    let by_ns =
        all.list(&ListParams::default().fields("metadata.namespace=default,metadata.name!=proxy")).await.unwrap();
    assert_eq!(names(&by_ns.items), ["broker", "other"]);
    let (code, reason, _) = status(api.list(&ListParams::default().labels("tier in (broker")).await);
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn status_subresource_generation_and_no_op_writes() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    let api: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "broker"},
        "spec": {"replicas": 1, "serviceName": "broker", "selector": {"matchLabels": {"app": "b"}}, "template": {}},
        "status": {"replicas": 7},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &sts).await.unwrap();
    assert!(created.status.is_none(), "create drops a submitted status");

    let with_status = api
        .patch_status("broker", &PatchParams::default(), &Patch::Merge(json!({"status": {"replicas": 3}})))
        .await
        .unwrap();
    assert_eq!(with_status.status.as_ref().map(|s| s.replicas), Some(3));
    assert_eq!(with_status.metadata.generation, Some(1), "status writes keep the generation");

    // A main-resource write keeps the stored status and bumps the generation for a spec change.
    let mut scaled = with_status.clone();
    scaled.spec.replicas = Some(5);
    scaled.status.as_mut().unwrap().replicas = 99;
    let scaled = api.replace("broker", &PostParams::default(), &scaled).await.unwrap();
    assert_eq!((scaled.status.as_ref().map(|s| s.replicas), scaled.metadata.generation), (Some(3), Some(2)));

    // Metadata changes bump the resourceVersion but not the generation.
    let labelled = api
        .patch("broker", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();
    assert!(rv(&labelled) > rv(&scaled));
    assert_eq!(labelled.metadata.generation, Some(2));

    // A /status write cannot change the spec.
    let status_put = api
        .patch_status(
            "broker",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(status_put.spec.replicas, Some(5));

    // Writes that change nothing keep the resourceVersion and are logged as unchanged.
    fake.clear_writes();
    let before = fake.resource_version();
    let same = api.replace("broker", &PostParams::default(), &status_put).await.unwrap();
    let same2 = api.patch("broker", &PatchParams::default(), &Patch::Merge(json!({}))).await.unwrap();
    assert_eq!((rv(&same), rv(&same2), fake.resource_version()), (before, before, before));
    let path = "/apis/apps/v1/namespaces/default/statefulsets/broker".to_owned();
    assert_eq!(
        fake.writes(),
        [
            WriteRecord { method: "PUT".into(), path: path.clone(), status: 200, changed: false },
            WriteRecord { method: "PATCH".into(), path, status: 200, changed: false },
        ]
    );

    // The test-side API plays kubelet: status included, typed.
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}}))
            .unwrap();
    let created = Api::<Pod>::default_namespaced(client).create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(created.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    fake.patch_status("v1", "pods", Some("default"), "p", json!({"phase": "Running", "podIP": "10.0.0.7"})).unwrap();
    let running = fake.get_typed::<Pod>(Some("default"), "p").unwrap();
    assert_eq!(running.status.as_ref().and_then(|s| s.pod_ip.as_deref()), Some("10.0.0.7"));
    let mut ready = running.clone();
    ready.status.as_mut().unwrap().phase = Some("Succeeded".into());
    assert_eq!(fake.put_typed(&ready).unwrap().status.and_then(|s| s.phase).as_deref(), Some("Succeeded"));
}

#[tokio::test]
async fn patch_flavours_and_server_side_apply() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &config_map("c", json!({"a": "1"}), json!({"x": "1", "y": "2"}))).await.unwrap();

    let merged =
        api.patch("c", &PatchParams::default(), &Patch::Merge(json!({"data": {"x": null, "z": "3"}}))).await.unwrap();
    assert_eq!(merged.data.unwrap().into_keys().collect::<Vec<_>>(), ["y", "z"]);
    let strategic =
        api.patch("c", &PatchParams::default(), &Patch::Strategic(json!({"data": {"w": "4"}}))).await.unwrap();
    assert_eq!(strategic.data.unwrap().len(), 3);

    // JSON patch: a passing test applies; a failing test is 422; test-for-null passes on a missing path.
    let ops = |v: Value| Patch::<()>::Json(serde_json::from_value(v).expect("valid JSON patch"));
    let passed = api
        .patch(
            "c",
            &PatchParams::default(),
            &ops(json!([
                {"op": "test", "path": "/data/y", "value": "2"},
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
            ])),
        )
        .await
        .unwrap();
    assert_eq!(passed.finalizers(), ["f"]);
    let failed =
        api.patch("c", &PatchParams::default(), &ops(json!([{"op": "test", "path": "/data/y", "value": "no"}]))).await;
    let (code, reason, _) = status(failed);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    api.patch("c", &PatchParams::default(), &ops(json!([{"op": "remove", "path": "/metadata/finalizers/0"}])))
        .await
        .unwrap();

    // Apply without a field manager is a 400.
    let unmanaged = Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
    let (code, reason, _) = status(api.patch("c", &PatchParams::default(), &unmanaged).await);
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));

    // Apply creates, updates, removes what the manager stopped applying, keeps others' fields.
    let ssa = PatchParams::apply("weir-operator");
    let desired = |labels: Value, data: Value| {
        Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "labels": labels}, "data": data}),
        )
    };
    let created = api.patch("applied", &ssa, &desired(json!({"m": "1"}), json!({"a": "1", "b": "2"}))).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    api.patch(
        "applied",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"someone-else": "x"}}})),
    )
    .await
    .unwrap();
    let updated =
        api.patch("applied", &ssa.clone().force(), &desired(json!({"n": "2"}), json!({"a": "1"}))).await.unwrap();
    let labels: Vec<&String> = updated.labels().keys().collect();
    assert_eq!(labels, ["n", "someone-else"]);
    assert_eq!(updated.data.clone().unwrap().into_keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(updated.metadata.generation, Some(2));

    fake.clear_writes();
    let again = api.patch("applied", &ssa, &desired(json!({"n": "2"}), json!({"a": "1"}))).await.unwrap();
    assert_eq!(rv(&again), rv(&updated), "re-applying the same object is a no-op");
    assert!(fake.writes().iter().all(|w| !w.changed), "{:?}", fake.writes());

    // Apply to /status: only .status changes, and dropped status fields go away.
    let ar = topic_resource();
    let topics: Api<DynamicObject> = Api::default_namespaced_with(client, &ar);
    let topic = |body: Value| {
        let mut obj = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Topic", "metadata": {"name": "t"}});
        obj.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
        Patch::Apply(obj)
    };
    topics.patch("t", &ssa, &topic(json!({"spec": {"partitions": 2}}))).await.unwrap();
    let status_of = |o: DynamicObject| (o.data["status"].clone(), o.data["spec"].clone(), o.metadata.generation);
    let first = topics.patch_status("t", &ssa, &topic(json!({"status": {"phase": "Ready", "observed": 1}}))).await;
    let expected = (json!({"phase": "Ready", "observed": 1}), json!({"partitions": 2}), Some(1));
    assert_eq!(status_of(first.unwrap()), expected);
    let second = topics.patch_status("t", &ssa, &topic(json!({"status": {"phase": "Ready"}, "spec": {"x": 1}}))).await;
    assert_eq!(status_of(second.unwrap()), (json!({"phase": "Ready"}), json!({"partitions": 2}), Some(1)));
}

#[tokio::test]
async fn watch_replays_history_filters_and_times_out() {
    let fake = FakeKube::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(fake.client());
    api.create(&PostParams::default(), &config_map("old", json!({"app": "weir"}), json!({}))).await.unwrap();
    let start = fake.resource_version();

    // From "0": ADDED for what exists.
    let mut from_now = api.watch(&WatchParams::default().labels("app=weir"), "0").await.unwrap().boxed();
    match from_now.try_next().await.unwrap() {
        Some(WatchEvent::Added(cm)) => assert_eq!(cm.name_any(), "old"),
        other => panic!("expected ADDED old, got {other:?}"),
    }

    let pp = PostParams::default();
    api.create(&pp, &config_map("a", json!({"app": "weir"}), json!({}))).await.unwrap();
    api.create(&pp, &config_map("ignored", json!({"app": "other"}), json!({}))).await.unwrap();
    let merge = |v: Value| Patch::Merge(v);
    api.patch("a", &PatchParams::default(), &merge(json!({"data": {"k": "v"}}))).await.unwrap();
    api.patch("a", &PatchParams::default(), &merge(json!({"data": {"k": "v"}}))).await.unwrap(); // no-op: no event
    api.patch("a", &PatchParams::default(), &merge(json!({"metadata": {"labels": {"app": "gone"}}}))).await.unwrap();
    api.patch("ignored", &PatchParams::default(), &merge(json!({"metadata": {"labels": {"app": "weir"}}})))
        .await
        .unwrap();
    api.delete("ignored", &DeleteParams::default()).await.unwrap();
    let expected = ["ADDED a", "MODIFIED a", "DELETED a", "ADDED ignored", "DELETED ignored"];

    let describe = |e: WatchEvent<ConfigMap>| match e {
        WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.name_any()),
        other => format!("{other:?}"),
    };
    let live: Vec<String> = from_now.take(expected.len()).map(|e| describe(e.unwrap())).collect().await;
    assert_eq!(live, expected);

    // Replay from the older resourceVersion gives the same events, then the stream ends at its timeout.
    let wp = WatchParams::default().labels("app=weir").timeout(1);
    let replay = api.watch(&wp, &start.to_string()).await.unwrap();
    let replayed: Vec<String> = tokio::time::timeout(WAIT, replay.map(|e| describe(e.unwrap())).collect())
        .await
        .expect("stream ends after timeoutSeconds");
    assert_eq!(replayed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_streaming_list_and_controller_reconcile_per_change() {
    let fake = FakeKube::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(fake.client());
    api.create(&PostParams::default(), &config_map("first", json!({}), json!({}))).await.unwrap();

    // Streaming lists (sendInitialEvents + initial-events-end bookmark).
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("InitDone") {
        seen.push(match events.try_next().await.unwrap().unwrap() {
            watcher::Event::InitApply(cm) => format!("InitApply {}", cm.name_any()),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(seen, ["Init", "InitApply first", "InitDone"]);

    // A real Controller reconciles once per change and not for a no-op write.
    let reconciled: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    async fn reconcile(cm: Arc<ConfigMap>, log: Arc<Mutex<Vec<(String, u64)>>>) -> Result<Action, kube::Error> {
        log.lock().push((cm.name_any(), rv(&*cm)));
        Ok(Action::await_change())
    }
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, |_, _: &kube::Error, _| Action::await_change(), reconciled.clone())
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    let seen_rv = async |name: &str, rv: u64| {
        let log = reconciled.clone();
        wait_for(WAIT, &format!("reconcile of {name}@{rv}"), async || {
            log.lock().contains(&(name.to_owned(), rv)).then_some(())
        })
        .await;
    };
    seen_rv("first", rv(&api.get("first").await.unwrap())).await;
    let changed =
        api.patch("first", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v"}}))).await.unwrap();
    seen_rv("first", rv(&changed)).await;
    let created = api.create(&PostParams::default(), &config_map("second", json!({}), json!({}))).await.unwrap();
    seen_rv("second", rv(&created)).await;
    let before = fake.resource_version();
    api.patch("first", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v"}}))).await.unwrap();
    assert_eq!(fake.resource_version(), before, "no-op patch creates no event to reconcile");
    assert_eq!(reconciled.lock().iter().filter(|(n, _)| n == "first").count(), 2);
    controller.abort();
}

#[tokio::test]
async fn finalizer_helper_on_topics() {
    const FINALIZER: &str = "weir.dev/cleanup";
    let fake = FakeKube::start().await;
    let ar = topic_resource();
    let api: Api<DynamicObject> = Api::default_namespaced_with(fake.client(), &ar);

    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (reconcile_api, reconcile_log) = (api.clone(), log.clone());
    let reconcile = move |topic: Arc<DynamicObject>, _: Arc<()>| {
        let (api, log) = (reconcile_api.clone(), reconcile_log.clone());
        async move {
            finalizer(&api, FINALIZER, topic, |event| async move {
                log.lock().push(match event {
                    Finalizer::Apply(t) => format!("apply {}", t.name_any()),
                    Finalizer::Cleanup(t) => format!("cleanup {}", t.name_any()),
                });
                Ok::<_, kube::Error>(Action::await_change())
            })
            .await
        }
    };
    let controller = Controller::new_with(api.clone(), watcher::Config::default(), ar.clone())
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_millis(100)), Arc::new(()))
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    fake.clear_writes();
    api.create(&PostParams::default(), &DynamicObject::new("orders", &ar).data(json!({"spec": {}}))).await.unwrap();
    let logged = |entry: &'static str| {
        let log = log.clone();
        async move || log.lock().iter().any(|e| e == entry).then_some(())
    };
    wait_for(WAIT, "Apply after the finalizer was added", logged("apply orders")).await;
    let stored = fake.get("weir.dev/v1alpha1", "topics", Some("default"), "orders").unwrap();
    assert_eq!(stored["metadata"]["finalizers"], json!([FINALIZER]));

    let deleting = api.delete("orders", &DeleteParams::default()).await.unwrap();
    let marked = deleting.left().expect("with a finalizer the object is returned, not a Status");
    assert!(marked.metadata.deletion_timestamp.is_some());
    wait_for(WAIT, "the topic to disappear", async || {
        fake.get("weir.dev/v1alpha1", "topics", Some("default"), "orders").is_none().then_some(())
    })
    .await;
    assert_eq!(log.lock().iter().filter(|e| e.starts_with("cleanup")).count(), 1);
    let path = "/apis/weir.dev/v1alpha1/namespaces/default/topics".to_owned();
    let writes: Vec<(String, String)> =
        fake.writes().into_iter().filter(|w| w.status < 300).map(|w| (w.method, w.path)).collect();
    let object = format!("{path}/orders");
    let expected = [("POST", &path), ("PATCH", &object), ("DELETE", &object), ("PATCH", &object)];
    assert_eq!(writes, expected.map(|(m, p)| (m.to_owned(), p.clone())));
    controller.abort();
}

#[tokio::test]
async fn garbage_collection_and_namespace_termination() {
    let fake = FakeKube::start().await;
    fake.create_namespace("doomed");
    let client = fake.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let pp = PostParams::default();
    let owned_by = |name: &str, owners: &[&ConfigMap], finalizers: &[&str]| -> ConfigMap {
        let refs: Vec<Value> = owners
            .iter()
            .map(|o| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": o.name_any(), "uid": o.uid().unwrap()}))
            .collect();
        serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": refs, "finalizers": finalizers}}))
            .unwrap()
    };
    let owner = api.create(&pp, &config_map("owner", json!({}), json!({}))).await.unwrap();
    let other = api.create(&pp, &config_map("other-owner", json!({}), json!({}))).await.unwrap();
    let child = api.create(&pp, &owned_by("child", &[&owner], &[])).await.unwrap();
    api.create(&pp, &owned_by("grandchild", &[&child], &[])).await.unwrap();
    api.create(&pp, &owned_by("shared", &[&owner, &other], &[])).await.unwrap();
    api.create(&pp, &owned_by("held", &[&owner], &["test/hold"])).await.unwrap();

    api.delete("owner", &DeleteParams::background()).await.unwrap();
    let left = fake.list_typed::<ConfigMap>(Some("doomed"));
    assert_eq!(names(&left), ["held", "other-owner", "shared"]);
    let shared = left.iter().find(|c| c.name_any() == "shared").unwrap();
    assert_eq!(shared.owner_references().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["other-owner"]);
    let held = left.iter().find(|c| c.name_any() == "held").unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let add = Patch::Merge(json!({"metadata": {"finalizers": ["test/hold", "test/new"]}}));
    let (code, reason, message) = status(api.patch("held", &PatchParams::default(), &add).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{message}");

    // Namespace deletion: Terminating, contents deleted, finalizers respected, no new content.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete("doomed", &DeleteParams::default()).await.unwrap();
    let ns = namespaces.get("doomed").await.unwrap();
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
    assert_eq!(names(&fake.list_typed::<ConfigMap>(Some("doomed"))), ["held"]);
    let (code, reason, message) = status(api.create(&pp, &config_map("late", json!({}), json!({}))).await);
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        "configmaps \"late\" is forbidden: unable to create new content in namespace doomed because it is being terminated"
    );
    let release =
        Patch::<()>::Json(serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers"}])).unwrap());
    api.patch("held", &PatchParams::default(), &release).await.unwrap();
    assert!(fake.list("v1", "configmaps", Some("doomed")).is_empty());
    assert_eq!(status(namespaces.get("doomed").await).0, 404);
    assert_eq!(status(api.create(&pp, &config_map("after", json!({}), json!({}))).await).0, 404);
}

#[tokio::test]
async fn recorder_creates_then_patches_event_series() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    fake.create_namespace("weir");
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "weir")
        .create(&PostParams::default(), &config_map("subject", json!({}), json!({})))
        .await
        .unwrap();
    let recorder = Recorder::new(client.clone(), "weir-operator".into());
    let event = Event {
        type_: EventType::Normal,
        reason: "Reconciled".into(),
        note: Some("all good".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    fake.clear_writes();
    recorder.publish(&event, &cm.object_ref(&())).await.expect("first publish creates");
    recorder.publish(&event, &cm.object_ref(&())).await.expect("second publish patches the series");
    let events = fake.list("events.k8s.io/v1", "events", Some("weir"));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "Reconciled");
    assert_eq!(events[0]["regarding"]["name"], "subject");
    assert_eq!(events[0]["series"]["count"], 2);
    let methods: Vec<String> = fake.writes().into_iter().map(|w| w.method).collect();
    assert_eq!(methods, ["POST", "PATCH"]);

    // A cluster-scoped subject's events go to `default`.
    let ns = Api::<Namespace>::all(client).get("weir").await.unwrap();
    recorder.publish(&event, &ns.object_ref(&())).await.unwrap();
    assert_eq!(fake.list("events.k8s.io/v1", "events", Some("default")).len(), 1);
}

/// One round of a client-go style Lease election: take the lease if free or expired, renew it if
/// ours; losing a create or replace race is a 409.
async fn try_lead(leases: &Api<Lease>, me: &str) -> kube::Result<bool> {
    let now = Timestamp::now();
    let spec = json!({"holderIdentity": me, "leaseDurationSeconds": 15, "renewTime": MicroTime(now)});
    let lost_race = |r: kube::Result<Lease>| match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    };
    let Some(mut lease) = leases.get_opt("leader").await? else {
        let lease = serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": spec})).unwrap();
        return lost_race(leases.create(&PostParams::default(), &lease).await);
    };
    let held = lease.spec.clone().unwrap_or_default();
    let expired = held.renew_time.is_none_or(|t| t.0.as_second() + 15 < now.as_second());
    if held.holder_identity.as_deref() != Some(me) && !expired {
        return Ok(false);
    }
    lease.spec = Some(serde_json::from_value(spec).unwrap());
    lost_race(leases.replace("leader", &PostParams::default(), &lease).await)
}

#[tokio::test]
async fn lease_leader_election() {
    let fake = FakeKube::start().await;
    let leases: Api<Lease> = Api::default_namespaced(fake.client());
    assert!(try_lead(&leases, "a").await.unwrap(), "a takes the free lease");
    assert!(!try_lead(&leases, "b").await.unwrap(), "b sees it held");
    assert!(try_lead(&leases, "a").await.unwrap(), "a renews");

    // Racing writers: a create of an existing lease and a replace from a stale read both conflict.
    let stale = leases.get("leader").await.unwrap();
    assert!(try_lead(&leases, "a").await.unwrap());
    assert_eq!(status(leases.create(&PostParams::default(), &stale).await).1, "AlreadyExists");
    assert_eq!(status(leases.replace("leader", &PostParams::default(), &stale).await).1, "Conflict");

    // a stops renewing: once expired, b takes over.
    let mut expired = fake.get_typed::<Lease>(Some("default"), "leader").unwrap();
    expired.spec.as_mut().unwrap().renew_time = Some(MicroTime(Timestamp::UNIX_EPOCH));
    fake.put_typed(&expired).unwrap();
    assert!(try_lead(&leases, "b").await.unwrap(), "b takes the expired lease");
    assert!(!try_lead(&leases, "a").await.unwrap(), "a lost it");
    let lease = fake.get_typed::<Lease>(Some("default"), "leader").unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn kubeconfig_serves_other_clients_and_processes() {
    let fake = FakeKube::start().await;
    fake.create_namespace("weir");
    let ar = topic_resource();
    let topics: Api<DynamicObject> = Api::namespaced_with(fake.client(), "weir", &ar);
    topics.create(&PostParams::default(), &DynamicObject::new("orders", &ar).data(json!({"spec": {}}))).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await.unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let listed = Api::<DynamicObject>::all_with(client, &ar).list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&listed.items), ["orders"]);

    let kubectl = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("kubectl")).find(|k| k.is_file()));
    let Some(kubectl) = kubectl else {
        eprintln!("kubectl not on PATH: skipping the kubectl half");
        return;
    };
    let run = async |args: &[&str]| {
        let out = tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&path)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .output()
            .await
            .expect("kubectl runs");
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&["get", "namespaces", "-o", "name"]).await, "namespace/default\nnamespace/weir\n");
    assert_eq!(run(&["get", "topics.weir.dev", "-A", "-o", "name"]).await, "topic.weir.dev/orders\n");
}

#[tokio::test]
async fn bad_requests_answer_with_status_not_panics() {
    let fake = FakeKube::start().await;
    let client = fake.client();
    let send = async |method: &str, uri: &str, content_type: &str, body: &[u8]| {
        let req = Request::builder().method(method).uri(uri).header("content-type", content_type).body(body.to_vec());
        let (code, reason, _) = status(client.request_text(req.unwrap()).await);
        (code, reason)
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    let json = "application/json";
    assert_eq!(send("POST", cms, json, b"{not json").await, (400, "BadRequest".into()));
    assert_eq!(send("POST", cms, json, b"[1]").await, (400, "BadRequest".into()));
    assert_eq!(send("POST", cms, json, b"{\"metadata\": 5}").await, (400, "BadRequest".into()));
    assert_eq!(send("POST", cms, json, b"{\"metadata\": {}}").await, (422, "Invalid".into()));
    assert_eq!(send("GET", "/apis/nope.io/v1/widgets", json, b"").await, (404, "NotFound".into()));
    assert_eq!(send("GET", "/api/v1/namespaces/default/configmaps/a/b/c", json, b"").await, (404, "NotFound".into()));
    assert_eq!(
        send("GET", &format!("{cms}?watch=true&resourceVersion=x"), json, b"").await,
        (400, "BadRequest".into())
    );
    assert_eq!(send("GET", &format!("{cms}?labelSelector=a%20in%20(b"), json, b"").await, (400, "BadRequest".into()));
    assert_eq!(send("POST", &format!("{cms}?dryRun=All"), json, b"{}").await, (400, "BadRequest".into()));
    Api::<ConfigMap>::default_namespaced(client.clone())
        .create(&PostParams::default(), &config_map("c", json!({}), json!({})))
        .await
        .unwrap();
    assert_eq!(send("PATCH", &format!("{cms}/c"), "text/plain", b"{}").await, (415, "UnsupportedMediaType".into()));
    assert_eq!(
        send("PATCH", &format!("{cms}/c"), "application/json-patch+json", b"{}").await,
        (400, "BadRequest".into())
    );
    assert_eq!(send("PUT", &format!("{cms}/other"), json, b"{\"metadata\":{\"name\":\"c\"}}").await.0, 404);
    assert_eq!(
        send("PUT", &format!("{cms}/c"), json, b"{\"metadata\":{\"name\":\"d\"}}").await,
        (400, "BadRequest".into())
    );
    assert_eq!(send("POST", "/api/v1/configmaps", json, b"{}").await, (405, "MethodNotAllowed".into()));
    let apply = "application/apply-patch+yaml";
    let applied = format!("{cms}/c?fieldManager=m");
    assert_eq!(send("PATCH", &applied, apply, b"metadata: 5").await, (400, "BadRequest".into()));
    assert_eq!(send("PATCH", &applied, apply, b"metadata: {name: d}").await, (400, "BadRequest".into()));
    assert_eq!(send("PATCH", &applied, apply, b"- a list").await, (400, "BadRequest".into()));
    let misspelt = "/api/v1/namespaces/default/configmap";
    assert_eq!(send("POST", misspelt, json, b"{\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"x\"}}").await.0, 404);
    // The server is still healthy.
    assert!(Api::<ConfigMap>::default_namespaced(client).get_opt("c").await.unwrap().is_some());
}

#[tokio::test]
async fn dropping_the_server_ends_watches_and_refuses_connections() {
    let fake = FakeKube::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(fake.client());
    let watch = api.watch(&WatchParams::default(), "0").await.unwrap();
    drop(fake);
    let ended = tokio::time::timeout(WAIT, watch.collect::<Vec<_>>()).await;
    assert!(ended.expect("the watch ends when the server is dropped").is_empty());
    wait_for(WAIT, "the listener to close", async || api.list(&ListParams::default()).await.is_err().then_some(()))
        .await;
}
