//! Malformed and out-of-range requests get the right RocketMQ status code in band, and the broker
//! keeps serving. One test per case; each ends by checking the process is up and a valid send works.

use weir_proto::rocketmq::v2 as pb;
use weir_tests::raw::{self, Client, code, message, resource};
use weir_tests::{Sidecar, still_serving};

async fn start(args: &[&str]) -> (tempfile::TempDir, Sidecar, Client) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), args).unwrap();
    let client = raw::connect(broker.grpc, Some("bad-input-test@1")).await;
    (dir, broker, client)
}

async fn send_one(client: &mut Client, m: pb::Message) -> pb::SendMessageResponse {
    client.send_message(pb::SendMessageRequest { messages: vec![m] }).await.expect("grpc ok").into_inner()
}

#[tokio::test]
async fn unknown_topic_is_topic_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = weir_tests::write_manifest(
        dir.path(),
        "alive.yaml",
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: alive}\nspec: {partitions: 2}\n",
    );
    let mut broker =
        Sidecar::start(&dir.path().join("data"), &["--no-auto-create", "-f", manifest.to_str().unwrap()]).unwrap();
    let mut client = raw::connect(broker.grpc, Some("t@1")).await;
    let route = client
        .query_route(pb::QueryRouteRequest { topic: resource("nope"), endpoints: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&route.status), pb::Code::TopicNotFound);
    assert!(route.status.unwrap().message.contains("nope"));
    let sent = send_one(&mut client, message("nope", "id-1", None, b"x".to_vec())).await;
    assert_eq!(code(&sent.status), pb::Code::TopicNotFound);
    assert_eq!(code(&sent.entries[0].status), pb::Code::TopicNotFound);
    let (rc, _) = raw::receive(&mut client, raw::receive_request("g", "nope", "*", 10_000)).await;
    assert_eq!(rc, pb::Code::TopicNotFound);
    still_serving(&mut broker, &mut client).await;
}

#[tokio::test]
async fn illegal_topic_name_is_illegal_topic() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    for name in ["bad topic", "slash/topic", &"t".repeat(128), ""] {
        let route = client
            .query_route(pb::QueryRouteRequest { topic: resource(name), endpoints: None })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&route.status), pb::Code::IllegalTopic, "{name:?}");
        let sent = send_one(&mut client, message(name, "id-1", None, b"x".to_vec())).await;
        assert_eq!(code(&sent.entries[0].status), pb::Code::IllegalTopic, "{name:?}");
    }
    still_serving(&mut broker, &mut client).await;
}

#[tokio::test]
async fn illegal_group_name_is_illegal_consumer_group() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    for group in ["bad group", "g\u{e9}", &"g".repeat(121), ""] {
        let (rc, _) = raw::receive(&mut client, raw::receive_request(group, "alive", "*", 10_000)).await;
        assert_eq!(rc, pb::Code::IllegalConsumerGroup, "{group:?}");
    }
    still_serving(&mut broker, &mut client).await;
}

#[tokio::test]
async fn empty_message_id_is_illegal_message_id() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    let sent = send_one(&mut client, message("alive", "", None, b"x".to_vec())).await;
    assert_eq!(code(&sent.status), pb::Code::IllegalMessageId);
    assert_eq!(code(&sent.entries[0].status), pb::Code::IllegalMessageId);
    still_serving(&mut broker, &mut client).await;
}

#[tokio::test]
async fn body_over_the_advertised_maximum_is_refused() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    // The limit clients learn from the settings handshake.
    let max = 4_000_000;
    let sent = send_one(&mut client, message("alive", "big-1", None, vec![7; max + 1])).await;
    assert_eq!(code(&sent.entries[0].status), pb::Code::MessageBodyTooLarge);
    let at_limit = send_one(&mut client, message("alive", "big-2", None, vec![7; max])).await;
    assert_eq!(code(&at_limit.entries[0].status), pb::Code::Ok);
    // Far beyond the gRPC request limit: refused by the transport, the broker stays up.
    let huge = client
        .send_message(pb::SendMessageRequest { messages: vec![message("alive", "huge", None, vec![0; 20 << 20])] })
        .await;
    assert!(huge.is_err(), "a 20 MiB request must be refused");
    let empty = send_one(&mut client, message("alive", "empty", None, Vec::new())).await;
    // Rust clients do not know MESSAGE_BODY_EMPTY; the broker answers BAD_REQUEST to them.
    assert_eq!(code(&empty.entries[0].status), pb::Code::BadRequest);
    still_serving(&mut broker, &mut client).await;
}

#[tokio::test]
async fn invalid_receipt_handle_is_refused() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    still_serving(&mut broker, &mut client).await; // creates the topic with one message
    for handle in ["", "garbage", "1-0-0-0-0-00000000", &"x".repeat(10_000)] {
        let ack = client
            .ack_message(pb::AckMessageRequest {
                group: resource("g"),
                topic: resource("alive"),
                entries: vec![pb::AckMessageEntry {
                    message_id: "m".into(),
                    receipt_handle: handle.into(),
                    lite_topic: None,
                }],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&ack.status), pb::Code::InvalidReceiptHandle, "{handle:.20}");
        assert_eq!(code(&ack.entries[0].status), pb::Code::InvalidReceiptHandle);
        let change = client
            .change_invisible_duration(pb::ChangeInvisibleDurationRequest {
                group: resource("g"),
                topic: resource("alive"),
                receipt_handle: handle.into(),
                invisible_duration: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
                message_id: "m".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&change.status), pb::Code::InvalidReceiptHandle);
    }
    still_serving(&mut broker, &mut client).await;
}

/// One acknowledgement carrying handles from several partitions, in runs and interleaved, and a
/// bad one in between: every good entry is acknowledged (nothing is left in flight), the bad one
/// alone is refused, and the batch says its entries had different results.
#[tokio::test]
async fn one_ack_over_several_partitions_answers_each_entry() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    let messages = (0..24)
        .map(|i| {
            let mut m = message("spread", &format!("s-{i}"), None, b"x".to_vec());
            m.system_properties.as_mut().unwrap().queue_id = i % 8; // the queue a client picked
            m
        })
        .collect();
    let sent = client.send_message(pb::SendMessageRequest { messages }).await.unwrap().into_inner();
    assert_eq!(code(&sent.status), pb::Code::Ok);
    let (rc, got) = raw::receive(&mut client, raw::receive_request("g", "spread", "*", 60_000)).await;
    assert_eq!((rc, got.len()), (pb::Code::Ok, 24));
    let partitions: std::collections::BTreeSet<i32> =
        got.iter().map(|m| m.system_properties.as_ref().unwrap().queue_id).collect();
    assert!(partitions.len() > 2, "the messages span partitions: {partitions:?}");
    // The first half as received (runs of one partition), the second in send order (a different
    // partition every entry), and the bad handle between them.
    let mut entries: Vec<pb::AckMessageEntry> = got.iter().map(raw::ack_entry).collect();
    entries[12..].sort_by_key(|e| e.message_id.trim_start_matches("s-").parse::<u32>().unwrap());
    let bad = pb::AckMessageEntry { message_id: "bad".into(), receipt_handle: "garbage".into(), lite_topic: None };
    entries.insert(12, bad);
    let ack = pb::AckMessageRequest { group: resource("g"), topic: resource("spread"), entries };
    let ack = client.ack_message(ack).await.unwrap().into_inner();
    assert_eq!(code(&ack.status), pb::Code::MultipleResults);
    for entry in &ack.entries {
        let expected = if entry.message_id == "bad" { pb::Code::InvalidReceiptHandle } else { pb::Code::Ok };
        assert_eq!(code(&entry.status), expected, "{}", entry.message_id);
    }
    let scrape = broker.scrape().unwrap();
    let in_flight = weir_tests::metric_sum(&scrape, "rocketmq_consumer_inflight_messages", &[("consumer_group", "g")]);
    assert_eq!(in_flight, 0.0, "every good handle was acknowledged");
    still_serving(&mut broker, &mut client).await;
}

#[tokio::test]
async fn changed_invisibility_gives_a_new_handle_and_retires_the_old_one() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    still_serving(&mut broker, &mut client).await;
    let (rc, got) = raw::receive(&mut client, raw::receive_request("g", "alive", "*", 10_000)).await;
    assert_eq!((rc, got.len()), (pb::Code::Ok, 1));
    let old = got[0].system_properties.clone().unwrap().receipt_handle.unwrap();
    let change = client
        .change_invisible_duration(pb::ChangeInvisibleDurationRequest {
            group: resource("g"),
            topic: resource("alive"),
            receipt_handle: old.clone(),
            invisible_duration: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
            message_id: "m".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&change.status), pb::Code::Ok);
    assert!(!change.receipt_handle.is_empty() && change.receipt_handle != old);
    let ack = |handle: String| pb::AckMessageRequest {
        group: resource("g"),
        topic: resource("alive"),
        entries: vec![pb::AckMessageEntry { message_id: "m".into(), receipt_handle: handle, lite_topic: None }],
    };
    let stale = client.ack_message(ack(old)).await.unwrap().into_inner();
    assert_eq!(code(&stale.status), pb::Code::InvalidReceiptHandle);
    let fresh = client.ack_message(ack(change.receipt_handle)).await.unwrap().into_inner();
    assert_eq!(code(&fresh.status), pb::Code::Ok);
    still_serving(&mut broker, &mut client).await;
}

#[tokio::test]
async fn invalid_filter_expression_is_illegal_filter_expression() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    for expr in ["A || || B", "A ||", "A | B", "A || *"] {
        let (rc, _) = raw::receive(&mut client, raw::receive_request("g", "alive", expr, 10_000)).await;
        assert_eq!(rc, pb::Code::IllegalFilterExpression, "{expr:?}");
    }
    let mut sql = raw::receive_request("g", "alive", "a >", 10_000);
    sql.filter_expression.as_mut().unwrap().r#type = pb::FilterType::Sql as i32;
    let (rc, _) = raw::receive(&mut client, sql).await;
    assert_eq!(rc, pb::Code::IllegalFilterExpression);
    still_serving(&mut broker, &mut client).await;
}

#[tokio::test]
async fn invisible_time_out_of_range_is_illegal_invisible_time() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    for ms in [0, 999, 13 * 3600 * 1000] {
        let (rc, _) = raw::receive(&mut client, raw::receive_request("g", "alive", "*", ms)).await;
        assert_eq!(rc, pb::Code::IllegalInvisibleTime, "{ms} ms");
    }
    let mut missing = raw::receive_request("g", "alive", "*", 10_000);
    missing.invisible_duration = None;
    let (rc, _) = raw::receive(&mut client, missing).await;
    assert_eq!(rc, pb::Code::IllegalInvisibleTime, "no invisible duration and no auto-renew");
    still_serving(&mut broker, &mut client).await;
    let (_, got) = raw::receive(&mut client, raw::receive_request("g", "alive", "*", 10_000)).await;
    let handle = got[0].system_properties.clone().unwrap().receipt_handle.unwrap();
    let change = client
        .change_invisible_duration(pb::ChangeInvisibleDurationRequest {
            group: resource("g"),
            topic: resource("alive"),
            receipt_handle: handle,
            invisible_duration: Some(prost_types::Duration { seconds: 13 * 3600, nanos: 0 }),
            message_id: "m".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&change.status), pb::Code::IllegalInvisibleTime);
    still_serving(&mut broker, &mut client).await;
}

#[tokio::test]
async fn missing_client_id_is_client_id_required() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    let mut anonymous = raw::connect(broker.grpc, None).await;
    let route = anonymous
        .query_route(pb::QueryRouteRequest { topic: resource("alive"), endpoints: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&route.status), pb::Code::ClientIdRequired);
    let sent = anonymous
        .send_message(pb::SendMessageRequest { messages: vec![message("alive", "x", None, b"x".to_vec())] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&sent.status), pb::Code::ClientIdRequired);
    still_serving(&mut broker, &mut client).await;
}

#[tokio::test]
async fn empty_and_malformed_batches_are_bad_requests() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    let empty = client.send_message(pb::SendMessageRequest { messages: vec![] }).await.unwrap().into_inner();
    assert_eq!(code(&empty.status), pb::Code::BadRequest);
    let mut no_props = message("alive", "x", None, b"x".to_vec());
    no_props.system_properties = None;
    let r = send_one(&mut client, no_props).await;
    assert_eq!(code(&r.entries[0].status), pb::Code::BadRequest);
    let mut reserved = message("alive", "y", None, b"x".to_vec());
    reserved.user_properties.insert("UNIQ_KEY".into(), "v".into());
    let r = send_one(&mut client, reserved).await;
    assert_eq!(code(&r.entries[0].status), pb::Code::IllegalMessagePropertyKey);
    let ack = client
        .ack_message(pb::AckMessageRequest { group: resource("g"), topic: resource("alive"), entries: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&ack.status), pb::Code::BadRequest);
    let mut zero_batch = raw::receive_request("g", "alive", "*", 10_000);
    zero_batch.batch_size = 0;
    let (rc, _) = raw::receive(&mut client, zero_batch).await;
    assert_eq!(rc, pb::Code::BadRequest);
    still_serving(&mut broker, &mut client).await;
}

/// A batch answers every message in its own entry, in the order sent and under the message's
/// own id, whether it was stored, refused by the broker's checks or malformed on the wire.
#[tokio::test]
async fn a_mixed_batch_answers_every_message_in_order_under_its_id() {
    let (_dir, mut broker, mut client) = start(&[]).await;
    let mut reserved = message("alive", "m-2", None, b"x".to_vec());
    reserved.user_properties.insert("UNIQ_KEY".into(), "v".into());
    let mut no_props = message("alive", "m-4", None, b"x".to_vec());
    no_props.system_properties = None;
    let messages = vec![
        message("alive", "m-1", None, b"x".to_vec()),
        reserved,
        message("alive", "m-3", None, b"x".to_vec()),
        no_props,
        message("alive", "m-5", None, b"x".to_vec()),
    ];
    let sent = client.send_message(pb::SendMessageRequest { messages }).await.unwrap().into_inner();
    let answers: Vec<(&str, pb::Code)> =
        sent.entries.iter().map(|e| (e.message_id.as_str(), code(&e.status))).collect();
    assert_eq!(
        answers,
        [
            ("m-1", pb::Code::Ok),
            ("m-2", pb::Code::IllegalMessagePropertyKey),
            ("m-3", pb::Code::Ok),
            // No system properties: no id to answer under.
            ("", pb::Code::BadRequest),
            ("m-5", pb::Code::Ok),
        ]
    );
    assert_eq!(code(&sent.status), pb::Code::MultipleResults, "the batch says its entries differ");
    still_serving(&mut broker, &mut client).await;
}

/// `spec.permission`: a ReadOnly topic refuses sends and a WriteOnly topic refuses receives with
/// FORBIDDEN (routes show the queues as READ / WRITE), and the broker stays up.
#[tokio::test]
async fn topic_permission_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = weir_tests::write_manifest(
        dir.path(),
        "perm.yaml",
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: frozen}\nspec: {permission: ReadOnly}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: sink}\nspec: {permission: WriteOnly}\n",
    );
    let (_dir, mut broker, mut client) = start(&["-f", manifest.to_str().unwrap()]).await;
    let route = |topic: &str| pb::QueryRouteRequest { topic: resource(topic), endpoints: None };
    let frozen = client.query_route(route("frozen")).await.unwrap().into_inner();
    assert!(frozen.message_queues.iter().all(|q| q.permission == pb::Permission::Read as i32));
    let sink = client.query_route(route("sink")).await.unwrap().into_inner();
    assert!(sink.message_queues.iter().all(|q| q.permission == pb::Permission::Write as i32));

    let sent = send_one(&mut client, message("frozen", "id-frozen", None, b"x".to_vec())).await;
    assert_eq!(code(&sent.entries[0].status), pb::Code::Forbidden);
    assert!(sent.entries[0].status.as_ref().unwrap().message.contains("read-only"));
    let sent = send_one(&mut client, message("sink", "id-sink", None, b"x".to_vec())).await;
    assert_eq!(code(&sent.status), pb::Code::Ok);
    let (rc, messages) = raw::receive(&mut client, raw::receive_request("g", "sink", "*", 10_000)).await;
    assert_eq!(rc, pb::Code::Forbidden);
    assert!(messages.is_empty());
    still_serving(&mut broker, &mut client).await;
}
