//! The load generator's scenarios, run briefly as library functions against a real
//! standalone `codraft` process: each must finish, measure something and pass its own
//! correctness checks (convergence, everyone admitted, the joiner's text). Performance is
//! not asserted here; BENCHMARKS.md records it.
//!
//! `compare` runs against two such servers, the second driven as Rustpad's own.
//!
//! The server is started by the test kit (`codraft_testkit::standalone`), which finds the
//! root package's binary in the workspace's target directory or through `CODRAFT_BIN`.

use std::time::Duration;

use codraft_bench::{
    compare::{self, Contender},
    report::Outcome,
    scenario::{
        idle::{self, IdleConfig},
        join_storm::{self, JoinStormConfig},
        late_join::{self, LateJoinConfig},
        typing::{self, TypingConfig},
        yjs_documents::{self, YjsDocumentsConfig},
        yjs_typing::{self, YjsTypingConfig},
        RunOptions,
    },
};
use codraft_testkit::standalone::Standalone;

/// No scenario test may run longer than this.
const LIMIT: Duration = Duration::from_secs(60);

/// A standalone server on a free loopback port with its own data directory; killed on drop.
async fn start_server() -> Standalone {
    Standalone::start_with(&[
        ("RUST_LOG", "warn"),
        // Closed-loop typists and the late-join builder send far more edits per second than
        // a person; the per-connection limits would (rightly) disconnect them.
        ("EDITS_PER_SECOND", "1000000"),
        ("EDIT_BURST", "1000000"),
        ("MESSAGES_PER_SECOND", "1000000"),
    ])
    .await
}

/// What every scenario is given: the server's URL, and its process id to read /proc.
fn options(server: &Standalone) -> RunOptions {
    RunOptions {
        pid: server.process.pid(),
        ..RunOptions::new(server.ws())
    }
}

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("the scenario took longer than 60 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_closed_loop_measures_and_converges() {
    let server = start_server().await;
    let config = TypingConfig {
        docs: 2,
        clients: 2,
        rate: 0.0,
        seconds: 2.0,
        connect_concurrency: 4,
        timeline: None,
    };
    let outcome = bounded(typing::run(&options(&server), &config))
        .await
        .expect("typing ran");
    assert!(outcome.acked_edits > 0, "{outcome:#?}");
    assert!(outcome.acked_edits_per_second > 0.0, "{outcome:#?}");
    assert!(outcome.round_trip.count > 0, "{outcome:#?}");
    assert!(outcome.messages > outcome.acked_edits, "{outcome:#?}");
    assert_eq!(outcome.converged_docs, 2, "{outcome:#?}");
    assert!(outcome.passed(), "{outcome:#?}");
    assert!(
        outcome.server.is_some(),
        "server CPU and RSS read from /proc"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_open_loop_with_exactly_once_converges() {
    let server = start_server().await;
    let run = RunOptions {
        exactly_once: true,
        ..options(&server)
    };
    let config = TypingConfig {
        docs: 1,
        clients: 3,
        rate: 40.0,
        seconds: 1.0,
        connect_concurrency: 4,
        timeline: Some(250),
    };
    let outcome = bounded(typing::run(&run, &config))
        .await
        .expect("typing ran");
    assert!(outcome.keystrokes >= 3 * 20, "{outcome:#?}");
    assert!(outcome.acked_keystrokes > 0, "{outcome:#?}");
    assert!(outcome.keystroke.count > 0, "{outcome:#?}");
    assert!(outcome.passed(), "{outcome:#?}");
    // Every round trip is in one interval of the timeline, and the run's four intervals
    // each saw some (40 keystrokes/s from three clients).
    let timeline = outcome.timeline.as_ref().expect("--timeline asked for one");
    assert_eq!(timeline.interval_ms, 250);
    let counted: u64 = timeline.intervals.iter().map(|slot| slot.count).sum();
    assert_eq!(counted, outcome.round_trip.count, "{timeline:?}");
    assert!(timeline.intervals.len() >= 4, "{timeline:?}");
    assert!(
        timeline.intervals[..4].iter().all(|slot| slot.count > 0),
        "{timeline:?}"
    );
    // The histogram keeps three significant digits; the timeline keeps the exact slowest.
    let slowest = timeline
        .intervals
        .iter()
        .map(|slot| slot.max_us)
        .max()
        .unwrap_or(0);
    let max_ms = outcome.round_trip.max_ms;
    assert!(
        (slowest as f64 / 1000.0 - max_ms).abs() <= max_ms * 0.002 + 0.002,
        "{slowest} µs against {max_ms} ms"
    );
    let rows = outcome.rows();
    assert!(
        rows.iter()
            .any(|(name, _)| name == "round trip 0.25–0.50 s"),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_storm_admits_fifty_clients() {
    let server = start_server().await;
    let config = JoinStormConfig {
        clients: 50,
        text_chars: 500,
        timeout_seconds: 30.0,
    };
    let outcome = bounded(join_storm::run(&options(&server), &config))
        .await
        .expect("join storm ran");
    assert_eq!(outcome.admitted, 50, "{outcome:#?}");
    assert_eq!(outcome.correct_text, 50, "{outcome:#?}");
    assert!(outcome.passed(), "{outcome:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_join_builds_history_and_times_the_join() {
    let server = start_server().await;
    let config = LateJoinConfig {
        ops: 3000,
        window: 64,
        max_chars: 1000,
        joins: 2,
        build_seconds: 40.0,
    };
    let outcome = bounded(late_join::run(&options(&server), &config))
        .await
        .expect("late join ran");
    assert_eq!(outcome.revisions_built, 3000, "{outcome:#?}");
    assert!(outcome.doc_chars >= 1000, "{outcome:#?}");
    assert!(outcome.text_matches, "{outcome:#?}");
    assert!(outcome.join_bytes > 0, "{outcome:#?}");
    assert!(outcome.passed(), "{outcome:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_held_and_weighed() {
    let server = start_server().await;
    let config = IdleConfig {
        connections: 60,
        docs: 3,
        concurrency: 16,
        hold_seconds: 0.2,
        max_seconds: 30.0,
    };
    let outcome = bounded(idle::run(&options(&server), &config))
        .await
        .expect("idle ran");
    assert_eq!(outcome.connected, 60, "{outcome:#?}");
    assert!(outcome.connects_per_second > 0.0, "{outcome:#?}");
    assert!(outcome.server.is_some(), "{outcome:#?}");
    assert!(outcome.passed(), "{outcome:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_runs_both_servers_and_divides_their_figures() {
    let (first, second) = (start_server().await, start_server().await);
    let a = Contender {
        label: "first".into(),
        run: RunOptions {
            exactly_once: true,
            ..options(&first)
        },
    };
    let b = Contender::rustpad("second", &second.ws(), second.process.pid(), false);
    let config = TypingConfig {
        docs: 2,
        clients: 2,
        rate: 0.0,
        seconds: 1.0,
        connect_concurrency: 4,
        timeline: None,
    };
    let comparison = bounded(compare::run(&a, &b, async |run| {
        typing::run(run, &config).await
    }))
    .await
    .expect("both ran");
    assert!(comparison.passed(), "{comparison:#?}");
    assert_eq!(comparison.a.environment.url, first.ws());
    assert_eq!(comparison.b.environment.url, second.ws());
    assert!(comparison.a.environment.exactly_once && !comparison.b.environment.exactly_once);
    let edits = &comparison.ratios[0];
    assert_eq!(edits.figure, "accepted edits");
    assert_eq!(edits.a, Some(comparison.a.outcome.acked_edits_per_second));
    assert_eq!(edits.b, Some(comparison.b.outcome.acked_edits_per_second));
    let expected =
        comparison.a.outcome.acked_edits_per_second / comparison.b.outcome.acked_edits_per_second;
    assert_eq!(edits.ratio, Some(expected));
    let cpu = comparison
        .ratios
        .iter()
        .find(|r| r.figure == "server CPU per accepted edit")
        .expect("a server CPU row");
    assert!(cpu.a.is_some() && cpu.b.is_some(), "{cpu:?}");
    assert!(comparison.notes[0].starts_with("--exactly-once applied to first only"));

    let json = comparison.json();
    assert_eq!(json["scenario"], "typing");
    assert_eq!(json["a"]["label"], "first");
    assert_eq!(json["b"]["label"], "second");
    assert_eq!(json["b"]["result"]["docs"], 2);
    assert!(
        json["a"]["result"]["generator_cpu_us_per_edit"].is_number(),
        "{json:#}"
    );
    assert_eq!(json["ratios"][0]["figure"], "accepted edits");
    let table = comparison.table();
    assert!(
        table.contains("| figure") && table.contains("first / second"),
        "{table}"
    );
}

/// The Yjs scenarios' options: the rooms' prefix is codraft's `/yjs`.
fn yjs_options(server: &Standalone) -> RunOptions {
    RunOptions {
        pid: server.process.pid(),
        ..RunOptions::new(format!("{}/yjs", server.ws()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yjs_typing_sees_its_updates_come_back_and_every_character_stored() {
    let server = start_server().await;
    for rate in [0.0, 50.0] {
        let config = YjsTypingConfig {
            docs: 2,
            providers: 3,
            rate,
            seconds: 1.5,
            max_updates: 10_000,
            connect_concurrency: 4,
        };
        let outcome = bounded(yjs_typing::run(&yjs_options(&server), &config))
            .await
            .expect("yjs-typing ran");
        assert!(outcome.updates_echoed > 0, "{outcome:#?}");
        assert!(outcome.round_trip.count > 0, "{outcome:#?}");
        // Every update goes to all three providers of its document (the last ones may
        // reach the other two after the typing time, when nothing is counted).
        assert!(
            outcome.messages > outcome.updates_echoed * 2,
            "{outcome:#?}"
        );
        assert_eq!(outcome.converged_docs, 2, "{outcome:#?}");
        assert!(outcome.passed(), "{outcome:#?}");
        assert!(outcome.server.is_some(), "server CPU read from /proc");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yjs_typing_stops_at_max_updates() {
    let server = start_server().await;
    let config = YjsTypingConfig {
        docs: 1,
        providers: 2,
        rate: 0.0,
        seconds: 5.0,
        max_updates: 20,
        connect_concurrency: 2,
    };
    let outcome = bounded(yjs_typing::run(&yjs_options(&server), &config))
        .await
        .expect("yjs-typing ran");
    assert_eq!(outcome.updates_sent, 40, "{outcome:#?}");
    assert!(outcome.passed(), "{outcome:#?}");
    assert!((outcome.mean_doc_chars - 40.0).abs() < 0.5, "{outcome:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yjs_idle_providers_and_loaded_documents_are_weighed() {
    let server = start_server().await;
    let idle = IdleConfig {
        connections: 60,
        docs: 6,
        concurrency: 8,
        hold_seconds: 0.2,
        max_seconds: 30.0,
    };
    let outcome = bounded(idle::run_yjs(&yjs_options(&server), &idle))
        .await
        .expect("yjs-idle ran");
    assert_eq!(outcome.connected, 60, "{outcome:#?}");
    assert!(outcome.server.is_some(), "{outcome:#?}");
    assert_eq!(outcome.scenario(), "yjs-idle");

    let documents = YjsDocumentsConfig {
        docs: 20,
        updates: 3,
        concurrency: 8,
        hold_seconds: 0.2,
    };
    let outcome = bounded(yjs_documents::run(&yjs_options(&server), &documents))
        .await
        .expect("yjs-documents ran");
    assert_eq!((outcome.loaded, outcome.warm_up), (20, 2), "{outcome:#?}");
    assert!(outcome.passed(), "{outcome:#?}");
    assert!(outcome.server.is_some(), "{outcome:#?}");
}
