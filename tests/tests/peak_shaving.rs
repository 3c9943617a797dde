//! Peak shaving: a burst of 200,000 messages arrives with no consumer running; the backlog waits on
//! disk, lag is visible in `weirctl stats` and `/metrics`, a consumer drains it at its own pace
//! (small batches), lag falls to zero, and the broker's resident memory stays bounded throughout.
//! The page cache keeps the backlog while the declared group has not consumed it and lets go of
//! it once consumed.
//! And the other side of it: many consumers waiting on a quiet topic cost one look per message,
//! not one per waiting receive.

use std::time::Duration;

use weir_proto::rocketmq::v2 as pb;
use weir_tests::raw::{self, code, resource};
use weir_tests::{Sidecar, metric_sum, wait_for, weirctl_binary, write_manifest};

const BURST: usize = 200_000;
const BODY: usize = 1024;
/// The bound stated in the issue note: the backlog (~220 MB on disk) must not be held in memory.
const RSS_BOUND: u64 = 192 << 20;

/// Synced commit log the broker has let go of from the page cache.
fn released_bytes(broker: &Sidecar) -> f64 {
    metric_sum(&broker.scrape().unwrap(), "weir_store_cache_released_bytes_total", &[])
}

fn stats_lag(url: &str) -> u64 {
    let out = std::process::Command::new(weirctl_binary())
        .args(["--server", url, "stats", "-g", "fulfilment", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["groups"].as_array().unwrap().iter().map(|g| g["lag"].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_absorbed_and_drained_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        "sale.yaml",
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: flash-sale}\nspec: {partitions: 8}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: fulfilment}\n\
         spec: {subscriptions: [{topicRef: {name: flash-sale}}], startFrom: {position: Earliest}}\n",
    );
    let broker = Sidecar::start(&dir.path().join("data"), &["-f", manifest.to_str().unwrap()]).unwrap();
    let url = broker.access_url();
    let mut peak_rss = 0;

    // The burst: 200,000 orders, nobody consuming.
    let mut producer = raw::connect(broker.grpc, Some("flash-sale-frontend@1")).await;
    for batch in 0..BURST / 500 {
        let messages = (0..500)
            .map(|i| raw::message("flash-sale", &format!("o-{batch}-{i}"), Some("order"), vec![b'o'; BODY]))
            .collect();
        let r = producer.send_message(pb::SendMessageRequest { messages }).await.unwrap().into_inner();
        assert_eq!(code(&r.status), pb::Code::Ok);
        if batch % 50 == 0 {
            peak_rss = peak_rss.max(weir_tests::rss_bytes(broker.pid()));
        }
    }
    assert_eq!(stats_lag(&url), BURST as u64, "weirctl stats shows the whole backlog as lag");
    // The burst took seconds, flushed every 200 ms: what the group will read stays cached.
    assert_eq!(released_bytes(&broker), 0.0, "the declared group's backlog left the page cache");
    let scrape = broker.scrape().unwrap();
    assert_eq!(
        metric_sum(&scrape, "rocketmq_consumer_lag_messages", &[("consumer_group", "fulfilment")]),
        BURST as f64
    );

    // The consumer drains at its own pace: 100 messages per receive, acknowledged per batch.
    let mut consumer = raw::connect(broker.grpc, Some("fulfilment-worker@1")).await;
    let mut drained = 0;
    let mut lag_seen_falling = false;
    while drained < BURST {
        let mut request = raw::receive_request("fulfilment", "flash-sale", "*", 60_000);
        request.batch_size = 100;
        let (rc, messages) = raw::receive(&mut consumer, request).await;
        assert_eq!(rc, pb::Code::Ok, "the backlog ran dry after {drained} messages");
        let entries = messages.iter().map(raw::ack_entry).collect();
        let ack = consumer
            .ack_message(pb::AckMessageRequest {
                group: resource("fulfilment"),
                topic: resource("flash-sale"),
                entries,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&ack.status), pb::Code::Ok);
        drained += messages.len();
        if drained % 50_000 < 100 {
            peak_rss = peak_rss.max(weir_tests::rss_bytes(broker.pid()));
            let lag = stats_lag(&url);
            assert_eq!(lag, (BURST - drained) as u64);
            lag_seen_falling = true;
        }
    }
    assert!(lag_seen_falling);
    assert_eq!(stats_lag(&url), 0, "lag falls to zero in weirctl stats");
    let scrape = broker.scrape().unwrap();
    assert_eq!(metric_sum(&scrape, "rocketmq_consumer_lag_messages", &[("consumer_group", "fulfilment")]), 0.0);
    assert_eq!(metric_sum(&scrape, "rocketmq_consumer_inflight_messages", &[("consumer_group", "fulfilment")]), 0.0);
    // Consumed, the backlog need not stay cached (the 1 GiB window alone would keep all of it).
    let consumed = (BURST * BODY) as f64 * 0.75;
    wait_for(Duration::from_secs(20), "the consumed backlog to leave the page cache", async || {
        (released_bytes(&broker) >= consumed).then_some(())
    })
    .await;
    println!("peak broker RSS during burst and drain: {} MiB", peak_rss >> 20);
    assert!(
        peak_rss < RSS_BOUND,
        "broker RSS peaked at {} MiB, over the {} MiB bound",
        peak_rss >> 20,
        RSS_BOUND >> 20
    );
}

/// Total of `weir_long_poll_passes_total` with `result`.
fn passes(broker: &Sidecar, result: &str) -> u64 {
    metric_sum(&broker.scrape().unwrap(), "weir_long_poll_passes_total", &[("result", result)]) as u64
}

/// Starts a receive of `batch` for group `waiters` on `herd` that long-polls for 20 s; its
/// messages arrive on `delivered`.
fn spawn_receive(client: &raw::Client, batch: i32, delivered: &tokio::sync::mpsc::UnboundedSender<Vec<pb::Message>>) {
    let (mut client, delivered) = (client.clone(), delivered.clone());
    tokio::spawn(async move {
        let mut request = raw::receive_request("waiters", "herd", "*", 60_000);
        request.batch_size = batch;
        request.long_polling_timeout = Some(prost_types::Duration { seconds: 20, nanos: 0 });
        // The one still waiting when the test ends sees the broker go.
        if let Ok((_, messages)) = raw::try_receive(&mut client, request).await {
            let _ = delivered.send(messages);
        }
    });
}

/// Eight receives of one group wait; messages arrive one at a time. Each message wakes them all,
/// but once one has taken it the others go back to waiting without looking (`skipped`): without
/// that, each message costs a claim pass per waiting receive (28 empty passes here). Every message
/// still arrives promptly (a wrongly skipped look would leave it for the 20 s long poll), and a
/// receive that fills its batch does not stop the others looking for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_receives_of_a_group_look_once_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), &[]).unwrap();
    let client = raw::connect(broker.grpc, Some("herd-consumer@1")).await;
    let mut producer = raw::connect(broker.grpc, Some("herd-producer@1")).await;
    let publish = async |producer: &mut raw::Client, ids: &[String]| {
        let messages = ids.iter().map(|id| raw::message("herd", id, None, b"h".to_vec())).collect();
        let sent = producer.send_message(pb::SendMessageRequest { messages }).await.unwrap().into_inner();
        assert_eq!(code(&sent.status), pb::Code::Ok);
    };
    publish(&mut producer, &["warm-up".to_string()]).await; // creates the topic
    let (delivered_tx, mut delivered) = tokio::sync::mpsc::unbounded_channel();
    let empty_before = passes(&broker, "empty");
    spawn_receive(&client, 32, &delivered_tx);
    let got = tokio::time::timeout(Duration::from_secs(10), delivered.recv()).await.unwrap().unwrap();
    assert_eq!(got.len(), 1, "the warm-up message");
    for _ in 0..8 {
        spawn_receive(&client, 32, &delivered_tx);
    }
    let waiting = empty_before + 8;
    weir_tests::wait_for(Duration::from_secs(10), "eight receives waiting", async || {
        (passes(&broker, "empty") >= waiting).then_some(())
    })
    .await;

    for i in 0..8 {
        publish(&mut producer, &[format!("one-{i}")]).await;
        let got = tokio::time::timeout(Duration::from_secs(10), delivered.recv()).await;
        let got = got.unwrap_or_else(|_| panic!("message {i} not delivered within 10 s")).unwrap();
        assert_eq!(got.len(), 1, "one message, one receive");
    }
    // 8, 7, ... 1 receives were woken: 28 wake-ups did not get the message.
    let (empty, skipped) = (passes(&broker, "empty") - waiting, passes(&broker, "skipped"));
    println!("of 28 wake-ups without the message, {skipped} skipped the look and {empty} looked");
    assert!(skipped > 0 && empty < 28, "{empty} empty passes, {skipped} skipped");

    // Three receives of 4 wait; 8 messages arrive at once: a receive that filled its batch leaves
    // the rest to the others.
    for _ in 0..3 {
        spawn_receive(&client, 4, &delivered_tx);
    }
    let ids: Vec<String> = (0..8).map(|i| format!("many-{i}")).collect();
    publish(&mut producer, &ids).await;
    let mut got = 0;
    while got < 8 {
        let batch = tokio::time::timeout(Duration::from_secs(10), delivered.recv()).await;
        got += batch.unwrap_or_else(|_| panic!("{got} of 8 delivered within 10 s")).unwrap().len();
    }
}
