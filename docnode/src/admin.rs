//! The docnode's admin HTTP endpoints: liveness, readiness and Prometheus metrics, served by
//! the router both services share (`codraft_common::admin`) with the docnode's own idea of
//! "ready".
//!
//! These are for the orchestrator and the metrics scraper only; clients never reach them.
//! In standalone mode the process serves the same registry on its own admin port instead.

use std::sync::Arc;

use axum::Router;
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
    let registry = state.metrics.registry().clone();
    codraft_common::admin::router(registry, readiness(state))
}

/// Serves the admin router on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    codraft_common::admin::serve(listener, router(state), shutdown).await
}

/// Ready means: registered in the membership (when on) and the store answers.
pub fn readiness(state: AdminState) -> codraft_common::admin::Readiness {
    Arc::new(move || {
        let state = state.clone();
        Box::pin(async move {
            if let Some(registered) = &state.registered {
                if !*registered.borrow() {
                    return Err("not registered in the membership (is Redis reachable?)".to_owned());
                }
            }
            match state.store.document_count().await {
                Ok(_) => Ok("ready".to_owned()),
                Err(error) => Err(error.to_string()),
            }
        })
    })
}
