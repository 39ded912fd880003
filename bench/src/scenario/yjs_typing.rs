//! `yjs-typing`: D Yjs documents × P y-websocket providers each, every provider inserting
//! one character at a time into the document's `Y.Text` for a bounded time, then a check
//! that every document holds every character its providers typed.
//!
//! The URL is the rooms' prefix: a provider of room `r` connects to `{url}/{r}` (codraft:
//! `--url ws://host:port/yjs`; y-websocket's server: `--url ws://host:port`). Each provider
//! syncs (see [`crate::provider`]) and then types:
//!
//! - closed loop (`--rate 0`): its next update goes out as soon as the previous one came
//!   back, so throughput is what the server sustains;
//! - open loop (`--rate R`): R updates a second on a fixed schedule, each sent at once as a
//!   y-websocket provider sends every local transaction; the latency from the scheduled
//!   time counts the time a busy load generator took to send it (no coordinated omission).
//!
//! Both servers send an update to every connection of the document, the sender's own
//! included (codraft once the update is committed, y-websocket 1.5.4's `bin/utils.js` from
//! its `Y.Doc` update handler), so an update's round trip ends when its sender sees it come
//! back, and "updates per second" counts those echoes: on codraft, durable updates.
//!
//! Afterwards every provider waits for its last updates to come back, and a fresh provider
//! per document syncs and counts the characters of the document's text.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use clap::Args;
use codraft_testkit::client::ClientError;
use rand::Rng;
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};

use super::{
    connect_many_with, document_name, group_errors, run_id,
    typing::{micros_each, percentiles, usage_rows, ServerUsage},
    RunOptions, ScenarioError,
};

use crate::{
    compare::{Figure, Unit},
    latency::{Latency, LatencySummary},
    process::{Process, Sample},
    progress::Progress,
    provider::{text_of, ClientIds, Incoming, Provider},
    report::{per_second, rate, thousands, Outcome},
};

/// Longest wait for a provider's last updates to come back, and for a document's check.
const SETTLE: Duration = Duration::from_secs(20);

/// Longest wait for one provider to sync.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings of the `yjs-typing` scenario.
#[derive(Debug, Clone, Args)]
pub struct YjsTypingConfig {
    /// Number of documents (rooms).
    #[arg(long, default_value_t = 100)]
    pub docs: usize,
    /// Providers per document.
    #[arg(long, default_value_t = 4)]
    pub providers: usize,
    /// Updates per second per provider (open loop); 0 sends the next update as soon as the
    /// previous one came back (closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How long to type, in seconds (at most 600).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Most updates one provider sends (at most 1,000,000): a bound on the documents' size
    /// whatever the servers' speed.
    #[arg(long, default_value_t = 50_000)]
    pub max_updates: u64,
    /// Syncs in flight at once while the providers connect.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
}

/// What a `yjs-typing` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct YjsTypingOutcome {
    /// Documents typed into.
    pub docs: usize,
    /// Providers per document.
    pub providers_per_doc: usize,
    /// Updates per second per provider; 0 for closed loop.
    pub rate: f64,
    /// Measured typing time, seconds.
    pub seconds: f64,
    /// Providers that synced.
    pub providers_connected: usize,
    /// Providers that failed to sync or failed while typing.
    pub providers_failed: usize,
    /// What went wrong, grouped.
    pub errors: Vec<String>,
    /// Updates sent within the typing time (one character each).
    pub updates_sent: u64,
    /// Updates that came back to their sender within the typing time.
    pub updates_echoed: u64,
    /// Echoed updates per second (on codraft: committed, durable updates per second).
    pub updates_per_second: f64,
    /// Messages the server sent to all providers.
    pub messages: u64,
    /// Server→provider messages per second.
    pub messages_per_second: f64,
    /// Update round trip: sent → back at its sender.
    pub round_trip: LatencySummary,
    /// Open loop: scheduled → back at its sender (includes the load generator's delays).
    pub scheduled: LatencySummary,
    /// Documents whose text held every character their providers saw come back.
    pub converged_docs: usize,
    /// Documents that did not, with why.
    pub diverged: Vec<String>,
    /// Mean document length at the end, in characters.
    pub mean_doc_chars: f64,
    /// Server CPU and memory, if its pid was given (an "edit" there is an echoed update).
    pub server: Option<ServerUsage>,
    /// Average CPU cores the load generator itself used while typing.
    pub generator_cores: Option<f64>,
    /// The load generator's own CPU time per echoed update, µs.
    pub generator_cpu_us_per_update: Option<f64>,
    /// Round-trip histogram, for the plot.
    #[serde(skip)]
    pub round_trip_histogram: Latency,
    /// Scheduled → echoed histogram, for the plot.
    #[serde(skip)]
    pub scheduled_histogram: Latency,
}

impl Outcome for YjsTypingOutcome {
    fn scenario(&self) -> &'static str {
        "yjs-typing"
    }

    fn headline(&self) -> String {
        let load = if self.rate > 0.0 {
            format!("{} updates/s each", self.rate)
        } else {
            "closed loop".to_owned()
        };
        format!(
            "yjs-typing: {} docs × {} providers, {load}",
            self.docs, self.providers_per_doc
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let load = if self.rate > 0.0 {
            format!("open loop, {} updates/s per provider", self.rate)
        } else {
            "closed loop (next update when the last came back)".to_owned()
        };
        let mut rows = vec![
            (
                "documents × providers".into(),
                format!("{} × {}", self.docs, self.providers_per_doc),
            ),
            ("load".into(), load),
            ("typing time".into(), format!("{:.1} s", self.seconds)),
            (
                "providers synced / failed".into(),
                format!("{} / {}", self.providers_connected, self.providers_failed),
            ),
            (
                "updates back at their sender".into(),
                format!(
                    "{} ({} of {} sent)",
                    rate(self.updates_per_second),
                    thousands(self.updates_echoed),
                    thousands(self.updates_sent)
                ),
            ),
            (
                "server→provider messages".into(),
                format!(
                    "{} ({})",
                    rate(self.messages_per_second),
                    thousands(self.messages)
                ),
            ),
            ("update round trip".into(), self.round_trip.line()),
        ];
        if self.rate > 0.0 {
            rows.push(("scheduled → back".into(), self.scheduled.line()));
        }
        rows.push((
            "documents with every character".into(),
            format!(
                "{} of {} (mean {:.0} chars)",
                self.converged_docs, self.docs, self.mean_doc_chars
            ),
        ));
        rows.extend(usage_rows(
            self.server.as_ref(),
            self.generator_cores
                .map(|cores| (cores, self.generator_cpu_us_per_update)),
            "update",
            self.errors.iter().chain(&self.diverged),
        ));
        rows
    }

    fn figures(&self) -> Vec<Figure> {
        let mut figures = vec![Figure::higher(
            "updates",
            Unit::PerSecond,
            Some(self.updates_per_second),
        )];
        figures.extend(percentiles(
            ["update round trip p50", "update round trip p99"],
            &self.round_trip,
        ));
        if self.rate > 0.0 {
            figures.extend(percentiles(
                ["scheduled → back p50", "scheduled → back p99"],
                &self.scheduled,
            ));
        }
        figures.extend([
            Figure::higher(
                "server→provider messages",
                Unit::PerSecond,
                Some(self.messages_per_second),
            ),
            Figure::lower(
                "server CPU per update",
                Unit::Microseconds,
                self.server.as_ref().and_then(|s| s.cpu_us_per_edit),
            ),
            Figure::lower(
                "load generator CPU per update",
                Unit::Microseconds,
                self.generator_cpu_us_per_update,
            ),
        ]);
        figures
    }

    fn clients(&self) -> Option<&'static str> {
        Some("y-websocket providers")
    }

    fn latencies(&self) -> Vec<(&'static str, &Latency)> {
        let mut latencies = vec![("update round trip", &self.round_trip_histogram)];
        if self.rate > 0.0 {
            latencies.push(("scheduled → back", &self.scheduled_histogram));
        }
        latencies
    }

    fn passed(&self) -> bool {
        self.providers_failed == 0
            && self.updates_echoed > 0
            && self.converged_docs == self.docs
            && self.diverged.is_empty()
    }
}

/// Live totals, read by the progress bar.
#[derive(Default)]
struct Counters {
    /// Updates back at their sender so far.
    echoed: AtomicU64,
    /// Messages received so far.
    messages: AtomicU64,
}

/// What one provider measured.
#[derive(Default)]
struct Tally {
    sent: u64,
    echoed: u64,
    messages: u64,
    round_trip: Latency,
    scheduled: Latency,
}

/// An update on its way: its first clock, when it was sent and when it was due.
struct Outstanding {
    clock: u64,
    sent: Instant,
    due: Instant,
}

/// One typing provider and the updates it has in flight.
struct Typist {
    provider: Provider,
    tally: Tally,
    outstanding: VecDeque<Outstanding>,
}

impl Typist {
    /// Types one character, due at `due`.
    async fn type_one(&mut self, due: Instant) -> Result<(), ClientError> {
        let clock = self.provider.type_chars(1).await?;
        self.outstanding.push_back(Outstanding {
            clock,
            sent: Instant::now(),
            due,
        });
        self.tally.sent += 1;
        Ok(())
    }

    /// Counts one incoming message; an update of its own retires what it covers.
    fn receive(&mut self, incoming: Incoming, counters: &Counters) {
        self.tally.messages += 1;
        counters.messages.fetch_add(1, Ordering::Relaxed);
        let Incoming::Update {
            first: Some((client, clock)),
            ..
        } = incoming
        else {
            return;
        };
        if client != self.provider.client() {
            return;
        }
        let now = Instant::now();
        // Each server sends a connection's updates in order: everything up to this clock
        // is back.
        while self.outstanding.front().is_some_and(|o| o.clock <= clock) {
            if let Some(update) = self.outstanding.pop_front() {
                self.tally.round_trip.record(now - update.sent);
                self.tally
                    .scheduled
                    .record(now.saturating_duration_since(update.due));
                self.tally.echoed += 1;
                counters.echoed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Types until `deadline` (open loop at `rate`, closed loop when `rate` is 0), at most
    /// `max_updates` updates.
    async fn type_until(
        &mut self,
        start: Instant,
        deadline: Instant,
        rate: f64,
        max_updates: u64,
        counters: &Counters,
    ) -> Result<(), ClientError> {
        let mut ticker = (rate > 0.0).then(|| {
            let period = Duration::from_secs_f64(1.0 / rate);
            // A random phase, so that the providers' updates do not all land at once.
            let phase = period.mul_f64(rand::rng().random::<f64>());
            let mut ticker = tokio::time::interval_at(start + phase, period);
            // Catch up after a stall: the schedule, not the server, sets the pace.
            ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
            ticker
        });
        let stop = tokio::time::sleep_until(deadline);
        tokio::pin!(stop);
        loop {
            if ticker.is_none() && self.outstanding.is_empty() {
                if Instant::now() >= deadline || self.tally.sent >= max_updates {
                    return Ok(());
                }
                self.type_one(Instant::now()).await?;
                continue;
            }
            let tick = async {
                match ticker.as_mut() {
                    Some(ticker) => ticker.tick().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut stop => return Ok(()),
                // Cancel-safe: a message is either fully read or still in the socket.
                received = self.provider.recv() => self.receive(received?.0, counters),
                due = tick => if self.tally.sent < max_updates {
                    self.type_one(due).await?;
                },
            }
        }
    }

    /// Waits (at most `timeout`) until every update it sent came back.
    async fn settle(&mut self, timeout: Duration, counters: &Counters) -> Result<(), ClientError> {
        let until = Instant::now() + timeout;
        while !self.outstanding.is_empty() {
            let received = tokio::time::timeout_at(until, self.provider.recv())
                .await
                .map_err(|_| ClientError::Timeout)??;
            self.receive(received.0, counters);
        }
        Ok(())
    }
}

/// A fresh provider's view of `room`: its text's length, checked against what its
/// providers typed (`at_least` came back to them, `at_most` were sent).
async fn check_room(
    url: &str,
    room: &str,
    client: u64,
    at_least: u64,
    at_most: u64,
) -> Result<u64, String> {
    let joined = tokio::time::timeout(SETTLE, Provider::connect(url, room, client, true)).await;
    let provider = match joined {
        Ok(Ok(provider)) => provider,
        Ok(Err(e)) => return Err(format!("{room}: the checking provider failed: {e}")),
        Err(_) => return Err(format!("{room}: the checking provider timed out")),
    };
    let state = provider.initial_state.clone().unwrap_or_default();
    provider.close(Duration::from_secs(1)).await;
    let text = text_of(&state).map_err(|e| format!("{room}: {e}"))?;
    let chars = text.chars().count() as u64;
    if chars < at_least || chars > at_most {
        return Err(format!(
            "{room}: {chars} characters, expected {at_least}–{at_most}"
        ));
    }
    Ok(chars)
}

/// Runs the `yjs-typing` scenario.
pub async fn run(
    run: &RunOptions,
    config: &YjsTypingConfig,
) -> Result<YjsTypingOutcome, ScenarioError> {
    if config.docs == 0 || config.providers == 0 || config.docs * config.providers > 100_000 {
        return Err(ScenarioError::Setup(
            "--docs and --providers must be at least 1, and docs × providers at most 100,000"
                .into(),
        ));
    }
    if !(config.seconds > 0.0 && config.seconds <= 600.0) {
        return Err(ScenarioError::Setup(
            "--seconds must be more than 0 and at most 600".into(),
        ));
    }
    if !(config.rate >= 0.0 && config.rate <= 1_000.0) {
        return Err(ScenarioError::Setup(
            "--rate must be between 0 (closed loop) and 1000".into(),
        ));
    }
    if config.max_updates == 0 || config.max_updates > 1_000_000 {
        return Err(ScenarioError::Setup(
            "--max-updates must be between 1 and 1,000,000".into(),
        ));
    }
    let id = run_id();
    let rooms: Vec<String> = (0..config.docs).map(|d| document_name(id, d)).collect();
    let wanted: Vec<String> = rooms
        .iter()
        .flat_map(|d| std::iter::repeat_n(d.clone(), config.providers))
        .collect();
    let ids = ClientIds::random();

    let joining = Progress::new(run.progress, "syncing", wanted.len() as u64);
    let connected = connect_many_with(
        &wanted,
        config.connect_concurrency,
        JOIN_TIMEOUT,
        |index, room| {
            let url = &run.url;
            async move { Provider::connect(url, &room, ids.get(index), false).await }
        },
        |_| joining.inc(1),
    )
    .await;
    joining.finish();
    let mut errors = Vec::new();
    let mut typists = Vec::new();
    for connected in connected {
        match connected.client {
            Ok(provider) => typists.push((
                connected.index / config.providers,
                Typist {
                    provider,
                    tally: Tally::default(),
                    outstanding: VecDeque::new(),
                },
            )),
            Err(e) => errors.push(format!("sync: {e}")),
        }
    }
    if typists.is_empty() {
        return Err(ScenarioError::Setup(format!(
            "no provider could sync with {}: {}",
            run.url,
            group_errors(errors.iter().map(String::as_str)).join("; ")
        )));
    }
    let providers_connected = typists.len();

    let counters = Arc::new(Counters::default());
    let server_before = run.pid.and_then(|pid| Process::Pid(pid).sample());
    let me_before = Process::Myself.sample();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(config.seconds);
    let tasks: Vec<_> = typists
        .into_iter()
        .map(|(doc, mut typist)| {
            let counters = Arc::clone(&counters);
            let (rate, max_updates) = (config.rate, config.max_updates);
            tokio::spawn(async move {
                let typed = typist
                    .type_until(start, deadline, rate, max_updates, &counters)
                    .await;
                // What comes back after the deadline is not counted in the figures.
                let tally = std::mem::take(&mut typist.tally);
                let settled = match typed {
                    Ok(()) => typist.settle(SETTLE, &counters).await,
                    Err(e) => Err(e),
                };
                (doc, typist, tally, settled)
            })
        })
        .collect();
    let bar = Progress::new(run.progress, "typing", config.seconds.ceil() as u64);
    let ticker = {
        let counters = Arc::clone(&counters);
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0, 0);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = Instant::now();
                let echoed = counters.echoed.load(Ordering::Relaxed);
                let messages = counters.messages.load(Ordering::Relaxed);
                let dt = (now - last.0).as_secs_f64();
                bar.set_position((now - start).as_secs());
                bar.set_message(format!(
                    "{} updates, {} messages",
                    rate(per_second(echoed - last.1, dt)),
                    rate(per_second(messages - last.2, dt))
                ));
                last = (now, echoed, messages);
            }
        })
    };
    tokio::time::sleep_until(deadline).await;
    let seconds = start.elapsed().as_secs_f64();
    let server_after = run.pid.and_then(|pid| Process::Pid(pid).sample());
    let me_after = Process::Myself.sample();
    ticker.abort();
    bar.finish();

    let mut total = Tally::default();
    // Per room: characters that came back to their providers, and characters sent.
    let mut expected = vec![(0u64, 0u64); config.docs];
    let mut providers = Vec::new();
    let mut failed = config.docs * config.providers - providers_connected;
    for task in tasks {
        let (doc, typist, tally, settled) = task
            .await
            .map_err(|e| ScenarioError::Setup(format!("a provider task failed: {e}")))?;
        total.sent += tally.sent;
        total.echoed += tally.echoed;
        total.messages += tally.messages;
        total.round_trip.merge(&tally.round_trip);
        total.scheduled.merge(&tally.scheduled);
        let typed = typist.provider.typed();
        match settled {
            Ok(()) => expected[doc].0 += typed,
            Err(e) => {
                failed += 1;
                errors.push(format!("typing: {e}"));
            }
        }
        expected[doc].1 += typed;
        providers.push(typist.provider);
    }

    let checks =
        rooms
            .iter()
            .zip(&expected)
            .enumerate()
            .map(|(index, (room, &(at_least, at_most)))| {
                let client = ids.get(wanted.len() + index);
                check_room(&run.url, room, client, at_least, at_most)
            });
    let verdicts = futures::future::join_all(checks).await;
    let mut diverged = Vec::new();
    let mut chars = 0;
    for verdict in verdicts {
        match verdict {
            Ok(n) => chars += n,
            Err(e) => diverged.push(e),
        }
    }
    let converged_docs = config.docs - diverged.len();
    let closing = providers
        .into_iter()
        .map(|p| p.close(Duration::from_secs(1)));
    futures::future::join_all(closing).await;

    Ok(YjsTypingOutcome {
        docs: config.docs,
        providers_per_doc: config.providers,
        rate: config.rate,
        seconds,
        providers_connected,
        providers_failed: failed,
        errors: group_errors(errors.iter().map(String::as_str)),
        updates_sent: total.sent,
        updates_echoed: total.echoed,
        updates_per_second: per_second(total.echoed, seconds),
        messages: total.messages,
        messages_per_second: per_second(total.messages, seconds),
        round_trip: total.round_trip.summary(),
        scheduled: total.scheduled.summary(),
        converged_docs,
        diverged,
        mean_doc_chars: chars as f64 / converged_docs.max(1) as f64,
        server: match (server_before, server_after) {
            (Some(before), Some(after)) => Some(ServerUsage {
                cores: before.cores_until(&after, seconds),
                cpu_us_per_edit: micros_each(before.cpu_seconds_until(&after), total.echoed),
                rss_kib_start: before.rss_kib,
                rss_kib_end: after.rss_kib,
            }),
            _ => None,
        },
        generator_cores: me_before
            .zip(me_after)
            .map(|(before, after): (Sample, Sample)| before.cores_until(&after, seconds)),
        generator_cpu_us_per_update: me_before.zip(me_after).and_then(|(before, after)| {
            micros_each(before.cpu_seconds_until(&after), total.echoed)
        }),
        round_trip_histogram: total.round_trip,
        scheduled_histogram: total.scheduled,
    })
}
