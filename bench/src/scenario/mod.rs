//! The load generator's workloads, one per file, each an async function from its settings
//! (a clap `Args` struct, so the command line and the tests build the same thing) to an
//! outcome that implements [`crate::report::Outcome`]:
//!
//! - [`typing`]: documents × clients typing, open or closed loop; throughput, edit
//!   round-trip latency, fan-out rate and a convergence check;
//! - [`idle`]: many idle connections; connect rate and server memory per connection;
//! - [`join_storm`]: many clients joining one document at once;
//! - [`late_join`]: a document with a long history, and how fast a newcomer gets its text;
//! - [`failover`]: starts a cluster, kills document owners, times the failover;
//! - [`soak`]: many documents opened, edited and left over a long run; memory and loaded
//!   documents must come back down after IDLE_UNLOAD_SECS, and every text be intact;
//! - [`yjs_typing`]: Yjs documents × y-websocket providers typing, open or closed loop;
//!   updates per second, update round trip, and a check of every document's text;
//! - [`yjs_documents`]: many Yjs documents loaded with a small text; server memory per
//!   document. (Idle y-websocket connections are [`idle::run_yjs`].)
//!
//! The Yjs scenarios take `--url` as the rooms' prefix: `ws://host:port/yjs` for codraft,
//! `ws://host:port` for y-websocket's own server.
//!
//! What they share lives here: where the server is ([`RunOptions`]), the error type,
//! document naming and connecting many clients at once.

pub mod failover;
pub mod idle;
pub mod join_storm;
pub mod late_join;
pub mod soak;
pub mod typing;
pub mod yjs_documents;
pub mod yjs_typing;

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures::{stream, StreamExt};

use codraft_testkit::{
    client::{Client, ClientError, Join, Options},
    http::HttpError,
    process::ProcessError,
};

/// Where the server is and how to talk to it: the settings every scenario shares.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// WebSocket base URL, e.g. `ws://127.0.0.1:3030`.
    pub url: String,
    /// Use codraft's exactly-once extension (`client=` ids and `seq`); otherwise only the
    /// Rustpad-compatible subset of the protocol is spoken.
    pub exactly_once: bool,
    /// The server is Rustpad's own (or behaves like it): it sends no History to a joiner of
    /// an empty document, so a join ends at Identity.
    pub rustpad: bool,
    /// The server's process id, to read its memory and CPU time from /proc.
    pub pid: Option<u32>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl RunOptions {
    /// Options for `url` with the plain protocol, no process to watch and no progress bar.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            exactly_once: false,
            rustpad: false,
            pid: None,
            progress: false,
        }
    }

    /// Connection options for one new client: a fresh random client id in exactly-once mode.
    pub fn client_options(&self) -> Options {
        Options {
            client_id: self
                .exactly_once
                .then(|| format!("bench-{:016x}", rand::random::<u64>())),
        }
    }
}

/// Why a scenario could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A client that the scenario cannot do without failed.
    #[error("client failed: {0}")]
    Client(#[from] ClientError),
    /// The HTTP API could not be reached.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A server process the scenario starts (failover) did not start or stop.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The scenario's settings or the server's state make it impossible to run.
    #[error("{0}")]
    Setup(String),
}

/// A document name unique to this run: `bench-<run>-<label>`.
pub fn document_name(run: u64, label: impl std::fmt::Display) -> String {
    format!("bench-{run:012x}-{label}")
}

/// A random run id, so that repeated runs against one server never share documents.
pub fn run_id() -> u64 {
    rand::random::<u64>() & 0xffff_ffff_ffff
}

/// Joins `document` as a new client and turns Nagle's algorithm off, as a browser does:
/// every scenario's clients behave like the web client.
pub async fn connect(run: &RunOptions, document: &str) -> Result<Client, ClientError> {
    let join = if run.rustpad {
        Join::Identity
    } else {
        Join::History
    };
    let client = Client::connect_until(&run.url, document, run.client_options(), join).await?;
    client
        .set_nodelay(true)
        .map_err(|e| ClientError::Socket(tokio_tungstenite::tungstenite::Error::Io(e)))?;
    Ok(client)
}

/// One attempt to connect a client (an OT client by default, or a Yjs provider).
pub struct Connected<C = Client> {
    /// Which of the requested connections this is (its index in the request list).
    pub index: usize,
    /// The client, or why it could not join.
    pub client: Result<C, ClientError>,
    /// From the start of the attempt to the end of the join (Identity and History; for a
    /// Yjs provider, the server's sync step 2).
    pub took: Duration,
}

/// Connects one client per entry of `documents`, at most `concurrency` joins in flight at
/// a time, each bounded by `timeout`; `on_done` is called as each attempt finishes. The
/// results come back in completion order.
pub async fn connect_many(
    run: &RunOptions,
    documents: &[String],
    concurrency: usize,
    timeout: Duration,
    on_done: impl Fn(&Connected),
) -> Vec<Connected> {
    connect_many_with(
        documents,
        concurrency,
        timeout,
        |_, document| async move { connect(run, &document).await },
        on_done,
    )
    .await
}

/// [`connect_many`] with any client: `connect(index, document)` makes one.
pub async fn connect_many_with<C, F>(
    documents: &[String],
    concurrency: usize,
    timeout: Duration,
    connect: impl Fn(usize, String) -> F,
    on_done: impl Fn(&Connected<C>),
) -> Vec<Connected<C>>
where
    F: Future<Output = Result<C, ClientError>>,
{
    let connect = &connect;
    stream::iter(documents.iter().enumerate())
        .map(|(index, document)| async move {
            let started = Instant::now();
            let joined = tokio::time::timeout(timeout, connect(index, document.clone()))
                .await
                .unwrap_or(Err(ClientError::Timeout));
            Connected {
                index,
                client: joined,
                took: started.elapsed(),
            }
        })
        .buffer_unordered(concurrency.max(1))
        .inspect(|connected| on_done(connected))
        .collect()
        .await
}

/// Error messages grouped by text, most frequent first: `["3 × timed out", ...]`.
pub fn group_errors<'a>(errors: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for error in errors {
        match counts.iter_mut().find(|(e, _)| *e == error) {
            Some((_, n)) => *n += 1,
            None => counts.push((error, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
        .into_iter()
        .map(|(e, n)| format!("{n} × {e}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_errors_by_text() {
        let grouped = group_errors(["timed out", "closed", "timed out"]);
        assert_eq!(grouped, vec!["2 × timed out", "1 × closed"]);
    }

    #[test]
    fn names_documents_per_run() {
        let a = document_name(run_id(), 1);
        assert!(a.starts_with("bench-") && a.ends_with("-1"));
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        let exactly_once = RunOptions {
            exactly_once: true,
            ..RunOptions::new("ws://127.0.0.1:1")
        };
        assert!(exactly_once.client_options().client_id.is_some());
        assert!(RunOptions::new("ws://x")
            .client_options()
            .client_id
            .is_none());
    }
}
