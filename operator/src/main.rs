//! `weir-operator`: runs the Topic and ConsumerGroup controllers (behind a leader-election Lease
//! by default) and serves `/metrics`, `/healthz` and `/readyz`. `weir-operator rbac` prints the
//! ClusterRoles it and the brokers need.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use clap::{ArgAction, Parser, Subcommand};
use futures::FutureExt;
use kube::Client;
use tracing::{error, info};
use weir_operator::broker_admin::GrpcBrokerAdmin;
use weir_operator::clock::SystemClock;
use weir_operator::config::{DEFAULT_BROKER_CLUSTER_ROLE, DEFAULT_BROKER_IMAGE_REPOSITORY, OperatorConfig};
use weir_operator::controller::{self, Health, Scope, Shutdown};
use weir_operator::leader::{LeaderElector, LeaseConfig};
use weir_operator::metrics::Metrics;
use weir_operator::reconcile::Context;
use weir_operator::telemetry::{self, LogFormat};
use weir_operator::{VERSION, rbac, web};

/// Command line of the operator.
#[derive(Debug, Parser)]
#[command(name = "weir-operator", version, about = "Weir Kubernetes operator: Topic and ConsumerGroup controllers")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Namespaces to watch (repeat or comma-separate); none: every namespace.
    #[arg(long = "namespace", env = "WEIR_WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,

    /// Kubernetes cluster domain, for broker pod DNS names and client endpoints.
    #[arg(long, env = "WEIR_CLUSTER_DOMAIN", default_value = weir_crds::naming::DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,

    /// Broker image repository when a Topic does not set one.
    #[arg(long, env = "WEIR_BROKER_IMAGE_REPOSITORY", default_value = DEFAULT_BROKER_IMAGE_REPOSITORY)]
    broker_image_repository: String,

    /// Broker image tag when a Topic does not set one (default: the operator's version).
    #[arg(long, env = "WEIR_BROKER_IMAGE_TAG", default_value = VERSION)]
    broker_image_tag: String,

    /// ClusterRole bound to each Topic's broker ServiceAccount in its namespace (read access to
    /// Topics and ConsumerGroups; `weir-operator rbac` prints it). The operator may bind only it.
    #[arg(long, env = "WEIR_BROKER_CLUSTER_ROLE", default_value = DEFAULT_BROKER_CLUSTER_ROLE)]
    broker_cluster_role: String,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "WEIR_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// Run the controllers only while holding the leader-election Lease (`--leader-election=false`
    /// for a single replica).
    #[arg(long, env = "WEIR_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "WEIR_LEASE_NAME", default_value = "weir-operator")]
    lease_name: String,

    /// Namespace of the Lease (default: the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,

    /// This replica's identity in the Lease and in Events (default: the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Log line format.
    #[arg(long, env = "WEIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the ClusterRoles (and the Lease Role) of the operator and the brokers as YAML.
    Rbac {
        /// Namespace of the leader-election Role.
        #[arg(long, default_value = "weir-system")]
        lease_namespace: String,
    },
}

/// Completes on SIGTERM or Ctrl-C.
async fn termination() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Rbac { lease_namespace }) = &cli.command {
        print!("{}", rbac::render_yaml(lease_namespace).context("rendering RBAC YAML")?);
        return Ok(());
    }
    telemetry::init(cli.log_format).map_err(|e| anyhow!(e)).context("installing the log subscriber")?;
    let client = Client::try_default().await.context("connecting to the Kubernetes API")?;
    let identity = cli
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("weir-operator-{}", std::process::id()));
    let scope = if cli.namespaces.is_empty() { Scope::All } else { Scope::Namespaces(cli.namespaces.clone()) };
    info!(version = VERSION, ?scope, %identity, leader_election = cli.leader_election, "starting");

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let shutdown: Shutdown = termination().boxed().shared();
    let web = tokio::spawn(web::serve(cli.listen, metrics.clone(), health.clone(), shutdown.clone()));

    let config = OperatorConfig {
        cluster_domain: cli.cluster_domain.clone(),
        broker_image_repository: cli.broker_image_repository.clone(),
        broker_image_tag: cli.broker_image_tag.clone(),
        broker_cluster_role: cli.broker_cluster_role.clone(),
    };
    let admin = Arc::new(GrpcBrokerAdmin::new(cli.cluster_domain.clone()));
    let ctx = Arc::new(Context::new(
        client.clone(),
        admin,
        Arc::new(SystemClock),
        config,
        metrics.clone(),
        Some(identity.clone()),
    ));

    let outcome = if cli.leader_election {
        let lease = LeaseConfig {
            name: cli.lease_name.clone(),
            namespace: cli.lease_namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned()),
            identity,
        };
        run_as_leader(ctx, scope, health.clone(), metrics.clone(), shutdown.clone(), LeaderElector::new(client, lease))
            .await
    } else {
        health.set_leading(true);
        metrics.leader.set(1);
        controller::run(ctx, scope, health.clone(), shutdown.clone()).await;
        Ok(())
    };
    match web.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(error = %e, "metrics server failed"),
        Err(e) => error!(error = %e, "metrics server task failed"),
    }
    outcome
}

/// Waits for the Lease, runs the controllers while holding it, releases it on shutdown. Losing
/// the Lease is an error: the process exits and its restart competes again.
async fn run_as_leader(
    ctx: Arc<Context>,
    scope: Scope,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    elector: LeaderElector,
) -> anyhow::Result<()> {
    tokio::select! {
        _ = elector.acquire() => {}
        _ = shutdown.clone() => return Ok(()),
    }
    health.set_leading(true);
    metrics.leader.set(1);
    info!("leading: starting controllers");
    let lost = tokio::select! {
        _ = controller::run(ctx, scope, health.clone(), shutdown.clone()) => None,
        reason = elector.hold() => Some(reason),
    };
    health.set_leading(false);
    metrics.leader.set(0);
    if let Some(reason) = lost {
        bail!("lost leadership: {reason}");
    }
    if let Err(e) = elector.release().await {
        error!(error = %e, "could not release the lease; the next leader waits for it to expire");
    }
    Ok(())
}
