//! `join-storm`: N clients join one document at the same moment (a link shared in a meeting).
//! A first client writes some text; then all N connect at once, with no limit on joins in
//! flight. Reports how many were admitted (received Identity and History, and with it the
//! right text), how long until the last one was, and the distribution of join times.

use std::time::{Duration, Instant};

use clap::Args;
use codraft_testkit::client::{Client, ClientError};
use serde::Serialize;

use super::{connect, document_name, group_errors, run_id, RunOptions, ScenarioError};

use crate::{
    latency::{Latency, LatencySummary},
    process,
    progress::Progress,
    report::{thousands, Outcome},
};

/// Most clients one storm may have.
pub const MAX_CLIENTS: usize = 50_000;

/// Settings of the `join-storm` scenario.
#[derive(Debug, Clone, Args)]
pub struct JoinStormConfig {
    /// Clients joining at once (at most 50,000).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Characters of text in the document before the storm.
    #[arg(long, default_value_t = 2000)]
    pub text_chars: usize,
    /// How long a client may take to be admitted, in seconds (at most 60).
    #[arg(long, default_value_t = 30.0)]
    pub timeout_seconds: f64,
}

/// What a `join-storm` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct JoinStormOutcome {
    /// Clients that tried to join.
    pub clients: usize,
    /// Clients admitted: Identity and the first History arrived.
    pub admitted: usize,
    /// Admitted clients whose text was the document's.
    pub correct_text: usize,
    /// What went wrong, grouped.
    pub errors: Vec<String>,
    /// From the start of the storm until the last client was admitted, seconds.
    pub seconds_to_last_admitted: f64,
    /// Time for each client from the storm's start until admitted.
    pub join_latency: LatencySummary,
    /// Characters in the document.
    pub text_chars: usize,
    /// Join latency histogram, for the plot.
    #[serde(skip)]
    pub join_histogram: Latency,
}

impl Outcome for JoinStormOutcome {
    fn scenario(&self) -> &'static str {
        "join-storm"
    }

    fn headline(&self) -> String {
        format!(
            "join-storm: {} clients joining one document",
            thousands(self.clients as u64)
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "clients admitted / joining".into(),
                format!(
                    "{} / {}",
                    thousands(self.admitted as u64),
                    thousands(self.clients as u64)
                ),
            ),
            (
                "admitted with the right text".into(),
                format!(
                    "{} (document of {} chars)",
                    thousands(self.correct_text as u64),
                    thousands(self.text_chars as u64)
                ),
            ),
            (
                "time until the last was admitted".into(),
                format!("{:.0} ms", self.seconds_to_last_admitted * 1000.0),
            ),
            ("join time".into(), self.join_latency.line()),
        ];
        for error in self.errors.iter().take(8) {
            rows.push(("error".into(), error.clone()));
        }
        rows
    }

    fn latencies(&self) -> Vec<(&'static str, &Latency)> {
        vec![("join (storm)", &self.join_histogram)]
    }

    fn passed(&self) -> bool {
        self.admitted == self.clients && self.correct_text == self.clients
    }
}

/// Text of `chars` code points, a mix of scripts and lines.
fn seed_text(chars: usize) -> String {
    "fn main() { println!(\"héllo, 世界 🎉\"); }\n"
        .chars()
        .cycle()
        .take(chars)
        .collect()
}

/// Runs the `join-storm` scenario.
pub async fn run(
    run: &RunOptions,
    config: &JoinStormConfig,
) -> Result<JoinStormOutcome, ScenarioError> {
    if config.clients == 0 || config.clients > MAX_CLIENTS {
        return Err(ScenarioError::Setup(format!(
            "--clients must be between 1 and {MAX_CLIENTS}"
        )));
    }
    if !(config.timeout_seconds > 0.0 && config.timeout_seconds <= 60.0) {
        return Err(ScenarioError::Setup(
            "--timeout-seconds must be more than 0 and at most 60".into(),
        ));
    }
    process::raise_open_files_limit();
    let document = document_name(run_id(), "storm");
    let text = seed_text(config.text_chars);
    let mut author = connect(run, &document).await?;
    if !text.is_empty() {
        author.insert(0, &text).await?;
        author.settle(Duration::from_secs(20)).await?;
    }

    let timeout = Duration::from_secs_f64(config.timeout_seconds);
    let bar = Progress::new(run.progress, "admitted", config.clients as u64);
    let start = Instant::now();
    let tasks: Vec<_> = (0..config.clients)
        .map(|_| {
            let url = run.url.clone();
            let document = document.clone();
            let options = run.client_options();
            let bar = bar.clone();
            tokio::spawn(async move {
                let joined =
                    tokio::time::timeout(timeout, Client::connect(&url, &document, options))
                        .await
                        .unwrap_or(Err(ClientError::Timeout));
                let took = start.elapsed();
                bar.inc(1);
                (joined, took)
            })
        })
        .collect();
    let mut admitted = Vec::with_capacity(config.clients);
    let mut errors = Vec::new();
    let mut latency = Latency::new();
    let mut last = Duration::ZERO;
    for task in tasks {
        match task.await {
            Ok((Ok(client), took)) => {
                latency.record(took);
                last = last.max(took);
                admitted.push(client);
            }
            Ok((Err(e), _)) => errors.push(e.to_string()),
            Err(e) => errors.push(format!("client task failed: {e}")),
        }
    }
    bar.finish();
    let correct_text = admitted.iter().filter(|c| c.text == text).count();
    let count = admitted.len();
    futures::future::join_all(admitted.into_iter().map(Client::close)).await;
    author.close().await;

    Ok(JoinStormOutcome {
        clients: config.clients,
        admitted: count,
        correct_text,
        errors: group_errors(errors.iter().map(String::as_str)),
        seconds_to_last_admitted: last.as_secs_f64(),
        join_latency: latency.summary(),
        text_chars: config.text_chars,
        join_histogram: latency,
    })
}
