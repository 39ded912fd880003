//! `yjs-documents`: what a loaded Yjs document with a small text costs the server in resident
//! memory. D rooms are each opened by one provider, given a short text (U one-character
//! updates, each sent once the previous one came back) and left; the documents stay loaded
//! (y-websocket's in-memory server keeps every document for good; codraft keeps one until
//! IDLE_UNLOAD_SECS after its last client left, so run it with a long one).
//!
//! The first tenth of the rooms warms the server up (allocator arenas, buffers, the first
//! documents' shared structures) and is not counted: the server's RSS is read after them and
//! again once all rooms are loaded and a short settling time passed; the difference over the
//! rooms loaded in between is the cost of one loaded document.

use std::time::{Duration, Instant};

use clap::Args;
use codraft_testkit::client::ClientError;
use serde::Serialize;

use super::{connect_many_with, document_name, group_errors, run_id, RunOptions, ScenarioError};

use crate::{
    compare::{Figure, Unit},
    latency::{Latency, LatencySummary},
    process::Process,
    progress::Progress,
    provider::{ClientIds, Incoming, Provider},
    report::{bytes, rate, thousands, Outcome},
};

/// Most documents one run may load.
pub const MAX_DOCS: usize = 100_000;

/// Longest time to load one document (sync, type, leave).
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the `yjs-documents` scenario.
#[derive(Debug, Clone, Args)]
pub struct YjsDocumentsConfig {
    /// Documents to load (at most 100,000); the first tenth warms the server up.
    #[arg(long, default_value_t = 1000)]
    pub docs: usize,
    /// One-character updates typed into each document (1–1000).
    #[arg(long, default_value_t = 16)]
    pub updates: u32,
    /// Documents being loaded at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to wait after the last document before reading the server's memory (at
    /// most 50).
    #[arg(long, default_value_t = 2.0)]
    pub hold_seconds: f64,
}

/// The server's memory, when its pid was given.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentsServer {
    /// RSS after the warm-up documents, KiB.
    pub rss_kib_before: u64,
    /// RSS with every document loaded, KiB.
    pub rss_kib_after: u64,
    /// (after − before) / documents loaded after the warm-up, KiB.
    pub rss_kib_per_document: f64,
}

/// What a `yjs-documents` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct YjsDocumentsOutcome {
    /// Documents asked for.
    pub requested: usize,
    /// Documents loaded (synced, typed into, every update back).
    pub loaded: usize,
    /// Of them, the warm-up documents not counted in the memory figure.
    pub warm_up: usize,
    /// One-character updates per document.
    pub updates_per_doc: u32,
    /// What went wrong, grouped.
    pub errors: Vec<String>,
    /// Time to load all documents, seconds.
    pub seconds: f64,
    /// Documents loaded per second.
    pub documents_per_second: f64,
    /// Time to load one document (sync, type, leave).
    pub load_latency: LatencySummary,
    /// The server's memory, if its pid was given.
    pub server: Option<DocumentsServer>,
    /// Load latency histogram, for the plot.
    #[serde(skip)]
    pub load_histogram: Latency,
}

impl Outcome for YjsDocumentsOutcome {
    fn scenario(&self) -> &'static str {
        "yjs-documents"
    }

    fn headline(&self) -> String {
        format!(
            "yjs-documents: {} documents of {} characters",
            thousands(self.requested as u64),
            self.updates_per_doc
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "documents loaded / requested".into(),
                format!(
                    "{} / {} ({} to warm up, {} one-character updates each)",
                    thousands(self.loaded as u64),
                    thousands(self.requested as u64),
                    thousands(self.warm_up as u64),
                    self.updates_per_doc
                ),
            ),
            (
                "load rate".into(),
                format!(
                    "{} documents ({:.1} s for all)",
                    rate(self.documents_per_second),
                    self.seconds
                ),
            ),
            (
                "one document: sync, type, leave".into(),
                self.load_latency.line(),
            ),
        ];
        match &self.server {
            Some(server) => {
                rows.push((
                    "server RSS, after warm-up → all loaded".into(),
                    format!(
                        "{} → {}",
                        bytes(server.rss_kib_before * 1024),
                        bytes(server.rss_kib_after * 1024)
                    ),
                ));
                rows.push((
                    "server RSS per loaded document".into(),
                    format!("{:.1} KiB", server.rss_kib_per_document),
                ));
            }
            None => rows.push((
                "server RSS per loaded document".into(),
                "not measured (give --pid)".into(),
            )),
        }
        for error in self.errors.iter().take(8) {
            rows.push(("error".into(), error.clone()));
        }
        rows
    }

    fn figures(&self) -> Vec<Figure> {
        vec![
            Figure::lower(
                "server RSS per loaded document",
                Unit::KiB,
                self.server.as_ref().map(|s| s.rss_kib_per_document),
            ),
            Figure::higher(
                "documents loaded",
                Unit::PerSecond,
                Some(self.documents_per_second),
            ),
        ]
    }

    fn clients(&self) -> Option<&'static str> {
        Some("y-websocket providers")
    }

    fn latencies(&self) -> Vec<(&'static str, &Latency)> {
        vec![("load a document", &self.load_histogram)]
    }

    fn passed(&self) -> bool {
        self.loaded == self.requested
    }
}

/// Opens `room`, types `updates` characters one update at a time (each once the previous
/// one came back) and leaves.
async fn load_room(url: &str, room: &str, client: u64, updates: u32) -> Result<(), ClientError> {
    let mut provider = Provider::connect(url, room, client, false).await?;
    for _ in 0..updates {
        let clock = provider.type_chars(1).await?;
        loop {
            if let (
                Incoming::Update {
                    first: Some((from, at)),
                    ..
                },
                _,
            ) = provider.recv().await?
            {
                if from == client && at >= clock {
                    break;
                }
            }
        }
    }
    provider.close(Duration::from_secs(5)).await;
    Ok(())
}

/// Runs the `yjs-documents` scenario.
pub async fn run(
    run: &RunOptions,
    config: &YjsDocumentsConfig,
) -> Result<YjsDocumentsOutcome, ScenarioError> {
    if config.docs < 2 || config.docs > MAX_DOCS {
        return Err(ScenarioError::Setup(format!(
            "--docs must be between 2 and {MAX_DOCS}"
        )));
    }
    if config.updates == 0 || config.updates > 1000 {
        return Err(ScenarioError::Setup(
            "--updates must be between 1 and 1000".into(),
        ));
    }
    if !(0.0..=50.0).contains(&config.hold_seconds) {
        return Err(ScenarioError::Setup("--hold-seconds must be 0–50".into()));
    }
    let id = run_id();
    let rooms: Vec<String> = (0..config.docs).map(|d| document_name(id, d)).collect();
    let warm_up = (config.docs / 10).max(1);
    let server = run.pid.map(Process::Pid);
    let ids = ClientIds::random();
    let bar = Progress::new(run.progress, "loading", config.docs as u64);
    let mut errors = Vec::new();
    let mut latency = Latency::new();
    let mut loaded = 0;
    let mut rss_before = None;
    let started = Instant::now();
    for (offset, part) in [(0, &rooms[..warm_up]), (warm_up, &rooms[warm_up..])] {
        let attempts = connect_many_with(
            part,
            config.concurrency,
            LOAD_TIMEOUT,
            |index, room| {
                let url = &run.url;
                let client = ids.get(offset + index);
                async move { load_room(url, &room, client, config.updates).await }
            },
            |_| bar.inc(1),
        )
        .await;
        for attempt in attempts {
            latency.record(attempt.took);
            match attempt.client {
                Ok(()) => loaded += 1,
                Err(e) => errors.push(e.to_string()),
            }
        }
        if offset == 0 {
            rss_before = server.and_then(|s| s.rss_kib().ok());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish();
    tokio::time::sleep(Duration::from_secs_f64(config.hold_seconds)).await;
    let rss_after = server.and_then(|s| s.rss_kib().ok());
    let counted = config.docs - warm_up;

    Ok(YjsDocumentsOutcome {
        requested: config.docs,
        loaded,
        warm_up,
        updates_per_doc: config.updates,
        errors: group_errors(errors.iter().map(String::as_str)),
        seconds,
        documents_per_second: loaded as f64 / seconds.max(1e-9),
        load_latency: latency.summary(),
        server: match (rss_before, rss_after) {
            (Some(before), Some(after)) => Some(DocumentsServer {
                rss_kib_before: before,
                rss_kib_after: after,
                rss_kib_per_document: (after as f64 - before as f64) / counted as f64,
            }),
            _ => None,
        },
        load_histogram: latency,
    })
}
