//! `typing`: D documents × C clients each, every client typing at random positions (non-ASCII
//! text, some deletes) for a bounded time, then a convergence check against the server.
//!
//! Two loads:
//! - open loop (`--rate R`): each client makes R keystrokes per second on a fixed schedule,
//!   whatever the server does. As in Rustpad's and ot.js's client, keystrokes made while an
//!   edit is outstanding are composed into the next edit, so a slow server gets fewer,
//!   larger edits, not a queue;
//! - closed loop (`--rate 0`): each client sends its next edit as soon as the previous one
//!   is acknowledged, so throughput is what the server sustains.
//!
//! Measured:
//! - accepted edits per second: acknowledgements (History entries by the client itself),
//!   which the server sends only after the edit is durable;
//! - edit round trip: from sending an Edit to seeing it acknowledged;
//! - keystroke latency: from the keystroke's scheduled time to its acknowledgement,
//!   including time spent buffered behind an outstanding edit (open loop; the schedule is
//!   fixed, so a stalled server cannot hide its stall — no coordinated omission);
//! - server→client messages per second, as received by all clients.
//!
//! Afterwards every client waits for its edits to be acknowledged, and every client's text
//! must equal the server's `GET /api/text/{id}`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use clap::Args;
use codraft_testkit::{
    client::{Client, ClientError, Event},
    http::HttpTarget,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};

use super::{connect_many, document_name, group_errors, run_id, RunOptions, ScenarioError};

use crate::{
    compare::{Figure, Unit},
    latency::{ms, Latency, LatencySummary, Slot, Timeline},
    process::{Process, Sample},
    progress::Progress,
    report::{per_second, rate, thousands, Outcome},
};

/// What a keystroke inserts: ASCII, accents, CJK, an astral emoji, a 7-code-point family
/// emoji and newlines, so that code-point counting is exercised end to end.
const SNIPPETS: &[&str] = &[
    "a",
    "e",
    " ",
    "é",
    "ß",
    "中",
    "文",
    "🎉",
    "👨‍👩‍👧‍👦",
    "\n",
    "ж",
    "x",
];

/// Above this many characters a document shrinks as often as it grows, so long runs stay
/// far below the server's document size limit.
const STEADY_CHARS: u64 = 4096;

/// Longest wait for a client's last edits to be acknowledged, and for it to converge.
const SETTLE: Duration = Duration::from_secs(20);

/// Longest wait for one client to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings of the `typing` scenario.
#[derive(Debug, Clone, Args)]
pub struct TypingConfig {
    /// Number of documents.
    #[arg(long, default_value_t = 10)]
    pub docs: usize,
    /// Clients per document.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Keystrokes per second per client (open loop); 0 types as fast as acknowledgements
    /// allow (closed loop).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long to type, in seconds (at most 600).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Joins in flight at once while the clients connect.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Also report the edit round trip interval by interval, each this many milliseconds
    /// long (edits acknowledged, how many took over 1 and 4 ms, the slowest), to place a
    /// stall in time.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub timeline: Option<u64>,
}

/// Server-side figures, when the server's pid was given.
#[derive(Debug, Clone, Serialize)]
pub struct ServerUsage {
    /// Average CPU cores the server used while the clients typed.
    pub cores: f64,
    /// Server CPU time (user + system) per accepted edit, µs.
    pub cpu_us_per_edit: Option<f64>,
    /// Server RSS when typing started, KiB.
    pub rss_kib_start: u64,
    /// Server RSS when typing stopped, KiB.
    pub rss_kib_end: u64,
}

/// What a `typing` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct TypingOutcome {
    /// Documents typed into.
    pub docs: usize,
    /// Clients per document.
    pub clients_per_doc: usize,
    /// Keystrokes per second per client; 0 for closed loop.
    pub rate: f64,
    /// Measured typing time, seconds.
    pub seconds: f64,
    /// Clients that joined.
    pub clients_connected: usize,
    /// Clients that failed to join or failed while typing.
    pub clients_failed: usize,
    /// What went wrong, grouped.
    pub errors: Vec<String>,
    /// Keystrokes made.
    pub keystrokes: u64,
    /// Edits acknowledged within the typing time (each one server revision).
    pub acked_edits: u64,
    /// Keystrokes whose edit was acknowledged within the typing time.
    pub acked_keystrokes: u64,
    /// Acknowledged edits per second: durable server revisions per second.
    pub acked_edits_per_second: f64,
    /// Acknowledged keystrokes per second.
    pub acked_keystrokes_per_second: f64,
    /// Messages the server sent to all clients.
    pub messages: u64,
    /// Server→client messages per second.
    pub messages_per_second: f64,
    /// Edit round trip: Edit sent → own History entry received.
    pub round_trip: LatencySummary,
    /// Keystroke → acknowledgement (includes buffering behind an outstanding edit).
    pub keystroke: LatencySummary,
    /// Documents whose clients all ended with the server's text.
    pub converged_docs: usize,
    /// Documents where some client disagreed with the server, with why.
    pub diverged: Vec<String>,
    /// Mean document length at the end, in code points.
    pub mean_doc_chars: f64,
    /// Server CPU and memory, if its pid was given.
    pub server: Option<ServerUsage>,
    /// Average CPU cores the load generator itself used while typing (it shares the machine).
    pub generator_cores: Option<f64>,
    /// The load generator's own CPU time (user + system) per accepted edit, µs: if it nears
    /// the server's, the load generator, not the server, sets the pace.
    pub generator_cpu_us_per_edit: Option<f64>,
    /// The edit round trip interval by interval, with `--timeline`.
    pub timeline: Option<TimelineReport>,
    /// Round-trip histogram, for the plot.
    #[serde(skip)]
    pub round_trip_histogram: Latency,
    /// Keystroke histogram, for the plot.
    #[serde(skip)]
    pub keystroke_histogram: Latency,
}

/// The edit round trip interval by interval.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    /// Each interval's length, ms.
    pub interval_ms: u64,
    /// The intervals from the start of typing.
    pub intervals: Vec<Slot>,
}

impl TimelineReport {
    fn rows(&self) -> impl Iterator<Item = (String, String)> + '_ {
        let seconds = |i: usize| i as f64 * self.interval_ms as f64 / 1000.0;
        self.intervals.iter().enumerate().map(move |(i, slot)| {
            (
                format!("round trip {:.2}–{:.2} s", seconds(i), seconds(i + 1)),
                format!(
                    "{} edits, {} over 1 ms, {} over 4 ms, max {} ms",
                    thousands(slot.count),
                    thousands(slot.over_1ms),
                    thousands(slot.over_4ms),
                    ms(slot.max_us as f64 / 1000.0)
                ),
            )
        })
    }
}

impl Outcome for TypingOutcome {
    fn scenario(&self) -> &'static str {
        "typing"
    }

    fn headline(&self) -> String {
        let load = if self.rate > 0.0 {
            format!("{} keystrokes/s each", self.rate)
        } else {
            "closed loop".to_owned()
        };
        format!(
            "typing: {} docs × {} clients, {load}",
            self.docs, self.clients_per_doc
        )
    }

    fn rows(&self) -> Vec<(String, String)> {
        let load = if self.rate > 0.0 {
            format!("open loop, {} keystrokes/s per client", self.rate)
        } else {
            "closed loop (next edit when the last is acknowledged)".to_owned()
        };
        let mut rows = vec![
            (
                "documents × clients".into(),
                format!("{} × {}", self.docs, self.clients_per_doc),
            ),
            ("load".into(), load),
            ("typing time".into(), format!("{:.1} s", self.seconds)),
            (
                "clients joined / failed".into(),
                format!("{} / {}", self.clients_connected, self.clients_failed),
            ),
            (
                "accepted edits (durable revisions)".into(),
                format!(
                    "{} ({})",
                    rate(self.acked_edits_per_second),
                    thousands(self.acked_edits)
                ),
            ),
            (
                "accepted keystrokes".into(),
                format!(
                    "{} ({} of {} typed)",
                    rate(self.acked_keystrokes_per_second),
                    thousands(self.acked_keystrokes),
                    thousands(self.keystrokes)
                ),
            ),
            (
                "server→client messages".into(),
                format!(
                    "{} ({})",
                    rate(self.messages_per_second),
                    thousands(self.messages)
                ),
            ),
            ("edit round trip".into(), self.round_trip.line()),
            ("keystroke → acknowledged".into(), self.keystroke.line()),
            (
                "converged documents".into(),
                format!(
                    "{} of {} (mean {:.0} chars)",
                    self.converged_docs, self.docs, self.mean_doc_chars
                ),
            ),
        ];
        rows.extend(self.timeline.iter().flat_map(TimelineReport::rows));
        rows.extend(usage_rows(
            self.server.as_ref(),
            self.generator_cores
                .map(|cores| (cores, self.generator_cpu_us_per_edit)),
            "accepted edit",
            self.errors.iter().chain(&self.diverged),
        ));
        rows
    }

    fn figures(&self) -> Vec<Figure> {
        let mut figures = vec![Figure::higher(
            "accepted edits",
            Unit::PerSecond,
            Some(self.acked_edits_per_second),
        )];
        figures.extend(percentiles(
            ["edit round trip p50", "edit round trip p99"],
            &self.round_trip,
        ));
        if self.rate > 0.0 {
            figures.extend(percentiles(
                [
                    "keystroke → acknowledged p50",
                    "keystroke → acknowledged p99",
                ],
                &self.keystroke,
            ));
        }
        figures.extend([
            Figure::higher(
                "server→client messages",
                Unit::PerSecond,
                Some(self.messages_per_second),
            ),
            Figure::lower(
                "server CPU per accepted edit",
                Unit::Microseconds,
                self.server.as_ref().and_then(|s| s.cpu_us_per_edit),
            ),
            Figure::lower(
                "load generator CPU per accepted edit",
                Unit::Microseconds,
                self.generator_cpu_us_per_edit,
            ),
        ]);
        figures
    }

    fn latencies(&self) -> Vec<(&'static str, &Latency)> {
        vec![
            ("edit round trip", &self.round_trip_histogram),
            ("keystroke → acknowledged", &self.keystroke_histogram),
        ]
    }

    fn passed(&self) -> bool {
        self.clients_failed == 0
            && self.acked_edits > 0
            && self.converged_docs == self.docs
            && self.diverged.is_empty()
    }
}

/// CPU use for a table cell: `23.4 µs per accepted edit (0.41 cores)`, where `event` names
/// what the time is per.
fn cpu(us_each: Option<f64>, cores: f64, event: &str) -> String {
    match us_each {
        Some(us) => format!("{us:.1} µs per {event} ({cores:.2} cores)"),
        None => format!("{cores:.2} cores"),
    }
}

/// The rows a typing scenario's table ends with: the server's CPU and memory (if its pid was
/// given), the load generator's own CPU (`(cores, µs per event)`), and the first eight errors.
pub(super) fn usage_rows<'a>(
    server: Option<&ServerUsage>,
    generator: Option<(f64, Option<f64>)>,
    event: &str,
    errors: impl Iterator<Item = &'a String>,
) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if let Some(server) = server {
        rows.push((
            "server CPU / RSS start → end".into(),
            format!(
                "{} / {} → {} MiB",
                cpu(server.cpu_us_per_edit, server.cores, event),
                server.rss_kib_start / 1024,
                server.rss_kib_end / 1024
            ),
        ));
    }
    if let Some((cores, us_each)) = generator {
        rows.push(("load generator CPU".into(), cpu(us_each, cores, event)));
    }
    rows.extend(errors.take(8).map(|error| ("error".into(), error.clone())));
    rows
}

/// A latency's p50 and p99 as figures named `names` (no value without samples).
pub(super) fn percentiles(names: [&'static str; 2], latency: &LatencySummary) -> [Figure; 2] {
    let sampled = |p: f64| (latency.count > 0).then_some(p);
    [
        Figure::lower(names[0], Unit::Milliseconds, sampled(latency.p50_ms)),
        Figure::lower(names[1], Unit::Milliseconds, sampled(latency.p99_ms)),
    ]
}

/// CPU time per event in µs; none without events.
pub(super) fn micros_each(cpu_seconds: f64, events: u64) -> Option<f64> {
    (events > 0).then(|| cpu_seconds * 1e6 / events as f64)
}

/// Live totals, read by the progress bar.
#[derive(Default)]
struct Counters {
    /// Edits acknowledged so far.
    acked: AtomicU64,
    /// Messages received so far.
    messages: AtomicU64,
}

/// What one client measured.
#[derive(Default)]
struct Tally {
    keystrokes: u64,
    acked_edits: u64,
    acked_keystrokes: u64,
    messages: u64,
    round_trip: Latency,
    keystroke: Latency,
    /// The round trips by when they ended, with `--timeline`.
    timeline: Option<Timeline>,
}

/// One typing client: the connection and the bookkeeping of what is in flight.
struct Typist {
    client: Client,
    rng: StdRng,
    tally: Tally,
    /// When typing started, for the timeline.
    started: Instant,
    /// When the outstanding edit was sent.
    sent_at: Option<Instant>,
    /// Scheduled times of the keystrokes in the outstanding edit.
    in_flight: Vec<Instant>,
    /// Scheduled times of the keystrokes composed in the buffer.
    buffered: Vec<Instant>,
}

impl Typist {
    /// Makes one random keystroke scheduled at `at`.
    async fn keystroke(&mut self, at: Instant) -> Result<(), ClientError> {
        let was_idle = self.client.is_synced();
        let len = self.client.len();
        let delete_chance = if len < STEADY_CHARS { 0.2 } else { 0.5 };
        if len > 0 && self.rng.random_bool(delete_chance) {
            let position = self.rng.random_range(0..len);
            self.client.delete(position, 1).await?;
        } else {
            let position = self.rng.random_range(0..=len);
            let snippet = SNIPPETS[self.rng.random_range(0..SNIPPETS.len())];
            self.client.insert(position, snippet).await?;
        }
        self.tally.keystrokes += 1;
        if was_idle {
            // Nothing was outstanding, so the edit went out at once.
            self.sent_at = Some(Instant::now());
            self.in_flight.push(at);
        } else {
            self.buffered.push(at);
        }
        Ok(())
    }

    /// Applies one incoming message, recording acknowledgements.
    async fn receive(&mut self, event: Event, counters: &Counters) -> Result<(), ClientError> {
        self.tally.messages += 1;
        counters.messages.fetch_add(1, Ordering::Relaxed);
        match event {
            Event::Acked(_) => {
                let now = Instant::now();
                if let Some(sent) = self.sent_at.take() {
                    self.tally.round_trip.record(now - sent);
                    if let Some(timeline) = &mut self.tally.timeline {
                        timeline.record(now.saturating_duration_since(self.started), now - sent);
                    }
                }
                for at in self.in_flight.drain(..) {
                    self.tally
                        .keystroke
                        .record(now.saturating_duration_since(at));
                    self.tally.acked_keystrokes += 1;
                }
                self.tally.acked_edits += 1;
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
            Event::Error(code, message) => {
                return Err(ClientError::Protocol(format!(
                    "server error {code}: {message}"
                )));
            }
            _ => {}
        }
        // An acknowledgement releases the buffer as the next outstanding edit.
        self.client.flush_pending().await?;
        if self.sent_at.is_none() && !self.client.is_synced() {
            self.sent_at = Some(Instant::now());
            self.in_flight = std::mem::take(&mut self.buffered);
        }
        Ok(())
    }

    /// Types until `deadline` (open loop at `rate`, or closed loop when `rate` is 0).
    async fn type_until(
        &mut self,
        start: Instant,
        deadline: Instant,
        rate: f64,
        counters: &Counters,
    ) -> Result<(), ClientError> {
        self.started = start;
        let mut ticker = (rate > 0.0).then(|| {
            let period = Duration::from_secs_f64(1.0 / rate);
            // A random phase, so that the clients' keystrokes do not all land at once.
            let phase = period.mul_f64(self.rng.random::<f64>());
            let mut ticker = tokio::time::interval_at(start + phase, period);
            // Catch up after a stall: the schedule, not the server, sets the pace.
            ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
            ticker
        });
        let stop = tokio::time::sleep_until(deadline);
        tokio::pin!(stop);
        loop {
            if ticker.is_none() && self.client.is_synced() {
                if Instant::now() >= deadline {
                    return Ok(());
                }
                self.keystroke(Instant::now()).await?;
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
                // Cancel-safe: a message is either fully handled or still in the socket.
                event = self.client.recv_event() => self.receive(event?, counters).await?,
                at = tick => self.keystroke(at).await?,
            }
        }
    }
}

/// The document's committed text, and every client's verdict against it.
async fn check_document(
    http: &HttpTarget,
    document: &str,
    clients: &mut [Client],
) -> Result<usize, String> {
    let text = http
        .document_text(document)
        .await
        .map_err(|e| format!("{document}: {e}"))?;
    let checks = clients
        .iter_mut()
        .map(|client| client.wait_until(SETTLE, |c| c.text == text));
    let results = futures::future::join_all(checks).await;
    let disagreeing = results.iter().filter(|r| r.is_err()).count();
    if disagreeing > 0 {
        return Err(format!(
            "{document}: {disagreeing} of {} clients disagree with the server's text",
            clients.len()
        ));
    }
    Ok(text.chars().count())
}

/// Runs the `typing` scenario.
pub async fn run(run: &RunOptions, config: &TypingConfig) -> Result<TypingOutcome, ScenarioError> {
    if config.docs == 0 || config.clients == 0 {
        return Err(ScenarioError::Setup(
            "--docs and --clients must be at least 1".into(),
        ));
    }
    if !(config.seconds > 0.0 && config.seconds <= 600.0) {
        return Err(ScenarioError::Setup(
            "--seconds must be more than 0 and at most 600".into(),
        ));
    }
    if !(config.rate >= 0.0 && config.rate <= 10_000.0) {
        return Err(ScenarioError::Setup(
            "--rate must be between 0 (closed loop) and 10000".into(),
        ));
    }
    let http = HttpTarget::from_ws_url(&run.url)?;
    let id = run_id();
    let documents: Vec<String> = (0..config.docs).map(|d| document_name(id, d)).collect();
    let wanted: Vec<String> = documents
        .iter()
        .flat_map(|d| std::iter::repeat_n(d.clone(), config.clients))
        .collect();

    let joining = Progress::new(run.progress, "joining", wanted.len() as u64);
    let connected = connect_many(
        run,
        &wanted,
        config.connect_concurrency,
        JOIN_TIMEOUT,
        |_| joining.inc(1),
    )
    .await;
    joining.finish();
    let timeline = config.timeline.map(Duration::from_millis);
    let mut errors = Vec::new();
    let mut typists = Vec::new();
    for connected in connected {
        match connected.client {
            Ok(client) => typists.push((
                connected.index / config.clients,
                Typist {
                    client,
                    rng: StdRng::seed_from_u64(connected.index as u64),
                    tally: Tally {
                        timeline: timeline.map(Timeline::new),
                        ..Tally::default()
                    },
                    started: Instant::now(),
                    sent_at: None,
                    in_flight: Vec::new(),
                    buffered: Vec::new(),
                },
            )),
            Err(e) => errors.push(format!("join: {e}")),
        }
    }
    if typists.is_empty() {
        return Err(ScenarioError::Setup(format!(
            "no client could join {}: {}",
            run.url,
            group_errors(errors.iter().map(String::as_str)).join("; ")
        )));
    }
    let clients_connected = typists.len();

    let counters = Arc::new(Counters::default());
    let server_before = run.pid.and_then(|pid| Process::Pid(pid).sample());
    let me_before = Process::Myself.sample();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(config.seconds);
    let tasks: Vec<_> = typists
        .into_iter()
        .map(|(doc, mut typist)| {
            let counters = Arc::clone(&counters);
            let rate = config.rate;
            tokio::spawn(async move {
                let typed = typist.type_until(start, deadline, rate, &counters).await;
                let settled = match typed {
                    Ok(()) => typist.client.settle(SETTLE).await,
                    Err(e) => Err(e),
                };
                (doc, typist, settled)
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
                let acked = counters.acked.load(Ordering::Relaxed);
                let messages = counters.messages.load(Ordering::Relaxed);
                let dt = (now - last.0).as_secs_f64();
                bar.set_position((now - start).as_secs());
                bar.set_message(format!(
                    "{} edits, {} messages",
                    rate(per_second(acked - last.1, dt)),
                    rate(per_second(messages - last.2, dt))
                ));
                last = (now, acked, messages);
            }
        })
    };
    tokio::time::sleep_until(deadline).await;
    let seconds = start.elapsed().as_secs_f64();
    let server_after = run.pid.and_then(|pid| Process::Pid(pid).sample());
    let me_after = Process::Myself.sample();
    ticker.abort();
    bar.finish();

    // Asked for, the timeline is reported even if no client acknowledged anything.
    let mut total = Tally {
        timeline: timeline.map(Timeline::new),
        ..Tally::default()
    };
    let mut by_document: Vec<Vec<Client>> = (0..config.docs).map(|_| Vec::new()).collect();
    let mut failed = config.docs * config.clients - clients_connected;
    for task in tasks {
        let (doc, typist, settled) = task
            .await
            .map_err(|e| ScenarioError::Setup(format!("a client task failed: {e}")))?;
        let tally = typist.tally;
        total.keystrokes += tally.keystrokes;
        total.acked_edits += tally.acked_edits;
        total.acked_keystrokes += tally.acked_keystrokes;
        total.messages += tally.messages;
        total.round_trip.merge(&tally.round_trip);
        total.keystroke.merge(&tally.keystroke);
        if let (Some(total), Some(timeline)) = (&mut total.timeline, &tally.timeline) {
            total.merge(timeline);
        }
        match settled {
            Ok(()) => by_document[doc].push(typist.client),
            Err(e) => {
                failed += 1;
                errors.push(format!("typing: {e}"));
            }
        }
    }

    let checks = documents
        .iter()
        .zip(by_document.iter_mut())
        .map(|(document, clients)| check_document(&http, document, clients));
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
    let closing = by_document.into_iter().flatten().map(Client::close);
    futures::future::join_all(closing).await;

    Ok(TypingOutcome {
        docs: config.docs,
        clients_per_doc: config.clients,
        rate: config.rate,
        seconds,
        clients_connected,
        clients_failed: failed,
        errors: group_errors(errors.iter().map(String::as_str)),
        keystrokes: total.keystrokes,
        acked_edits: total.acked_edits,
        acked_keystrokes: total.acked_keystrokes,
        acked_edits_per_second: per_second(total.acked_edits, seconds),
        acked_keystrokes_per_second: per_second(total.acked_keystrokes, seconds),
        messages: total.messages,
        messages_per_second: per_second(total.messages, seconds),
        round_trip: total.round_trip.summary(),
        keystroke: total.keystroke.summary(),
        converged_docs,
        diverged,
        mean_doc_chars: chars as f64 / converged_docs.max(1) as f64,
        server: match (server_before, server_after) {
            (Some(before), Some(after)) => Some(ServerUsage {
                cores: before.cores_until(&after, seconds),
                cpu_us_per_edit: micros_each(before.cpu_seconds_until(&after), total.acked_edits),
                rss_kib_start: before.rss_kib,
                rss_kib_end: after.rss_kib,
            }),
            _ => None,
        },
        generator_cores: me_before
            .zip(me_after)
            .map(|(before, after): (Sample, Sample)| before.cores_until(&after, seconds)),
        generator_cpu_us_per_edit: me_before.zip(me_after).and_then(|(before, after)| {
            micros_each(before.cpu_seconds_until(&after), total.acked_edits)
        }),
        timeline: total.timeline.map(|timeline| TimelineReport {
            interval_ms: u64::try_from(timeline.slot().as_millis()).unwrap_or(u64::MAX),
            intervals: timeline.slots().to_vec(),
        }),
        round_trip_histogram: total.round_trip,
        keystroke_histogram: total.keystroke,
    })
}
