//! The version-history API: `GET /api/documents/{id}/history`, `.../text`, `.../diff` and
//! `POST .../restore` (docs/api.md has each with an example).
//!
//! Each request passes the same gate as the socket and `/api/text` (token, then password;
//! a restore needs a token that may write) and is then one call to the document's owner,
//! which answers from the store or, for a restore, makes one new edit. The docnode says why
//! a revision cannot be served (`HistoryError`); this file only turns that into a status:
//! unknown document 404, revision out of range 416, compacted away 410, bad parameters 400.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use codraft_proto as pb;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    auth::Access,
    gate::{Credentials, IfOwnerUnreachable},
    http::{admit_read, valid_any_document_id, valid_document_id, AppState, ReadQuery},
};

/// Longest idempotency key a restore takes.
const MAX_KEY: usize = 40;

/// The history routes, merged into the gateway's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/documents/{id}/history", get(history_route))
        .route("/api/documents/{id}/text", get(text_route))
        .route("/api/documents/{id}/diff", get(diff_route))
        .route("/api/documents/{id}/restore", post(restore_route))
}

/// A JSON error: `{"error": kind, "message": words, ...extra}`.
fn error(status: StatusCode, kind: &str, message: &str, extra: Value) -> Response {
    let mut body = json!({ "error": kind, "message": message });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    (status, Json(body)).into_response()
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message, Value::Null)
}

fn extent_json(extent: &pb::HistoryExtent) -> Value {
    json!({
        "revision": extent.revision,
        "exact_from": extent.exact_from,
        "checkpoints": extent.checkpoints,
    })
}

/// The status and body of a docnode's history error.
fn history_error(e: &pb::HistoryError) -> Response {
    use pb::history_error::Kind;
    let (status, kind) = match e.kind() {
        Kind::UnknownDocument => (StatusCode::NOT_FOUND, "unknown_document"),
        Kind::OutOfRange => (StatusCode::RANGE_NOT_SATISFIABLE, "revision_out_of_range"),
        Kind::Compacted => (StatusCode::GONE, "revision_compacted"),
        Kind::BadRequest => (StatusCode::BAD_REQUEST, "bad_request"),
    };
    let extra = match &e.extent {
        Some(extent) => json!({
            "valid_range": { "first": 0, "last": extent.revision },
            "kept": extent_json(extent),
        }),
        None => Value::Null,
    };
    error(status, kind, &e.message, extra)
}

fn unavailable(status: &tonic::Status) -> Response {
    let code = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, "unavailable", status.message(), Value::Null)
}

/// An operation as Rustpad JSON: retain n, delete -n, insert "text".
fn operation_json(operation: &pb::Operation) -> Value {
    use pb::component::Kind;
    Value::Array(
        operation
            .components
            .iter()
            .filter_map(|c| match &c.kind {
                Some(Kind::Retain(n)) => Some(json!(n)),
                Some(Kind::Delete(n)) => Some(json!(-i128::from(*n))),
                Some(Kind::Insert(s)) => Some(json!(s)),
                None => None,
            })
            .collect(),
    )
}

fn authors_json(authors: &[pb::HistoryAuthor]) -> Value {
    Value::Array(
        authors
            .iter()
            .map(|a| json!({ "id": a.user_id, "name": a.name, "hue": a.hue }))
            .collect(),
    )
}

/// Parses an optional number parameter; the error names it.
fn number<T: std::str::FromStr>(name: &str, value: Option<&str>) -> Result<Option<T>, String> {
    value
        .map(|v| {
            v.parse()
                .map_err(|_| format!("{name} must be a whole number, not {v:?}"))
        })
        .transpose()
}

/// `token`, `otp` and the endpoint's own parameters, all as text so a bad value gets a
/// message naming it.
#[derive(Deserialize)]
struct HistoryQuery {
    token: Option<String>,
    otp: Option<String>,
    before: Option<String>,
    limit: Option<String>,
    revision: Option<String>,
    at: Option<String>,
    from: Option<String>,
    to: Option<String>,
    root: Option<String>,
}

impl HistoryQuery {
    fn credentials(&self) -> ReadQuery {
        ReadQuery {
            token: self.token.clone(),
            otp: self.otp.clone(),
        }
    }
}

/// Which documents an endpoint serves: the history and the text at a revision exist for
/// both kinds, a diff and a restore (made of OT operations) for OT documents only.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kinds {
    OtAndYjs,
    OtOnly,
}

/// Why a document id is refused (400): a bad id, or a Yjs id where only OT documents are
/// served.
fn id_refusal(id: &str, kinds: Kinds) -> Option<&'static str> {
    if kinds == Kinds::OtOnly && codraft_common::ids::is_yjs(id) {
        return Some(
            "a Yjs document has a history and its text at any revision, but no diff or restore",
        );
    }
    let valid = match kinds {
        Kinds::OtAndYjs => valid_any_document_id(id),
        Kinds::OtOnly => valid_document_id(id),
    };
    (!valid)
        .then_some("invalid document id: use 1-256 of A-Z a-z 0-9 - _ . (a Yjs document: y:<room>)")
}

/// The checks every read endpoint starts with: the id, the query, the gate.
async fn admit(
    state: &AppState,
    id: &str,
    kinds: Kinds,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<HistoryQuery, Response> {
    if let Some(message) = id_refusal(id, kinds) {
        return Err(bad_request(message));
    }
    let Ok(Query(query)) = query else {
        return Err(bad_request("invalid query string"));
    };
    admit_read(
        state,
        id,
        &query.credentials(),
        headers,
        peer,
        IfOwnerUnreachable::Refuse,
    )
    .await?;
    Ok(query)
}

async fn history_route(
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    let query = match admit(&state, &id, Kinds::OtAndYjs, query, &headers, peer).await {
        Ok(query) => query,
        Err(response) => return response,
    };
    let parsed = number::<u64>("before", query.before.as_deref())
        .and_then(|before| Ok((before, number::<u32>("limit", query.limit.as_deref())?)));
    let (before, limit) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return bad_request(&message),
    };
    if limit.is_some_and(|l| l == 0 || l > 200) {
        return bad_request("limit must be between 1 and 200");
    }
    let request = pb::GetHistoryRequest {
        document_id: id.clone(),
        before,
        limit: limit.unwrap_or(50),
    };
    let answer = state
        .routes
        .call(&id, |client| {
            let request = request.clone();
            async move { client.get_history(request).await }
        })
        .await;
    let reply = match answer {
        Ok((_, reply)) => reply.into_inner(),
        Err(status) => return unavailable(&status),
    };
    if let Some(e) = &reply.error {
        return history_error(e);
    }
    let extent = reply.extent.unwrap_or_default();
    let name_of = |user_id: u64| reply.authors.iter().find(|a| a.user_id == user_id);
    let sessions: Vec<Value> = reply
        .sessions
        .iter()
        .map(|s| {
            let author = name_of(s.user_id);
            json!({
                "first_revision": s.first_revision,
                "last_revision": s.last_revision,
                "author": {
                    "id": s.user_id,
                    "name": author.map(|a| a.name.as_str()),
                    "hue": author.map(|a| a.hue),
                },
                "started": format_rfc3339(s.started_ms),
                "ended": format_rfc3339(s.ended_ms),
                "started_ms": s.started_ms,
                "ended_ms": s.ended_ms,
                "inserted": s.inserted,
                "deleted": s.deleted,
                "edits": s.edits,
            })
        })
        .collect();
    Json(json!({
        "revision": extent.revision,
        "exact_from": extent.exact_from,
        "checkpoints": extent.checkpoints,
        "sessions": sessions,
        "next_before": reply.next_before,
    }))
    .into_response()
}

async fn text_route(
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    let query = match admit(&state, &id, Kinds::OtAndYjs, query, &headers, peer).await {
        Ok(query) => query,
        Err(response) => return response,
    };
    let revision = match number::<u64>("revision", query.revision.as_deref()) {
        Ok(revision) => revision,
        Err(message) => return bad_request(&message),
    };
    let at_ms = match query.at.as_deref().map(parse_rfc3339) {
        Some(Some(ms)) => Some(ms),
        Some(None) => return bad_request("at must be an RFC 3339 time, like 2026-11-29T01:30:00Z"),
        None => None,
    };
    if revision.is_some() == at_ms.is_some() {
        return bad_request("give exactly one of revision=N and at=RFC3339");
    }
    let request = pb::GetTextAtRequest {
        document_id: id.clone(),
        revision,
        at_ms,
        yjs_root: query.root.unwrap_or_default(),
    };
    let answer = state
        .routes
        .call(&id, |client| {
            let request = request.clone();
            async move { client.get_text_at(request).await }
        })
        .await;
    let reply = match answer {
        Ok((_, reply)) => reply.into_inner(),
        Err(status) => return unavailable(&status),
    };
    if let Some(e) = &reply.error {
        return history_error(e);
    }
    let extent = reply.extent.unwrap_or_default();
    Json(json!({
        "revision": reply.revision,
        "text": reply.text,
        "newest_revision": extent.revision,
        "exact_from": extent.exact_from,
    }))
    .into_response()
}

async fn diff_route(
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    let query = match admit(&state, &id, Kinds::OtOnly, query, &headers, peer).await {
        Ok(query) => query,
        Err(response) => return response,
    };
    let parsed = number::<u64>("from", query.from.as_deref())
        .and_then(|from| Ok((from, number::<u64>("to", query.to.as_deref())?)));
    let (from, to) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return bad_request(&message),
    };
    // No `to`: the newest revision, which only the docnode knows.
    let request = pb::GetDiffRequest {
        document_id: id.clone(),
        from: from.unwrap_or(0),
        to,
    };
    let answer = state
        .routes
        .call(&id, |client| {
            let request = request.clone();
            async move { client.get_diff(request).await }
        })
        .await;
    let reply = match answer {
        Ok((_, reply)) => reply.into_inner(),
        Err(status) => return unavailable(&status),
    };
    if let Some(e) = &reply.error {
        return history_error(e);
    }
    let spans: Vec<Value> = reply
        .spans
        .iter()
        .map(|s| json!({ "length": s.length, "author": s.user_id }))
        .collect();
    Json(json!({
        "operation": reply.operation.as_ref().map(operation_json),
        "spans": spans,
        "authors": authors_json(&reply.authors),
        "revision": reply.extent.map(|e| e.revision),
    }))
    .into_response()
}

/// The body of `POST .../restore`.
#[derive(Deserialize)]
struct RestoreBody {
    /// The revision whose text the document gets back.
    revision: u64,
    /// Makes a retried restore count once; also taken from the Idempotency-Key header.
    #[serde(default)]
    key: Option<String>,
}

async fn restore_route(
    Path(id): Path<String>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(state): State<AppState>,
    body: Result<Json<RestoreBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(message) = id_refusal(&id, Kinds::OtOnly) {
        return bad_request(message);
    }
    let Ok(Query(query)) = query else {
        return bad_request("invalid query string");
    };
    let Ok(Json(body)) = body else {
        return bad_request(
            "the body must be JSON like {\"revision\": 12}, with an optional \"key\"",
        );
    };
    let credentials =
        Credentials::from_request(&headers, query.token.as_deref(), query.otp.as_deref());
    let grant = match state
        .gate
        .admit(&id, &credentials, peer.ip(), IfOwnerUnreachable::Refuse)
        .await
    {
        Ok(grant) => grant,
        Err(refusal) => {
            refusal.count(&state.metrics);
            return refusal.response(state.gate.login_url());
        }
    };
    if grant.access != Access::Write {
        return error(
            StatusCode::FORBIDDEN,
            "read_only",
            "your token may read this document but not change it",
            Value::Null,
        );
    }
    let header_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Without a key a retry is a second restore; with one it counts once.
    let key = body
        .key
        .or(header_key)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    if key.is_empty()
        || key.len() > MAX_KEY
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return bad_request("invalid idempotency key: use 1-40 of A-Z a-z 0-9 - _");
    }
    let request = pb::RestoreRequest {
        document_id: id.clone(),
        revision: body.revision,
        idempotency_key: key.clone(),
    };
    let answer = state
        .routes
        .call(&id, |client| {
            let request = request.clone();
            async move { client.restore(request).await }
        })
        .await;
    let reply = match answer {
        Ok((_, reply)) => reply.into_inner(),
        Err(status) => return unavailable(&status),
    };
    if let Some(e) = &reply.error {
        return history_error(e);
    }
    Json(json!({
        "applied": reply.applied,
        "revision": reply.revision,
        "restored": body.revision,
        "key": key,
    }))
    .into_response()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12; // March is 0
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix milliseconds of an RFC 3339 time (`2026-11-29T01:30:00Z`, `...:00.250+02:00`).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = text.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let fraction = &text[start..i.min(start + 3)];
        millis = fraction.parse::<i64>().ok()? * 10_i64.pow(3 - fraction.len() as u32);
    }
    let offset_minutes = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let minutes = digits(i + 1, 2)? * 60 + digits(i + 4, 2)?;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// Unix milliseconds as RFC 3339 in UTC, to the millisecond.
pub fn format_rfc3339(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (rest / 3_600_000, rest / 60_000 % 60);
    let (second, millis) = (rest / 1000 % 60, rest % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_honours_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-29T01:30:00.250Z"),
            Some(1_795_915_800_250)
        );
        assert_eq!(
            parse_rfc3339("2026-11-29T03:30:00.25+02:00"),
            parse_rfc3339("2026-11-29T01:30:00.250Z")
        );
        for ms in [0, 951_782_400_000, 1_795_915_800_250, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms), "{ms}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-29T01:30:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
