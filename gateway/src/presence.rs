//! `GET /api/documents/{id}/presence`: who is in a document now, and where their cursors
//! are, read straight from Redis (what the owning docnode publishes), so any gateway answers
//! without asking the owner. Only served when the gateway has REDIS_URL.

use std::time::Duration;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use codraft_common::{membership::MembershipConfig, presence::PresenceRedis};
use serde_json::json;

use crate::http::valid_document_id;

/// The presence route over the cluster's Redis, or `None` without REDIS_URL (or with a bad
/// one, which membership reports at start-up anyway).
pub fn routes(membership: &MembershipConfig) -> Option<Router> {
    let url = membership.redis_url.as_deref()?;
    // Reads never write, so the TTL here is irrelevant.
    let redis = PresenceRedis::new(url, &membership.redis_prefix, Duration::from_secs(30))
        .map_err(|error| tracing::warn!(%error, "presence API disabled"))
        .ok()?;
    Some(
        Router::new()
            .route("/api/documents/{id}/presence", get(presence_route))
            .with_state(redis),
    )
}

async fn presence_route(State(redis): State<PresenceRedis>, Path(id): Path<String>) -> Response {
    if !valid_document_id(&id) {
        return (
            StatusCode::BAD_REQUEST,
            "document ids are 1-256 of A-Z a-z 0-9 - _ .",
        )
            .into_response();
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
