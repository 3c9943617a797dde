//! Prometheus metrics of the broker, served on `/metrics`.
//!
//! Where RocketMQ 5 defines a metric, Weir uses its exact name, labels and units (so existing
//! RocketMQ dashboards and alerts work): `rocketmq_messages_in_total`, `rocketmq_throughput_in_total`
//! (bytes), `rocketmq_messages_out_total`, `rocketmq_throughput_out_total` (bytes),
//! `rocketmq_message_size` (bytes), `rocketmq_rpc_latency` (milliseconds),
//! `rocketmq_consumer_lag_messages`, `rocketmq_consumer_inflight_messages`,
//! `rocketmq_storage_size` (bytes), `rocketmq_producer_connections`, `rocketmq_consumer_connections`.
//! Everything else is `weir_*` in base units. Labels never carry ids (message or client).
//!
//! Counters and histograms are updated on the hot path; gauges (lag, in-flight, storage size) are
//! computed when Prometheus scrapes, from the broker's state, so they cost nothing in between.

use std::sync::{Arc, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::broker::Broker;
use crate::clients::ClientKind;
use crate::storage::StoreMetrics;

/// The metrics registry and the hot-path instruments.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Messages stored, by topic and message type.
    pub messages_in: IntCounterVec,
    /// Bytes of message bodies stored, by topic and message type.
    pub throughput_in: IntCounterVec,
    /// Messages delivered, by topic and consumer group.
    pub messages_out: IntCounterVec,
    /// Bytes of message bodies delivered, by topic and consumer group.
    pub throughput_out: IntCounterVec,
    /// Body sizes of stored messages.
    pub message_size: HistogramVec,
    /// Handler latency in milliseconds, by RPC and result code.
    pub rpc_latency: HistogramVec,
    /// SendMessage latency until the store acknowledged, in seconds.
    pub send_latency: HistogramVec,
    /// Redeliveries after an invisibility timeout, by topic and group.
    pub redeliveries: IntCounterVec,
    /// Messages moved to a dead-letter queue, by topic and group.
    pub dead_lettered: IntCounterVec,
    /// Transactions committed, by topic.
    pub commits: IntCounterVec,
    /// Transactions rolled back, by topic.
    pub rollbacks: IntCounterVec,
    /// Delayed messages delivered into their partitions.
    pub timer_fired: prometheus::IntCounter,
    /// Records skipped because stored bytes failed verification.
    pub corrupt_records: IntCounterVec,
    /// Receive passes whose messages were read on a blocking thread.
    pub bulk_reads: prometheus::IntCounter,
    /// What woken long polls did, resolved once per result.
    pub long_poll: LongPollCounters,
    /// Storage engine timings.
    pub store: StoreMetrics,
    /// Records replayed from the commit log when this process started.
    pub recovery_replayed: prometheus::IntGauge,
    /// How long opening the store (recovery included) took when this process started.
    pub recovery_seconds: prometheus::Gauge,
    /// Open gRPC connections, by the serving thread that serves them (`grpc::serving`).
    pub grpc_connections: IntGaugeVec,
}

const BYTES_BUCKETS: [f64; 7] = [1024.0, 4096.0, 16384.0, 65536.0, 524288.0, 1048576.0, 4194304.0];

impl Metrics {
    /// Creates and registers every instrument.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique counter");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h =
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique histogram");
            h
        };
        fn registered<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
            registry.register(Box::new(collector.clone())).expect("unique metric");
            collector
        }
        let store = StoreMetrics::default();
        store.register(&registry).expect("unique storage metrics");
        Self {
            messages_in: counter("rocketmq_messages_in_total", "Messages stored.", &["topic", "message_type"]),
            throughput_in: counter(
                "rocketmq_throughput_in_total",
                "Bytes of message bodies stored.",
                &["topic", "message_type"],
            ),
            messages_out: counter(
                "rocketmq_messages_out_total",
                "Messages delivered to consumers.",
                &["topic", "consumer_group"],
            ),
            throughput_out: counter(
                "rocketmq_throughput_out_total",
                "Bytes of message bodies delivered to consumers.",
                &["topic", "consumer_group"],
            ),
            message_size: histogram(
                "rocketmq_message_size",
                "Body size of stored messages in bytes.",
                &["topic", "message_type"],
                BYTES_BUCKETS.to_vec(),
            ),
            rpc_latency: histogram(
                "rocketmq_rpc_latency",
                "gRPC handler latency in milliseconds (long polls included).",
                &["protocol_type", "request_code", "response_code"],
                vec![1.0, 5.0, 10.0, 100.0, 1000.0, 10000.0, 60000.0],
            ),
            send_latency: histogram(
                "weir_send_latency_seconds",
                "Time from receiving a SendMessage to its durable acknowledgement.",
                &["topic"],
                vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0],
            ),
            redeliveries: counter(
                "weir_redeliveries_total",
                "Messages delivered again after their invisibility expired.",
                &["topic", "consumer_group"],
            ),
            dead_lettered: counter(
                "rocketmq_send_to_dlq_messages_total",
                "Messages moved to a consumer group's dead-letter queue.",
                &["topic", "consumer_group"],
            ),
            commits: counter("rocketmq_commit_messages_total", "Transactional messages committed.", &["topic"]),
            rollbacks: counter("rocketmq_rollback_messages_total", "Transactional messages rolled back.", &["topic"]),
            timer_fired: registered(
                &registry,
                prometheus::IntCounter::new("rocketmq_timer_dequeue_total", "Delayed messages delivered when due.")
                    .expect("valid counter"),
            ),
            corrupt_records: counter(
                "weir_storage_corrupt_records_total",
                "Stored records that failed verification on read and were skipped.",
                &["topic"],
            ),
            bulk_reads: registered(
                &registry,
                prometheus::IntCounter::new(
                    "weir_receive_bulk_reads_total",
                    "Receive passes that read 128 KiB of log or more, read on a blocking thread instead of the connection's serving thread.",
                )
                .expect("valid counter"),
            ),
            long_poll: {
                let passes = counter(
                    "weir_long_poll_passes_total",
                    "Looks of receives for messages: delivered, empty, or skipped (woken by news another receive of the group had already drained).",
                    &["result"],
                );
                LongPollCounters {
                    delivered: passes.with_label_values(&["delivered"]),
                    empty: passes.with_label_values(&["empty"]),
                    skipped: passes.with_label_values(&["skipped"]),
                }
            },
            grpc_connections: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "weir_grpc_connections",
                        "Open gRPC connections, by the serving thread that serves them.",
                    ),
                    &["thread"],
                )
                .expect("valid gauge"),
            ),
            recovery_replayed: registered(
                &registry,
                prometheus::IntGauge::new(
                    "weir_storage_recovery_replayed_records",
                    "Commit-log records replayed when the broker last started (those after the last checkpoint).",
                )
                .expect("valid gauge"),
            ),
            recovery_seconds: registered(
                &registry,
                prometheus::Gauge::new(
                    "weir_storage_recovery_seconds",
                    "Time the broker took to open and recover its store when it last started.",
                )
                .expect("valid gauge"),
            ),
            store,
            registry,
        }
    }

    /// Adds the gauges computed from the broker at scrape time.
    pub fn register_broker(&self, broker: &Arc<Broker>) {
        let collector = BrokerCollector::new(Arc::downgrade(broker));
        self.registry.register(Box::new(collector)).expect("broker collector registered once");
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encoding to a Vec cannot fail");
        out
    }
}

/// `weir_long_poll_passes_total` by result.
#[derive(Debug, Clone)]
pub struct LongPollCounters {
    /// A pass that found messages to deliver.
    pub delivered: prometheus::IntCounter,
    /// A pass that found nothing.
    pub empty: prometheus::IntCounter,
    /// A wake-up that did not look: the news had been drained by another receive of the group.
    pub skipped: prometheus::IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Gauges read from the broker when scraped.
struct BrokerCollector {
    broker: Weak<Broker>,
    lag: IntGaugeVec,
    inflight: IntGaugeVec,
    storage: IntGaugeVec,
    connections_producer: IntGaugeVec,
    connections_consumer: IntGaugeVec,
    partition_end: IntGaugeVec,
    timing: IntGaugeVec,
    half: IntGaugeVec,
    volume_capacity: IntGaugeVec,
    volume_available: IntGaugeVec,
    descs: Vec<Desc>,
}

impl BrokerCollector {
    fn new(broker: Weak<Broker>) -> Self {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge")
        };
        let lag = gauge(
            "rocketmq_consumer_lag_messages",
            "Messages not yet consumed by a group (stored but not acknowledged or filtered out).",
            &["topic", "consumer_group"],
        );
        let inflight = gauge(
            "rocketmq_consumer_inflight_messages",
            "Messages delivered to a group and not yet acknowledged.",
            &["topic", "consumer_group"],
        );
        let storage = gauge("rocketmq_storage_size", "Bytes of the commit log on disk.", &[]);
        let connections_producer = gauge("rocketmq_producer_connections", "Connected producer clients.", &[]);
        let connections_consumer = gauge("rocketmq_consumer_connections", "Connected consumer clients.", &[]);
        let partition_end = gauge(
            "weir_partition_end_offset",
            "Next queue offset of each partition (messages ever stored in it).",
            &["topic", "partition"],
        );
        let timing = gauge("rocketmq_timing_messages", "Delayed messages waiting for their delivery time.", &[]);
        let half = gauge("rocketmq_half_messages", "Transactional half messages waiting for commit or rollback.", &[]);
        let volume_capacity =
            gauge("weir_storage_volume_capacity_bytes", "Size of the volume holding the data directory.", &[]);
        let volume_available = gauge(
            "weir_storage_volume_available_bytes",
            "Bytes still free for the broker on the volume holding the data directory.",
            &[],
        );
        let mut this = Self {
            broker,
            lag,
            inflight,
            storage,
            connections_producer,
            connections_consumer,
            partition_end,
            timing,
            half,
            volume_capacity,
            volume_available,
            descs: Vec::new(),
        };
        this.descs = this.gauges().iter().flat_map(|g| g.desc().into_iter().cloned()).collect();
        this
    }

    /// Every gauge, in exposition order.
    fn gauges(&self) -> [&IntGaugeVec; 10] {
        [
            &self.lag,
            &self.inflight,
            &self.storage,
            &self.connections_producer,
            &self.connections_consumer,
            &self.partition_end,
            &self.timing,
            &self.half,
            &self.volume_capacity,
            &self.volume_available,
        ]
    }
}

impl Collector for BrokerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(broker) = self.broker.upgrade() else { return Vec::new() };
        for g in [&self.lag, &self.inflight, &self.partition_end] {
            g.reset();
        }
        for stat in broker.group_stats() {
            self.lag.with_label_values(&[&stat.topic, &stat.group]).add(stat.lag as i64);
            self.inflight.with_label_values(&[&stat.topic, &stat.group]).add(stat.inflight as i64);
        }
        for topic in broker.catalog().topics() {
            for p in &topic.partitions {
                self.partition_end
                    .with_label_values(&[&topic.config.name, &p.id().to_string()])
                    .set(p.end_offset() as i64);
            }
        }
        self.storage.with_label_values::<&str>(&[]).set(broker.store().log_bytes() as i64);
        let clients = broker.clients();
        self.connections_producer.with_label_values::<&str>(&[]).set(clients.count(ClientKind::Producer) as i64);
        let consumers = clients.count(ClientKind::SimpleConsumer) + clients.count(ClientKind::PushConsumer);
        self.connections_consumer.with_label_values::<&str>(&[]).set(consumers as i64);
        self.timing.with_label_values::<&str>(&[]).set(broker.delayed_waiting() as i64);
        self.half.with_label_values::<&str>(&[]).set(broker.open_transactions() as i64);
        if let Some((capacity, available)) = broker.store().volume_space() {
            self.volume_capacity.with_label_values::<&str>(&[]).set(capacity as i64);
            self.volume_available.with_label_values::<&str>(&[]).set(available as i64);
        }
        self.gauges().iter().flat_map(|g| g.collect()).collect()
    }
}
