//! Crash safety with a real process: acknowledged sends and acknowledged consumption survive
//! `kill -9`; a torn last record (the segment cut anywhere in its last 64 KiB) is cut off without
//! losing any complete record before it; SIGTERM stops cleanly; a broker that crashes again and
//! again before its periodic checkpoint does not replay more at every start.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rand::{Rng, SeedableRng};
use rocketmq::SimpleConsumer;
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use weir_sidecar::storage::frame::{self, RecordKind};
use weir_sidecar::storage::record::StoredMessage;
use weir_tests::{Sidecar, sdk};

async fn send_all(url: &str, topic: &str, count: usize) -> BTreeSet<String> {
    let producer = Arc::new(sdk::producer(url, &[topic]).await);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let producer = producer.clone();
        let topic = topic.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (w..count).step_by(8) {
                let m = MessageBuilder::builder()
                    .set_topic(topic.clone())
                    .set_tag("t")
                    .set_body(format!("payload {i} {}", "p".repeat(300)).into_bytes())
                    .build()
                    .unwrap();
                ids.push(producer.send(m).await.expect("acknowledged send").message_id().to_owned());
            }
            ids
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Receives (and acks) until `stop` says so or two polls come back empty.
async fn drain(
    consumer: &SimpleConsumer,
    topic: &str,
    mut stop: impl FnMut(&BTreeSet<String>) -> bool,
) -> BTreeSet<String> {
    let all = FilterExpression::new(FilterType::Tag, "*");
    let mut got = BTreeSet::new();
    let mut empty = 0;
    while empty < 2 && !stop(&got) {
        let batch = consumer.receive_with(topic, &all, 32, Duration::from_secs(30)).await.expect("receive");
        if batch.is_empty() {
            empty += 1;
        }
        for m in batch {
            assert!(got.insert(m.message_id().to_owned()), "{} delivered twice", m.message_id());
            consumer.ack(&m).await.expect("ack");
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_sends_and_acks_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Sidecar::start(&data, &[]).unwrap();
    let sent = send_all(&broker.access_url(), "durable", 2000).await;
    assert_eq!(sent.len(), 2000);

    let consumer = sdk::consumer(&broker.access_url(), "g", &["durable"], Duration::from_secs(3)).await;
    let acked = drain(&consumer, "durable", |got| got.len() >= 1000).await;
    assert!(acked.len() >= 1000);
    broker.kill9();

    let broker = Sidecar::start(&data, &[]).unwrap();
    let consumer = sdk::consumer(&broker.access_url(), "g", &["durable"], Duration::from_secs(3)).await;
    let after = drain(&consumer, "durable", |_| false).await;
    assert!(
        after.is_disjoint(&acked),
        "{} acknowledged messages were delivered again",
        after.intersection(&acked).count()
    );
    let remaining: BTreeSet<String> = sent.difference(&acked).cloned().collect();
    assert_eq!(after, remaining, "exactly the unacknowledged messages come back");

    // A new group sees every acknowledged send.
    let fresh = sdk::consumer(&broker.access_url(), "g2", &["durable"], Duration::from_secs(3)).await;
    assert_eq!(drain(&fresh, "durable", |_| false).await, sent);
}

/// Records the broker replayed when it started (its recovery gauge).
fn replayed_at_start(broker: &Sidecar) -> f64 {
    weir_tests::metric_sum(&broker.scrape().unwrap(), "weir_storage_recovery_replayed_records", &[])
}

/// After a start that replayed records the broker checkpoints at once, so a crash loop faster than
/// `--checkpoint-interval` replays only what came after the last start, not everything since the
/// last periodic checkpoint (a crash-looping pod would otherwise start slower every time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_replayed_checkpoints_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // No periodic checkpoint during the test: only the one after recovery can bound the replay.
    let args = ["--checkpoint-interval", "1h"];
    let mut broker = Sidecar::start(&data, &args).unwrap();
    let sent = send_all(&broker.access_url(), "crashy", 500).await;
    broker.kill9();

    let mut broker = Sidecar::start(&data, &args).unwrap();
    assert!(replayed_at_start(&broker) >= 500.0, "the first restart replays the sends");
    let checkpoint = data.join("checkpoint");
    weir_tests::wait_for(Duration::from_secs(10), "the checkpoint after recovery", async || {
        checkpoint.exists().then_some(())
    })
    .await;
    broker.kill9();

    let broker = Sidecar::start(&data, &args).unwrap();
    assert_eq!(replayed_at_start(&broker), 0.0, "nothing was sent since the last start");
    let fresh = sdk::consumer(&broker.access_url(), "g", &["crashy"], Duration::from_secs(3)).await;
    assert_eq!(drain(&fresh, "crashy", |_| false).await, sent, "and nothing was lost");
}

fn last_segment(data: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

/// Message ids of the frames that end at or before `cut` in a segment image.
fn complete_messages(image: &[u8], base: u64, cut: usize) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut at = 0usize;
    while let Ok(h) = frame::decode_header(&image[at..], base + at as u64, 16 << 20) {
        let end = at + h.length as usize;
        if end > cut {
            break;
        }
        if h.kind == RecordKind::Message {
            ids.insert(StoredMessage::decode(&image[at + frame::HEADER_LEN..end]).unwrap().message_id);
        }
        at += h.padded_len() as usize;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_keeps_every_complete_record() {
    let seed: u64 = std::env::var("WEIR_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (set WEIR_TEST_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut broker = Sidecar::start(&data, &[]).unwrap();
        let sent = send_all(&broker.access_url(), "torn", 300).await;
        broker.kill9();

        let segment = last_segment(&data);
        let base: u64 = segment.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let image = std::fs::read(&segment).unwrap();
        let cut = rng.random_range(image.len().saturating_sub(64 << 10)..image.len());
        let complete = complete_messages(&image, base, cut);
        std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut as u64).unwrap();
        println!(
            "round {round}: cut {} of {} bytes, {} complete messages before the cut",
            cut,
            image.len(),
            complete.len()
        );

        let broker = Sidecar::start(&data, &[]).unwrap();
        let consumer = sdk::consumer(&broker.access_url(), "after-crash", &["torn"], Duration::from_secs(2)).await;
        let got: HashSet<String> = drain(&consumer, "torn", |_| false).await.into_iter().collect();
        assert!(got.iter().all(|id| sent.contains(id)), "round {round}: a message nobody sent appeared");
        assert_eq!(got, complete, "round {round}: exactly the complete records before the cut survive");

        // The broker appends after the cut as usual.
        let more = send_all(&broker.access_url(), "torn", 8).await;
        let again = drain(&consumer, "torn", |g| g.len() >= 8).await;
        assert_eq!(again, more, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = Sidecar::start(&data, &[]).unwrap();
    let sent = send_all(&broker.access_url(), "graceful", 200).await;
    // A consumer in a long poll and an open telemetry stream must not hold the shutdown up.
    let consumer = sdk::consumer(&broker.access_url(), "late", &["graceful"], Duration::from_secs(20)).await;
    drop(consumer);
    let status = broker.terminate().unwrap();
    assert!(status.success(), "exit status {status:?}");

    let broker = Sidecar::start(&data, &[]).unwrap();
    let consumer = sdk::consumer(&broker.access_url(), "late", &["graceful"], Duration::from_secs(3)).await;
    assert_eq!(drain(&consumer, "graceful", |_| false).await, sent);
}
