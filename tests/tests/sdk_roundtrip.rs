//! The official Rust SDK (`rocketmq` 5.0.0) against a real `weir-sidecar` process: 10,000 messages
//! over 8 partitions with tags, keys and properties; a SimpleConsumer filtered by tag receives every
//! matching message exactly once and nothing else; an unacknowledged message comes back with
//! delivery attempt 2.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use weir_tests::{Sidecar, metric_sum, sdk, write_manifest};

const TOTAL: usize = 10_000;
const TAGS: [&str; 3] = ["TagA", "TagB", "TagC"];

fn manifests(dir: &std::path::Path) -> String {
    let path = write_manifest(
        dir,
        "orders.yaml",
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec: {partitions: 8}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: billing}\n\
         spec:\n  subscriptions: [{topicRef: {name: orders}, filter: {type: Tag, expression: 'TagA || TagB'}}]\n  \
         startFrom: {position: Earliest}\n",
    );
    path.to_string_lossy().into_owned()
}

fn expected_body(i: usize) -> Vec<u8> {
    format!("order #{i} {}", "x".repeat(i % 200)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tagged_messages_arrive_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifests(dir.path());
    let broker = Sidecar::start(&dir.path().join("data"), &["-f", &manifest]).unwrap();
    let url = broker.access_url();

    let producer = Arc::new(sdk::producer(&url, &["orders"]).await);
    let mut sends = Vec::new();
    for worker in 0..16 {
        let producer = producer.clone();
        sends.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..TOTAL).step_by(16) {
                let message = MessageBuilder::builder()
                    .set_topic("orders")
                    .set_tag(TAGS[i % 3])
                    .set_keys(vec![format!("order-{i}")])
                    .set_properties(HashMap::from([("seq", i.to_string()), ("region", "eu".to_owned())]))
                    .set_body(expected_body(i))
                    .build()
                    .unwrap();
                let receipt = producer.send(message).await.expect("send acknowledged");
                ids.push((receipt.message_id().to_owned(), i));
            }
            ids
        }));
    }
    let mut sent: HashMap<String, usize> = HashMap::new();
    for s in sends {
        sent.extend(s.await.unwrap());
    }
    assert_eq!(sent.len(), TOTAL, "every send got its own message id");

    // The producer spread the messages over all 8 partitions.
    let scrape = broker.scrape().unwrap();
    for p in 0..8 {
        let end =
            metric_sum(&scrape, "weir_partition_end_offset", &[("topic", "orders"), ("partition", &p.to_string())]);
        assert!(end > 500.0, "partition {p} holds only {end} messages");
    }
    assert_eq!(metric_sum(&scrape, "rocketmq_messages_in_total", &[("topic", "orders")]), TOTAL as f64);

    let consumer = sdk::consumer(&url, "billing", &["orders"], Duration::from_secs(3)).await;
    let filter = FilterExpression::new(FilterType::Tag, "TagA || TagB");
    let wanted: HashSet<usize> = (0..TOTAL).filter(|i| i % 3 != 2).collect();
    let mut got: HashSet<usize> = HashSet::new();
    let mut empty_polls = 0;
    while got.len() < wanted.len() && empty_polls < 5 {
        let messages = consumer.receive_with("orders", &filter, 32, Duration::from_secs(30)).await.expect("receive");
        if messages.is_empty() {
            empty_polls += 1;
            continue;
        }
        for m in &messages {
            let i = *sent.get(m.message_id()).unwrap_or_else(|| panic!("unknown message id {}", m.message_id()));
            assert!(got.insert(i), "message {i} delivered twice");
            assert_eq!(m.topic(), "orders");
            assert_eq!(m.tag(), Some(TAGS[i % 3]), "message {i}");
            assert_ne!(m.tag(), Some("TagC"), "a filtered-out tag arrived");
            assert_eq!(m.keys(), [format!("order-{i}")]);
            assert_eq!(m.body(), expected_body(i).as_slice());
            assert_eq!(m.properties().get("seq"), Some(&i.to_string()));
            assert_eq!(m.properties().get("region").map(String::as_str), Some("eu"));
            assert_eq!(m.delivery_attempt(), 1);
            consumer.ack(m).await.expect("ack");
        }
    }
    assert_eq!(got, wanted, "every TagA/TagB message exactly once");

    // Nothing else is left for the group: no TagC, no duplicates.
    let rest = consumer.receive_with("orders", &filter, 32, Duration::from_secs(30)).await.expect("receive");
    assert!(
        rest.is_empty(),
        "unexpected extra messages: {:?}",
        rest.iter().map(|m| m.message_id()).collect::<Vec<_>>()
    );
    let scrape = broker.scrape().unwrap();
    assert_eq!(metric_sum(&scrape, "rocketmq_consumer_lag_messages", &[("consumer_group", "billing")]), 0.0);
    assert_eq!(
        metric_sum(&scrape, "rocketmq_messages_out_total", &[("consumer_group", "billing")]),
        wanted.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_message_comes_back_with_attempt_two() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), &[]).unwrap();
    let url = broker.access_url();
    let producer = sdk::producer(&url, &["retries"]).await;
    let message =
        MessageBuilder::builder().set_topic("retries").set_tag("T").set_body(b"try me".to_vec()).build().unwrap();
    let receipt = producer.send(message).await.unwrap();

    let consumer = sdk::consumer(&url, "retry-group", &["retries"], Duration::from_secs(5)).await;
    let all = FilterExpression::new(FilterType::Tag, "*");
    let first = consumer.receive_with("retries", &all, 16, Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].message_id(), receipt.message_id());
    assert_eq!(first[0].delivery_attempt(), 1);
    // Not acknowledged: invisible for 2 s, then delivered again (the long poll waits for it).
    let mut second = Vec::new();
    for _ in 0..3 {
        second = consumer.receive_with("retries", &all, 16, Duration::from_secs(30)).await.unwrap();
        if !second.is_empty() {
            break;
        }
    }
    assert_eq!(second.len(), 1, "the message came back");
    assert_eq!(second[0].message_id(), receipt.message_id());
    assert_eq!(second[0].delivery_attempt(), 2);
    assert_eq!(second[0].body(), b"try me");
    consumer.ack(&second[0]).await.unwrap();
}

/// A broadcasting group keeps a position per client. A client that terminates, or falls silent for
/// longer than the client TTL, is forgotten: its position (and the lag it would otherwise hold up
/// forever) goes away, while live clients keep theirs. Raw clients, so liveness is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departed_broadcast_clients_are_forgotten() {
    use weir_proto::rocketmq::v2 as pb;
    use weir_tests::raw::{self, code, receive, receive_request, resource};
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        "prices.yaml",
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: prices}\nspec: {partitions: 2}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: price-cache}\n\
         spec: {subscriptions: [{topicRef: {name: prices}}], consumptionMode: Broadcasting}\n",
    );
    let broker =
        Sidecar::start(&dir.path().join("data"), &["-f", manifest.to_str().unwrap(), "--client-ttl", "3s"]).unwrap();
    let lag = || {
        let scrape = broker.scrape().unwrap();
        metric_sum(&scrape, "rocketmq_consumer_lag_messages", &[("consumer_group", "price-cache")]) as u64
    };
    let heartbeat = |client: &mut raw::Client| {
        let mut client = client.clone();
        async move {
            let r = client
                .heartbeat(pb::HeartbeatRequest {
                    group: resource("price-cache"),
                    client_type: pb::ClientType::SimpleConsumer as i32,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(code(&r.status), pb::Code::Ok);
        }
    };
    // Three instances take their place (at the latest message).
    let mut clients = Vec::new();
    for id in ["cache-live", "cache-terminating", "cache-silent"] {
        let mut c = raw::connect(broker.grpc, Some(id)).await;
        heartbeat(&mut c).await;
        let (status, _) = receive(&mut c, receive_request("price-cache", "prices", "*", 10_000)).await;
        assert_eq!(status, pb::Code::MessageNotFound);
        clients.push(c);
    }
    let mut producer = raw::connect(broker.grpc, Some("price-feed")).await;
    let updates: Vec<_> = (0..20)
        .map(|i| raw::message("prices", &format!("update-{i}"), None, format!("SKU-{i}").into_bytes()))
        .collect();
    let sent = producer.send_message(pb::SendMessageRequest { messages: updates }).await.unwrap().into_inner();
    assert_eq!(code(&sent.status), pb::Code::Ok);
    // Nobody has consumed yet: the lag of the group is every update. (Every step heartbeats the
    // instances that must stay: the TTL is short.)
    heartbeat(&mut clients[0]).await;
    heartbeat(&mut clients[2]).await;
    assert_eq!(lag(), 20);

    // The live instance consumes everything; the other two still hold the lag.
    let mut live = clients[0].clone();
    let mut got = 0;
    weir_tests::wait_for(Duration::from_secs(60), "the live instance to read all 20 updates", async || {
        heartbeat(&mut live).await;
        let (_, messages) = receive(&mut live, receive_request("price-cache", "prices", "*", 10_000)).await;
        for m in &messages {
            let entries = vec![pb::AckMessageEntry {
                message_id: m.system_properties.as_ref().unwrap().message_id.clone(),
                receipt_handle: m.system_properties.as_ref().unwrap().receipt_handle.clone().unwrap(),
                lite_topic: None,
            }];
            let r = live
                .ack_message(pb::AckMessageRequest {
                    group: resource("price-cache"),
                    topic: resource("prices"),
                    entries,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(code(&r.status), pb::Code::Ok);
        }
        got += messages.len();
        (got >= 20).then_some(())
    })
    .await;
    assert_eq!(got, 20, "each update exactly once");
    heartbeat(&mut clients[2]).await;
    assert_eq!(lag(), 20, "the two idle instances still have every update to read");

    // One instance says goodbye: forgotten at once. The silent one still holds the lag.
    let r = clients[1]
        .notify_client_termination(pb::NotifyClientTerminationRequest { group: resource("price-cache") })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), pb::Code::Ok);
    heartbeat(&mut clients[2]).await;
    assert_eq!(lag(), 20, "the silent instance is still within its TTL");

    // The live one keeps beating; the silent one stops and is forgotten after the TTL.
    weir_tests::wait_for(Duration::from_secs(30), "the silent broadcast client to be forgotten", async || {
        heartbeat(&mut live).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        (lag() == 0).then_some(())
    })
    .await;
    // The live instance still has its place: a new update reaches it.
    let more = vec![raw::message("prices", "update-20", None, b"SKU-20".to_vec())];
    producer.send_message(pb::SendMessageRequest { messages: more }).await.unwrap();
    let (_, messages) = receive(&mut live, receive_request("price-cache", "prices", "*", 10_000)).await;
    assert_eq!(messages.len(), 1, "the live instance resumes where it was");
    assert_eq!(messages[0].body.as_ref(), b"SKU-20");
}
