//! The gateway's HTTP routes: the web client, the WebSocket and the small JSON API on the
//! public port; readiness for the admin port (`codraft_common::admin`), where health and
//! Prometheus metrics live, out of reach of whatever fronts the public port.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{ConnectInfo, Path, Query, State, WebSocketUpgrade},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
pub use codraft_common::ids::{
    valid_any_document_id, valid_client_id, valid_document_id, YJS_PREFIX,
};
use codraft_proto as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    assets,
    auth::Auth,
    client_addr::TrustedProxies,
    config::GatewayConfig,
    gate::{Credentials, Gate, IfOwnerUnreachable},
    guesses::SharedGuesses,
    metrics::GatewayMetrics,
    relay::{self, Relay, SocketRequest},
    ring::Ring,
    routes::Routes,
};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The way to the docnodes; follows membership changes.
    pub routes: Arc<Routes>,
    /// Settings.
    pub config: Arc<GatewayConfig>,
    /// Unix time the gateway started.
    pub start_time: u64,
    /// Token checks (open unless JWT is configured).
    pub auth: Auth,
    /// Open WebSockets, against MAX_CONNECTIONS.
    pub connections: Arc<AtomicUsize>,
    /// Turns true when the gateway starts shutting down: sockets close with 4503.
    pub stopping: watch::Receiver<bool>,
    /// The token and password check in front of every document.
    pub gate: Arc<Gate>,
    /// Prometheus series (`/metrics` renders their whole registry).
    pub metrics: Arc<GatewayMetrics>,
    /// Whose forwarding headers name the client (TRUSTED_PROXIES).
    pub proxies: Arc<TrustedProxies>,
}

impl AppState {
    /// State over a ring that membership updates, with the gateway's series registered in
    /// `registry` and the wrong-password budget in `shared` (Redis) when given. Fails only
    /// if that registry already holds a gateway's series.
    pub fn new(
        ring: watch::Receiver<Ring>,
        config: GatewayConfig,
        auth: Auth,
        stopping: watch::Receiver<bool>,
        registry: &prometheus::Registry,
        shared: Option<SharedGuesses>,
    ) -> prometheus::Result<Self> {
        let routes = Arc::new(Routes::new(ring, config.docnode_tls.clone()));
        let connections: Arc<AtomicUsize> = Arc::default();
        let metrics = GatewayMetrics::register(registry, Arc::clone(&connections), {
            let routes = Arc::clone(&routes);
            move || routes.ring().nodes().len()
        })?;
        let gate = Arc::new(Gate::new(
            auth.clone(),
            Arc::clone(&routes),
            config.otp_failures_per_minute,
            config.auth.login_url.clone(),
            shared,
        ));
        let proxies = Arc::new(TrustedProxies::new(config.trusted_proxies.clone()));
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Self {
            routes,
            config: Arc::new(config),
            start_time,
            auth,
            connections,
            stopping,
            gate,
            metrics,
            proxies,
        })
    }

    /// The address a request from `peer` counts as (see [`crate::client_addr`]).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        self.proxies.client(peer.ip(), headers)
    }
}

/// The public routes: the editor and the API, nothing for operators.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/app.css", get(assets::app_css))
        .route("/api/socket/{id}", get(socket_route))
        .route("/yjs/{room}", get(yjs_route))
        .route("/api/text/{id}", get(text_route))
        .route("/api/stats", get(stats_route))
        .merge(crate::history::routes())
        .with_state(state)
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, message.to_owned()).into_response()
}

/// The socket URL's optional query parameters.
#[derive(Deserialize)]
struct SocketQuery {
    client: Option<String>,
    resume: Option<u64>,
    otp: Option<String>,
    token: Option<String>,
}

async fn socket_route(
    Path(id): Path<String>,
    query: Result<Query<SocketQuery>, axum::extract::rejection::QueryRejection>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !valid_document_id(&id) {
        return bad_request("invalid document id: use 1-256 of A-Z a-z 0-9 - _ .");
    }
    let Ok(Query(query)) = query else {
        return bad_request("invalid query: client is text, resume is a number");
    };
    if query.client.as_deref().is_some_and(|c| !valid_client_id(c)) {
        return bad_request("invalid client id: use 1-64 of A-Z a-z 0-9 - _");
    }
    let credentials =
        Credentials::from_request(&headers, query.token.as_deref(), query.otp.as_deref());
    let grant = match gate_socket(&state, &id, &credentials, peer, &headers).await {
        Ok(grant) => grant,
        Err(refusal) => {
            let login_url = state.gate.login_url().map(str::to_owned);
            return upgrade.on_upgrade(move |ws| relay::refuse(ws, refusal, login_url));
        }
    };
    let request = SocketRequest {
        document_id: id,
        client_id: query.client,
        resume: query.resume,
        otp: credentials.password,
        grant,
    };
    relay_socket(&state, upgrade, request, relay::relay)
}

/// The gate in front of a socket. An unreachable owner lets the socket open: the session
/// says so (4503), and the owner checks the password again at join. A refusal is counted; a
/// browser cannot read a refused upgrade (it sees only 1006), so the caller opens the socket
/// and closes it at once with 4401/4403/4429 and a reason.
async fn gate_socket(
    state: &AppState,
    id: &str,
    credentials: &Credentials,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<crate::auth::Grant, crate::gate::Refusal> {
    let admitted = state
        .gate
        .admit(
            id,
            credentials,
            state.client_ip(peer, headers),
            IfOwnerUnreachable::Admit,
        )
        .await;
    admitted.inspect_err(|refusal| refusal.count(&state.metrics))
}

/// Upgrades an admitted socket and hands it to `serve` (the OT or the Yjs relay), or
/// answers 503 when the gateway is at MAX_CONNECTIONS.
fn relay_socket<F, Fut>(
    state: &AppState,
    upgrade: WebSocketUpgrade,
    request: SocketRequest,
    serve: F,
) -> Response
where
    F: FnOnce(
            futures::stream::SplitSink<axum::extract::ws::WebSocket, axum::extract::ws::Message>,
            futures::stream::SplitStream<axum::extract::ws::WebSocket>,
            Relay<ConnectionSlot>,
        ) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slot = ConnectionSlot::take(&state.connections, state.config.max_connections);
    let Some(slot) = slot else {
        state.metrics.connections_refused.inc();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this gateway is at its connection limit; retry shortly",
        )
            .into_response();
    };
    let relay = Relay {
        request,
        routes: Arc::clone(&state.routes),
        config: Arc::clone(&state.config),
        stopping: state.stopping.clone(),
        metrics: Arc::clone(&state.metrics),
        guard: slot,
    };
    // tungstenite zero-fills its whole read buffer before each read: the 128 KiB default
    // cost three quarters of the gateway's CPU and 128 KiB per idle connection. Client
    // messages are small (an edit, a cursor, a keystroke's Yjs update); 1 KiB reads take them
    // whole, and a large paste or a first sync simply takes several reads (4 KiB cost 3 KiB
    // more per idle connection, BENCHMARKS.md).
    upgrade
        .read_buffer_size(1024)
        .max_message_size(state.config.max_message_bytes())
        .on_upgrade(move |ws| {
            let (sink, stream) = futures::StreamExt::split(ws);
            serve(sink, stream, relay)
        })
}

/// A y-websocket client of the Yjs document `y:<room>` (see `relay::relay_yjs`): the same
/// gate as the OT socket (`token`, `otp`), then binary frames relayed to the owner.
async fn yjs_route(
    Path(room): Path<String>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !valid_document_id(&room) {
        return bad_request("invalid room: use 1-256 of A-Z a-z 0-9 - _ .");
    }
    let Ok(Query(query)) = query else {
        return bad_request("invalid query: otp and token are text");
    };
    let id = format!("{YJS_PREFIX}{room}");
    let credentials =
        Credentials::from_request(&headers, query.token.as_deref(), query.otp.as_deref());
    let grant = match gate_socket(&state, &id, &credentials, peer, &headers).await {
        Ok(grant) => grant,
        Err(refusal) => return upgrade.on_upgrade(move |ws| relay::refuse_yjs(ws, refusal)),
    };
    let request = SocketRequest {
        document_id: id,
        client_id: None,
        resume: None,
        otp: credentials.password,
        grant,
    };
    relay_socket(&state, upgrade, request, relay::relay_yjs)
}

/// `token` and `otp` on the read API (`/api/text`, presence).
#[derive(Deserialize)]
pub struct ReadQuery {
    /// Bearer token, when not in the Authorization header.
    pub token: Option<String>,
    /// The document's password, when not in the X-Document-Password header.
    pub otp: Option<String>,
}

/// Admits a read of `id` through the gate, or answers with the refusal (JSON, 401, 403,
/// 429 or 503). Every read API goes through here.
pub async fn admit_read(
    state: &AppState,
    id: &str,
    query: &ReadQuery,
    headers: &HeaderMap,
    peer: SocketAddr,
    unreachable: IfOwnerUnreachable,
) -> Result<(), Response> {
    let credentials =
        Credentials::from_request(headers, query.token.as_deref(), query.otp.as_deref());
    let admitted = state
        .gate
        .admit(
            id,
            &credentials,
            state.client_ip(peer, headers),
            unreachable,
        )
        .await;
    match admitted {
        Ok(_) => Ok(()),
        Err(refusal) => {
            refusal.count(&state.metrics);
            Err(refusal.response(state.gate.login_url()))
        }
    }
}

async fn text_route(
    Path(id): Path<String>,
    Query(query): Query<ReadQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    if !valid_any_document_id(&id) {
        return bad_request("invalid document id: use 1-256 of A-Z a-z 0-9 - _ .");
    }
    if let Err(response) = admit_read(
        &state,
        &id,
        &query,
        &headers,
        peer,
        IfOwnerUnreachable::Refuse,
    )
    .await
    {
        return response;
    }
    let answer = state
        .routes
        .call(&id, |client| {
            let request = pb::GetTextRequest {
                document_id: id.clone(),
            };
            async move { client.get_text(request).await }
        })
        .await;
    match answer {
        Ok((_, reply)) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            reply.into_inner().text,
        )
            .into_response(),
        Err(status) => {
            (StatusCode::SERVICE_UNAVAILABLE, status.message().to_owned()).into_response()
        }
    }
}

/// One of MAX_CONNECTIONS; released on drop.
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        let mut current = count.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return None;
            }
            match count.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Self(Arc::clone(count))),
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /api/stats`, as Rustpad answers it.
#[derive(Serialize)]
struct Stats {
    start_time: u64,
    num_documents: u64,
    database_size: u64,
}

async fn stats_route(State(state): State<AppState>) -> Response {
    let nodes = state.routes.ring().nodes().to_vec();
    let mut stats = Stats {
        start_time: state.start_time,
        num_documents: 0,
        database_size: 0,
    };
    for node in nodes {
        let client = node.link;
        if let Ok(reply) = client.get_stats(pb::GetStatsRequest {}).await {
            let reply = reply.into_inner();
            stats.num_documents += reply.num_documents;
            // Docnodes of one cluster share a database, so each reports the same total.
            stats.database_size = stats.database_size.max(reply.database_size);
        }
    }
    Json(stats).into_response()
}

/// Ready means: the membership view holds at least one docnode to route to.
pub fn readiness(state: &AppState) -> codraft_common::admin::Readiness {
    let routes = Arc::clone(&state.routes);
    Arc::new(move || {
        let docnodes = routes.ring().nodes().len();
        Box::pin(async move {
            match docnodes {
                0 => Err("no docnode known".to_owned()),
                n => Ok(format!("ready: {n} docnodes")),
            }
        })
    })
}
