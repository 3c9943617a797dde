//! `weir-sidecar`: the Weir broker.
//!
//! `weir-sidecar standalone` runs one broker that owns every partition of the topics it is given (or
//! creates on first use). It is the embedded default for development and single-node use.
//! `weir-sidecar kubernetes` is the broker pod the operator runs for a Topic: one of several, each
//! owning the partitions the Topic's status assigns to it.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use weir_sidecar::acl::Acl;
use weir_sidecar::broker::BrokerConfig;
use weir_sidecar::catalog::CatalogOptions;
use weir_sidecar::cluster::{ClusterView, PodIdentity};
use weir_sidecar::grpc::serving::{SchedulingPolicy, Serving};
use weir_sidecar::server::{self, ServerOptions};
use weir_sidecar::standalone;
use weir_sidecar::storage::{Durability, Retention};
use weir_sidecar::tls::{ClientTls, LoadedTls, TlsFiles};

/// mimalloc instead of glibc malloc: the request paths allocate and free many small buffers from
/// several threads, where glibc spent about a tenth of the broker's CPU (profiled under weir-bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "weir-sidecar", version, about = "Weir broker: RocketMQ 5 semantics, Kubernetes-native")]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "WEIR_LOG_FORMAT", global = true)]
    log_format: LogFormat,
    /// Threads serving gRPC connections; each connection stays on one (the commit-log writer and
    /// the background work have their own). Default: one per CPU the process may use (its cgroup
    /// CPU limit included).
    #[arg(long, env = "WEIR_WORKER_THREADS", global = true, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// How the kernel schedules the serving threads: `batch` (SCHED_BATCH, a woken serving
    /// thread does not preempt the running thread) or `inherited` (the policy the broker was
    /// started with).
    #[arg(long, value_enum, default_value_t = SchedulingPolicy::Batch, env = "WEIR_SERVING_SCHEDULING", global = true)]
    serving_scheduling: SchedulingPolicy,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// Acknowledge after fdatasync (group commit).
    Sync,
    /// Acknowledge after the page cache; flush on an interval.
    Async,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one broker that owns every partition (no Kubernetes needed).
    Standalone(StandaloneArgs),
    /// Run as a broker pod of a Topic's StatefulSet: settings, partitions and consumer groups
    /// come from the Topic and ConsumerGroup objects of the namespace (watched, read-only).
    Kubernetes(KubernetesArgs),
}

/// Settings every broker has, whatever its mode.
#[derive(Debug, clap::Args)]
struct BrokerArgs {
    /// Where the commit log, indexes and checkpoints live.
    #[arg(long, default_value = "weir-data", env = "WEIR_DATA_DIR")]
    data_dir: PathBuf,
    /// gRPC address (RocketMQ 5 clients connect here).
    #[arg(long, default_value = "127.0.0.1:8081", env = "WEIR_LISTEN")]
    listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint (also `/healthz` and `/readyz`).
    #[arg(long, default_value = "127.0.0.1:9090", env = "WEIR_METRICS_LISTEN")]
    metrics_listen: SocketAddr,
    /// Size of a commit log segment (e.g. 256Mi).
    #[arg(long, default_value = "256Mi", env = "WEIR_SEGMENT_SIZE")]
    segment_size: String,
    /// How far ahead of the data the commit log is kept zero-filled while Sync sends come, so
    /// that an fdatasync writes only data, not file system metadata (Sync sends are faster); those
    /// bytes then reach the disk twice. 0 turns it off, for volumes whose write bandwidth is the
    /// limit. Under Async load alone nothing is filled.
    #[arg(long, default_value = "8Mi", env = "WEIR_ZERO_FILL_AHEAD")]
    zero_fill_ahead: String,
    /// How much of the synced commit log, behind its newest data, the broker keeps in the page
    /// cache. Older log is let go of: consumers further behind read it from the disk, and the
    /// cache charged to the pod stays bounded (refilling the same page frames is also cheaper
    /// than taking fresh ones). 0 keeps all of it, until the kernel needs the memory.
    #[arg(long, default_value = "1Gi", env = "WEIR_LOG_CACHE_WINDOW")]
    log_cache_window: String,
    /// Free space kept on the data volume for acknowledgements, indexes and checkpoints (at least
    /// one segment); sends that would use it are refused ("disk full") until space is freed.
    #[arg(long, default_value = "64Mi", env = "WEIR_MIN_FREE_SPACE")]
    min_free_space: String,
    /// How long Async-durability writes may stay unsynced (e.g. 200ms).
    #[arg(long, default_value = "200ms", env = "WEIR_FLUSH_INTERVAL")]
    flush_interval: String,
    /// A client silent this long is gone: its in-flight messages are released and, in broadcast
    /// groups, its position is forgotten.
    #[arg(long, default_value = "120s", env = "WEIR_CLIENT_TTL")]
    client_ttl: String,
    /// How often consumer progress and indexes are checkpointed (bounds the replay on restart).
    #[arg(long, default_value = "5s", env = "WEIR_CHECKPOINT_INTERVAL")]
    checkpoint_interval: String,
    /// PEM certificate chain: serve gRPC and /metrics over TLS (with --tls-key).
    #[arg(long, env = "WEIR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WEIR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle: clients must present a certificate it signed (mutual TLS).
    #[arg(long, env = "WEIR_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// PEM CA bundle the other brokers' certificates chain to: requests forwarded to them (sends for
    /// partitions they own, EndTransaction for their transactions) use TLS. Needed with TLS
    /// whenever there are peers (--peer, or Kubernetes mode).
    #[arg(long, env = "WEIR_PEER_CA", requires = "tls_cert")]
    peer_ca: Option<PathBuf>,
    /// Serve without TLS on an address other than loopback. Without TLS and without this flag,
    /// the broker only listens on loopback addresses.
    #[arg(long, env = "WEIR_PLAINTEXT", conflicts_with = "tls_cert")]
    plaintext: bool,
    /// RocketMQ-style access control: a YAML file of users (username, password, superUser) and
    /// their policies; requests must then be signed. Needs TLS unless serving on loopback only.
    #[arg(long, env = "WEIR_ACL_FILE")]
    acl_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct StandaloneArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Topic / ConsumerGroup manifests (YAML files or directories), as for `kubectl apply -f`.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Host name or IP clients are told to connect to (defaults to the listen IP).
    #[arg(long, env = "WEIR_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// Refuse unknown topics and groups instead of creating them on first use.
    #[arg(long, env = "WEIR_NO_AUTO_CREATE")]
    no_auto_create: bool,
    /// Partitions of auto-created topics.
    #[arg(long, default_value_t = 8, env = "WEIR_DEFAULT_PARTITIONS")]
    default_partitions: u32,
    /// Durability of auto-created topics.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Sync, env = "WEIR_DEFAULT_DURABILITY")]
    default_durability: DurabilityArg,
    /// Delete log segments older than this (default: the longest retention of the declared topics, else 72h).
    #[arg(long, env = "WEIR_RETENTION_TIME")]
    retention_time: Option<String>,
    /// Delete the oldest log segments while the log is larger than this (e.g. 50Gi).
    #[arg(long, env = "WEIR_RETENTION_BYTES")]
    retention_bytes: Option<String>,
    /// This broker's id (it names the broker in receipt handles and transaction ids).
    #[arg(long, default_value_t = 0, env = "WEIR_BROKER_ID")]
    broker_id: u32,
    /// Another broker, as ID=HOST:PORT (repeatable): requests for what it owns are forwarded to it.
    #[arg(long = "peer", value_name = "ID=HOST:PORT", value_parser = parse_peer)]
    peers: Vec<(u32, String)>,
}

#[derive(Debug, clap::Args)]
struct KubernetesArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The Topic object (metadata.name) whose partitions this pod serves.
    #[arg(long, env = "WEIR_TOPIC")]
    topic: String,
    /// This pod's name (a StatefulSet pod, `<topic>-broker-<ordinal>`); from the downward API.
    #[arg(long, env = "POD_NAME")]
    pod_name: String,
    /// This pod's namespace; from the downward API.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The cluster's DNS domain (pods are reached at <pod>.<statefulset>.<namespace>.svc.<domain>).
    #[arg(long, default_value = weir_crds::naming::DEFAULT_CLUSTER_DOMAIN, env = "WEIR_CLUSTER_DOMAIN")]
    cluster_domain: String,
}

fn parse_peer(s: &str) -> Result<(u32, String), String> {
    let (id, address) = s.split_once('=').ok_or_else(|| format!("{s:?} is not ID=HOST:PORT"))?;
    let id = id.parse().map_err(|_| format!("{id:?} is not a broker id (a number)"))?;
    if !address.contains(':') {
        return Err(format!("{address:?} is not HOST:PORT"));
    }
    Ok((id, address.to_owned()))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn duration(flag: &str, value: &str) -> Result<Duration> {
    weir_crds::parse_duration(flag, value).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

fn size(flag: &str, value: &str) -> Result<u64> {
    weir_crds::parse_size(flag, value).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

impl BrokerArgs {
    /// TLS from the files, or None when plaintext is allowed: on loopback, or explicitly chosen.
    fn tls(&self) -> Result<Option<LoadedTls>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            let exposed = [self.listen, self.metrics_listen].into_iter().find(|a| !a.ip().is_loopback());
            if let (Some(addr), false) = (exposed, self.plaintext) {
                bail!(
                    "refusing to serve unencrypted traffic on {addr}: pass --tls-cert and --tls-key \
                     (and --tls-client-ca for mutual TLS), or --plaintext to choose plaintext explicitly"
                );
            }
            return Ok(None);
        };
        let files = TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: self.tls_client_ca.clone() };
        Ok(Some(files.load()?))
    }

    /// Access control from `--acl-file`. Signatures can be replayed, so not over plaintext on an
    /// open address.
    fn acl(&self, tls: bool) -> Result<Option<Arc<Acl>>> {
        let Some(path) = &self.acl_file else { return Ok(None) };
        if !tls && !(self.listen.ip().is_loopback()) {
            bail!(
                "--acl-file needs TLS on {}: request signatures can be replayed by anyone who sees them; \
                 add --tls-cert and --tls-key",
                self.listen
            );
        }
        Ok(Some(Arc::new(Acl::load(path)?)))
    }

    /// TLS towards peers: with TLS and peers, `--peer-ca` is needed (a broker that forwarded in
    /// plaintext to TLS peers would fail at the first forwarded request, not at start).
    fn peer_tls(&self, tls: Option<&LoadedTls>, has_peers: bool) -> Result<Option<ClientTls>> {
        match (tls, &self.peer_ca) {
            (Some(tls), Some(ca)) => Ok(Some(tls.peers(ca)?)),
            (Some(_), None) if has_peers => bail!(
                "with TLS, requests forwarded to other brokers use TLS too: pass --peer-ca with the CA \
                 their certificates chain to"
            ),
            _ => Ok(None),
        }
    }

    /// Server options with these settings; the mode fills in the rest.
    fn options(
        &self,
        retention: Retention,
        broker: BrokerConfig,
        has_peers: bool,
        serving: Serving,
    ) -> Result<ServerOptions> {
        let tls = self.tls()?;
        Ok(ServerOptions {
            acl: self.acl(tls.is_some())?,
            peer_tls: self.peer_tls(tls.as_ref(), has_peers)?,
            tls,
            data_dir: self.data_dir.clone(),
            grpc_listen: self.listen,
            metrics_listen: self.metrics_listen,
            advertise_host: None,
            segment_bytes: size("segment-size", &self.segment_size)?,
            zero_fill_ahead: size("zero-fill-ahead", &self.zero_fill_ahead)?,
            log_cache_window: size("log-cache-window", &self.log_cache_window)?,
            min_free_bytes: size("min-free-space", &self.min_free_space)?,
            async_flush_interval: duration("flush-interval", &self.flush_interval)?,
            retention,
            checkpoint_interval: duration("checkpoint-interval", &self.checkpoint_interval)?,
            catalog: CatalogOptions::default(),
            broker: BrokerConfig { client_ttl: duration("client-ttl", &self.client_ttl)?, ..broker },
            declared: Default::default(),
            peers: Default::default(),
            serving,
            cluster: None,
        })
    }
}

async fn standalone(args: StandaloneArgs, serving: Serving) -> Result<()> {
    let declared = standalone::load(&args.files)?;
    let retention_time = match &args.retention_time {
        Some(v) => duration("retention-time", v)?,
        None => declared.retention_time.unwrap_or(Duration::from_secs(72 * 3600)),
    };
    let retention_bytes = match &args.retention_bytes {
        Some(v) => Some(size("retention-bytes", v)?),
        None => declared.retention_bytes,
    };
    let retention = Retention { time: Some(retention_time), bytes: retention_bytes };
    let broker = BrokerConfig { broker_id: args.broker_id, ..BrokerConfig::default() };
    let options = ServerOptions {
        advertise_host: args.advertise_host,
        catalog: CatalogOptions {
            auto_create_topics: !args.no_auto_create,
            auto_create_groups: !args.no_auto_create,
            default_partitions: args.default_partitions,
            default_durability: match args.default_durability {
                DurabilityArg::Sync => Durability::Sync,
                DurabilityArg::Async => Durability::Async,
            },
        },
        declared,
        peers: args.peers.iter().cloned().collect(),
        ..args.broker.options(retention, broker, !args.peers.is_empty(), serving)?
    };
    let scheme = if options.tls.is_some() { "https" } else { "http" };
    let topics = options.declared.topics.len();
    let groups = options.declared.groups.len();
    let (running, done) = server::start(options, shutdown_signal()).await?;
    println!(
        "weir-sidecar ready: grpc={} metrics={}://{}/metrics data={} topics={topics} groups={groups} auto-create={}",
        running.grpc_addr,
        scheme,
        running.metrics_addr,
        args.broker.data_dir.display(),
        !args.no_auto_create
    );
    done.await
}

async fn kubernetes(args: KubernetesArgs, serving: Serving) -> Result<()> {
    let me = PodIdentity::new(&args.pod_name, &args.topic, &args.namespace, &args.cluster_domain)
        .map_err(|e| anyhow::anyhow!("{e} (set --pod-name/POD_NAME from the downward API)"))?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster service account or KUBECONFIG)")?;
    let view = Arc::new(ClusterView::new(me.clone()));
    let host = me.host_of(&me.pod).context("pod host name")?;
    let broker = BrokerConfig { broker_id: me.ordinal, ..BrokerConfig::default() };
    // Until the Topic is seen, the defaults apply; the watcher sets the Topic's own retention.
    let retention = Retention { time: Some(Duration::from_secs(72 * 3600)), bytes: None };
    let options = ServerOptions {
        advertise_host: Some(host.clone()),
        catalog: CatalogOptions { auto_create_topics: false, auto_create_groups: false, ..CatalogOptions::default() },
        cluster: Some(view.clone()),
        ..args.broker.options(retention, broker, true, serving)?
    };
    let scheme = if options.tls.is_some() { "https" } else { "http" };
    let (running, done) = server::start(options, shutdown_signal()).await?;
    let watching = tokio::spawn(weir_sidecar::cluster::watch::run(client, view.clone(), running.broker.clone()));
    println!(
        "weir-sidecar ready: pod={} topic={} grpc={} advertised={host}:{} metrics={scheme}://{}/metrics data={}",
        me.pod,
        args.topic,
        running.grpc_addr,
        running.grpc_addr.port(),
        running.metrics_addr,
        args.broker.data_dir.display(),
    );
    let result = done.await;
    watching.abort();
    result
}

/// Most threads of the runtime for work that is no connection's own.
const BACKGROUND_THREADS: usize = 2;

/// Raises the soft limit on open files to the hard limit, as servers do: the broker holds a
/// descriptor per log segment and per partition index, and a second one per segment it reads past
/// the page cache (a backlog drain), so a low default (1,024 in many shells) could make a segment
/// roll fail under a deep backlog. Only logged if it cannot.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum
        && let Err(e) = setrlimit(Resource::Nofile, rustix::process::Rlimit { current: limit.maximum, ..limit })
    {
        tracing::warn!(soft = ?limit.current, hard = ?limit.maximum, error = %e, "could not raise the open file limit");
    }
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    raise_open_file_limit();
    let mut serving = Serving { policy: cli.serving_scheduling, ..Serving::default() };
    if let Some(threads) = cli.worker_threads.and_then(|t| NonZeroUsize::new(t.into())) {
        serving.threads = threads;
    }
    // The connections are served on threads of their own (`grpc::serving`); this runtime runs
    // the rest (accepting, /metrics, checkpoints, timers), which is light.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(serving.threads.get().min(BACKGROUND_THREADS));
    let result = runtime.enable_all().build().context("starting the async runtime").and_then(|runtime| {
        runtime.block_on(async {
            match cli.command {
                Command::Standalone(args) => standalone(args, serving).await,
                Command::Kubernetes(args) => kubernetes(args, serving).await,
            }
        })
    });
    if let Err(e) = result.context("weir-sidecar failed") {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::CommandFactory;

    use super::Cli;

    /// The flag tables of docs/broker.md: `--flag` to its row's (environment, default) cells.
    fn documented_flags() -> BTreeMap<String, (String, String)> {
        let doc = include_str!("../../../docs/broker.md");
        let mut flags = BTreeMap::new();
        for row in doc.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let long = cells[0].split('`').find(|s| s.starts_with("--")).expect("a row names a --flag");
            let previous = flags.insert(long.to_owned(), (cells[1].to_owned(), cells[2].to_owned()));
            assert!(previous.is_none(), "{long} is documented twice");
        }
        flags
    }

    /// docs/broker.md lists every flag of both modes with its environment variable and default,
    /// and no flag the broker does not have.
    #[test]
    fn every_flag_is_documented_with_its_environment_and_default() {
        let documented = documented_flags();
        let cli = Cli::command();
        let mut flags = BTreeMap::new();
        for command in std::iter::once(&cli).chain(cli.get_subcommands()) {
            for arg in command.get_arguments() {
                if let Some(long) = arg.get_long().filter(|l| !["help", "version"].contains(l)) {
                    flags.insert(format!("--{long}"), arg.clone());
                }
            }
        }
        assert_eq!(
            documented.keys().collect::<Vec<_>>(),
            flags.keys().collect::<Vec<_>>(),
            "docs/broker.md's flags against the broker's"
        );
        for (flag, arg) in &flags {
            let (env, default) = &documented[flag];
            let want_env = arg.get_env().map_or("none".to_owned(), |e| format!("`{}`", e.to_string_lossy()));
            assert_eq!(env, &want_env, "{flag}: environment variable");
            for value in arg.get_default_values() {
                let value = format!("`{}`", value.to_string_lossy());
                assert!(default.contains(&value), "{flag}: default {value} not in {default:?}");
            }
        }
    }
}
