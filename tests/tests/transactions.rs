//! Transactional messages with the official Rust SDK: the seed flow (half message, local write,
//! commit or rollback), a producer that dies between half message and commit with another producer
//! answering the check-back, bounded check-backs ending in a rollback, and a broker restart while
//! a transaction is open.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocketmq::Producer;
use rocketmq::conf::{ClientOption, ProducerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::model::transaction::{Transaction, TransactionResolution};
use weir_tests::{Sidecar, metric_sum, sdk, write_manifest};

fn manifest(dir: &std::path::Path) -> String {
    write_manifest(
        dir,
        "tx.yaml",
        // Generous check limit for `payments` (a producer starting slowly on a loaded machine still
        // gets asked); a short one for `undecided`, whose test waits for the rollback.
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: payments}\n\
         spec: {messageType: Transaction, partitions: 1, transaction: {checkInterval: 1s, maxChecks: 60}}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: undecided}\n\
         spec: {messageType: Transaction, partitions: 1, transaction: {checkInterval: 1s, maxChecks: 3}}\n",
    )
    .to_string_lossy()
    .into_owned()
}

/// A transaction producer of `topic` whose checker answers from `committed` (the "database"), or
/// always UNKNOWN.
async fn transaction_producer(
    url: &str,
    topic: &str,
    committed: Arc<Mutex<HashSet<String>>>,
    unknown: bool,
) -> Producer {
    let mut client = ClientOption::default();
    client.set_access_url(url);
    client.set_enable_tls(false);
    let mut option = ProducerOption::default();
    option.set_topics(vec![topic]);
    let checker = Box::new(move |_txn: String, message: rocketmq::model::message::MessageView| {
        if unknown {
            TransactionResolution::UNKNOWN
        } else if committed.lock().unwrap().contains(std::str::from_utf8(message.body()).unwrap()) {
            TransactionResolution::COMMIT
        } else {
            TransactionResolution::ROLLBACK
        }
    });
    let mut producer = Producer::new_transaction_producer(option, client, checker).unwrap();
    producer.start().await.unwrap();
    producer
}

/// Receives from `topic` until `last` arrives (or 30 s pass) and returns the bodies in order.
async fn receive_until(url: &str, topic: &str, group: &str, last: &str) -> Vec<String> {
    let consumer = sdk::consumer(url, group, &[topic], Duration::from_secs(2)).await;
    let all = FilterExpression::new(FilterType::Tag, "*");
    let mut bodies: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while bodies.last().map(String::as_str) != Some(last) && std::time::Instant::now() < deadline {
        for m in consumer.receive_with(topic, &all, 16, Duration::from_secs(10)).await.unwrap() {
            bodies.push(String::from_utf8(m.body().to_vec()).unwrap());
            consumer.ack(&m).await.unwrap();
        }
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_delivers_and_rollback_discards() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), &["-f", &manifest(dir.path())]).unwrap();
    let url = broker.access_url();
    let db = Arc::new(Mutex::new(HashSet::new()));
    let producer = transaction_producer(&url, "payments", db.clone(), false).await;

    // The seed flow: half message, local transaction, then the outcome.
    for (body, commit) in [("pay-1", true), ("pay-2", false), ("pay-3", true)] {
        let half = MessageBuilder::transaction_message_builder("payments", body.as_bytes().to_vec()).build().unwrap();
        let transaction = producer.send_transaction_message(half).await.unwrap();
        if commit {
            db.lock().unwrap().insert(body.to_owned());
            transaction.commit().await.unwrap();
        } else {
            transaction.rollback().await.unwrap();
        }
    }
    // One partition: messages arrive in commit order, and pay-2 is never among them.
    let bodies = receive_until(&url, "payments", "ledger", "pay-3").await;
    assert_eq!(bodies, ["pay-1", "pay-3"]);
    let scrape = broker.scrape().unwrap();
    assert_eq!(metric_sum(&scrape, "rocketmq_commit_messages_total", &[("topic", "payments")]), 2.0);
    assert_eq!(metric_sum(&scrape, "rocketmq_rollback_messages_total", &[("topic", "payments")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_producer_answers_the_check_back_of_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), &["-f", &manifest(dir.path())]).unwrap();
    let url = broker.access_url();
    let out =
        Command::new(weir_tests::binary("half-then-die")).args([&url, "payments", "pay-orphan"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The application restarts; its database says the payment went through.
    let db = Arc::new(Mutex::new(HashSet::from(["pay-orphan".to_owned()])));
    let _producer = transaction_producer(&url, "payments", db, false).await;
    let bodies = receive_until(&url, "payments", "ledger", "pay-orphan").await;
    assert_eq!(bodies, ["pay-orphan"], "committed through the check-back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolved_transactions_roll_back_after_the_last_check() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), &["-f", &manifest(dir.path())]).unwrap();
    let url = broker.access_url();
    let producer = transaction_producer(&url, "undecided", Arc::new(Mutex::new(HashSet::new())), true).await;
    let half = MessageBuilder::transaction_message_builder("undecided", b"pay-undecided".to_vec()).build().unwrap();
    let _open = producer.send_transaction_message(half).await.unwrap();
    // The checker keeps answering UNKNOWN; after maxChecks (3) the broker rolls back.
    weir_tests::wait_for(Duration::from_secs(30), "the rollback", async || {
        let s = broker.scrape().unwrap();
        (metric_sum(&s, "rocketmq_rollback_messages_total", &[("topic", "undecided")]) == 1.0).then_some(())
    })
    .await;
    // Then a committed sentinel: on a one-partition topic it is the first and only message.
    let sentinel = MessageBuilder::transaction_message_builder("undecided", b"sentinel".to_vec()).build().unwrap();
    producer.send_transaction_message(sentinel).await.unwrap().commit().await.unwrap();
    let bodies = receive_until(&url, "undecided", "ledger", "sentinel").await;
    assert_eq!(bodies, ["sentinel"], "a rolled-back message was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_survives_a_broker_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let manifest = manifest(dir.path());
    let mut broker = Sidecar::start(&data, &["-f", &manifest]).unwrap();
    let out = Command::new(weir_tests::binary("half-then-die"))
        .args([&broker.access_url(), "payments", "pay-across-crash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    broker.kill9();

    let broker = Sidecar::start(&data, &["-f", &manifest]).unwrap();
    let url = broker.access_url();
    let db = Arc::new(Mutex::new(HashSet::from(["pay-across-crash".to_owned()])));
    let _producer = transaction_producer(&url, "payments", db, false).await;
    assert_eq!(receive_until(&url, "payments", "ledger", "pay-across-crash").await, ["pay-across-crash"]);
}

/// The Rust SDK sends EndTransaction to its access point, which need not be the broker holding the
/// half message: the transaction id names the owner, and the receiving broker forwards it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_transaction_reaching_another_broker_is_forwarded_to_the_owner() {
    use weir_proto::rocketmq::v2 as pb;
    use weir_tests::raw::{self, code, resource};
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path());
    let owner = Sidecar::start(&dir.path().join("owner"), &["-f", &manifest, "--broker-id", "1"]).unwrap();
    let peer = format!("1={}", owner.access_url());
    let front =
        Sidecar::start(&dir.path().join("front"), &["-f", &manifest, "--broker-id", "0", "--peer", &peer]).unwrap();

    let mut to_owner = raw::connect(owner.grpc, Some("payment-service@1")).await;
    let mut half = raw::message("payments", "forwarded-1", None, b"pay-forwarded".to_vec());
    half.system_properties.as_mut().unwrap().message_type = pb::MessageType::Transaction as i32;
    let sent = to_owner.send_message(pb::SendMessageRequest { messages: vec![half] }).await.unwrap().into_inner();
    let transaction_id = sent.entries[0].transaction_id.clone();
    assert!(transaction_id.starts_with("1-"), "the owner's id is in the transaction id: {transaction_id}");

    let mut to_front = raw::connect(front.grpc, Some("payment-service@1")).await;
    let end = |resolution: pb::TransactionResolution| pb::EndTransactionRequest {
        topic: resource("payments"),
        message_id: "forwarded-1".into(),
        transaction_id: transaction_id.clone(),
        resolution: resolution as i32,
        source: pb::TransactionSource::SourceClient as i32,
        trace_context: String::new(),
    };
    let r = to_front.end_transaction(end(pb::TransactionResolution::Commit)).await.unwrap().into_inner();
    assert_eq!(code(&r.status), pb::Code::Ok);
    assert_eq!(receive_until(&owner.access_url(), "payments", "ledger", "pay-forwarded").await, ["pay-forwarded"]);

    // A transaction of a broker nobody knows is refused with a reason, not lost.
    let mut unknown = end(pb::TransactionResolution::Commit);
    unknown.transaction_id = "7-0001".into();
    let r = to_front.end_transaction(unknown).await.unwrap().into_inner();
    assert_eq!(code(&r.status), pb::Code::InvalidTransactionId);
}
