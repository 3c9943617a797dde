//! Ordered messages with the official Rust SDK: per message group, and global order.
//!
//! 50 sharding keys x 200 messages go to an 8-partition FIFO topic; 4 concurrent consumers of an
//! Orderly group receive them, leaving ~2% unacknowledged (a nack: the message comes back after its
//! invisible time). Asserted: each key's messages are acknowledged in exact send order, and the
//! broker never delivers a key's next message while the previous one is still unacknowledged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use weir_tests::{Sidecar, sdk, write_manifest};

const KEYS: usize = 50;
const PER_KEY: usize = 200;

/// What every consumer saw, shared so the invariant is checked across consumers.
#[derive(Default)]
struct Ledger {
    /// Next sequence number expected to be acknowledged, per key.
    next_ack: HashMap<String, usize>,
    /// Sequence currently delivered and unacknowledged, per key.
    outstanding: HashMap<String, usize>,
    acked: usize,
    redeliveries: usize,
}

fn manifests(dir: &std::path::Path) -> String {
    write_manifest(
        dir,
        "fifo.yaml",
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: order-events}\nspec: {messageType: FIFO, partitions: 8}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: ledger}\n\
         spec: {messageType: FIFO, partitions: 1, fifo: {scope: Global}}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: fulfilment}\n\
         spec: {subscriptions: [{topicRef: {name: order-events}}], ordering: Orderly, startFrom: {position: Earliest}}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: bookkeeping}\n\
         spec: {subscriptions: [{topicRef: {name: ledger}}], ordering: Orderly, startFrom: {position: Earliest}}\n",
    )
    .to_string_lossy()
    .into_owned()
}

fn parse(body: &[u8]) -> (String, usize) {
    let text = std::str::from_utf8(body).unwrap();
    let (key, seq) = text.split_once('#').unwrap();
    (key.to_owned(), seq.parse().unwrap())
}

/// Runs `consumers` consumers of `group` until `total` messages are acknowledged. A delivery of a
/// key while another message of it is outstanding, or of a sequence other than the next expected,
/// fails the test.
async fn consume_in_order(
    url: &str,
    group: &str,
    topic: &'static str,
    consumers: usize,
    total: usize,
    nack_rate: f64,
) -> Ledger {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let consumer = sdk::consumer(url, group, &[topic], Duration::from_secs(2)).await;
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let all = FilterExpression::new(FilterType::Tag, "*");
            let mut idle = 0;
            while ledger.lock().acked < total && idle < 30 {
                let batch = consumer.receive_with(topic, &all, 16, Duration::from_secs(1)).await.expect("receive");
                idle = if batch.is_empty() { idle + 1 } else { 0 };
                for m in batch {
                    let (key, seq) = parse(m.body());
                    {
                        let mut l = ledger.lock();
                        let expected = *l.next_ack.get(&key).unwrap_or(&0);
                        assert_eq!(seq, expected, "key {key}: got #{seq} while #{expected} is not acknowledged yet");
                        if let Some(busy) = l.outstanding.insert(key.clone(), seq) {
                            assert_eq!(busy, seq, "key {key}: #{seq} delivered while #{busy} is outstanding");
                            l.redeliveries += 1;
                            assert!(m.delivery_attempt() > 1, "a repeated delivery must count its attempt");
                        }
                    }
                    // A nack: leave it unacknowledged; it comes back after its invisible time.
                    if rand::rng().random_bool(nack_rate) {
                        continue;
                    }
                    // Record the ack before sending it: the next message may arrive right after.
                    {
                        let mut l = ledger.lock();
                        l.outstanding.remove(&key);
                        l.next_ack.insert(key.clone(), seq + 1);
                        l.acked += 1;
                    }
                    consumer.ack(&m).await.expect("ack");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(ledger).ok().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_with_concurrent_consumers_and_nacks() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifests(dir.path());
    let broker = Sidecar::start(&dir.path().join("data"), &["-f", &manifest]).unwrap();
    let url = broker.access_url();

    let producer = Arc::new(sdk::producer(&url, &["order-events"]).await);
    let mut sends = Vec::new();
    for k in 0..KEYS {
        let producer = producer.clone();
        sends.push(tokio::spawn(async move {
            let key = format!("order-{k}");
            for seq in 0..PER_KEY {
                let m = MessageBuilder::fifo_message_builder(
                    "order-events",
                    format!("{key}#{seq}").into_bytes(),
                    key.clone(),
                )
                .build()
                .unwrap();
                producer.send(m).await.expect("send");
            }
        }));
    }
    for s in sends {
        s.await.unwrap();
    }

    let ledger = consume_in_order(&url, "fulfilment", "order-events", 4, KEYS * PER_KEY, 0.02).await;
    assert_eq!(ledger.acked, KEYS * PER_KEY);
    assert!(ledger.next_ack.values().all(|n| *n == PER_KEY), "every key fully consumed in order");
    assert!(ledger.redeliveries > 0, "nacked messages came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_partition_global_fifo_is_a_strict_total_order() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifests(dir.path());
    let broker = Sidecar::start(&dir.path().join("data"), &["-f", &manifest]).unwrap();
    let url = broker.access_url();
    let producer = sdk::producer(&url, &["ledger"]).await;
    for seq in 0..300 {
        // Different message groups, yet the topic's scope is Global: one order for all.
        let m = MessageBuilder::fifo_message_builder(
            "ledger",
            format!("all#{seq}").into_bytes(),
            format!("account-{}", seq % 7),
        )
        .build()
        .unwrap();
        producer.send(m).await.expect("send");
    }
    let ledger = consume_in_order(&url, "bookkeeping", "ledger", 2, 300, 0.02).await;
    assert_eq!(ledger.next_ack.get("all"), Some(&300));
}
