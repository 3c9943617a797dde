//! Retries and dead letters: a message never acknowledged goes to `%DLQ%<group>` after the group's
//! maxAttempts, `weirctl dlq list` shows it, `weirctl dlq resend` hands it back to that group only;
//! `ForwardMessageToDeadLetterQueue` dead-letters at once and frees the message's FIFO group.

use std::process::Command;
use std::time::Duration;

use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use weir_proto::rocketmq::v2 as pb;
use weir_tests::raw::{self, code, resource};
use weir_tests::{Sidecar, metric_sum, sdk, weirctl_binary, write_manifest};

fn weirctl(server: &str, args: &[&str]) -> String {
    let out = Command::new(weirctl_binary()).args(["--server", server]).args(args).output().unwrap();
    assert!(out.status.success(), "weirctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_message_is_dead_lettered_and_resent_to_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        "g.yaml",
        "apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: mailer}\n\
         spec: {subscriptions: [{topicRef: {name: signups}}], startFrom: {position: Earliest}, retry: {maxAttempts: 2}}\n",
    );
    let broker = Sidecar::start(&dir.path().join("data"), &["-f", manifest.to_str().unwrap()]).unwrap();
    let url = broker.access_url();
    let producer = sdk::producer(&url, &["signups"]).await;
    let poison = producer
        .send(
            MessageBuilder::builder()
                .set_topic("signups")
                .set_tag("welcome")
                .set_body(b"poison".to_vec())
                .build()
                .unwrap(),
        )
        .await
        .unwrap();

    let consumer = sdk::consumer(&url, "mailer", &["signups"], Duration::from_secs(4)).await;
    let all = FilterExpression::new(FilterType::Tag, "*");
    // Two deliveries, never acknowledged.
    for attempt in 1..=2 {
        let got = weir_tests::wait_for(Duration::from_secs(10), "a delivery", async || {
            let b = consumer.receive_with("signups", &all, 8, Duration::from_secs(1)).await.unwrap();
            (!b.is_empty()).then_some(b)
        })
        .await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].message_id(), poison.message_id());
        assert_eq!(got[0].delivery_attempt(), attempt);
    }
    // The third would exceed maxAttempts: it goes to the dead-letter queue instead.
    let dlq = weir_tests::wait_for(Duration::from_secs(10), "the message in the DLQ", async || {
        let again = consumer.receive_with("signups", &all, 8, Duration::from_secs(1)).await.unwrap();
        assert!(again.is_empty(), "delivered a third time: attempt {}", again[0].delivery_attempt());
        let listed = weirctl(&url, &["dlq", "list", "-g", "mailer", "-o", "json"]);
        (!listed.trim().is_empty()).then_some(listed)
    })
    .await;
    let entry: serde_json::Value = serde_json::from_str(dlq.lines().next().unwrap()).unwrap();
    assert_eq!(entry["messageId"], poison.message_id());
    assert_eq!(entry["topic"], "signups");
    assert_eq!(entry["attempts"], 2);
    assert_eq!(entry["body"], "poison");
    let scrape = broker.scrape().unwrap();
    assert_eq!(metric_sum(&scrape, "rocketmq_send_to_dlq_messages_total", &[("consumer_group", "mailer")]), 1.0);
    assert_eq!(metric_sum(&scrape, "rocketmq_consumer_lag_messages", &[("consumer_group", "mailer")]), 0.0);

    // Another group is not affected by the resend.
    let other = sdk::consumer(&url, "audit", &["signups"], Duration::from_secs(2)).await;
    let seen = other.receive_with("signups", &all, 8, Duration::from_secs(30)).await.unwrap();
    assert_eq!(seen.len(), 1);
    other.ack(&seen[0]).await.unwrap();

    assert!(weirctl(&url, &["dlq", "resend", "-g", "mailer", "--all"]).contains("1 message(s) handed back"));
    let back = weir_tests::wait_for(Duration::from_secs(10), "the resent message", async || {
        let b = consumer.receive_with("signups", &all, 8, Duration::from_secs(30)).await.unwrap();
        (!b.is_empty()).then_some(b)
    })
    .await;
    assert_eq!(back[0].message_id(), poison.message_id());
    assert_eq!(back[0].delivery_attempt(), 1, "a resend starts a fresh round of attempts");
    consumer.ack(&back[0]).await.unwrap();
    let nothing = other.receive_with("signups", &all, 8, Duration::from_secs(30)).await.unwrap();
    assert!(nothing.is_empty(), "the resend went to group audit too");
}

#[tokio::test]
async fn forwarding_to_the_dead_letter_queue_frees_the_fifo_group() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        "f.yaml",
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: steps}\nspec: {messageType: FIFO, partitions: 4}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: runner}\n\
         spec: {subscriptions: [{topicRef: {name: steps}}], ordering: Orderly, startFrom: {position: Earliest}}\n",
    );
    let broker = Sidecar::start(&dir.path().join("data"), &["-f", manifest.to_str().unwrap()]).unwrap();
    let mut client = raw::connect(broker.grpc, Some("runner@1")).await;
    for (i, id) in ["first", "second"].iter().enumerate() {
        let mut m = raw::message("steps", id, None, format!("step {i}").into_bytes());
        let sys = m.system_properties.as_mut().unwrap();
        sys.message_type = pb::MessageType::Fifo as i32;
        sys.message_group = Some("job-1".into());
        let r = client.send_message(pb::SendMessageRequest { messages: vec![m] }).await.unwrap().into_inner();
        assert_eq!(code(&r.status), pb::Code::Ok);
    }
    let (_, got) = raw::receive(&mut client, raw::receive_request("runner", "steps", "*", 60_000)).await;
    assert_eq!(got.len(), 1, "only the head of the group is delivered");
    let head = got[0].system_properties.clone().unwrap();
    assert_eq!(head.message_id, "first");
    let (rc, none) = raw::receive(&mut client, raw::receive_request("runner", "steps", "*", 60_000)).await;
    assert_eq!((rc, none.len()), (pb::Code::MessageNotFound, 0), "the group is blocked while its head is in flight");

    let forwarded = client
        .forward_message_to_dead_letter_queue(pb::ForwardMessageToDeadLetterQueueRequest {
            group: resource("runner"),
            topic: resource("steps"),
            receipt_handle: head.receipt_handle.unwrap(),
            message_id: "first".into(),
            delivery_attempt: 1,
            max_delivery_attempts: 1,
            lite_topic: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&forwarded.status), pb::Code::Ok);
    let (_, next) = raw::receive(&mut client, raw::receive_request("runner", "steps", "*", 60_000)).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].system_properties.as_ref().unwrap().message_id, "second");
    let listed = weirctl(&broker.access_url(), &["dlq", "list", "-g", "runner"]);
    assert!(listed.contains("id=first"), "{listed}");
}
