//! `weir-operator`: runs the Topic and ConsumerGroup controllers (behind a leader-election Lease
//! by default) and serves `/metrics`, `/healthz` and `/readyz`. `weir-operator rbac` prints the
//! ClusterRoles it and the brokers need.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use clap::{ArgAction, Parser, Subcommand};
use futures::FutureExt;
use kube::Client;
use tracing::{error, info};
use weir_operator::broker_admin::GrpcBrokerAdmin;
use weir_operator::clock::SystemClock;
use weir_operator::config::{BrokerTls, DEFAULT_BROKER_CLUSTER_ROLE, DEFAULT_BROKER_IMAGE_REPOSITORY, OperatorConfig};
use weir_operator::controller::{self, Health, Scope, Shutdown};
use weir_operator::leader::{LeaderElector, LeaseConfig};
use weir_operator::metrics::Metrics;
use weir_operator::reconcile::Context;
use weir_operator::telemetry::{self, LogFormat};
use weir_operator::{VERSION, rbac, web};
use weir_proto::client_tls::ClientTls;
use weir_proto::signature::Credentials;

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

    /// Broker pods serve TLS: each Topic's pods mount the Secret `<topic>-broker-tls` (tls.crt,
    /// tls.key, ca.crt) from its namespace, and the operator's calls to them trust this CA bundle.
    /// Unset: the brokers serve plaintext (they are started with --plaintext).
    #[arg(long, env = "WEIR_BROKER_TLS_CA")]
    broker_tls_ca: Option<PathBuf>,

    /// Broker pods demand client certificates signed by their Secret's ca.crt (mutual TLS); the
    /// operator presents --broker-tls-cert/--broker-tls-key.
    #[arg(long, env = "WEIR_BROKER_CLIENT_AUTH", requires_all = ["broker_tls_ca", "broker_tls_cert", "broker_tls_key"])]
    broker_client_auth: bool,

    /// The operator's client certificate for brokers with --broker-client-auth.
    #[arg(long, env = "WEIR_BROKER_TLS_CERT", requires = "broker_tls_key")]
    broker_tls_cert: Option<PathBuf>,

    /// Private key of --broker-tls-cert.
    #[arg(long, env = "WEIR_BROKER_TLS_KEY", requires = "broker_tls_cert")]
    broker_tls_key: Option<PathBuf>,

    /// Broker pods enforce RocketMQ access control: each Topic's pods mount this Secret from its
    /// namespace and use its key `acl.yaml` as their --acl-file. Needs --broker-tls-ca (request
    /// signatures must not travel in the clear).
    #[arg(long, env = "WEIR_BROKER_ACL_SECRET", requires_all = ["broker_tls_ca", "broker_access_key", "broker_secret_key"])]
    broker_acl_secret: Option<String>,

    /// The operator's access key at the brokers (a super user in every namespace's acl.yaml).
    #[arg(long, env = "WEIR_BROKER_ACCESS_KEY", requires = "broker_secret_key")]
    broker_access_key: Option<String>,

    /// Secret key of --broker-access-key (from the environment, not the command line, in a pod).
    #[arg(long, env = "WEIR_BROKER_SECRET_KEY", requires = "broker_access_key", hide_env_values = true)]
    broker_secret_key: Option<String>,

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

impl Cli {
    /// How the operator's admin calls reach TLS brokers (read at start: a bad file stops it here).
    fn broker_client_tls(&self) -> anyhow::Result<Option<ClientTls>> {
        let Some(ca) = &self.broker_tls_ca else { return Ok(None) };
        let identity = self.broker_tls_cert.as_deref().zip(self.broker_tls_key.as_deref());
        let tls = ClientTls::from_files(ca, identity).context("--broker-tls-ca/--broker-tls-cert/--broker-tls-key")?;
        Ok(Some(tls))
    }
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
        broker_tls: cli.broker_tls_ca.is_some().then_some(BrokerTls { client_auth: cli.broker_client_auth }),
        broker_acl_secret: cli.broker_acl_secret.clone(),
    };
    let credentials = cli.broker_access_key.clone().zip(cli.broker_secret_key.clone());
    let admin = Arc::new(
        GrpcBrokerAdmin::new(cli.cluster_domain.clone(), cli.broker_client_tls()?)
            .with_credentials(credentials.map(|(access, secret)| Credentials::new(access, secret))),
    );
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
