//! The load generator's scenarios, run briefly as library functions against a real
//! standalone `codraft` process: each must finish, measure something and pass its own
//! correctness checks (convergence, everyone admitted, the joiner's text). Performance is
//! not asserted here; BENCHMARKS.md records it.
//!
//! The server binary belongs to the root package, so Cargo cannot build it for this crate's
//! tests: it is looked up in the workspace's target directory (release first, as the test
//! script builds it, then debug), or taken from `CODRAFT_BIN`.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use codraft_bench::{
    http::HttpTarget,
    report::Outcome,
    scenario::{
        idle::{self, IdleConfig},
        join_storm::{self, JoinStormConfig},
        late_join::{self, LateJoinConfig},
        typing::{self, TypingConfig},
        RunOptions,
    },
};

/// No scenario test may run longer than this.
const LIMIT: Duration = Duration::from_secs(60);

/// The `codraft` binary to test against.
fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CODRAFT_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let candidates = [target.join("release/codraft"), target.join("debug/codraft")];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no codraft server binary at {} or {}: run `cargo build --release` (or \
                 `cargo build`) in the workspace first, or set CODRAFT_BIN",
                candidates[0].display(),
                candidates[1].display()
            )
        })
}

/// A standalone server on a free loopback port with its own data directory; killed on drop.
struct Server {
    child: Child,
    port: u16,
    data: PathBuf,
}

impl Server {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        let data =
            std::env::temp_dir().join(format!("codraft-bench-test-{}-{port}", std::process::id()));
        let child = Command::new(server_binary())
            .env("PORT", port.to_string())
            .env("BIND", "127.0.0.1")
            .env("DATA_DIR", &data)
            .env("RUST_LOG", "warn")
            // Closed-loop typists and the late-join builder send far more edits per second
            // than a person; the per-connection limits would (rightly) disconnect them.
            .env("EDITS_PER_SECOND", "1000000")
            .env("EDIT_BURST", "1000000")
            .env("MESSAGES_PER_SECOND", "1000000")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the codraft server binary");
        let server = Self { child, port, data };
        let http = HttpTarget::from_ws_url(&server.url()).expect("valid URL");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !matches!(http.get("/readyz").await, Ok((200, _))) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "codraft did not become ready on port {port} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn options(&self) -> RunOptions {
        RunOptions {
            pid: Some(self.child.id()),
            ..RunOptions::new(self.url())
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("the scenario took longer than 60 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_closed_loop_measures_and_converges() {
    let server = Server::start().await;
    let config = TypingConfig {
        docs: 2,
        clients: 2,
        rate: 0.0,
        seconds: 2.0,
        connect_concurrency: 4,
    };
    let outcome = bounded(typing::run(&server.options(), &config))
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
    let server = Server::start().await;
    let run = RunOptions {
        exactly_once: true,
        ..server.options()
    };
    let config = TypingConfig {
        docs: 1,
        clients: 3,
        rate: 40.0,
        seconds: 1.0,
        connect_concurrency: 4,
    };
    let outcome = bounded(typing::run(&run, &config))
        .await
        .expect("typing ran");
    assert!(outcome.keystrokes >= 3 * 20, "{outcome:#?}");
    assert!(outcome.acked_keystrokes > 0, "{outcome:#?}");
    assert!(outcome.keystroke.count > 0, "{outcome:#?}");
    assert!(outcome.passed(), "{outcome:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_storm_admits_fifty_clients() {
    let server = Server::start().await;
    let config = JoinStormConfig {
        clients: 50,
        text_chars: 500,
        timeout_seconds: 30.0,
    };
    let outcome = bounded(join_storm::run(&server.options(), &config))
        .await
        .expect("join storm ran");
    assert_eq!(outcome.admitted, 50, "{outcome:#?}");
    assert_eq!(outcome.correct_text, 50, "{outcome:#?}");
    assert!(outcome.passed(), "{outcome:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_join_builds_history_and_times_the_join() {
    let server = Server::start().await;
    let config = LateJoinConfig {
        ops: 3000,
        window: 64,
        max_chars: 1000,
        joins: 2,
        build_seconds: 40.0,
    };
    let outcome = bounded(late_join::run(&server.options(), &config))
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
    let server = Server::start().await;
    let config = IdleConfig {
        connections: 60,
        docs: 3,
        concurrency: 16,
        hold_seconds: 0.2,
        max_seconds: 30.0,
    };
    let outcome = bounded(idle::run(&server.options(), &config))
        .await
        .expect("idle ran");
    assert_eq!(outcome.connected, 60, "{outcome:#?}");
    assert!(outcome.connects_per_second > 0.0, "{outcome:#?}");
    assert!(outcome.server.is_some(), "{outcome:#?}");
    assert!(outcome.passed(), "{outcome:#?}");
}
