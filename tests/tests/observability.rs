//! The gRPC health service answers SERVING, and `/metrics` carries the metrics the broker promises
//! (messages and bytes in and out per topic, send, commit and fsync latency, lag and in-flight per group,
//! storage size) with values that match the traffic.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use weir_proto::rocketmq::v2 as pb;
use weir_tests::raw::{self, code, message, receive, receive_request};
use weir_tests::{Sidecar, metric_sum};

#[tokio::test]
async fn health_service_reports_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), &[]).unwrap();
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", broker.grpc)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "apache.rocketmq.v2.MessagingService"] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

/// A kubeconfig whose API server accepts no connections.
const UNREACHABLE_API: &str = "apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: 'http://127.0.0.1:1'}}]
users: [{name: none, user: {}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: shop}}]
current-context: none
";

/// A broker pod reports NOT_SERVING, overall and for the messaging service, until it has seen its
/// cluster (its Topic, peers and groups), so Kubernetes keeps it out of the Service meanwhile.
/// Runs the real binary in `kubernetes` mode against an API server that never answers (no cluster
/// exists here), from the first moment it accepts connections.
#[tokio::test]
async fn a_broker_pod_is_not_ready_before_it_has_seen_its_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, UNREACHABLE_API).unwrap();
    let pod_args = ["--topic", "orders", "--pod-name", "orders-broker-0", "--namespace", "shop"];
    let pod = Sidecar::start_pod(&dir.path().join("data"), &kubeconfig, &pod_args).unwrap();
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", pod.grpc)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let services = ["", "apache.rocketmq.v2.MessagingService"];
    for service in services {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::NotServing as i32, "{service:?} before the cluster was seen");
    }
    // And it stays so: a watch answers with the status now, then with every change.
    let mut watches = Vec::new();
    for service in services {
        let mut statuses = health.watch(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        let now = statuses.message().await.unwrap().expect("the current status").status;
        assert_eq!(now, ServingStatus::NotServing as i32, "{service:?} before the cluster was seen");
        watches.push(statuses);
    }
    let changed = futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.message())));
    let changed = tokio::time::timeout(Duration::from_millis(500), changed).await;
    assert!(changed.is_err(), "a status changed although the cluster was never seen: {:?}", changed.map(|c| c.0));
}

#[tokio::test]
async fn metrics_reflect_the_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), &[]).unwrap();
    let mut client = raw::connect(broker.grpc, Some("metrics-test@1")).await;
    for i in 0..10 {
        let m = message("prices", &format!("m{i}"), Some("EUR"), vec![b'p'; 100]);
        let r = client.send_message(pb::SendMessageRequest { messages: vec![m] }).await.unwrap().into_inner();
        assert_eq!(code(&r.status), pb::Code::Ok);
    }
    // Receive 4 (leased, not acked): lag stays 10, in-flight 4.
    let mut request = receive_request("cache", "prices", "*", 60_000);
    request.batch_size = 4;
    let (rc, got) = receive(&mut client, request).await;
    assert_eq!((rc, got.len()), (pb::Code::Ok, 4));

    let scrape = weir_tests::wait_for(Duration::from_secs(5), "fsync samples", async || {
        let s = broker.scrape().unwrap();
        (metric_sum(&s, "weir_store_fsync_seconds_count", &[]) > 0.0).then_some(s)
    })
    .await;
    let topic = [("topic", "prices")];
    assert_eq!(metric_sum(&scrape, "rocketmq_messages_in_total", &topic), 10.0);
    assert_eq!(metric_sum(&scrape, "rocketmq_throughput_in_total", &topic), 1000.0);
    assert_eq!(
        metric_sum(&scrape, "rocketmq_messages_out_total", &[("topic", "prices"), ("consumer_group", "cache")]),
        4.0
    );
    assert_eq!(metric_sum(&scrape, "rocketmq_throughput_out_total", &[("consumer_group", "cache")]), 400.0);
    assert_eq!(metric_sum(&scrape, "weir_send_latency_seconds_count", &topic), 10.0);
    assert_eq!(metric_sum(&scrape, "rocketmq_message_size_count", &topic), 10.0);
    assert_eq!(metric_sum(&scrape, "rocketmq_consumer_lag_messages", &[("consumer_group", "cache")]), 10.0);
    assert_eq!(metric_sum(&scrape, "rocketmq_consumer_inflight_messages", &[("consumer_group", "cache")]), 4.0);
    assert!(metric_sum(&scrape, "rocketmq_storage_size", &[]) > 1000.0);
    assert!(metric_sum(&scrape, "rocketmq_rpc_latency_count", &[("request_code", "SendMessage")]) >= 10.0);
    assert!(scrape.contains("# TYPE weir_store_fsync_seconds histogram"));
    // Every send was one append to the commit log, timed until it was published.
    assert!(metric_sum(&scrape, "weir_store_commit_seconds_count", &[]) >= 10.0);
}
