//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process runs) and
//! `/readyz` (it runs the controllers and their caches are synced).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::controller::Health;
use crate::metrics::Metrics;

#[derive(Clone)]
struct WebState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The router (served by [`serve`]; tests call it directly).
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready_handler))
        .with_state(WebState { metrics, health })
}

async fn metrics_handler(State(state): State<WebState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn ready_handler(State(state): State<WebState>) -> impl IntoResponse {
    if state.health.ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: not leading or caches not synced")
    }
}

/// Serves the endpoints on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(metrics, health)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_path(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let code = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, response)
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(metrics.clone(), health.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert_eq!(get_path(addr, "/healthz").await.0, 200);
        assert_eq!(get_path(addr, "/readyz").await.0, 503);
        health.set_leading(true);
        health.set_synced(true);
        assert_eq!(get_path(addr, "/readyz").await.0, 200);
        metrics.start("Topic").finish::<()>(&Ok(()));
        let (code, body) = get_path(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("weir_operator_reconciles_total"), "{body}");
    }
}
