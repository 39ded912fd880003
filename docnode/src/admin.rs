//! The docnode's admin HTTP endpoints: liveness, readiness and Prometheus metrics.
//!
//! These are for the orchestrator and the metrics scraper only; clients never reach them.
//! In standalone mode the gateway serves the same registry on its own `/metrics` instead.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use tokio::net::TcpListener;

use crate::{metrics::DocnodeMetrics, registry::Registry, store::Store};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Loaded documents.
    pub registry: Arc<Registry>,
    /// The store, for readiness and its counters.
    pub store: Arc<dyn Store>,
    /// Whether the membership heartbeat reaches Redis, when membership is on.
    pub registered: Option<tokio::sync::watch::Receiver<bool>>,
    /// The Prometheus series.
    pub metrics: Arc<DocnodeMetrics>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the admin router on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Ready means: registered in the membership (when on) and the store answers.
async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if let Some(registered) = &state.registered {
        if !*registered.borrow() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not registered in the membership (is Redis reachable?)".to_owned(),
            );
        }
    }
    match state.store.document_count().await {
        Ok(_) => (StatusCode::OK, "ready".to_owned()),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            codraft_common::metrics::CONTENT_TYPE,
        )],
        codraft_common::metrics::render(state.metrics.registry()),
    )
}
