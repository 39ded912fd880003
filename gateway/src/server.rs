//! Runs the gateway's HTTP servers and builds its view of the docnodes.
//!
//! Two ports: the public one (PORT) serves the editor and the API; the admin one
//! (ADMIN_ADDR, when set) serves `/metrics`, `/healthz` and `/readyz`. Without ADMIN_ADDR the
//! public port keeps `/healthz` and `/readyz` (so probes and the README's single command work)
//! and `/metrics` is not served at all: metrics are never one Ingress rule away from the
//! internet.

use std::{future::Future, net::SocketAddr};

use axum::serve::ListenerExt;
use codraft_common::membership::View;
use tokio::{net::TcpListener, sync::watch};
use tracing::{info, warn};

use crate::{
    auth::Auth,
    config::GatewayConfig,
    guesses::SharedGuesses,
    http::{self, AppState},
    link::Link,
    ring::{Ring, RingNode},
};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The HTTP port could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The admin port could not be bound.
    #[error("cannot listen on ADMIN_ADDR {0}: {1}")]
    BindAdmin(SocketAddr, std::io::Error),
    /// The JWT settings are unusable.
    #[error("{0}")]
    Auth(String),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// The Redis of the shared wrong-password budget is unusable.
    #[error("wrong-password budget in Redis: {0}")]
    Redis(String),
    /// The gRPC TLS files are unusable.
    #[error("gateway<->docnode TLS: {0}")]
    Tls(#[from] codraft_common::tls::TlsError),
    /// The metrics registry already holds a gateway's series.
    #[error("cannot register the gateway's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A gateway: settings and its view of the docnodes.
pub struct Gateway {
    config: GatewayConfig,
    ring: watch::Receiver<Ring>,
    // Keeps the ring's sender alive for static membership.
    _ring_tx: Option<watch::Sender<Ring>>,
    extra: Option<ExtraRoutes>,
    auth: Auth,
    /// Where the gateway's series go; `/metrics` renders all of it.
    metrics: prometheus::Registry,
    /// The admin port (ADMIN_ADDR), if any.
    admin_addr: Option<SocketAddr>,
    /// The wrong-password budget shared through Redis, when the cluster has Redis.
    shared_guesses: Option<SharedGuesses>,
}

/// Routes served beside the gateway's own, built over its state (so they can use its
/// token and password checks).
type ExtraRoutes = Box<dyn FnOnce(&AppState) -> axum::Router + Send>;

/// Binds the HTTP port with a listen backlog that absorbs a join storm: tokio's default
/// (128) overflows when a thousand clients connect at once, and each overflow costs the
/// client a one-second SYN retry.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Keeps a ring equal to the membership view, reusing the gRPC channel of every docnode
/// that stays (a channel is one HTTP/2 connection shared by all of that node's streams).
pub fn ring_from_view(
    mut view: watch::Receiver<View>,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> watch::Receiver<Ring> {
    let build = move |members: &View, old: &Ring| -> Ring {
        let nodes = members
            .iter()
            .filter_map(|member| {
                if let Some(node) = old.node(&member.id).filter(|n| n.url == member.url) {
                    return Some(node.clone());
                }
                match Link::connect(&member.url, tls.as_ref()) {
                    Ok(link) => Some(RingNode {
                        id: member.id.clone(),
                        url: member.url.clone(),
                        link,
                    }),
                    Err(error) => {
                        warn!(node = %member.id, url = %member.url, %error, "ignoring docnode with a bad URL");
                        None
                    }
                }
            })
            .collect();
        Ring::new(nodes)
    };
    let first = build(&view.borrow_and_update(), &Ring::default());
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        while view.changed().await.is_ok() {
            let members = view.borrow_and_update().clone();
            let next = build(&members, &tx.borrow());
            if tx.send(next).is_err() {
                return;
            }
        }
    });
    rx
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
            auth: Auth::open(),
            metrics: prometheus::Registry::new(),
            admin_addr: None,
            shared_guesses: None,
        }
    }

    /// Requires tokens as the configuration says (JWT_SECRET or JWT_PUBLIC_KEY_FILE).
    pub fn with_auth_from_config(mut self) -> Result<Self, GatewayError> {
        self.auth =
            Auth::from_config(&self.config.auth).map_err(|e| GatewayError::Auth(e.to_string()))?;
        Ok(self)
    }

    /// Adds routes served beside the gateway's own, built over its state.
    pub fn with_routes(
        mut self,
        routes: impl FnOnce(&AppState) -> axum::Router + Send + 'static,
    ) -> Self {
        self.extra = Some(Box::new(routes));
        self
    }

    /// Registers the gateway's series in `registry` instead of a registry of its own:
    /// standalone mode passes the docnode's, so one `/metrics` shows both.
    pub fn with_metrics_registry(mut self, registry: prometheus::Registry) -> Self {
        self.metrics = registry;
        self
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `addr` (ADMIN_ADDR) instead of the
    /// public port; `None` keeps health on the public port and serves no metrics.
    pub fn with_admin_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.admin_addr = addr;
        self
    }

    /// A gateway that routes over a membership view (DOCNODES or Redis discovery). Fails
    /// when the gRPC TLS files (GRPC_TLS_*) cannot be read.
    pub fn with_view(
        mut config: GatewayConfig,
        view: watch::Receiver<View>,
    ) -> Result<Self, GatewayError> {
        let tls = config.grpc_tls.client()?;
        config.docnode_tls = Some(tls.clone());
        Ok(Self {
            config,
            ring: ring_from_view(view, Some(tls)),
            _ring_tx: None,
            extra: None,
            auth: Auth::open(),
            metrics: prometheus::Registry::new(),
            admin_addr: None,
            shared_guesses: None,
        })
    }

    /// Shares the wrong-password budget with the other gateways through `redis` (keys under
    /// `prefix`), so an attacker spread over gateways gets one budget, not one each.
    pub fn with_shared_guesses(
        mut self,
        redis: redis::Client,
        prefix: &str,
    ) -> Result<Self, GatewayError> {
        let shared =
            SharedGuesses::new(redis, prefix).map_err(|e| GatewayError::Redis(e.to_string()))?;
        self.shared_guesses = Some(shared);
        Ok(self)
    }

    /// Serves HTTP (and the admin port, if set) until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let addr = SocketAddr::new(self.config.bind, self.config.port);
        let listener = listen(addr).map_err(|e| GatewayError::Bind(addr, e))?;
        let local = listener.local_addr().unwrap_or(addr);
        let admin_listener = match self.admin_addr {
            Some(admin) => Some(
                TcpListener::bind(admin)
                    .await
                    .map_err(|e| GatewayError::BindAdmin(admin, e))?,
            ),
            None => None,
        };
        codraft_common::metrics::register_process(&self.metrics)?;
        let (stop_tx, stopping) = watch::channel(false);
        let state = AppState::new(
            self.ring.clone(),
            self.config.clone(),
            self.auth.clone(),
            stopping.clone(),
            &self.metrics,
            self.shared_guesses,
        )?;
        let readiness = http::readiness(&state);
        let extra = self.extra.map(|routes| routes(&state));
        let mut app = http::router(state);
        if let Some(extra) = extra {
            app = app.merge(extra);
        }
        let admin = match admin_listener {
            Some(listener) => {
                let admin = listener.local_addr().ok();
                info!(addr = %local, admin = ?admin, docnodes = self.ring.borrow().nodes().len(), "gateway serving");
                let router = codraft_common::admin::router(self.metrics.clone(), readiness);
                let mut stop = stopping.clone();
                Some(tokio::spawn(codraft_common::admin::serve(
                    listener,
                    router,
                    async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    },
                )))
            }
            None => {
                info!(addr = %local, docnodes = self.ring.borrow().nodes().len(), "gateway serving; ADMIN_ADDR is not set, so /metrics is off and /healthz, /readyz are on the public port");
                app = app.merge(codraft_common::admin::health_router(readiness));
                None
            }
        };
        // Nagle's algorithm with delayed ACKs stalls every small frame ~40 ms; browsers turn
        // it off on their side, and so must we (axum 0.8's serve no longer does).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await
        .map_err(GatewayError::Serve);
        if let Some(admin) = admin {
            admin
                .await
                .map_err(|e| GatewayError::Serve(std::io::Error::other(e)))?
                .map_err(GatewayError::Serve)?;
        }
        served
    }
}
