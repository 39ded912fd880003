//! codraft's test kit: one harness for every test that talks to real processes and real
//! services, and for the load generator, which starts clusters and speaks the protocol the same
//! way. The root package's tests (tests/), the docnode's store tests (docnode/tests), the load
//! generator's scenario tests (bench/tests), the failover scenario and the commit benchmark
//! all use it; none keeps a copy of its own.
//!
//! One concept per file:
//!
//! - [`ports`]: free loopback ports;
//! - [`tempdir`]: a directory removed on drop (data directories, process logs);
//! - [`database`]: a PostgreSQL database of its own per test, dropped at the end;
//! - [`redis`]: the local Redis, and a key prefix of its own per cluster;
//! - [`process`]: one server process — start, readiness, kill -9, SIGTERM, restart, its log
//!   printed when a test fails, killed on drop — and where the server binaries are;
//! - [`standalone`]: the `codraft` binary with a fresh data directory;
//! - [`cluster`]: docnodes and gateways over one database and one Redis prefix;
//! - [`http`]: a tiny HTTP GET (readiness, committed text, metrics pages);
//! - [`jwt`]: signed tokens for the access tests;
//! - [`client`]: the Rustpad-protocol JSON WebSocket client with the exactly-once extension;
//! - [`editing`]: workloads on top of the client — random edits, typists that survive
//!   restarts, convergence and token checks;
//! - [`proxy`]: a TCP proxy a test can cut, to make PostgreSQL or Redis unreachable;
//! - [`node`]: Node.js scripts as clients (the Yjs tests drive the real npm y-websocket
//!   provider this way), their output printed when a test fails;
//! - `store` (feature `store`): commits that type a known text, for the docnode's store tests.
//!
//! Services are the machine's own (PostgreSQL at 127.0.0.1:5432, Redis at 127.0.0.1:6379);
//! every test isolates itself with its own database and key prefix, so tests run in parallel.
//! Under `CI=true` a missing service fails the test loudly; it never skips.

#![warn(missing_docs)]

pub mod client;
pub mod cluster;
pub mod database;
pub mod editing;
pub mod http;
pub mod jwt;
pub mod node;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod standalone;
#[cfg(feature = "store")]
pub mod store;
pub mod tempdir;

/// A name no other test (or process) uses: `prefix_<pid>_<random hex>`.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// Whether this runs under CI (`CI=true`), where a missing service must fail, not skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}
