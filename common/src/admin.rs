//! The admin HTTP port both services serve: liveness (`/healthz`), readiness (`/readyz`) and
//! Prometheus metrics (`/metrics`), on an address of their own (`ADMIN_ADDR`).
//!
//! These endpoints are for the orchestrator and the metrics scraper only. Keeping them off
//! the gateway's public port means an Ingress or a load balancer in front of the public port
//! cannot expose the metrics (which name internal limits, counts and versions) to the
//! internet. What "ready" means differs per service, so each passes its own check.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use clap::Args;
use tokio::net::TcpListener;

/// The gateway's admin setting (the docnode has its own, with a default, in its config).
#[derive(Debug, Clone, Args)]
pub struct AdminConfig {
    /// Admin HTTP address: /metrics, /healthz, /readyz (e.g. 0.0.0.0:9090). Unset: no
    /// /metrics, and /healthz and /readyz stay on the public port.
    #[arg(long, env = "ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
}

/// A readiness answer: `Ok(body)` is 200, `Err(reason)` is 503.
pub type ReadyFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// How a service decides it is ready; called on every `/readyz`.
pub type Readiness = Arc<dyn Fn() -> ReadyFuture + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    registry: prometheus::Registry,
    ready: Readiness,
}

/// `/healthz` and `/readyz` alone: what a service without an admin port keeps on its public
/// port, so probes still work.
pub fn health_router(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState {
            registry: prometheus::Registry::new(),
            ready,
        })
}

/// The whole admin router: health, readiness, and every series of `registry`.
pub fn router(registry: prometheus::Registry, ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { registry, ready })
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match (state.ready)().await {
        Ok(body) => (StatusCode::OK, body),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        crate::metrics::render(&state.registry),
    )
}
