//! The NATS JetStream driver, matched to the Weir one: a file-storage stream (one subject per
//! "partition", published round-robin), publishes with a window of unacknowledged acks, a durable
//! pull consumer with explicit acks.

use std::sync::Arc;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use crate::workload::{self, Latency, Remaining, Settings};

const STREAM: &str = "BENCH";
const CONSUMER: &str = "bench";

/// A JetStream context on a fresh connection.
pub async fn connect(address: &str) -> Result<jetstream::Context> {
    let client = async_nats::connect(address).await.with_context(|| format!("connecting to NATS at {address}"))?;
    Ok(jetstream::new(client))
}

/// Creates the stream (idempotent).
pub async fn create_stream(js: &jetstream::Context) -> Result<stream::Stream> {
    let config = stream::Config {
        name: STREAM.into(),
        subjects: vec!["bench.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.context("creating the JetStream stream")
}

/// One producer: `settings.units_per_producer()` sends of `settings.batch` messages (each
/// publish, then every ack of the batch awaited).
pub async fn produce(js: jetstream::Context, producer: usize, settings: &Settings) -> Result<Latency> {
    let partitions = u64::from(settings.partitions.max(1));
    workload::publish(settings, |k, due| {
        let js = js.clone();
        let subject = format!("bench.{}", (k + producer as u64) % partitions);
        async move {
            let mut acks = Vec::with_capacity(settings.batch);
            for _ in 0..settings.batch {
                acks.push(js.publish(subject.clone(), due.payload(settings.size)).await?);
            }
            for ack in acks {
                ack.await?;
            }
            Ok(())
        }
    })
    .await
}

/// One consumer on a durable pull consumer (shared by all, or its own under fan-out): acks every
/// message until `remaining` reaches zero.
pub async fn consume(
    js: jetstream::Context,
    consumer: usize,
    settings: &Settings,
    remaining: Arc<Remaining>,
) -> Result<Latency> {
    let stream = create_stream(&js).await?;
    let name = if settings.fan_out { format!("{CONSUMER}-{consumer}") } else { CONSUMER.to_owned() };
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        ack_policy: consumer::AckPolicy::Explicit,
        max_ack_pending: 1_000_000,
        ..Default::default()
    };
    let consumer = stream.get_or_create_consumer(&name, config).await.context("creating the pull consumer")?;
    let mut messages =
        consumer.stream().max_messages_per_batch(settings.receive_batch).messages().await.context("pulling")?;
    let mut latency = Latency::of_run(settings);
    while !remaining.is_done() {
        let next = tokio::select! {
            next = messages.next() => next,
            () = remaining.finished() => break,
        };
        let Some(message) = next else { break };
        let message = message.map_err(|e| anyhow::anyhow!("pull: {e}"))?;
        latency.record_stamped(&message.payload);
        message.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        remaining.received(1);
    }
    Ok(latency)
}
