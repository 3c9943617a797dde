//! `weir-bench`: drives Weir and NATS JetStream with the same workload and reports msgs/s, MB/s,
//! send-to-acknowledgement and end-to-end latency percentiles, and the server's CPU and peak RSS.
//! Each run starts the server itself on a scratch directory, so runs are independent.
//!
//! ```sh
//! weir-bench run --system weir --scenario publish --count 200000 --size 1024 --window 256
//! weir-bench run --system jetstream --scenario pubsub --json
//! weir-bench compare --repetitions 3   # the whole suite, both systems, one table
//! ```

mod compare;
mod disk;
mod jetstream;
mod system;
mod targets;
mod wakeup;
mod weir;
mod workload;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::task::JoinSet;

use system::{Environment, Server, System};

/// The load generator allocates per message for every system alike (payloads, requests); mimalloc
/// keeps that cost, which shares the machine with the server, low.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use workload::{Latency, MeasureFrom, Remaining, Scenario, Settings};

#[derive(Debug, Parser)]
#[command(name = "weir-bench", version, about = "Benchmark Weir and NATS JetStream with the same workload")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One run of one scenario against one system; prints a line (or JSON) of figures.
    Run {
        /// The system under test.
        #[arg(long, value_enum)]
        system: System,
        /// What the run does.
        #[arg(long, value_enum, default_value_t = Scenario::Publish)]
        scenario: Scenario,
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        env: Environment,
        /// The nats-server binary (JetStream runs).
        #[arg(long, default_value = "nats-server")]
        nats_server: PathBuf,
        /// Print one JSON object instead of a line of text.
        #[arg(long)]
        json: bool,
    },
    /// Every case of the suite on both systems, interleaved and repeated; prints a Markdown table
    /// of medians with the Weir/JetStream ratio and the disk's sequential write limit.
    Compare(compare::CompareArgs),
    /// How long this machine takes to wake a thread on another CPU (a few seconds): says whether
    /// figures measured now are comparable with a table's (it prints the same figure).
    Wakeup,
}

/// What a run measured.
struct Outcome {
    publish_seconds: f64,
    consume_seconds: Option<f64>,
    send: Latency,
    end_to_end: Latency,
}

async fn produce_all(system: System, server: &Server, settings: &Settings) -> Result<Latency> {
    let mut producers = JoinSet::new();
    for p in 0..settings.producers {
        let (address, settings) = (server.address.clone(), settings.clone());
        producers.spawn(async move {
            match system {
                System::Weir => weir::produce(weir::connect(&address).await?, p, &settings).await,
                System::Jetstream => {
                    let js = jetstream::connect(&address).await?;
                    jetstream::produce(js, p, &settings).await
                }
            }
        });
    }
    join_latencies(producers).await
}

/// Starts the consumers. They draw from one shared count of `expected` messages, or under fan-out
/// each must receive all of them.
fn spawn_consumers(system: System, server: &Server, settings: &Settings, expected: u64) -> JoinSet<Result<Latency>> {
    let shared = Remaining::new(expected);
    let mut consumers = JoinSet::new();
    for c in 0..settings.consumers {
        let remaining = if settings.fan_out { Remaining::new(expected) } else { shared.clone() };
        let (address, settings) = (server.address.clone(), settings.clone());
        consumers.spawn(async move {
            match system {
                System::Weir => weir::consume(weir::connect(&address).await?, c, &settings, remaining).await,
                System::Jetstream => {
                    jetstream::consume(jetstream::connect(&address).await?, c, &settings, remaining).await
                }
            }
        });
    }
    consumers
}

async fn join_latencies(mut tasks: JoinSet<Result<Latency>>) -> Result<Latency> {
    let mut all = Latency::default();
    while let Some(done) = tasks.join_next().await {
        all.merge(&done.context("a client task panicked")??);
    }
    Ok(all)
}

async fn run(system: System, scenario: Scenario, settings: &Settings, server: &Server) -> Result<Outcome> {
    if system == System::Jetstream {
        jetstream::create_stream(&jetstream::connect(&server.address).await?).await?;
    }
    let expected = settings.published();
    let started = Instant::now();
    let outcome = match scenario {
        Scenario::Publish => {
            let send = produce_all(system, server, settings).await?;
            Outcome {
                publish_seconds: started.elapsed().as_secs_f64(),
                consume_seconds: None,
                send,
                end_to_end: Latency::default(),
            }
        }
        Scenario::Pubsub => {
            let consumers = spawn_consumers(system, server, settings, expected);
            let send = produce_all(system, server, settings).await?;
            let publish_seconds = started.elapsed().as_secs_f64();
            let end_to_end = join_latencies(consumers).await?;
            Outcome { publish_seconds, consume_seconds: Some(started.elapsed().as_secs_f64()), send, end_to_end }
        }
        Scenario::Drain | Scenario::DrainCold => {
            let send = produce_all(system, server, settings).await?;
            let publish_seconds = started.elapsed().as_secs_f64();
            if scenario == Scenario::DrainCold {
                server.evict_page_cache()?;
            }
            let draining = Instant::now();
            let end_to_end = join_latencies(spawn_consumers(system, server, settings, expected)).await?;
            Outcome { publish_seconds, consume_seconds: Some(draining.elapsed().as_secs_f64()), send, end_to_end }
        }
    };
    Ok(outcome)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Run { settings, .. } => settings.client_threads,
        Command::Compare(_) | Command::Wakeup => 1,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?
        .block_on(run_cli(cli))
}

async fn run_cli(cli: Cli) -> Result<()> {
    let (system, scenario, settings, env, nats_server, json) = match cli.command {
        Command::Run { system, scenario, settings, env, nats_server, json } => {
            (system, scenario, settings, env, nats_server, json)
        }
        Command::Compare(args) => return compare::compare(args).await,
        Command::Wakeup => {
            match wakeup::round_trip_micros()? {
                Some(micros) => println!("{}", wakeup::describe(micros)),
                None => println!("one CPU: no wake-up across CPUs to measure"),
            }
            return Ok(());
        }
    };
    let server = Server::start(system, &settings, &env, &nats_server).await?;
    let (before, client_before) = (server.usage()?, system::own_usage()?);
    let started = Instant::now();
    let warmup = std::time::Duration::try_from_secs_f64(settings.warmup_seconds)
        .context("--warmup-seconds must be a number of seconds, 0 or more")?;
    let settings = Settings { measure_from: Some(MeasureFrom::after(warmup)), ..settings };
    let limit = std::time::Duration::from_secs(settings.max_seconds);
    let outcome = tokio::time::timeout(limit, run(system, scenario, &settings, &server))
        .await
        .with_context(|| format!("the run did not finish within {} s (--max-seconds)", settings.max_seconds))??;
    let wall = started.elapsed().as_secs_f64();
    let (after, client_after) = (server.usage()?, system::own_usage()?);

    let messages = settings.published() as f64;
    let mib = messages * settings.size as f64 / (1024.0 * 1024.0);
    let publish_rate = messages / outcome.publish_seconds;
    let consume_rate = outcome.consume_seconds.map(|s| settings.deliveries() as f64 / s);
    let cpu_cores = (after.cpu_seconds - before.cpu_seconds) / wall;
    let client_cores = (client_after.cpu_seconds - client_before.cpu_seconds) / wall;
    let report = serde_json::json!({
        "system": format!("{system:?}").to_lowercase(),
        "scenario": format!("{scenario:?}").to_lowercase(),
        "messages": messages, "size": settings.size, "window": settings.window, "batch": settings.batch,
        "producers": settings.producers, "consumers": settings.consumers, "partitions": settings.partitions,
        "durability": format!("{:?}", settings.durability).to_lowercase(), "rate": settings.rate,
        "fan_out": settings.fan_out, "warmup_seconds": settings.warmup_seconds,
        "publish_msgs_per_s": publish_rate, "publish_mib_per_s": mib / outcome.publish_seconds,
        "consume_msgs_per_s": consume_rate, "delivered": consume_rate.map(|_| settings.deliveries()),
        "send_ack": outcome.send.json(), "end_to_end": outcome.end_to_end.json(),
        "server_cpu_cores": cpu_cores, "client_cpu_cores": client_cores, "server_peak_rss_mib": after.peak_rss_bytes as f64 / (1024.0 * 1024.0),
    });
    if json {
        println!("{report}");
    } else {
        let ms = |l: &Latency, q| l.ms(q).map_or("-".to_owned(), |v| format!("{v:.2}"));
        println!(
            "{system:?} {scenario:?}: publish {publish_rate:.0} msgs/s ({:.1} MiB/s), consume {}, send-ack p50/p99/p99.9 {}/{}/{} ms, \
             end-to-end p50/p99/p99.9 {}/{}/{} ms, server {cpu_cores:.2} cores, peak RSS {:.0} MiB, \
             client {client_cores:.2} cores",
            mib / outcome.publish_seconds,
            consume_rate.map_or("-".to_owned(), |r| format!("{r:.0} msgs/s")),
            ms(&outcome.send, 0.5),
            ms(&outcome.send, 0.99),
            ms(&outcome.send, 0.999),
            ms(&outcome.end_to_end, 0.5),
            ms(&outcome.end_to_end, 0.99),
            ms(&outcome.end_to_end, 0.999),
            after.peak_rss_bytes as f64 / (1024.0 * 1024.0),
        );
    }
    Ok(())
}
