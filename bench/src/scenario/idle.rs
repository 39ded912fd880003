//! `idle`: K idle connections, each joined to one of D documents, held for a moment and then
//! dropped. Reports how fast they connected and, given the server's pid, what each costs the
//! server in resident memory.
//!
//! To count the connections and not the documents, one connection per document is made
//! first (which loads the documents); the server's RSS is read after that and again once all
//! K are held and a short settling time has passed. The difference divided by the added
//! connections is the cost of one idle connection.
//!
//! The same measurement serves Yjs documents (`yjs-idle`, [`run_yjs`]): [`hold`] takes the
//! way to open one connection, and an idle y-websocket provider is one that synced (step 1,
//! step 2 both ways) and sends nothing. The URL is then the rooms' prefix (`ws://host/yjs`
//! for codraft, `ws://host:port` for y-websocket's server).
//!
//! Each connection is an open file on both sides: raise `ulimit -n` for the server (the load
//! generator raises its own soft limit to the hard limit). Idle clients read nothing while
//! held, which is fine for holds well under the server's ping period (54 s by default).

use std::{
    future::Future,
    time::{Duration, Instant},
};

use clap::Args;
use codraft_testkit::client::ClientError;
use serde::Serialize;

use super::{
    connect, connect_many_with, document_name, group_errors, run_id, RunOptions, ScenarioError,
};

use crate::{
    compare::{Figure, Unit},
    latency::{Latency, LatencySummary},
    process::{self, Process},
    progress::Progress,
    provider::{ClientIds, Provider},
    report::{bytes, rate, thousands, Outcome},
};

/// Most connections one run may ask for.
pub const MAX_CONNECTIONS: usize = 100_000;

/// Longest wait for one connection to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings of the `idle` scenario.
#[derive(Debug, Clone, Args)]
pub struct IdleConfig {
    /// Idle connections to hold (at most 100,000).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Documents the connections are spread over.
    #[arg(long, default_value_t = 100)]
    pub docs: usize,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Seconds to hold all connections before reading the server's memory (at most 50).
    #[arg(long, default_value_t = 2.0)]
    pub hold_seconds: f64,
    /// Stop opening connections after this many seconds (at most 120).
    #[arg(long, default_value_t = 50.0)]
    pub max_seconds: f64,
}

/// The server's memory, when its pid was given.
#[derive(Debug, Clone, Serialize)]
pub struct IdleServer {
    /// RSS with one connection per document, KiB.
    pub rss_kib_before: u64,
    /// RSS with all connections held, KiB.
    pub rss_kib_after: u64,
    /// (after − before) / added connections, KiB.
    pub rss_kib_per_connection: f64,
    /// The server's open files with all connections held.
    pub open_files: Option<usize>,
}

/// What an `idle` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleOutcome {
    /// The scenario's name: `idle` (OT clients) or `yjs-idle` (y-websocket providers).
    #[serde(skip)]
    pub scenario: &'static str,
    /// Connections asked for.
    pub requested: usize,
    /// Connections that joined (Identity and History received) and were held.
    pub connected: usize,
    /// Connections that failed, or were not attempted because time ran out.
    pub failed: usize,
    /// What went wrong, grouped.
    pub errors: Vec<String>,
    /// Documents the connections were spread over.
    pub docs: usize,
    /// Time to open all connections, seconds.
    pub connect_seconds: f64,
    /// Joined connections per second.
    pub connects_per_second: f64,
    /// Time for one connection to join.
    pub connect_latency: LatencySummary,
    /// The load generator's open-file limit after raising it.
    pub generator_open_files_limit: Option<u64>,
    /// The server's memory, if its pid was given.
    pub server: Option<IdleServer>,
    /// Join latency histogram, for the plot.
    #[serde(skip)]
    pub connect_histogram: Latency,
}

impl Outcome for IdleOutcome {
    fn scenario(&self) -> &'static str {
        self.scenario
    }

    fn headline(&self) -> String {
        format!(
            "{}: {} connections over {} documents",
            self.scenario,
            thousands(self.requested as u64),
            self.docs
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "connections held / requested".into(),
                format!(
                    "{} / {} (over {} documents)",
                    thousands(self.connected as u64),
                    thousands(self.requested as u64),
                    self.docs
                ),
            ),
            (
                "connect rate".into(),
                format!(
                    "{} ({:.1} s for all)",
                    rate(self.connects_per_second),
                    self.connect_seconds
                ),
            ),
            ("join time".into(), self.connect_latency.line()),
        ];
        match &self.server {
            Some(server) => {
                rows.push((
                    "server RSS, documents loaded → all connections held".into(),
                    format!(
                        "{} → {}",
                        bytes(server.rss_kib_before * 1024),
                        bytes(server.rss_kib_after * 1024)
                    ),
                ));
                rows.push((
                    "server RSS per idle connection".into(),
                    format!("{:.1} KiB", server.rss_kib_per_connection),
                ));
                if let Some(files) = server.open_files {
                    rows.push(("server open files".into(), thousands(files as u64)));
                }
            }
            None => rows.push((
                "server RSS per idle connection".into(),
                "not measured (give --pid)".into(),
            )),
        }
        if let Some(limit) = self.generator_open_files_limit {
            rows.push(("load generator open-file limit".into(), thousands(limit)));
        }
        for error in self.errors.iter().take(8) {
            rows.push(("error".into(), error.clone()));
        }
        rows
    }

    fn figures(&self) -> Vec<Figure> {
        vec![
            Figure::lower(
                "server RSS per idle connection",
                Unit::KiB,
                self.server.as_ref().map(|s| s.rss_kib_per_connection),
            ),
            Figure::higher(
                "connect rate",
                Unit::PerSecond,
                Some(self.connects_per_second),
            ),
            Figure::lower(
                "join time p99",
                Unit::Milliseconds,
                (self.connect_latency.count > 0).then_some(self.connect_latency.p99_ms),
            ),
        ]
    }

    fn clients(&self) -> Option<&'static str> {
        (self.scenario == "yjs-idle").then_some("y-websocket providers")
    }

    fn latencies(&self) -> Vec<(&'static str, &Latency)> {
        vec![("join (idle connections)", &self.connect_histogram)]
    }

    fn passed(&self) -> bool {
        self.connected == self.requested
    }
}

/// Runs the `idle` scenario.
pub async fn run(run: &RunOptions, config: &IdleConfig) -> Result<IdleOutcome, ScenarioError> {
    hold(run, config, "idle", |_, document| async move {
        connect(run, &document).await
    })
    .await
}

/// Runs the `yjs-idle` scenario: idle y-websocket providers at `{url}/{room}`.
pub async fn run_yjs(run: &RunOptions, config: &IdleConfig) -> Result<IdleOutcome, ScenarioError> {
    // Idle providers never type, so a random client id each is enough.
    hold(run, config, "yjs-idle", |_, room| {
        let url = &run.url;
        async move { Provider::connect(url, &room, ClientIds::random().get(0), false).await }
    })
    .await
}

/// Opens and holds the idle connections of scenario `scenario`, each made by
/// `connect(index, document)`, and measures them.
pub async fn hold<C, F>(
    run: &RunOptions,
    config: &IdleConfig,
    scenario: &'static str,
    connect: impl Fn(usize, String) -> F,
) -> Result<IdleOutcome, ScenarioError>
where
    F: Future<Output = Result<C, ClientError>>,
{
    if config.connections == 0 || config.connections > MAX_CONNECTIONS {
        return Err(ScenarioError::Setup(format!(
            "--connections must be between 1 and {MAX_CONNECTIONS}"
        )));
    }
    if config.docs == 0 || config.docs > config.connections {
        return Err(ScenarioError::Setup(
            "--docs must be between 1 and --connections".into(),
        ));
    }
    if !(0.0..=50.0).contains(&config.hold_seconds) || !(1.0..=120.0).contains(&config.max_seconds)
    {
        return Err(ScenarioError::Setup(
            "--hold-seconds must be 0–50 and --max-seconds 1–120".into(),
        ));
    }
    let limit = process::raise_open_files_limit();
    let id = run_id();
    let documents: Vec<String> = (0..config.docs).map(|d| document_name(id, d)).collect();
    let rest: Vec<String> = (config.docs..config.connections)
        .map(|i| documents[i % config.docs].clone())
        .collect();
    let server = run.pid.map(Process::Pid);
    let bar = Progress::new(run.progress, "connecting", config.connections as u64);
    let mut held: Vec<C> = Vec::with_capacity(config.connections);
    let mut errors: Vec<String> = Vec::new();
    let mut latency = Latency::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(config.max_seconds);

    // One connection per document first, so that loading the documents is not counted.
    let first = connect_many_with(
        &documents,
        config.concurrency,
        JOIN_TIMEOUT,
        &connect,
        |_| bar.inc(1),
    )
    .await;
    for connected in first {
        latency.record(connected.took);
        match connected.client {
            Ok(client) => held.push(client),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let rss_before = server.and_then(|s| s.rss_kib().ok());
    let base = held.len();

    // The rest in slices, so that the time limit is checked as they go.
    let slice = config.concurrency.max(1) * 8;
    let mut attempted = documents.len();
    for chunk in rest.chunks(slice) {
        if Instant::now() >= deadline {
            break;
        }
        attempted += chunk.len();
        let batch = connect_many_with(chunk, config.concurrency, JOIN_TIMEOUT, &connect, |_| {
            bar.inc(1)
        })
        .await;
        for connected in batch {
            latency.record(connected.took);
            match connected.client {
                Ok(client) => held.push(client),
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    bar.finish();
    if attempted < config.connections {
        errors.push(format!(
            "{} connections not attempted: --max-seconds {} reached",
            config.connections - attempted,
            config.max_seconds
        ));
    }
    tokio::time::sleep(Duration::from_secs_f64(config.hold_seconds)).await;
    let rss_after = server.and_then(|s| s.rss_kib().ok());
    let open_files = server.and_then(|s| s.open_files().ok());
    let connected = held.len();
    let added = connected.saturating_sub(base);
    // Dropping closes the sockets at once; a polite close handshake for tens of thousands
    // of connections would only measure the close path.
    drop(held);

    Ok(IdleOutcome {
        scenario,
        requested: config.connections,
        connected,
        failed: config.connections - connected,
        errors: group_errors(errors.iter().map(String::as_str)),
        docs: config.docs,
        connect_seconds,
        connects_per_second: connected as f64 / connect_seconds.max(1e-9),
        connect_latency: latency.summary(),
        generator_open_files_limit: limit,
        server: match (rss_before, rss_after) {
            (Some(before), Some(after)) => Some(IdleServer {
                rss_kib_before: before,
                rss_kib_after: after,
                rss_kib_per_connection: if added > 0 {
                    (after as f64 - before as f64) / added as f64
                } else {
                    0.0
                },
                open_files,
            }),
            _ => None,
        },
        connect_histogram: latency,
    })
}
