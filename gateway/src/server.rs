//! Runs the gateway's HTTP server and builds its view of the docnodes.

use std::{future::Future, net::SocketAddr};

use codraft_proto::doc_node_client::DocNodeClient;
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::{Channel, Endpoint};
use tracing::info;

use crate::{
    config::GatewayConfig,
    http::{self, AppState},
    ring::{Ring, RingNode},
};

/// Largest gRPC message the gateway accepts from a docnode (a join snapshot).
pub const MAX_GRPC_MESSAGE: usize = 64 << 20;

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A DOCNODES entry is not a usable URL.
    #[error("invalid docnode address {0:?}: {1}")]
    BadDocnode(String, String),
    /// The HTTP port could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A gateway: settings and its view of the docnodes.
pub struct Gateway {
    config: GatewayConfig,
    ring: watch::Receiver<Ring>,
    // Keeps the ring's sender alive for static membership.
    _ring_tx: Option<watch::Sender<Ring>>,
    extra: Option<axum::Router>,
}

/// A shared gRPC client for a docnode channel.
pub fn docnode_client(channel: Channel) -> DocNodeClient<Channel> {
    DocNodeClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE)
}

/// Parses DOCNODES (`URL` or `ID=URL` entries) into ring nodes with lazy channels.
pub fn static_ring(entries: &[String]) -> Result<Ring, GatewayError> {
    let mut nodes = Vec::new();
    for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let (id, url) = match entry.split_once('=') {
            Some((id, url)) => (id.trim().to_owned(), url.trim().to_owned()),
            None => (entry.to_owned(), entry.to_owned()),
        };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| GatewayError::BadDocnode(entry.to_owned(), e.to_string()))?
            .tcp_nodelay(true);
        nodes.push(RingNode {
            id,
            client: docnode_client(endpoint.connect_lazy()),
        });
    }
    Ok(Ring::new(nodes))
}

impl Gateway {
    /// A gateway over a fixed set of docnodes.
    pub fn with_ring(config: GatewayConfig, ring: Ring) -> Self {
        let (tx, rx) = watch::channel(ring);
        Self {
            config,
            ring: rx,
            _ring_tx: Some(tx),
            extra: None,
        }
    }

    /// Adds routes served beside the gateway's own (standalone mode adds the docnode's
    /// `/metrics`).
    pub fn with_routes(mut self, routes: axum::Router) -> Self {
        self.extra = Some(routes);
        self
    }

    /// A gateway whose docnodes come from DOCNODES.
    pub fn from_config(config: GatewayConfig) -> Result<Self, GatewayError> {
        let ring = static_ring(&config.docnodes)?;
        Ok(Self::with_ring(config, ring))
    }

    /// Serves HTTP until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let addr = SocketAddr::new(self.config.bind, self.config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| GatewayError::Bind(addr, e))?;
        let local = listener.local_addr().unwrap_or(addr);
        info!(addr = %local, docnodes = self.ring.borrow().nodes().len(), "gateway serving");
        let mut app = http::router(AppState::new(self.ring.clone(), self.config.clone()));
        if let Some(extra) = self.extra {
            app = app.merge(extra);
        }
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(GatewayError::Serve)
    }
}
