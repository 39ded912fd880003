//! `soak`: many distinct documents, each opened, edited and left, spread over a long run;
//! then the server is left alone past its idle-unload time. Shows that documents do not
//! pile up in memory: loaded documents (`/api/stats`) and the server's RSS (with `--pid`)
//! must come back down once every document has been idle for IDLE_UNLOAD_SECS, and every
//! document's text must still be what its writer left (read back through `/api/text`,
//! which loads it again from disk). The first [`COLD_SAMPLE`] read-backs go one at a time
//! and are timed: the time to load a cold document (stored, not loaded), as a client of
//! the HTTP API sees it.

use std::time::{Duration, Instant};

use clap::Args;
use codraft_testkit::http::HttpTarget;
use futures::{stream, StreamExt};
use serde::Serialize;

use super::{connect, document_name, group_errors, run_id, RunOptions, ScenarioError};
use crate::{
    latency::{Latency, LatencySummary},
    process::Process,
    progress::Progress,
    report::{bytes, thousands, Outcome},
};

/// Most documents one run may open.
pub const MAX_DOCUMENTS: usize = 200_000;

/// Read-backs timed one at a time (the rest go `--concurrency` at once).
pub const COLD_SAMPLE: usize = 2_000;

/// Settings of the `soak` scenario.
#[derive(Debug, Clone, Args)]
pub struct SoakConfig {
    /// Distinct documents to open, edit and leave.
    #[arg(long, default_value_t = 20_000)]
    pub docs: usize,
    /// Seconds over which the documents are opened (at most 3,600).
    #[arg(long, default_value_t = 600.0)]
    pub seconds: f64,
    /// The server's IDLE_UNLOAD_SECS: how long to wait after the last document was left.
    #[arg(long, default_value_t = 60)]
    pub idle_unload_secs: u64,
    /// Documents in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// One sample of the server while the run goes on.
#[derive(Debug, Clone, Serialize)]
pub struct SoakSample {
    /// Seconds since the start.
    pub at: f64,
    /// Documents the server has loaded.
    pub loaded: u64,
    /// The server's RSS, KiB, if its pid was given.
    pub rss_kib: Option<u64>,
}

/// What a `soak` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakOutcome {
    /// Documents asked for.
    pub requested: usize,
    /// Documents opened, edited and left.
    pub edited: usize,
    /// Documents whose text read back as written.
    pub intact: usize,
    /// What went wrong, grouped.
    pub errors: Vec<String>,
    /// Before the run.
    pub baseline: SoakSample,
    /// The most loaded documents and the highest RSS seen.
    pub peak: SoakSample,
    /// After the wait past IDLE_UNLOAD_SECS.
    pub after_idle: SoakSample,
    /// Samples every few seconds.
    pub samples: Vec<SoakSample>,
    /// Seconds spent opening documents.
    pub edit_seconds: f64,
    /// Reading an unloaded document's text back (`GET /api/text`, which loads it), one at a
    /// time, for the first [`COLD_SAMPLE`] documents.
    pub cold_read: LatencySummary,
    /// The same, for the plot.
    #[serde(skip)]
    pub cold_reads: Latency,
}

impl Outcome for SoakOutcome {
    fn scenario(&self) -> &'static str {
        "soak"
    }

    fn headline(&self) -> String {
        format!("soak: {} documents", thousands(self.requested as u64))
    }

    fn rows(&self) -> Vec<(String, String)> {
        let sample = |s: &SoakSample| {
            format!(
                "{} loaded, RSS {} (at {:.0} s)",
                thousands(s.loaded),
                s.rss_kib
                    .map_or_else(|| "not measured".to_owned(), |k| bytes(k * 1024)),
                s.at
            )
        };
        let mut rows = vec![
            (
                "documents opened, edited, left".into(),
                format!(
                    "{} / {} in {:.0} s",
                    thousands(self.edited as u64),
                    thousands(self.requested as u64),
                    self.edit_seconds
                ),
            ),
            ("baseline".into(), sample(&self.baseline)),
            ("peak".into(), sample(&self.peak)),
            ("after IDLE_UNLOAD_SECS".into(), sample(&self.after_idle)),
            (
                format!(
                    "cold document read, {} one at a time (GET /api/text loads it)",
                    thousands(self.cold_read.count)
                ),
                self.cold_read.line(),
            ),
            (
                "texts intact on disk".into(),
                format!(
                    "{} / {}",
                    thousands(self.intact as u64),
                    thousands(self.edited as u64)
                ),
            ),
        ];
        for error in self.errors.iter().take(8) {
            rows.push(("error".into(), error.clone()));
        }
        rows
    }

    fn latencies(&self) -> Vec<(&'static str, &Latency)> {
        vec![(
            "cold document read (GET /api/text, one at a time)",
            &self.cold_reads,
        )]
    }

    fn passed(&self) -> bool {
        self.edited == self.requested
            && self.intact == self.edited
            && self.after_idle.loaded <= self.baseline.loaded
    }
}

async fn sample(http: &HttpTarget, server: Option<Process>, started: Instant) -> SoakSample {
    let loaded = match http.get("/api/stats").await {
        Ok((200, body)) => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("num_documents").and_then(|n| n.as_u64()))
            .unwrap_or(0),
        _ => 0,
    };
    SoakSample {
        at: started.elapsed().as_secs_f64(),
        loaded,
        rss_kib: server.and_then(|s| s.rss_kib().ok()),
    }
}

/// The text document `i` of the run gets.
fn text_of(i: usize) -> String {
    format!("soak document {i}: the quick brown fox 🦊\n")
}

/// Opens one document, types its text, waits for the acknowledgement and leaves.
async fn edit_one(run: &RunOptions, document: &str, text: &str) -> Result<(), String> {
    let mut client = connect(run, document).await.map_err(|e| e.to_string())?;
    client.insert(0, text).await.map_err(|e| e.to_string())?;
    client
        .settle(Duration::from_secs(20))
        .await
        .map_err(|e| e.to_string())?;
    client.close().await;
    Ok(())
}

/// Runs the `soak` scenario.
pub async fn run(run: &RunOptions, config: &SoakConfig) -> Result<SoakOutcome, ScenarioError> {
    if config.docs == 0 || config.docs > MAX_DOCUMENTS {
        return Err(ScenarioError::Setup(format!(
            "--docs must be between 1 and {MAX_DOCUMENTS}"
        )));
    }
    if !(1.0..=3600.0).contains(&config.seconds) || config.idle_unload_secs > 3600 {
        return Err(ScenarioError::Setup(
            "--seconds must be 1–3600 and --idle-unload-secs at most 3600".into(),
        ));
    }
    let http = HttpTarget::from_ws_url(&run.url)?;
    let server = run.pid.map(Process::Pid);
    let id = run_id();
    let started = Instant::now();
    let baseline = sample(&http, server, started).await;
    let mut samples = vec![baseline.clone()];
    let bar = Progress::new(run.progress, "documents", config.docs as u64);
    let pace = Duration::from_secs_f64(config.seconds / config.docs as f64);
    let documents: Vec<String> = (0..config.docs).map(|i| document_name(id, i)).collect();
    let mut errors = Vec::new();
    let mut edited = 0;
    let mut next_sample = Instant::now();
    let mut results = stream::iter(documents.iter().enumerate())
        .map(|(i, document)| async move {
            // Spread the starts evenly over the run.
            tokio::time::sleep_until((started + pace.mul_f64(i as f64)).into()).await;
            edit_one(run, document, &text_of(i)).await
        })
        .buffer_unordered(config.concurrency.max(1));
    while let Some(result) = results.next().await {
        bar.inc(1);
        match result {
            Ok(()) => edited += 1,
            Err(error) => errors.push(error),
        }
        if Instant::now() >= next_sample {
            samples.push(sample(&http, server, started).await);
            next_sample = Instant::now() + Duration::from_secs(5);
        }
    }
    drop(results);
    bar.finish();
    let edit_seconds = started.elapsed().as_secs_f64();
    // Past IDLE_UNLOAD_SECS for the last document, sampling as documents unload.
    let idle_until = Instant::now() + Duration::from_secs(config.idle_unload_secs + 15);
    while Instant::now() < idle_until {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push(sample(&http, server, started).await);
    }
    let after_idle = sample(&http, server, started).await;
    samples.push(after_idle.clone());
    // Every text, read back (each read loads the document from disk again): the first
    // ones one at a time and timed, the rest `concurrency` at once.
    let bar = Progress::new(run.progress, "reading back", config.docs as u64);
    let read_back = |i: usize, document: &String| {
        let http = &http;
        let document = document.clone();
        async move {
            let began = Instant::now();
            let text = http
                .document_text(&document)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((text == text_of(i), began.elapsed()))
        }
    };
    let timed = config.docs.min(COLD_SAMPLE);
    let mut cold_reads = Latency::new();
    let mut reads = Vec::with_capacity(config.docs);
    for (i, document) in documents.iter().enumerate().take(timed) {
        let read = read_back(i, document).await;
        if let Ok((_, took)) = &read {
            cold_reads.record(*took);
        }
        reads.push(read.map(|(same, _)| same));
        bar.inc(1);
    }
    let rest: Vec<Result<bool, String>> = stream::iter(documents.iter().enumerate().skip(timed))
        .map(|(i, document)| read_back(i, document))
        .buffer_unordered(config.concurrency.max(1))
        .map(|read| read.map(|(same, _)| same))
        .inspect(|_| bar.inc(1))
        .collect()
        .await;
    reads.extend(rest);
    bar.finish();
    let mut intact = 0;
    for read in reads {
        match read {
            Ok(true) => intact += 1,
            Ok(false) => errors.push("a text read back differs from what was written".into()),
            Err(error) => errors.push(error),
        }
    }
    let peak = SoakSample {
        at: 0.0,
        loaded: samples.iter().map(|s| s.loaded).max().unwrap_or(0),
        rss_kib: samples.iter().filter_map(|s| s.rss_kib).max(),
    };
    Ok(SoakOutcome {
        requested: config.docs,
        edited,
        intact,
        errors: group_errors(errors.iter().map(String::as_str)),
        baseline,
        peak,
        after_idle,
        samples,
        edit_seconds,
        cold_read: cold_reads.summary(),
        cold_reads,
    })
}
