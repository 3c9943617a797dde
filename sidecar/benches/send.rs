//! Send throughput and latency of a real broker over gRPC, for `Sync` and `Async` durability.
//!
//! Starts a broker in-process on a temporary directory (the same server code `weir-sidecar
//! standalone` runs), then drives it with concurrent RocketMQ-protocol clients sending 1 KiB messages
//! one per request (what the official SDKs do). Prints msgs/s, MB/s and send-ack latency percentiles.
//!
//! ```sh
//! cargo bench -p weir-sidecar --bench send                 # defaults: 50,000 messages, 64 clients
//! cargo bench -p weir-sidecar --bench send -- 200000 128   # messages, concurrent clients
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::transport::Channel;
use weir_proto::rocketmq::v2 as pb;
use weir_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use weir_sidecar::broker::BrokerConfig;
use weir_sidecar::catalog::{CatalogOptions, MessageType, TopicConfig};
use weir_sidecar::grpc::serving::Serving;
use weir_sidecar::server::{self, ServerOptions};
use weir_sidecar::standalone::Declared;
use weir_sidecar::storage::{Durability, Retention};

const BODY: usize = 1024;

fn topic(name: &str, durability: Durability) -> TopicConfig {
    TopicConfig::new(name, 8, vec![MessageType::Normal], durability)
}

async fn run(addr: std::net::SocketAddr, topic: &'static str, total: usize, clients: usize) -> (f64, Vec<Duration>) {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per_client = total / clients;
    let body = bytes::Bytes::from(vec![b'x'; BODY]);
    for c in 0..clients {
        let mut client = MessagingServiceClient::new(channel.clone());
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                let message = pb::Message {
                    topic: Some(pb::Resource { resource_namespace: String::new(), name: topic.into() }),
                    user_properties: Default::default(),
                    system_properties: Some(pb::SystemProperties {
                        message_id: format!("{topic}-{c}-{i}-{}", now.as_nanos()),
                        message_type: pb::MessageType::Normal as i32,
                        born_timestamp: Some(prost_types::Timestamp { seconds: now.as_secs() as i64, nanos: 0 }),
                        tag: Some("bench".into()),
                        ..Default::default()
                    }),
                    body: body.clone(),
                };
                let mut request = tonic::Request::new(pb::SendMessageRequest { messages: vec![message] });
                request.metadata_mut().insert("x-mq-client-id", format!("bench-{c}").parse().unwrap());
                let t = Instant::now();
                let response = client.send_message(request).await.expect("send").into_inner();
                latencies.push(t.elapsed());
                assert_eq!(response.status.unwrap().code, pb::Code::Ok as i32);
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / elapsed, all)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; keep only numbers.
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let total = numbers.first().copied().unwrap_or(50_000);
    let clients = numbers.get(1).copied().unwrap_or(64);
    let dir = tempfile::tempdir_in(std::env::var("WEIR_BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let options = ServerOptions {
        data_dir: dir.path().to_owned(),
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        advertise_host: None,
        segment_bytes: 256 << 20,
        zero_fill_ahead: 8 << 20,
        log_cache_window: 1 << 30,
        min_free_bytes: 64 << 20,
        tls: None,
        peer_tls: None,
        serving: Serving::default(),
        acl: None,
        async_flush_interval: Duration::from_millis(200),
        retention: Retention::default(),
        checkpoint_interval: Duration::from_secs(5),
        catalog: CatalogOptions::default(),
        broker: BrokerConfig::default(),
        declared: Declared {
            topics: vec![topic("bench-sync", Durability::Sync), topic("bench-async", Durability::Async)],
            ..Default::default()
        },
        peers: Default::default(),
        cluster: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (running, done) = server::start(options, async move {
        let _ = stop_rx.await;
    })
    .await
    .expect("broker starts");
    let broker = Arc::clone(&running.broker);
    println!(
        "send benchmark: {total} messages of {BODY} bytes, {clients} concurrent clients, 8 partitions, data in {}",
        dir.path().display()
    );
    println!(
        "{:<8} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "mode", "msgs/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "fsyncs"
    );
    for (mode, topic) in [("Sync", "bench-sync"), ("Async", "bench-async")] {
        let fsyncs_before = broker.metrics().store.fsync_seconds.get_sample_count();
        let (rate, lat) = run(running.grpc_addr, topic, total, clients).await;
        let fsyncs = broker.metrics().store.fsync_seconds.get_sample_count() - fsyncs_before;
        println!(
            "{mode:<8} {rate:>12.0} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {fsyncs:>12}",
            rate * BODY as f64 / 1e6,
            pct(&lat, 0.50),
            pct(&lat, 0.99),
            pct(&lat, 0.999),
            pct(&lat, 1.0),
        );
    }
    let _ = stop_tx.send(());
    done.await.expect("clean shutdown");
}
