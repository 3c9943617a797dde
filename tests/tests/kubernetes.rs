//! Weir on "Kubernetes" without a cluster: the in-memory API server (`weir_tests::fake_kube`,
//! standing in for kube-apiserver, which cannot run here) holds the Topic and ConsumerGroup
//! objects, and the fake kubelet (`weir_tests::kubelet`, standing in for nodes: local processes,
//! loopback addresses, `/etc/hosts` for cluster DNS) runs real `weir-sidecar` pods from exactly the
//! StatefulSet the operator builds. The official Rust SDK talks to them through the namespace's
//! client Service name, like an application in the cluster would.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use serde_json::json;
use weir_crds::{ConsumerGroup, Topic, naming};
use weir_operator::build::{BrokerSetShape, TopicRef, build_stateful_set};
use weir_operator::config::{BrokerTls, OperatorConfig};
use weir_proto::client_tls::ClientTls;
use weir_proto::rocketmq::v2 as pb;
use weir_proto::signature::Credentials;
use weir_tests::fake_kube::FakeKube;
use weir_tests::kubelet::{FakeKubelet, KubeletConfig};
use weir_tests::{raw, sdk, wait_for};

/// A namespace of its own per test process (it also marks the `/etc/hosts` lines).
fn namespace(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Creates a Topic from a YAML spec and returns it as stored (with its uid).
async fn create_topic(client: &kube::Client, ns: &str, name: &str, spec: &str) -> Topic {
    let topic = Topic::new(name, serde_yaml::from_str(spec).expect("spec"));
    Api::<Topic>::namespaced(client.clone(), ns).create(&PostParams::default(), &topic).await.expect("create Topic")
}

/// Creates a ConsumerGroup of `topic` that starts at the earliest message.
async fn create_group(client: &kube::Client, ns: &str, name: &str, topic: &str) {
    let spec = format!("{{subscriptions: [{{topicRef: {{name: {topic}}}}}], startFrom: {{position: Earliest}}}}");
    let group = ConsumerGroup::new(name, serde_yaml::from_str(&spec).expect("spec"));
    Api::<ConsumerGroup>::namespaced(client.clone(), ns).create(&PostParams::default(), &group).await.expect("group");
}

/// Writes `status.assignment` as the operator would.
async fn assign(client: &kube::Client, ns: &str, topic: &str, assignment: serde_json::Value) {
    let status = json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Topic", "status": {"assignment": assignment}});
    Api::<Topic>::namespaced(client.clone(), ns)
        .patch_status(topic, &PatchParams::apply("weir-operator").force(), &Patch::Apply(status))
        .await
        .expect("status");
}

/// Creates the Topic's StatefulSet exactly as the operator builds it, with `replicas` pods.
async fn create_broker_set(client: &kube::Client, topic: &Topic, replicas: i32) {
    let config = OperatorConfig::default();
    let set = build_stateful_set(
        topic,
        &TopicRef::of(topic).expect("stored topic"),
        &config,
        &BrokerSetShape::from_spec(topic, replicas),
    );
    let ns = topic.metadata.namespace.as_deref().unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), ns).create(&PostParams::default(), &set).await.expect("set");
}

async fn wait_ready(client: &kube::Client, ns: &str, set: &str, replicas: i32) {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    wait_for(Duration::from_secs(60), &format!("{replicas} ready pods of {set}"), async || {
        let s = sets.get(set).await.ok()?;
        (s.status?.ready_replicas? == replicas).then_some(())
    })
    .await;
}

/// The fake cluster: API server, kubelet and a scratch directory.
struct Cluster {
    api: FakeKube,
    kubelet: FakeKubelet,
    _dir: tempfile::TempDir,
}

async fn cluster(ns: &str) -> Cluster {
    let api = FakeKube::start().await;
    api.create_namespace(ns);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let kubelet = FakeKubelet::start(
        api.client(),
        KubeletConfig {
            namespace: ns.to_owned(),
            kubeconfig,
            work_dir: dir.path().to_owned(),
            cluster_domain: naming::DEFAULT_CLUSTER_DOMAIN.to_owned(),
            client_service: naming::CLIENT_SERVICE.to_owned(),
        },
    );
    Cluster { api, kubelet, _dir: dir }
}

/// Waits until the operator reports `topic` Ready/Serving with partitions on `pods` pods.
async fn serving(topics: &Api<Topic>, topic: &str, pods: usize) -> weir_crds::TopicStatus {
    wait_for(Duration::from_secs(90), &format!("{topic} Ready/Serving on {pods} pods"), async || {
        let status = topics.get(topic).await.ok()?.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        let holders = status.assignment.iter().filter(|a| !a.partitions.is_empty()).count();
        (ready.status == "True" && ready.reason == "Serving" && holders == pods).then_some(status)
    })
    .await
}

/// The operator's real controllers, running in this process against the fake API server.
struct Operator {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Operator {
    fn start(
        client: &kube::Client,
        ns: &str,
        config: OperatorConfig,
        broker_tls: Option<ClientTls>,
        credentials: Option<Credentials>,
    ) -> Self {
        use weir_operator::broker_admin::GrpcBrokerAdmin;
        use weir_operator::clock::SystemClock;
        use weir_operator::controller::{self, Health, Scope};
        use weir_operator::metrics::Metrics;
        use weir_operator::reconcile::Context;
        let ctx = Arc::new(Context::new(
            client.clone(),
            Arc::new(GrpcBrokerAdmin::new(config.cluster_domain.clone(), broker_tls).with_credentials(credentials)),
            Arc::new(SystemClock),
            config,
            Arc::new(Metrics::new()),
            Some("test".into()),
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = futures::FutureExt::shared(futures::FutureExt::boxed(async move {
            let _ = stopped.await;
        }));
        let health = Arc::new(Health::default());
        health.set_leading(true);
        let task = tokio::spawn(controller::run(ctx, Scope::Namespaces(vec![ns.to_owned()]), health, shutdown));
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Three pods of one Topic share its partitions as `status.assignment` says; an SDK producer and
/// consumer reach them all through the client Service name; sends that reach a pod of another
/// topic, and EndTransaction that reaches the wrong pod, are forwarded to the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_pods_share_a_topic_and_forward_to_each_other() {
    let ns = namespace("shop");
    let c = cluster(&ns).await;
    let client = c.api.client();
    let orders = create_topic(&client, &ns, "orders", "{partitions: 6, brokers: {replicas: 3}}").await;
    let payments =
        create_topic(&client, &ns, "payments", "{partitions: 1, messageType: Transaction, brokers: {replicas: 1}}")
            .await;
    create_group(&client, &ns, "billing", "orders").await;
    create_group(&client, &ns, "ledger", "payments").await;
    assign(
        &client,
        &ns,
        "orders",
        json!([
            {"pod": "orders-broker-0", "partitions": "0-1"},
            {"pod": "orders-broker-1", "partitions": "2-3"},
            {"pod": "orders-broker-2", "partitions": "4-5"},
        ]),
    )
    .await;
    assign(&client, &ns, "payments", json!([{"pod": "payments-broker-0", "partitions": "0"}])).await;
    create_broker_set(&client, &orders, 3).await;
    create_broker_set(&client, &payments, 1).await;
    wait_ready(&client, &ns, "orders-broker", 3).await;
    wait_ready(&client, &ns, "payments-broker", 1).await;

    // An application in the namespace only knows the client Service.
    let url = format!("{}:{}", naming::client_service_host(&ns, naming::DEFAULT_CLUSTER_DOMAIN), naming::GRPC_PORT);
    let producer = Arc::new(sdk::producer(&url, &["orders"]).await);
    let mut sent = BTreeMap::new();
    for i in 0..120 {
        let body = format!("order-{i}");
        let m = MessageBuilder::builder().set_topic("orders").set_body(body.clone().into_bytes()).build().unwrap();
        let receipt = producer.send(m).await.expect("send acknowledged");
        sent.insert(receipt.message_id().to_owned(), body);
    }
    // Every pod stored its share (the producer spreads over the queues of the route).
    for pod in ["orders-broker-0", "orders-broker-1", "orders-broker-2"] {
        let ip = c.kubelet.pod_ip(pod).unwrap();
        let scrape = weir_tests::scrape(format!("{ip}:{}", naming::METRICS_PORT).parse().unwrap()).unwrap();
        let stored = weir_tests::metric_sum(&scrape, "rocketmq_messages_in_total", &[("topic", "orders")]);
        assert!(stored > 0.0, "{pod} stored nothing");
    }

    let consumer = sdk::consumer(&url, "billing", &["orders"], Duration::from_secs(2)).await;
    let filter = FilterExpression::new(FilterType::Tag, "*");
    let mut got = HashMap::new();
    let mut empty = 0;
    while got.len() < sent.len() && empty < 20 {
        let messages = consumer.receive_with("orders", &filter, 16, Duration::from_secs(30)).await.expect("receive");
        if messages.is_empty() {
            empty += 1;
        }
        for m in &messages {
            let body = String::from_utf8(m.body().to_vec()).unwrap();
            assert!(got.insert(m.message_id().to_owned(), body).is_none(), "{} delivered twice", m.message_id());
            consumer.ack(m).await.expect("ack");
        }
    }
    assert_eq!(got.len(), sent.len(), "every message from every pod, exactly once");
    assert_eq!(got.into_iter().collect::<BTreeMap<_, _>>(), sent);

    // A send for `orders` that reaches the payments pod is passed on to an orders pod.
    let payments_ip = c.kubelet.pod_ip("payments-broker-0").unwrap();
    let mut at_payments = raw::connect(format!("{payments_ip}:8081").parse().unwrap(), Some("app@1")).await;
    let m = raw::message("orders", "forwarded-order", None, b"via the wrong pod".to_vec());
    let r = at_payments.send_message(pb::SendMessageRequest { messages: vec![m] }).await.unwrap().into_inner();
    assert_eq!(raw::code(&r.status), pb::Code::Ok, "{:?}", r.status);

    // A half message on the payments pod, committed through an orders pod.
    let mut half = raw::message("payments", "pay-1", None, b"pay".to_vec());
    half.system_properties.as_mut().unwrap().message_type = pb::MessageType::Transaction as i32;
    let r = at_payments.send_message(pb::SendMessageRequest { messages: vec![half] }).await.unwrap().into_inner();
    let transaction_id = r.entries[0].transaction_id.clone();
    let orders_ip = c.kubelet.pod_ip("orders-broker-0").unwrap();
    let mut at_orders = raw::connect(format!("{orders_ip}:8081").parse().unwrap(), Some("app@1")).await;
    let end = pb::EndTransactionRequest {
        topic: raw::resource("payments"),
        message_id: "pay-1".into(),
        transaction_id,
        resolution: pb::TransactionResolution::Commit as i32,
        source: pb::TransactionSource::SourceClient as i32,
        trace_context: String::new(),
    };
    let r = at_orders.end_transaction(end).await.unwrap().into_inner();
    assert_eq!(raw::code(&r.status), pb::Code::Ok, "{:?}", r.status);
    let mut got = Vec::new();
    wait_for(Duration::from_secs(20), "the committed payment", async || {
        let req = raw::receive_request("ledger", "payments", "*", 10_000);
        let (_, messages) = raw::receive(&mut at_payments, req).await;
        got.extend(messages.into_iter().map(|m| m.body.to_vec()));
        (!got.is_empty()).then_some(())
    })
    .await;
    assert_eq!(got, [b"pay".to_vec()]);
}

/// The operator, running its real controllers in this process, places a new Topic on three broker
/// pods (StatefulSet, Services, status.assignment); the fake kubelet runs exactly the pods it
/// renders; an SDK producer and consumer use all three through the client Service. Then a
/// scale-down to two pods: the departing pod's partitions move, it drains, and only then does the
/// StatefulSet shrink; new messages go to the two remaining pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_runs_a_topic_on_three_pods_and_scales_it_down_after_draining() {
    let ns = namespace("ops");
    let c = cluster(&ns).await;
    let client = c.api.client();
    let operator = Operator::start(&client, &ns, OperatorConfig::default(), None, None);

    create_topic(&client, &ns, "orders", "{partitions: 6, brokers: {replicas: 3}}").await;
    create_group(&client, &ns, "billing", "orders").await;
    let topics: Api<Topic> = Api::namespaced(client.clone(), &ns);
    let serving = async |pods: usize| serving(&topics, "orders", pods).await;
    let status = serving(3).await;
    assert_eq!(status.assignment.len(), 3, "{:?}", status.assignment);

    let url = format!("{}:{}", naming::client_service_host(&ns, naming::DEFAULT_CLUSTER_DOMAIN), naming::GRPC_PORT);
    // Clients are made per round: after the scale-down a fresh route no longer lists pod 2 (a
    // long-lived client would find out on its next route refresh).
    let round = async |prefix: &str, count: usize| {
        let producer = sdk::producer(&url, &["orders"]).await;
        let consumer = sdk::consumer(&url, "billing", &["orders"], Duration::from_secs(2)).await;
        let mut sent = BTreeMap::new();
        for i in 0..count {
            let body = format!("{prefix}-{i}");
            let m = MessageBuilder::builder().set_topic("orders").set_body(body.clone().into_bytes()).build().unwrap();
            sent.insert(producer.send(m).await.expect("send acknowledged").message_id().to_owned(), body);
        }
        let filter = FilterExpression::new(FilterType::Tag, "*");
        let mut got = BTreeMap::new();
        let mut empty = 0;
        while got.len() < sent.len() && empty < 20 {
            let messages =
                consumer.receive_with("orders", &filter, 16, Duration::from_secs(30)).await.expect("receive");
            empty += usize::from(messages.is_empty());
            for m in &messages {
                let body = String::from_utf8(m.body().to_vec()).unwrap();
                assert!(got.insert(m.message_id().to_owned(), body).is_none(), "{} delivered twice", m.message_id());
                consumer.ack(m).await.expect("ack");
            }
        }
        assert_eq!(got, sent, "every {prefix} message exactly once");
    };
    let stored = |pod: &str| {
        let ip = c.kubelet.pod_ip(pod).expect("running pod");
        let scrape = weir_tests::scrape(format!("{ip}:{}", naming::METRICS_PORT).parse().unwrap()).unwrap();
        weir_tests::metric_sum(&scrape, "rocketmq_messages_in_total", &[("topic", "orders")])
    };
    round("before", 90).await;
    for pod in ["orders-broker-0", "orders-broker-1", "orders-broker-2"] {
        assert!(stored(pod) > 0.0, "{pod} stored none of the messages");
    }

    // Scale down: everything is consumed, so pod 2 drains at once and the set shrinks.
    topics
        .patch("orders", &PatchParams::default(), &Patch::Merge(json!({"spec": {"brokers": {"replicas": 2}}})))
        .await
        .unwrap();
    let status = serving(2).await;
    assert!(status.assignment.iter().all(|a| a.pod != "orders-broker-2"), "{:?}", status.assignment);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    wait_for(Duration::from_secs(60), "the StatefulSet to shrink to 2", async || {
        (sets.get("orders-broker").await.ok()?.spec.replicas == Some(2)).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(60), "pod 2 to stop", async || {
        (!c.kubelet.running().contains(&"orders-broker-2".to_owned())).then_some(())
    })
    .await;
    let before = [stored("orders-broker-0"), stored("orders-broker-1")];
    round("after", 30).await;
    let after = [stored("orders-broker-0"), stored("orders-broker-1")];
    assert_eq!(after[0] + after[1] - before[0] - before[1], 30.0, "the two remaining pods took every new message");
    operator.stop().await;
}

/// Brokers locked down as the operator runs them with `--broker-tls-ca --broker-client-auth
/// --broker-acl-secret`: mutual TLS from the Topic's Secret and access control from the
/// namespace's ACL Secret. The pods start from the mounted Secrets (probes over HTTPS); an
/// application presenting a certificate from the CA and signing its requests sends through the
/// client Service (sends for the other pod's partitions are forwarded over mutual TLS, and the
/// owner checks the signature); unsigned requests are UNAUTHORIZED and a client without a
/// certificate gets nothing; Prometheus-style scrapes check the `weir-broker` name; and the
/// operator's own admin calls (an offset reset on every pod) go through with its client
/// certificate and super-user credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brokers_serve_mutual_tls_and_access_control_from_secrets() {
    use k8s_openapi::api::core::v1::Secret;
    use weir_tests::pki::{self, Pki};

    let ns = namespace("secure");
    let c = cluster(&ns).await;
    let client = c.api.client();
    let domain = naming::DEFAULT_CLUSTER_DOMAIN;
    let service = naming::client_service_host(&ns, domain);
    let ca = Pki::new("weir");
    let pods = format!("*.orders-broker.{ns}.svc.{domain}");
    let (cert, key) = ca.issue("orders-broker", &[&pods, &service, naming::BROKER_TLS_SERVER_NAME]);
    let (operator_cert, operator_key) = ca.issue("operator", &["weir-operator"]);
    let (app_cert, app_key) = ca.issue("app", &["billing-service"]);
    let secret = |path: &std::path::Path| k8s_openapi::ByteString(std::fs::read(path).unwrap());
    let tls_secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(naming::tls_secret_name("orders")), ..Default::default() },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), secret(&cert)),
            ("tls.key".to_owned(), secret(&key)),
            ("ca.crt".to_owned(), secret(&ca.ca())),
        ])),
        ..Default::default()
    };
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    secrets.create(&PostParams::default(), &tls_secret).await.expect("TLS Secret");
    let acl = "users:
  - {username: weir-operator, password: operator-secret-0123456789, superUser: true}
  - username: billing-service
    password: billing-secret-0123456789
    policies:
      - {resources: [\"Topic:orders\"], actions: [Pub, Sub]}
      - {resources: [\"Group:billing\"], actions: [Sub]}
";
    let acl_secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("weir-acl".into()), ..Default::default() },
        string_data: None,
        data: Some(BTreeMap::from([(naming::ACL_FILE_KEY.to_owned(), k8s_openapi::ByteString(acl.into()))])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &acl_secret).await.expect("ACL Secret");

    let config = OperatorConfig {
        broker_tls: Some(BrokerTls { client_auth: true }),
        broker_acl_secret: Some("weir-acl".into()),
        ..OperatorConfig::default()
    };
    let operator_tls = ClientTls::from_files(&ca.ca(), Some((&operator_cert, &operator_key))).unwrap();
    let operator_credentials = Credentials::new("weir-operator", "operator-secret-0123456789");
    let operator = Operator::start(&client, &ns, config, Some(operator_tls), Some(operator_credentials));
    create_topic(&client, &ns, "orders", "{partitions: 4, messageType: FIFO, brokers: {replicas: 2}}").await;
    create_group(&client, &ns, "billing", "orders").await;
    serving(&Api::namespaced(client.clone(), &ns), "orders", 2).await;
    let set = Api::<StatefulSet>::namespaced(client.clone(), &ns).get("orders-broker").await.unwrap();
    let args = set.spec.template.spec.unwrap().containers[0].args.clone().unwrap();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    assert!(has("--tls-client-ca") && has("--acl-file") && !has("--plaintext"), "{args:?}");

    // The application, through the client Service: FIFO messages of eight customers, whose
    // partitions are spread over both pods; the pod behind the Service forwards the other pod's.
    let address = format!("{service}:{}", naming::GRPC_PORT);
    let channel = pki::tls_channel(&address, &ca.ca(), Some((&app_cert, &app_key))).await.expect("mutual TLS");
    let mut unsigned = raw::with_headers(channel.clone(), Some("billing-service@1"));
    let r = unsigned
        .send_message(pb::SendMessageRequest { messages: vec![raw::message("orders", "unsigned", None, vec![1])] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(raw::code(&r.status), pb::Code::Unauthorized, "{:?}", r.status);
    let app_credentials = Credentials::new("billing-service", "billing-secret-0123456789");
    let mut app = raw::signed(channel, Some("billing-service@1"), Some(app_credentials));
    for customer in 0..8 {
        let mut m = raw::message("orders", &format!("order-{customer}"), None, b"paid".to_vec());
        let properties = m.system_properties.as_mut().unwrap();
        properties.message_type = pb::MessageType::Fifo as i32;
        properties.message_group = Some(format!("customer-{customer}"));
        let r = app.send_message(pb::SendMessageRequest { messages: vec![m] }).await.unwrap().into_inner();
        assert_eq!(raw::code(&r.status), pb::Code::Ok, "customer {customer}: {:?}", r.status);
    }
    let refused = match pki::tls_channel(&address, &ca.ca(), None).await {
        Err(_) => true,
        Ok(channel) => {
            let mut anonymous = raw::with_headers(channel, Some("anonymous@1"));
            let m = raw::message("orders", "sneaky", None, b"x".to_vec());
            anonymous.send_message(pb::SendMessageRequest { messages: vec![m] }).await.is_err()
        }
    };
    assert!(refused, "a client without a certificate got in");

    // Metrics over HTTPS, by pod IP, checked against the name every broker certificate carries.
    let mut stored = Vec::new();
    for pod in ["orders-broker-0", "orders-broker-1"] {
        let ip = c.kubelet.pod_ip(pod).unwrap();
        let addr = format!("{ip}:{}", naming::METRICS_PORT).parse().unwrap();
        let scrape = pki::https_get(addr, &ca.ca(), naming::BROKER_TLS_SERVER_NAME, "/metrics").await.unwrap();
        stored.push(weir_tests::metric_sum(&scrape, "rocketmq_messages_in_total", &[("topic", "orders")]));
    }
    assert!(stored.iter().all(|&n| n > 0.0) && stored.iter().sum::<f64>() == 8.0, "stored per pod: {stored:?}");

    // The operator's admin calls: a reset to Latest moves the group on every pod.
    let groups: Api<ConsumerGroup> = Api::namespaced(client.clone(), &ns);
    let reset = json!({"spec": {"offsetReset": {"requestId": "skip-1", "to": "Latest"}}});
    groups.patch("billing", &PatchParams::default(), &Patch::Merge(reset)).await.unwrap();
    let outcome = wait_for(Duration::from_secs(60), "the offset reset", async || {
        groups.get("billing").await.ok()?.status?.last_offset_reset.filter(|r| r.request_id == "skip-1")
    })
    .await;
    assert_eq!(outcome.result, weir_crds::OffsetResetResult::Succeeded, "{outcome:?}");
    let (_, messages) = raw::receive(&mut app, raw::receive_request("billing", "orders", "*", 10_000)).await;
    assert!(messages.is_empty(), "the reset skipped the backlog: {messages:?}");
    operator.stop().await;
}
