//! Running a broker: open the store, build the broker, serve gRPC and `/metrics`, run the periodic
//! work (checkpoints, retention, client expiry), and shut down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use weir_proto::rocketmq::v2::messaging_service_server::MessagingServiceServer;
use weir_proto::weir::admin::v1::admin_server::AdminServer;

use crate::broker::{Broker, BrokerConfig};
use crate::catalog::{Catalog, CatalogOptions};
use crate::clients::Clients;
use crate::cluster::ClusterView;
use crate::consume::Consumers;
use crate::delay::Timer;
use crate::grpc::Messaging;
use crate::grpc::admin::{AdminService, admin_access};
use crate::grpc::forward::{Directory, Peers};
use crate::grpc::route::Advertised;
use crate::grpc::serving::{Serving, ServingThreads};
use crate::metrics::Metrics;
use crate::standalone::Declared;
use crate::state::BrokerState;
use crate::storage::{Retention, Store, StoreConfig};
use crate::txn::Transactions;

/// Requests in flight per client connection; a client queues the rest itself (the limit is an
/// HTTP/2 setting the client honours). Bounds what one connection can make the broker buffer, and
/// together with [`CONNECTION_WINDOW_BYTES`] keeps a client that fires thousands of sends at once
/// from splitting its messages into slivers of flow-control credit: the HTTP/2 layer counts many
/// small DATA frames waiting unread as an attack and closes the connection, failing every send
/// in flight on it.
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// HTTP/2 flow-control window of a connection: room for a full set of in-flight requests of a few
/// KiB each (the most one connection can make the broker buffer).
const CONNECTION_WINDOW_BYTES: u32 = 4 << 20;

/// Largest HTTP/2 frame a client may send. A send of 16 messages of 1 KiB is about 17 KiB: at
/// HTTP/2's default of 16 KiB it crossed two DATA frames, between which the client flushed its
/// socket. In one frame, the load generator made 40% fewer writes and Async publishing gained
/// 3–11% (BENCHMARKS.md, "Changes measured"). A frame is buffered whole before it is handed on,
/// so this also bounds that buffer, well below a stream's 1 MiB window.
const MAX_FRAME_BYTES: u32 = 256 << 10;

/// How long a broker whose storage failed keeps answering (refusing writes) before it exits.
const FATAL_EXIT_GRACE: Duration = Duration::from_secs(1);

/// Largest gRPC request accepted (a batch of messages at the body limit).
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Everything needed to run a broker.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// `/metrics` listen address.
    pub metrics_listen: SocketAddr,
    /// Host clients should connect to (defaults to the gRPC listen IP).
    pub advertise_host: Option<String>,
    /// Storage settings (the directory is taken from `data_dir`).
    pub segment_bytes: u64,
    /// How far ahead of the data the commit log is kept zero-filled under Sync load (0: off).
    pub zero_fill_ahead: u64,
    /// Synced commit log kept in the page cache behind its durable end (0: all of it).
    pub log_cache_window: u64,
    /// Free space kept on the data volume (sends are refused below it).
    pub min_free_bytes: u64,
    /// TLS for both listeners; None serves plaintext.
    pub tls: Option<crate::tls::LoadedTls>,
    /// TLS towards other brokers (forwarded requests); None forwards in plaintext.
    pub peer_tls: Option<crate::tls::ClientTls>,
    /// Access control (RocketMQ ACL); None admits everyone.
    pub acl: Option<Arc<crate::acl::Acl>>,
    /// Async-durability flush interval.
    pub async_flush_interval: Duration,
    /// Retention limits.
    pub retention: Retention,
    /// How often consumer state and indexes are checkpointed.
    pub checkpoint_interval: Duration,
    /// Topic and group creation policy.
    pub catalog: CatalogOptions,
    /// Broker limits.
    pub broker: BrokerConfig,
    /// Topics and groups from manifests.
    pub declared: Declared,
    /// Other brokers by id (`host:port`), for forwarding requests to their owner.
    pub peers: std::collections::HashMap<u32, String>,
    /// The threads serving gRPC connections, how many and how they are scheduled (each
    /// connection stays on one; see `grpc::serving`).
    pub serving: Serving,
    /// Kubernetes mode: the view of the cluster this pod keeps up to date. The broker reports
    /// itself healthy (ready) only once the view is complete.
    pub cluster: Option<Arc<ClusterView>>,
}

/// A broker that is serving.
#[derive(Debug)]
pub struct Running {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where `/metrics` listens.
    pub metrics_addr: SocketAddr,
    /// The broker.
    pub broker: Arc<Broker>,
}

/// Opens everything, starts serving, and returns once the broker answers requests. The returned
/// future completes when `shutdown` resolves and the broker has stopped cleanly.
pub async fn start(
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Running, impl Future<Output = Result<()>>)> {
    let metrics = Metrics::new();
    let state = Arc::new(BrokerState {
        consumers: Arc::new(Consumers::default()),
        timer: Arc::new(Timer::open(&options.data_dir.join("timer")).context("opening the timer index")?),
        transactions: Arc::new(Transactions::default()),
    });
    let mut store_config = StoreConfig::new(&options.data_dir);
    store_config.segment_bytes = options.segment_bytes;
    store_config.zero_fill_ahead = options.zero_fill_ahead;
    store_config.log_cache_window = options.log_cache_window;
    store_config.min_free_bytes = options.min_free_bytes;
    store_config.async_flush_interval = options.async_flush_interval;
    store_config.retention = options.retention;
    let opened = Instant::now();
    let (store, report) = Store::open(
        store_config,
        state.clone(),
        metrics.store.clone(),
        Box::new(|reason| {
            // Durability can no longer be promised. The store is poisoned, so nothing else can be
            // acknowledged; give the refusals already on their way a moment to reach the clients
            // (they say why), then stop.
            tracing::error!(%reason, "fatal storage failure; exiting");
            eprintln!("weir-sidecar: fatal storage failure: {reason}");
            std::thread::spawn(|| {
                std::thread::sleep(FATAL_EXIT_GRACE);
                std::process::exit(70);
            });
        }),
    )
    .with_context(|| format!("opening the data directory {}", options.data_dir.display()))?;
    metrics.recovery_replayed.set(i64::try_from(report.records_replayed).unwrap_or(i64::MAX));
    metrics.recovery_seconds.set(opened.elapsed().as_secs_f64());
    tracing::info!(
        replayed = report.records_replayed,
        log_end = report.log_end,
        torn_tail = ?report.torn_tail,
        corrupt_ranges = report.corrupt_ranges.len(),
        elapsed_ms = opened.elapsed().as_millis() as u64,
        "storage recovered"
    );
    for range in &report.corrupt_ranges {
        eprintln!(
            "weir-sidecar: WARNING: commit log damaged between positions {} and {} ({}); records after it were kept",
            range.start, range.end, range.reason
        );
    }

    let catalog = Catalog::open(store.clone(), &options.data_dir, options.catalog.clone())?;
    for topic in &options.declared.topics {
        catalog.put_topic(topic.clone())?;
    }
    for group in &options.declared.groups {
        catalog.put_group(group.clone())?;
    }
    let broker = Arc::new(Broker::new(
        options.broker.clone(),
        store.clone(),
        catalog,
        state,
        Clients::new(options.broker.client_ttl),
        metrics.clone(),
    ));
    metrics.register_broker(&broker);
    // The page cache keeps synced log only while some consumer still needs it.
    store.follow_readers(Arc::<Broker>::downgrade(&broker));

    let grpc_listener = TcpListener::bind(options.grpc_listen)
        .await
        .with_context(|| format!("binding the gRPC port {} (is another broker running?)", options.grpc_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let metrics_listener = TcpListener::bind(options.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics port {}", options.metrics_listen))?;
    let metrics_addr = metrics_listener.local_addr()?;

    let advertised = Advertised {
        host: options.advertise_host.clone().unwrap_or_else(|| match grpc_addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            ip => ip.to_string(),
        }),
        port: grpc_addr.port(),
        broker_name: format!("weir-broker-{}", options.broker.broker_id),
    };
    let directory = match &options.cluster {
        Some(view) => Directory::Cluster(view.clone()),
        None => Directory::Static(options.peers.clone()),
    };
    let messaging = Messaging::new(
        broker.clone(),
        advertised,
        Peers::new(directory, options.peer_tls.clone()),
        options.cluster.clone(),
    )
    .with_acl(options.acl.clone());
    let service = MessagingServiceServer::new(messaging)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES)
        .accept_compressed(CompressionEncoding::Gzip);
    // The statuses are set before the server takes a connection: the reporter starts with the
    // overall status SERVING and the messaging service unknown, which a probe must never see (a
    // clustered broker would look ready before it knows its peers).
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let serving = |reporter: tonic_health::server::HealthReporter| async move {
        reporter.set_serving::<MessagingServiceServer<Messaging>>().await;
        // The overall status ("") is what Kubernetes' gRPC readiness probe asks for.
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    };
    match options.cluster.clone() {
        Some(view) => {
            health_reporter.set_not_serving::<MessagingServiceServer<Messaging>>().await;
            health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            tokio::spawn(async move {
                view.wait_synced().await;
                serving(health_reporter).await;
            });
        }
        None => serving(health_reporter).await,
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let admin_acl = options.acl.clone();
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES);
    if let Some(tls) = &options.tls {
        server = server.tls_config(tls.grpc()).context("configuring gRPC TLS")?;
    }
    let router = server
        .add_service(health_service)
        .add_service(service)
        .add_service(AdminServer::with_interceptor(AdminService::new(broker.clone()), move |req| {
            admin_access(admin_acl.as_deref(), req)
        }));
    tracing::info!(threads = options.serving.threads, policy = ?options.serving.policy, "serving gRPC connections");
    let threads = ServingThreads::start(options.serving, &router, &stop_rx, &metrics.grpc_connections)
        .context("starting the serving threads")?;
    let grpc = tokio::spawn(threads.serve(incoming, stop_rx.clone()));
    let metrics_task = tokio::spawn(serve_metrics(
        metrics_listener,
        metrics.clone(),
        options.cluster.clone(),
        options.tls.as_ref().map(|t| t.metrics()),
        stop_rx.clone(),
    ));
    let replayed = report.records_replayed > 0;
    let maintenance = tokio::spawn(maintain(broker.clone(), options.checkpoint_interval, replayed, stop_rx.clone()));
    let timer = tokio::spawn(broker.clone().run_timer());
    let transactions = tokio::spawn(broker.clone().run_transaction_checks());

    let running = Running { grpc_addr, metrics_addr, broker: broker.clone() };
    let done = async move {
        shutdown.await;
        tracing::info!("shutting down: ending long polls and client streams");
        broker.begin_shutdown();
        let _ = stop_tx.send(true);
        match tokio::time::timeout(Duration::from_secs(10), grpc).await {
            Ok(joined) => joined.context("gRPC server task")?.context("gRPC server")?,
            Err(_) => tracing::warn!("gRPC connections did not close within 10 s; closing anyway"),
        }
        let _ = metrics_task.await;
        let _ = maintenance.await;
        let _ = timer.await;
        let _ = transactions.await;
        store.shutdown().await.context("final checkpoint")?;
        tracing::info!("stopped cleanly");
        Ok(())
    };
    Ok((running, done))
}

async fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    cluster: Option<Arc<ClusterView>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use axum::http::StatusCode;
    use axum::http::header::CONTENT_TYPE;
    // Ready once the broker knows its place in the cluster (always, standalone).
    let readyz = move || {
        let ready = cluster.as_ref().is_none_or(|v| v.is_synced());
        async move { if ready { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "syncing\n") } }
    };
    let app = axum::Router::new()
        .route("/readyz", axum::routing::get(readyz))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    if let Some(tls) = tls {
        return serve_https(listener, app, tls, stop).await;
    }
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    if let Err(e) = serve.await {
        tracing::error!(error = %e, "metrics server failed");
    }
}

/// Serves `app` over TLS (HTTP/1.1) until `stop`: one task per connection; a client that does
/// not finish its handshake within [`TLS_HANDSHAKE_TIMEOUT`] is dropped.
async fn serve_https(
    listener: TcpListener,
    app: axum::Router,
    tls: Arc<rustls::ServerConfig>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(error = %e, "metrics TLS handshake failed"),
                Err(_) => return tracing::debug!("metrics TLS handshake timed out"),
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

/// How long a metrics client may take to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Periodic work: checkpoints (bounded replay on restart), retention, forgetting silent clients.
///
/// After a start that had to replay records, the first tick checkpoints at once: otherwise a broker
/// that keeps crashing sooner than `checkpoint_every` would replay more at every start.
async fn maintain(
    broker: Arc<Broker>,
    checkpoint_every: Duration,
    replayed: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let started = Instant::now();
    let mut last_checkpoint = if replayed { started.checked_sub(checkpoint_every).unwrap_or(started) } else { started };
    let mut last_retention = Instant::now();
    let mut checkpointed_end = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let store = broker.store();
        let end = store.log_range().1;
        if last_checkpoint.elapsed() >= checkpoint_every && end != checkpointed_end {
            match store.checkpoint().await {
                Ok(_) => checkpointed_end = end,
                Err(e) => tracing::error!(error = %e, "checkpoint failed"),
            }
            last_checkpoint = Instant::now();
        }
        if last_retention.elapsed() >= Duration::from_secs(60) {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.enforce_retention(SystemTime::now())).await {
                Ok(Ok(freed)) if freed > 0 => tracing::info!(freed_bytes = freed, "retention deleted old segments"),
                Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                _ => {}
            }
            last_retention = Instant::now();
        }
        for client in broker.clients().expire() {
            if let Err(e) = broker.client_gone(&client).await {
                tracing::warn!(error = %e, "could not forget a departed broadcast consumer");
            }
        }
    }
}
