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
use tokio::sync::{Notify, watch};

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

/// When a send was due, in Unix nanoseconds: what the payloads of that send are stamped with, so
/// end-to-end latency, like send-to-acknowledgement latency, counts from the intended send time
/// (a load generator that falls behind its rate does not hide the delay).
#[derive(Clone, Copy, Debug)]
pub struct Due(u64);

impl Due {
    /// Due at `began` (an instant in the past or now).
    pub fn at(began: Instant) -> Self {
        // Measured on the monotonic clock, converted to wall time now: clock adjustments during
        // a run do not skew it.
        Self(now_ns().saturating_sub(began.elapsed().as_nanos() as u64))
    }

    /// A payload of `size` bytes (at least 8) whose first 8 bytes are this time.
    pub fn payload(self, size: usize) -> Bytes {
        let mut body = BytesMut::zeroed(size.max(8));
        body[..8].copy_from_slice(&self.0.to_le_bytes());
        body.freeze()
    }
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

    /// Records a message received now whose payload was made by [`Due::payload`].
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

/// The clock of an open-loop publisher: a thread of its own that sleeps until each send is due
/// and says so. The runtime's timer ticks in milliseconds, so waiting on it made sends up to 1 ms
/// late (0.5 ms on average at 3,125 sends/s): a delay of the load generator that every latency
/// then counted. A thread's sleep ends within tens of microseconds.
struct Pacer {
    start: Instant,
    step: Duration,
    /// How many sends are due so far.
    due: watch::Receiver<u64>,
}

impl Pacer {
    /// Starts the clock for `units` sends, one every `step`, the first now. The thread stops after
    /// the last one or once the pacer is dropped.
    fn start(step: Duration, units: u64) -> Self {
        let start = Instant::now();
        let (tell, due) = watch::channel(0);
        std::thread::Builder::new()
            .name("weir-bench-pacer".into())
            .spawn(move || {
                for k in 0..units {
                    std::thread::sleep((start + step.mul_f64(k as f64)).saturating_duration_since(Instant::now()));
                    if tell.send(k + 1).is_err() {
                        return;
                    }
                }
            })
            .expect("start the pacer thread");
        Self { start, step, due }
    }

    /// Resolves when send `k` is due, with the instant it was due.
    async fn due(&mut self, k: u64) -> Instant {
        // Only fails once the thread is gone, which is after the last send was due.
        let _ = self.due.wait_for(|&due| due > k).await;
        self.start + self.step.mul_f64(k as f64)
    }
}

/// Runs `units` sends of `batch` messages each, at most `window` unacknowledged, as fast as
/// acknowledgements allow or at `rate` msgs/s; returns the send-to-acknowledgement latencies.
/// `send(k, due)` performs send number `k`, its payloads stamped with `due`, and completes when it
/// is acknowledged.
pub async fn publish<F, Fut>(settings: &Settings, send: F) -> Result<Latency>
where
    F: Fn(u64, Due) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let batch = settings.batch as u64;
    let units = settings.units_per_producer();
    let mut pacer = settings.rate.map(|rate| {
        Pacer::start(Duration::from_secs_f64(batch as f64 / (rate as f64 / settings.producers as f64)), units)
    });
    let mut latency = Latency::of_run(settings);
    let mut inflight = FuturesUnordered::new();
    for k in 0..units {
        while inflight.len() >= settings.window {
            let (began, result): (Instant, Result<()>) = inflight.next().await.expect("in flight");
            result?;
            latency.record_since(began, batch);
        }
        // Open loop: latency counts from when the send should have started, so a stalled
        // system is not excused by the sends it kept from being made (coordinated omission).
        let began = match &mut pacer {
            Some(pacer) => {
                // Sends in flight only make progress while polled: keep answering them until the
                // next one is due (sleeping alone left them unsent until the window filled up,
                // which added window x interval to every latency).
                loop {
                    tokio::select! {
                        biased;
                        due = pacer.due(k) => break due,
                        Some((began, result)) = inflight.next() => {
                            result?;
                            latency.record_since(began, batch);
                        }
                    }
                }
            }
            None => Instant::now(),
        };
        let sent = send(k, Due::at(began));
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
        warming.record_stamped(&Due::at(Instant::now()).payload(64));
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
        measuring.record_stamped(&Due::at(Instant::now()).payload(64));
        assert_eq!(measuring.histogram.len(), 17);
    }

    /// A send made late is stamped with when it was due, so its end-to-end latency counts the delay.
    #[test]
    fn a_late_send_is_stamped_with_its_due_time() {
        let late = Duration::from_millis(500);
        let (_, age) = age(&Due::at(Instant::now() - late).payload(64)).expect("stamped");
        assert!(age >= late, "age {age:?}");
        assert!(age < late + Duration::from_secs(5), "age {age:?}");
    }

    /// At a fixed rate every send waits until it is due, and its payloads carry that due time (one
    /// interval after the previous one's), not the time the load generator got round to it: a
    /// stalled load generator does not hide its stall from the end-to-end latency.
    #[tokio::test]
    async fn open_loop_sends_are_made_when_due_and_stamped_with_it() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        let cli = <Cli as clap::Parser>::parse_from(["t", "--rate", "500", "--batch", "1", "--count", "10"]);
        let start = Instant::now();
        let sends = std::sync::Mutex::new(Vec::new());
        publish(&cli.settings, |k, due| {
            let body = due.payload(8);
            sends.lock().unwrap().push((k, start.elapsed(), u64::from_le_bytes(body[..8].try_into().unwrap())));
            if k == 0 {
                // The load generator stalls: the next two sends are made late.
                std::thread::sleep(Duration::from_millis(5));
            }
            async { Ok(()) }
        })
        .await
        .expect("published");
        let sends = sends.into_inner().unwrap();
        assert_eq!(sends.len(), 10);
        let interval = Duration::from_millis(2);
        let (_, _, first_stamp) = sends[0];
        for &(k, made, stamp) in &sends {
            assert!(made >= interval * k as u32, "send {k} made at {made:?}, before it was due");
            let after_first = Duration::from_nanos(stamp - first_stamp);
            let expected = interval * k as u32;
            let skew = after_first.abs_diff(expected);
            assert!(
                skew < Duration::from_micros(200),
                "send {k} stamped {after_first:?} after the first, not {expected:?}"
            );
        }
    }
}
