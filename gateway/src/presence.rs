//! `GET /api/documents/{id}/presence`: who is in a document now, and where their cursors
//! are, read straight from Redis (what the owning docnode publishes), so any gateway answers
//! without asking the owner. Only served when the gateway has REDIS_URL. It is a read path
//! like any other: the token and the document's password are checked first ([`admit_read`]).

use std::time::Duration;

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use codraft_common::{membership::MembershipConfig, presence::PresenceRedis};
use serde_json::json;

use crate::{
    gate::IfOwnerUnreachable,
    http::{admit_read, valid_any_document_id, AppState, ReadQuery},
};

/// The cluster's presence store, or `None` without REDIS_URL (or with a bad one, which
/// membership reports at start-up anyway).
pub fn redis(membership: &MembershipConfig) -> Option<PresenceRedis> {
    let url = membership.redis_url.as_deref()?;
    // Reads never write, so the TTL here is irrelevant.
    PresenceRedis::new(
        url,
        membership.redis_ca_file.as_deref(),
        &membership.redis_prefix,
        Duration::from_secs(30),
    )
    .map_err(|error| tracing::warn!(%error, "presence API disabled"))
    .ok()
}

/// The presence route over `redis`, behind the gateway's token and password checks.
pub fn routes(redis: PresenceRedis, state: AppState) -> Router {
    Router::new()
        .route("/api/documents/{id}/presence", get(presence_route))
        .with_state((redis, state))
}

async fn presence_route(
    State((redis, state)): State<(PresenceRedis, AppState)>,
    Path(id): Path<String>,
    Query(query): Query<ReadQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !valid_any_document_id(&id) {
        return (
            StatusCode::BAD_REQUEST,
            "document ids are 1-256 of A-Z a-z 0-9 - _ .",
        )
            .into_response();
    }
    // An owner that died leaves entries that expire by themselves; a document this gateway
    // saw open moments ago may still be listed meanwhile.
    let unreachable = IfOwnerUnreachable::AdmitIfSeenOpen;
    if let Err(refusal) = admit_read(&state, &id, &query, &headers, peer, unreachable).await {
        return refusal;
    }
    match redis.read(&id, false).await {
        Ok(entries) => Json(json!({
            "document": id,
            "count": entries.len(),
            "users": entries.iter().map(|e| e.to_api_json()).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(error) => {
            tracing::debug!(%error, "presence read failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "presence is unavailable (Redis unreachable); retry shortly",
            )
                .into_response()
        }
    }
}
