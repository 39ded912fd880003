//! `late-join`: builds a document with a long history, then times newcomers joining it.
//!
//! Building: one client sends `--ops` edits, pipelined (`--window` edits in flight, each
//! based on the latest revision it has seen; the server transforms them past each other, as
//! it would for many concurrent typists). Each edit is one keystroke: an insert while the
//! document is shorter than `--max-chars`, then a one-character replacement, so the history
//! grows to `--ops` revisions while the document stays a realistic size. What matters is the
//! number of revisions: a server that replays history to joiners (Rustpad) sends all of them.
//! One connection sending thousands of edits a second exceeds codraft's per-connection edit
//! rate limit, so the server under test must be started with that limit raised
//! (`EDITS_PER_SECOND=1000000 EDIT_BURST=1000000`); the scenario says so if it is not.
//!
//! Joining: a raw WebSocket client (so that every byte is counted) connects `--joins` times
//! while the document is loaded, and records the time to the first History, the time until
//! it holds the full text, and the bytes received until then; the same join on a fresh,
//! empty document gives the fixed cost for contrast. The text must equal `GET /api/text`.

use std::time::{Duration, Instant};

use clap::Args;
use codraft_ot::Operation;
use codraft_testkit::{
    client::{Client, ClientError, Options},
    http::HttpTarget,
};
use futures::StreamExt;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{document_name, run_id, RunOptions, ScenarioError};

use crate::{
    latency::{ms, Latency, LatencySummary},
    progress::Progress,
    report::{bytes, rate, thousands, Outcome},
};

/// Characters a builder keystroke types (one code point each, several scripts).
const KEYS: &[char] = &['a', 'e', ' ', 'é', 'ж', '中', '🎉', '\n', 'x'];

/// The close code of a connection that sent too many edits per second.
const RATE_LIMITED: u64 = 4429;

/// Longest wait for any one message.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings of the `late-join` scenario.
#[derive(Debug, Clone, Args)]
pub struct LateJoinConfig {
    /// Revisions of history to build.
    #[arg(long, default_value_t = 280_000)]
    pub ops: u64,
    /// Edits the builder keeps in flight.
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    /// Document length (code points) after which edits replace instead of insert.
    #[arg(long, default_value_t = 50_000)]
    pub max_chars: u64,
    /// Timed joins.
    #[arg(long, default_value_t = 5)]
    pub joins: usize,
    /// Give up building after this many seconds (at most 600) and time the joins on what
    /// was built.
    #[arg(long, default_value_t = 55.0)]
    pub build_seconds: f64,
}

/// One timed join.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct JoinSample {
    /// TCP connect and WebSocket handshake, ms.
    pub handshake_ms: f64,
    /// From the start until the first History message arrived, ms.
    pub first_history_ms: f64,
    /// From the start until the text was parsed and applied: the client holds the full
    /// text, ms.
    pub full_text_ms: f64,
    /// WebSocket payload bytes received until then.
    pub bytes: u64,
}

/// What a `late-join` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LateJoinOutcome {
    /// Revisions asked for.
    pub ops_requested: u64,
    /// Revisions built (the builder's acknowledged edits).
    pub revisions_built: u64,
    /// Whether all asked-for revisions were built in time.
    pub complete: bool,
    /// Time to build, seconds.
    pub build_seconds: f64,
    /// Revisions per second while building (one pipelining client).
    pub build_revisions_per_second: f64,
    /// History bytes the builder received: about what a full-history replay would send.
    pub replay_bytes: u64,
    /// Document length, code points.
    pub doc_chars: u64,
    /// Document size, UTF-8 bytes.
    pub doc_bytes: u64,
    /// Each timed join.
    pub joins: Vec<JoinSample>,
    /// Time to the full text over the joins.
    pub full_text: LatencySummary,
    /// Most bytes any join received.
    pub join_bytes: u64,
    /// The same join on a fresh, empty document.
    pub fresh_join: Option<JoinSample>,
    /// Whether every joiner's text was the server's.
    pub text_matches: bool,
    /// Time-to-full-text histogram, for the plot.
    #[serde(skip)]
    pub full_text_histogram: Latency,
}

impl Outcome for LateJoinOutcome {
    fn scenario(&self) -> &'static str {
        "late-join"
    }

    fn headline(&self) -> String {
        format!(
            "late-join: a document with {} revisions of history",
            thousands(self.revisions_built)
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let median = |f: fn(&JoinSample) -> f64| {
            let mut values: Vec<f64> = self.joins.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(0.0)
        };
        let mut rows = vec![
            (
                "history built".into(),
                format!(
                    "{} of {} revisions in {:.1} s ({}){}",
                    thousands(self.revisions_built),
                    thousands(self.ops_requested),
                    self.build_seconds,
                    rate(self.build_revisions_per_second),
                    if self.complete { "" } else { ": INCOMPLETE" }
                ),
            ),
            (
                "document".into(),
                format!(
                    "{} chars, {}",
                    thousands(self.doc_chars),
                    bytes(self.doc_bytes)
                ),
            ),
            (
                "time to full text (median of joins)".into(),
                format!(
                    "{} ms (handshake {} ms, first History {} ms)",
                    ms(median(|j| j.full_text_ms)),
                    ms(median(|j| j.handshake_ms)),
                    ms(median(|j| j.first_history_ms))
                ),
            ),
            ("time to full text".into(), self.full_text.line()),
            (
                "bytes received by a joiner".into(),
                format!(
                    "{} ({:.2} × the document)",
                    bytes(self.join_bytes),
                    self.join_bytes as f64 / self.doc_bytes.max(1) as f64
                ),
            ),
            (
                "full-history replay would be about".into(),
                bytes(self.replay_bytes),
            ),
        ];
        if let Some(fresh) = &self.fresh_join {
            rows.push((
                "join of an empty document, for contrast".into(),
                format!("{} ms, {}", ms(fresh.full_text_ms), bytes(fresh.bytes)),
            ));
        }
        rows.push((
            "joiners' text equals GET /api/text".into(),
            if self.text_matches { "yes" } else { "NO" }.into(),
        ));
        rows
    }

    fn latencies(&self) -> Vec<(&'static str, &Latency)> {
        vec![("late join: time to full text", &self.full_text_histogram)]
    }

    fn passed(&self) -> bool {
        self.complete && self.text_matches && !self.joins.is_empty()
    }
}

#[derive(Deserialize)]
struct History {
    start: u64,
    operations: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    id: u64,
    operation: Operation,
}

/// The builder's next keystroke on a document of `len` code points.
fn keystroke(rng: &mut StdRng, len: u64, max_chars: u64) -> Operation {
    let key = KEYS[rng.random_range(0..KEYS.len())];
    let mut buffer = [0u8; 4];
    let key = key.encode_utf8(&mut buffer);
    let mut op = Operation::new();
    if len < max_chars {
        let at = rng.random_range(0..=len);
        op.retain(at).insert(key).retain(len - at);
    } else {
        // Replace one character: the history grows, the document does not.
        let at = rng.random_range(0..len);
        op.retain(at).delete(1).insert(key).retain(len - at - 1);
    }
    op
}

/// What the builder achieved.
struct Built {
    revisions: u64,
    seconds: f64,
    replay_bytes: u64,
}

/// Sends `config.ops` pipelined edits to `document` and waits for their acknowledgements.
async fn build(
    run: &RunOptions,
    config: &LateJoinConfig,
    document: &str,
    bar: &Progress,
) -> Result<(Client, Built), ScenarioError> {
    // The builder speaks the plain protocol: it keeps many edits in flight, which the
    // exactly-once extension's one-outstanding-edit rule does not allow.
    let mut builder = Client::connect(&run.url, document, Options::default()).await?;
    builder
        .set_nodelay(true)
        .map_err(|e| ClientError::Socket(e.into()))?;
    let me = builder.user_id;
    let mut revision = builder.revision;
    let mut len = builder.len();
    let mut rng = StdRng::seed_from_u64(0x1a7e);
    let (mut sent, mut built, mut in_flight, mut replay_bytes) = (0u64, 0u64, 0usize, 0u64);
    let started = Instant::now();
    let limit = Duration::from_secs_f64(config.build_seconds);
    while built < config.ops && started.elapsed() < limit {
        while in_flight < config.window && sent < config.ops {
            let op = keystroke(&mut rng, len, config.max_chars);
            builder
                .send_json(&json!({"Edit": {"revision": revision, "operation": op}}))
                .await?;
            in_flight += 1;
            sent += 1;
        }
        let message = builder.next_message(MESSAGE_TIMEOUT).await?;
        if let Some(error) = message.get("Error") {
            let hint = if error["code"].as_u64() == Some(RATE_LIMITED) {
                "; the server limits edits per connection: start codraft with \
                 EDITS_PER_SECOND=1000000 EDIT_BURST=1000000 for this scenario"
            } else {
                ""
            };
            return Err(ScenarioError::Setup(format!(
                "the server refused a history edit after {built} revisions: {error}{hint}"
            )));
        }
        let Some(history) = message.get("History") else {
            continue;
        };
        replay_bytes += message.to_string().len() as u64;
        let history: History = serde_json::from_value(history.clone())
            .map_err(|e| ClientError::Protocol(format!("bad History: {e}")))?;
        let skip = revision.saturating_sub(history.start) as usize;
        for entry in history.operations.into_iter().skip(skip) {
            revision += 1;
            len = entry.operation.target_len();
            if entry.id == me {
                in_flight = in_flight.saturating_sub(1);
                built += 1;
            }
        }
        bar.set_position(built);
    }
    Ok((
        builder,
        Built {
            revisions: built,
            seconds: started.elapsed().as_secs_f64(),
            replay_bytes,
        },
    ))
}

/// Joins `document` with a raw WebSocket and times it; returns the sample and the text.
async fn time_join(
    run: &RunOptions,
    document: &str,
) -> Result<(JoinSample, String), ScenarioError> {
    let mut url = format!("{}/api/socket/{document}", run.url);
    if let Some(id) = run.client_options().client_id {
        url.push_str(&format!("?client={id}"));
    }
    let started = Instant::now();
    // Nagle off, as a browser's WebSocket has it.
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(ClientError::from)?;
    let handshake = started.elapsed();
    let mut received = 0u64;
    let mut identified = false;
    loop {
        let frame = tokio::time::timeout(MESSAGE_TIMEOUT, socket.next())
            .await
            .map_err(|_| ClientError::Timeout)?
            .ok_or(ClientError::Closed {
                code: 1006,
                reason: "connection ended during the join".into(),
            })?
            .map_err(ClientError::from)?;
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(frame) => {
                return Err(ClientError::Closed {
                    code: frame.as_ref().map_or(1005, |f| u16::from(f.code)),
                    reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                }
                .into())
            }
            _ => continue,
        };
        received += text.len() as u64;
        let first_history = started.elapsed();
        let message: Value = serde_json::from_str(text.as_str())
            .map_err(|e| ClientError::Protocol(format!("bad JSON from server: {e}")))?;
        if message.get("Identity").is_some() {
            identified = true;
            continue;
        }
        let Some(history) = message.get("History") else {
            continue;
        };
        let history: History = serde_json::from_value(history.clone())
            .map_err(|e| ClientError::Protocol(format!("bad History: {e}")))?;
        let mut document_text = String::new();
        for entry in &history.operations {
            document_text = entry
                .operation
                .apply_str(&document_text)
                .map_err(ClientError::from)?;
        }
        let full_text = started.elapsed();
        if !identified {
            return Err(ClientError::Protocol("History before Identity".into()).into());
        }
        let _ = socket.close(None).await;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        return Ok((
            JoinSample {
                handshake_ms: ms(handshake),
                first_history_ms: ms(first_history),
                full_text_ms: ms(full_text),
                bytes: received,
            },
            document_text,
        ));
    }
}

/// Runs the `late-join` scenario.
pub async fn run(
    run: &RunOptions,
    config: &LateJoinConfig,
) -> Result<LateJoinOutcome, ScenarioError> {
    if config.ops == 0 || config.window == 0 || config.max_chars == 0 || config.joins == 0 {
        return Err(ScenarioError::Setup(
            "--ops, --window, --max-chars and --joins must be at least 1".into(),
        ));
    }
    if !(config.build_seconds > 0.0 && config.build_seconds <= 600.0) {
        return Err(ScenarioError::Setup(
            "--build-seconds must be more than 0 and at most 600".into(),
        ));
    }
    let http = HttpTarget::from_ws_url(&run.url)?;
    let id = run_id();
    let document = document_name(id, "history");
    let bar = Progress::new(run.progress, "history", config.ops);
    let (builder, built) = build(run, config, &document, &bar).await?;
    bar.finish();

    let server_text = http.document_text(&document).await?;
    let mut joins = Vec::with_capacity(config.joins);
    let mut histogram = Latency::new();
    let mut text_matches = true;
    for _ in 0..config.joins {
        let (sample, text) = time_join(run, &document).await?;
        histogram.record(Duration::from_secs_f64(sample.full_text_ms / 1000.0));
        text_matches &= text == server_text;
        joins.push(sample);
    }
    let fresh = time_join(run, &document_name(id, "fresh"))
        .await
        .ok()
        .map(|(sample, _)| sample);
    builder.close().await;

    Ok(LateJoinOutcome {
        ops_requested: config.ops,
        revisions_built: built.revisions,
        complete: built.revisions >= config.ops,
        build_seconds: built.seconds,
        build_revisions_per_second: built.revisions as f64 / built.seconds.max(1e-9),
        replay_bytes: built.replay_bytes,
        doc_chars: server_text.chars().count() as u64,
        doc_bytes: server_text.len() as u64,
        join_bytes: joins.iter().map(|j| j.bytes).max().unwrap_or(0),
        joins,
        full_text: histogram.summary(),
        fresh_join: fresh,
        text_matches,
        full_text_histogram: histogram,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystrokes_fit_the_document() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut text = String::new();
        for _ in 0..200 {
            let len = text.chars().count() as u64;
            let op = keystroke(&mut rng, len, 50);
            text = op.apply_str(&text).expect("fits");
        }
        assert_eq!(text.chars().count(), 50, "grows to the cap, then replaces");
    }
}
