//! The gateway's HTTP routes: the web client, the WebSocket, the small JSON API and health.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{Path, Query, State, WebSocketUpgrade},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use codraft_proto as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    assets,
    auth::{Auth, AuthError},
    config::GatewayConfig,
    ring::Ring,
    routes::Routes,
    socket::{self, SocketRequest},
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
}

impl AppState {
    /// State over a ring that membership updates.
    pub fn new(ring: watch::Receiver<Ring>, config: GatewayConfig, auth: Auth) -> Self {
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            routes: Arc::new(Routes::new(ring)),
            config: Arc::new(config),
            start_time,
            auth,
            connections: Arc::default(),
        }
    }
}

/// All routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/app.css", get(assets::app_css))
        .route("/api/socket/{id}", get(socket_route))
        .route("/api/text/{id}", get(text_route))
        .route("/api/stats", get(stats_route))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Whether `id` is a valid document id: 1–256 of `A-Z a-z 0-9 - _ .`.
pub fn valid_document_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `id` is a valid exactly-once client id: 1–64 of `A-Z a-z 0-9 - _`.
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
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

/// The bearer token of a request: the Authorization header, else the `token` parameter.
fn bearer(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| query.map(str::to_owned))
}

fn refuse(error: &AuthError) -> Response {
    let status = match error {
        AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    (status, error.to_string()).into_response()
}

async fn socket_route(
    Path(id): Path<String>,
    query: Result<Query<SocketQuery>, axum::extract::rejection::QueryRejection>,
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
    let grant = match state
        .auth
        .authorize(bearer(&headers, query.token.as_deref()).as_deref(), &id)
    {
        Ok(grant) => grant,
        Err(error) => return refuse(&error),
    };
    let slot = ConnectionSlot::take(&state.connections, state.config.max_connections);
    let Some(slot) = slot else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this gateway is at its connection limit; retry shortly",
        )
            .into_response();
    };
    let request = SocketRequest {
        document_id: id,
        client_id: query.client,
        resume: query.resume,
        otp: query.otp,
        grant,
    };
    let routes = Arc::clone(&state.routes);
    let config = (*state.config).clone();
    upgrade
        .max_message_size(config.max_message_bytes())
        .on_upgrade(move |ws| async move {
            socket::relay(ws, request, routes, config).await;
            drop(slot);
        })
}

/// `token` on `/api/text`.
#[derive(Deserialize)]
struct TextQuery {
    token: Option<String>,
}

async fn text_route(
    Path(id): Path<String>,
    Query(query): Query<TextQuery>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    if !valid_document_id(&id) {
        return bad_request("invalid document id: use 1-256 of A-Z a-z 0-9 - _ .");
    }
    if let Err(error) = state
        .auth
        .authorize(bearer(&headers, query.token.as_deref()).as_deref(), &id)
    {
        return refuse(&error);
    }
    let answer = state
        .routes
        .call(&id, |mut client| {
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
        let mut client = node.client;
        if let Ok(reply) = client.get_stats(pb::GetStatsRequest {}).await {
            let reply = reply.into_inner();
            stats.num_documents += reply.num_documents;
            // Docnodes of one cluster share a database, so each reports the same total.
            stats.database_size = stats.database_size.max(reply.database_size);
        }
    }
    Json(stats).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.routes.ring().nodes().len() {
        0 => (StatusCode::SERVICE_UNAVAILABLE, "no docnode known").into_response(),
        n => format!("ready: {n} docnodes").into_response(),
    }
}
