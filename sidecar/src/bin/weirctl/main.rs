//! `weirctl`: produce, consume and inspect against a running Weir broker.
//!
//! `produce` and `consume` speak the same RocketMQ 5 gRPC protocol as the official SDKs; `topics`
//! and `stats` use Weir's admin API on the same port.

mod client;
mod demo;
mod offsets;

use std::io::{BufRead, IsTerminal};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use weir_proto::rocketmq::v2 as pb;
use weir_proto::signature::Credentials;
use weir_proto::weir::admin::v1 as admin;

use client::{Ids, messaging};

#[derive(Debug, Parser)]
#[command(name = "weirctl", version, about = "Produce, consume and inspect against a Weir broker")]
struct Cli {
    /// Broker gRPC address (host:port).
    #[arg(short, long, default_value = "127.0.0.1:8081", env = "WEIR_SERVER", global = true)]
    server: String,
    /// Connect over TLS, trusting this PEM CA for the broker's certificate.
    #[arg(long, env = "WEIR_TLS_CA", global = true)]
    tls_ca: Option<std::path::PathBuf>,
    /// Access key to sign requests with (a broker with --acl-file).
    #[arg(long, env = "WEIR_ACCESS_KEY", global = true, requires = "secret_key")]
    access_key: Option<String>,
    /// Secret of --access-key.
    #[arg(long, env = "WEIR_SECRET_KEY", global = true, requires = "access_key", hide_env_values = true)]
    secret_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send messages: the --body (repeated --count times) or every line of standard input.
    Produce {
        /// Topic to send to.
        #[arg(short, long)]
        topic: String,
        /// Message body; without it, each line read from stdin is one message.
        #[arg(short, long)]
        body: Option<String>,
        /// How many copies of --body to send.
        #[arg(short = 'n', long, default_value_t = 1)]
        count: usize,
        /// Tag (used by consumers' tag filters).
        #[arg(long)]
        tag: Option<String>,
        /// Business key (repeatable).
        #[arg(short, long = "key")]
        keys: Vec<String>,
        /// User property as key=value (repeatable).
        #[arg(short, long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
    },
    /// Receive messages as a consumer group and acknowledge them.
    Consume {
        /// Topic to consume.
        #[arg(short, long)]
        topic: String,
        /// Consumer group.
        #[arg(short, long, default_value = "weirctl")]
        group: String,
        /// Tag filter, e.g. "TagA || TagB".
        #[arg(short, long, default_value = "*")]
        filter: String,
        /// Stop after this many messages.
        #[arg(short = 'n', long)]
        count: Option<usize>,
        /// Stop after this long without a new message (e.g. 5s).
        #[arg(short, long, default_value = "5s")]
        wait: humantime::Duration,
        /// Leave messages unacknowledged (they are delivered again after 30 s).
        #[arg(long)]
        no_ack: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// List topics and their partitions.
    Topics {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Inspect and resend a consumer group's dead-letter queue (`%DLQ%<group>`).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Walk through Weir's five scenarios against a running broker and show what happens.
    /// Start the broker with the demo manifests: `weir-sidecar standalone -f crds/examples/demo.yaml`.
    Demo,
    /// Move a consumer group's position on a topic (every partition), forwards or back.
    ResetOffset {
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// earliest, latest, offset:N, an RFC 3339 time (2026-11-24T10:00:00Z) or epoch milliseconds.
        #[arg(long, value_parser = offsets::parse_target)]
        to: admin::reset_offset_request::Target,
    },
    /// Show, per partition, what the slowest consumer group still has to consume.
    Backlog {
        /// Topic.
        #[arg(long)]
        topic: String,
    },
    /// Show storage, partition offsets and consumer lag.
    Stats {
        /// Only this topic.
        #[arg(short, long, default_value = "")]
        topic: String,
        /// Only this consumer group.
        #[arg(short, long, default_value = "")]
        group: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List the messages the group gave up on.
    List {
        /// Consumer group.
        #[arg(short, long)]
        group: String,
        /// Show at most this many.
        #[arg(short = 'n', long, default_value_t = 100)]
        limit: u32,
        /// Start at this dead-letter offset.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Deliver dead-lettered messages to the group again (other groups are not affected).
    Resend {
        /// Consumer group.
        #[arg(short, long)]
        group: String,
        /// Dead-letter offsets to resend (as shown by `dlq list`).
        #[arg(long = "offset", required_unless_present = "all")]
        offsets: Vec<u64>,
        /// Resend every dead-lettered message of the group.
        #[arg(long, conflicts_with = "offsets")]
        all: bool,
    },
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not key=value"))
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    server: &str,
    topic: String,
    body: Option<String>,
    count: usize,
    tag: Option<String>,
    keys: Vec<String>,
    properties: Vec<(String, String)>,
) -> Result<()> {
    let bodies: Vec<String> = match body {
        Some(b) => vec![b; count],
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading message bodies from standard input, one per line (Ctrl-D to finish)");
            }
            std::io::stdin().lock().lines().collect::<Result<_, _>>().context("reading standard input")?
        }
    };
    let mut client = messaging(server).await?;
    let mut ids = Ids::new();
    let mut sent = 0;
    for chunk in bodies.chunks(64) {
        let messages = chunk
            .iter()
            .map(|b| {
                let mut m = client::message(&topic, ids.next(), b.as_bytes());
                m.user_properties = properties.iter().cloned().collect();
                let sys = m.system_properties.as_mut().expect("set by client::message");
                sys.tag = tag.clone();
                sys.keys = keys.clone();
                m
            })
            .collect();
        for entry in client::send(&mut client, messages).await? {
            println!("sent {} offset {}", entry.message_id, entry.offset);
            sent += 1;
        }
    }
    eprintln!("{sent} message(s) sent to {topic}");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn consume(
    server: &str,
    topic: String,
    group: String,
    filter: String,
    count: Option<usize>,
    wait: Duration,
    no_ack: bool,
    output: Output,
) -> Result<()> {
    let mut client = messaging(server).await?;
    let mut received = 0;
    let mut last = Instant::now();
    while count.is_none_or(|c| received < c) && last.elapsed() < wait {
        let poll = wait.saturating_sub(last.elapsed()).min(Duration::from_secs(20));
        let want = count.map_or(32, |c| (c - received).min(32)) as i32;
        let messages = client::receive(&mut client, &group, &topic, &filter, want, poll).await?;
        if !messages.is_empty() {
            last = Instant::now();
        }
        for m in &messages {
            print_message(m, output);
            received += 1;
        }
        if !no_ack {
            client::ack(&mut client, &group, &topic, &messages).await?;
        }
    }
    eprintln!("{received} message(s) received from {topic} as group {group}");
    Ok(())
}

fn print_message(m: &pb::Message, output: Output) {
    let sys = m.system_properties.clone().unwrap_or_default();
    let body = String::from_utf8_lossy(&m.body);
    match output {
        Output::Json => {
            let json = serde_json::json!({
                "topic": m.topic.as_ref().map(|t| t.name.clone()).unwrap_or_default(),
                "messageId": sys.message_id,
                "partition": sys.queue_id,
                "offset": sys.queue_offset,
                "tag": sys.tag,
                "keys": sys.keys,
                "properties": m.user_properties,
                "deliveryAttempt": sys.delivery_attempt,
                "body": body,
            });
            println!("{json}");
        }
        Output::Text => {
            let mut props: Vec<String> = m.user_properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
            props.sort();
            println!(
                "partition={} offset={} id={} tag={} keys={} props={{{}}} attempt={} body={body}",
                sys.queue_id,
                sys.queue_offset.unwrap_or(-1),
                sys.message_id,
                sys.tag.unwrap_or_default(),
                sys.keys.join(","),
                props.join(","),
                sys.delivery_attempt.unwrap_or(0),
            );
        }
    }
}

async fn admin_client(server: &str) -> Result<client::Admin> {
    client::admin(server).await
}

fn topic_json(t: &admin::Topic) -> serde_json::Value {
    serde_json::json!({
        "name": t.name,
        "messageTypes": t.message_types,
        "durability": t.durability,
        "partitions": t.partitions.iter().map(|p| serde_json::json!({
            "id": p.id, "startOffset": p.start_offset, "endOffset": p.end_offset,
        })).collect::<Vec<_>>(),
    })
}

fn print_topics(topics: &[admin::Topic]) {
    println!("{:<32} {:>10} {:<12} {:<8} {:>12}", "TOPIC", "PARTITIONS", "TYPES", "DURABLE", "MESSAGES");
    for t in topics {
        let stored: u64 = t.partitions.iter().map(|p| p.end_offset - p.start_offset).sum();
        println!(
            "{:<32} {:>10} {:<12} {:<8} {:>12}",
            t.name,
            t.partitions.len(),
            t.message_types.join(","),
            t.durability,
            stored
        );
    }
}

async fn topics(server: &str, output: Output) -> Result<()> {
    let response =
        admin_client(server).await?.list_topics(admin::ListTopicsRequest {}).await.context("ListTopics")?.into_inner();
    match output {
        Output::Json => println!("{}", serde_json::Value::Array(response.topics.iter().map(topic_json).collect())),
        Output::Text => print_topics(&response.topics),
    }
    Ok(())
}

async fn stats(server: &str, topic: String, group: String, output: Output) -> Result<()> {
    let response = admin_client(server)
        .await?
        .get_stats(admin::GetStatsRequest { topic, group })
        .await
        .map_err(|s| anyhow::anyhow!("GetStats failed: {}", s.message()))?
        .into_inner();
    let storage = response.storage.unwrap_or_default();
    match output {
        Output::Json => {
            let json = serde_json::json!({
                "storage": {"logBytes": storage.log_bytes, "logStart": storage.log_start, "logEnd": storage.log_end},
                "topics": response.topics.iter().map(topic_json).collect::<Vec<_>>(),
                "groups": response.groups.iter().map(|g| serde_json::json!({
                    "group": g.group, "topic": g.topic, "lag": g.lag, "inflight": g.inflight, "members": g.members,
                })).collect::<Vec<_>>(),
            });
            println!("{json}");
        }
        Output::Text => {
            println!(
                "storage: {} bytes in the commit log (positions {}..{})\n",
                storage.log_bytes, storage.log_start, storage.log_end
            );
            print_topics(&response.topics);
            println!("\n{:<32} {:<32} {:>12} {:>10} {:>8}", "GROUP", "TOPIC", "LAG", "INFLIGHT", "MEMBERS");
            for g in &response.groups {
                println!("{:<32} {:<32} {:>12} {:>10} {:>8}", g.group, g.topic, g.lag, g.inflight, g.members);
            }
        }
    }
    Ok(())
}

async fn dlq(server: &str, command: DlqCommand) -> Result<()> {
    let mut client = admin_client(server).await?;
    match command {
        DlqCommand::List { group, limit, from, output } => {
            let response = client
                .list_dead_letters(admin::ListDeadLettersRequest { group: group.clone(), from_offset: from, limit })
                .await
                .map_err(|s| anyhow::anyhow!("ListDeadLetters failed: {}", s.message()))?
                .into_inner();
            for m in &response.messages {
                let body = String::from_utf8_lossy(&m.body);
                match output {
                    Output::Json => println!(
                        "{}",
                        serde_json::json!({
                            "offset": m.offset, "messageId": m.message_id, "topic": m.topic, "partition": m.partition,
                            "originalOffset": m.original_offset, "attempts": m.attempts, "movedAtMs": m.moved_at_ms,
                            "tag": m.tag, "keys": m.keys, "properties": m.properties, "body": body,
                        })
                    ),
                    Output::Text => println!(
                        "offset={} id={} from={}/{}@{} attempts={} tag={} body={body}",
                        m.offset, m.message_id, m.topic, m.partition, m.original_offset, m.attempts, m.tag
                    ),
                }
            }
            eprintln!("{} dead-lettered message(s) of group {group}", response.messages.len());
        }
        DlqCommand::Resend { group, offsets, all } => {
            let response = client
                .resend_dead_letters(admin::ResendDeadLettersRequest { group: group.clone(), offsets, all })
                .await
                .map_err(|s| anyhow::anyhow!("ResendDeadLetters failed: {}", s.message()))?
                .into_inner();
            for f in &response.failures {
                eprintln!("not resent: {f}");
            }
            println!("{} message(s) handed back to group {group}", response.resent);
            if !response.failures.is_empty() {
                bail!("{} message(s) could not be resent", response.failures.len());
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    client::configure(client::ConnectOptions {
        tls_ca: cli.tls_ca,
        credentials: cli.access_key.zip(cli.secret_key).map(|(a, s)| Credentials::new(a, s)),
    });
    let server = cli.server;
    let result = match cli.command {
        Command::Produce { topic, body, count, tag, keys, properties } => {
            produce(&server, topic, body, count, tag, keys, properties).await
        }
        Command::Consume { topic, group, filter, count, wait, no_ack, output } => {
            consume(&server, topic, group, filter, count, wait.into(), no_ack, output).await
        }
        Command::Topics { output } => topics(&server, output).await,
        Command::Dlq { command } => dlq(&server, command).await,
        Command::Demo => demo::run(&server).await,
        Command::Stats { topic, group, output } => stats(&server, topic, group, output).await,
        Command::ResetOffset { group, topic, to } => offsets::reset(&server, group, topic, to).await,
        Command::Backlog { topic } => offsets::backlog(&server, topic).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
