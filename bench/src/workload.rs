//! What a run does and what it measures, shared by the drivers of every system: the settings,
//! timestamped payloads (the first 8 bytes carry the send time, so consumers measure end-to-end
//! latency), the closed- or open-loop publisher and the latency histograms.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use tokio::sync::Notify;

/// When a send is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// After the write reached the page cache (synced on a timer).
    Async,
    /// After fdatasync (group commit).
    Sync,
}

/// What a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Producers only.
    Publish,
    /// Consumers tailing while producers publish.
    Pubsub,
    /// Publish a backlog, then consume all of it (from the page cache).
    Drain,
    /// Publish a backlog, evict it from the page cache, then consume all of it (from the disk).
    DrainCold,
}

/// The knobs of a run, the same for every system.
#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// Messages to publish (in total, over all producers).
    #[arg(long, default_value_t = 200_000)]
    pub count: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Unacknowledged sends (each of `batch` messages) per producer.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Messages per send request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Producer connections.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumer connections (pubsub and drain).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Messages fetched per receive.
    #[arg(long, default_value_t = 64)]
    pub receive_batch: usize,
    /// Receives each Weir consumer keeps in flight (a push consumer keeps one per queue; the
    /// JetStream pull consumer asks for its next batch before the current one is used up). Two
    /// fall behind a producer at 100,000 msgs/s on 2 cores; four keep up.
    #[arg(long, default_value_t = 4)]
    pub receives: usize,
    /// Publish at this fixed rate (msgs/s, open loop: latency counts from the intended send
    /// time); unset: as fast as acknowledgements allow.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Partitions of the topic (Weir) or subjects of the stream (JetStream).
    #[arg(long, default_value_t = 8)]
    pub partitions: u32,
    /// When sends are acknowledged.
    #[arg(long, value_enum, default_value_t = Durability::Async)]
    pub durability: Durability,
    /// Every consumer receives every message (Weir: a Broadcasting group; JetStream: a durable
    /// consumer each) instead of sharing them.
    #[arg(long)]
    pub fan_out: bool,
    /// Threads of the load generator (it shares the machine with the server under test).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Give up (and fail) if the run has not finished after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub max_seconds: u64,
    /// Leave messages sent in the first this many seconds out of the latency figures (connection
    /// set-up, first allocations and first-touched pages of both systems), as benchmark harnesses
    /// such as the OpenMessaging benchmark do; throughput still counts the whole run.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_seconds: f64,
    /// Where the warm-up ends (set when the run starts).
    #[arg(skip)]
    pub measure_from: Option<MeasureFrom>,
}

/// The end of the warm-up, as an instant (for send-to-acknowledgement times) and as Unix time
/// (for the send times stamped into payloads).
#[derive(Clone, Copy, Debug)]
pub struct MeasureFrom {
    at: Instant,
    unix_ns: u64,
}

impl MeasureFrom {
    /// `warmup` from now.
    pub fn after(warmup: Duration) -> Self {
        Self { at: Instant::now() + warmup, unix_ns: now_ns() + warmup.as_nanos() as u64 }
    }
}

impl Settings {
    /// Send requests each producer makes.
    pub fn units_per_producer(&self) -> u64 {
        self.count / (self.producers as u64 * self.batch as u64).max(1)
    }

    /// Messages actually published (count rounded down to whole requests).
    pub fn published(&self) -> u64 {
        self.units_per_producer() * self.producers as u64 * self.batch as u64
    }

    /// Messages each consumer must receive: all of them under fan-out, else its share of a
    /// count the consumers draw from together.
    pub fn deliveries(&self) -> u64 {
        self.published() * if self.fan_out { self.consumers as u64 } else { 1 }
    }
}

/// Messages the consumers still have to receive. Reaching zero wakes every consumer still waiting
/// for more, so a run ends when its last message arrives, not when the last long poll times out.
#[derive(Debug)]
pub struct Remaining {
    count: AtomicU64,
    finished: Notify,
}

impl Remaining {
    pub fn new(count: u64) -> Arc<Self> {
        Arc::new(Self { count: AtomicU64::new(count), finished: Notify::new() })
    }

    pub fn is_done(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }

    /// Counts `n` messages received.
    pub fn received(&self, n: u64) {
        let before = self.count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| Some(r.saturating_sub(n)));
        if before.is_ok_and(|r| r > 0 && r <= n) {
            self.finished.notify_waiters();
        }
    }

    /// Resolves once every message was received.
    pub async fn finished(&self) {
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A payload of `size` bytes (at least 8) whose first 8 bytes are the current time.
pub fn stamped(size: usize) -> Bytes {
    let mut body = BytesMut::zeroed(size.max(8));
    body[..8].copy_from_slice(&now_ns().to_le_bytes());
    body.freeze()
}

/// Time since a payload was stamped, and the stamp.
fn age(body: &[u8]) -> Option<(u64, Duration)> {
    let sent = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    Some((sent, Duration::from_nanos(now_ns().saturating_sub(sent))))
}

/// Latencies in microseconds, up to an hour, of the messages sent after the warm-up.
pub struct Latency {
    histogram: Histogram<u64>,
    from: Option<MeasureFrom>,
}

impl Default for Latency {
    fn default() -> Self {
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Self { histogram, from: None }
    }
}

impl Latency {
    /// An empty histogram that leaves out what `settings` calls the warm-up.
    pub fn of_run(settings: &Settings) -> Self {
        Self { from: settings.measure_from, ..Self::default() }
    }

    /// Records `n` messages that took `d`.
    fn record(&mut self, d: Duration, n: u64) {
        let _ = self.histogram.record_n(d.as_micros().clamp(1, 3_600_000_000) as u64, n);
    }

    /// Records `n` messages sent at `began` and answered now.
    pub fn record_since(&mut self, began: Instant, n: u64) {
        if self.from.is_none_or(|f| began >= f.at) {
            self.record(began.elapsed(), n);
        }
    }

    /// Records a message received now whose payload was stamped by [`stamped`].
    pub fn record_stamped(&mut self, body: &[u8]) {
        let Some((sent, age)) = age(body) else { return };
        if self.from.is_none_or(|f| sent >= f.unix_ns) {
            self.record(age, 1);
        }
    }

    /// Adds another histogram.
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.histogram.add(&other.histogram);
    }

    /// Milliseconds at quantile `q`, or None without samples.
    pub fn ms(&self, q: f64) -> Option<f64> {
        (!self.histogram.is_empty()).then(|| self.histogram.value_at_quantile(q) as f64 / 1000.0)
    }

    /// p50, p99, p99.9 and max, as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"p50_ms": self.ms(0.5), "p99_ms": self.ms(0.99), "p999_ms": self.ms(0.999), "max_ms": self.ms(1.0)})
    }
}

/// Runs `units` sends of `batch` messages each, at most `window` unacknowledged, as fast as
/// acknowledgements allow or at `rate` msgs/s; returns the send-to-acknowledgement latencies.
/// `send(k)` performs send number `k` and completes when it is acknowledged.
pub async fn publish<F, Fut>(settings: &Settings, send: F) -> Result<Latency>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let batch = settings.batch as u64;
    let per_unit =
        settings.rate.map(|rate| Duration::from_secs_f64(batch as f64 / (rate as f64 / settings.producers as f64)));
    let start = Instant::now();
    let mut latency = Latency::of_run(settings);
    let mut inflight = FuturesUnordered::new();
    for k in 0..settings.units_per_producer() {
        while inflight.len() >= settings.window {
            let (began, result): (Instant, Result<()>) = inflight.next().await.expect("in flight");
            result?;
            latency.record_since(began, batch);
        }
        // Open loop: latency counts from when the send should have started, so a stalled
        // system is not excused by the sends it kept from being made (coordinated omission).
        let began = match per_unit {
            Some(step) => {
                let due = start + step.mul_f64(k as f64);
                // Sends in flight only make progress while polled: keep answering them until the
                // next one is due (sleeping alone left them unsent until the window filled up,
                // which added window x interval to every latency).
                let wait = tokio::time::sleep_until(due.into());
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        biased;
                        () = &mut wait => break,
                        Some((began, result)) = inflight.next() => {
                            result?;
                            latency.record_since(began, batch);
                        }
                    }
                }
                due
            }
            None => Instant::now(),
        };
        let sent = send(k);
        inflight.push(async move { (began, sent.await) });
    }
    while let Some((began, result)) = inflight.next().await {
        result?;
        latency.record_since(began, batch);
    }
    Ok(latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only messages sent once the warm-up is over count, by either clock.
    #[test]
    fn the_warm_up_is_left_out() {
        let during = |warmup: Duration| Latency { from: Some(MeasureFrom::after(warmup)), ..Latency::default() };
        let mut warming = during(Duration::from_secs(60));
        warming.record_since(Instant::now(), 16);
        warming.record_stamped(&stamped(64));
        assert_eq!(warming.ms(0.5), None, "sent during the warm-up");

        let mut measuring = during(Duration::ZERO);
        let second = Duration::from_secs(1);
        let mut early = vec![0; 64];
        early[..8].copy_from_slice(&(now_ns() - second.as_nanos() as u64).to_le_bytes());
        let began = Instant::now() - second;
        measuring.record_since(began, 16);
        measuring.record_stamped(&early);
        assert_eq!(measuring.histogram.len(), 0, "sent before the warm-up ended");
        measuring.record_since(Instant::now(), 16);
        measuring.record_stamped(&stamped(64));
        assert_eq!(measuring.histogram.len(), 17);
    }
}
