//! `failover`: starts a small cluster of its own (docnodes and one gateway as processes on
//! loopback, over the given Postgres and Redis), keeps one exactly-once typist per document
//! typing, then kills the owner of a document again and again and measures the time from
//! the kill to that document's first acknowledged edit on its new owner (target: under 2 s).
//! With `--drain` the owner gets SIGTERM instead of SIGKILL, which measures the pause of a
//! planned drain. At the end every typist must converge with the server's text.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use codraft_testkit::{
    client::{Client, ClientError, Options},
    http::HttpTarget,
    ports::try_free_port,
    process::Process,
    tempdir::TempDir,
};
use serde_json::{json, Value};

use crate::{latency::Latency, scenario::ScenarioError};

/// How long a (re)started docnode or gateway may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Settings of the failover scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverConfig {
    /// The docnode binary.
    #[arg(long, default_value = "target/release/docnode")]
    pub docnode_bin: PathBuf,
    /// The gateway binary.
    #[arg(long, default_value = "target/release/gateway")]
    pub gateway_bin: PathBuf,
    /// Postgres for the cluster (its tables are created if missing).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub database_url: String,
    /// Redis for membership; the cluster uses a key prefix of its own.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// How many times to kill an owner.
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Docnodes in the cluster.
    #[arg(long, default_value_t = 2)]
    pub docnodes: usize,
    /// Documents (one typist each).
    #[arg(long, default_value_t = 4)]
    pub documents: usize,
    /// SIGTERM (planned drain) instead of SIGKILL.
    #[arg(long)]
    pub drain: bool,
    /// MEMBERSHIP_TTL_MS for the cluster: how soon a dead docnode leaves the live set.
    #[arg(long, default_value_t = 1500)]
    pub membership_ttl_ms: u64,
}

/// What the failover run measured.
#[derive(Debug)]
pub struct FailoverOutcome {
    /// Kill (or SIGTERM) → first acknowledged edit of the document on its new owner.
    pub pauses: Latency,
    /// Each pause, in milliseconds, in order.
    pub samples_ms: Vec<f64>,
    /// Whether every typist converged with the server at the end.
    pub converged: bool,
    /// Edits acknowledged over the run.
    pub acknowledged: u64,
    /// Times a typist's socket was closed and it had to reconnect (a gateway that carries
    /// connections over to the new owner keeps this at 0 on a drain).
    pub reconnects: u64,
}

impl FailoverOutcome {
    /// A readable table.
    pub fn table(&self, config: &FailoverConfig) -> String {
        let q = |p: f64| self.pauses.quantile_ms(p);
        format!(
            "failover ({} of {} docnodes × {} kills, {})\n\
             pause from {} to first acknowledged edit on the new owner:\n  \
             p50 {:.0} ms   p90 {:.0} ms   p99 {:.0} ms   max {:.0} ms   (n = {})\n\
             edits acknowledged: {}   client reconnects: {}   converged: {}",
            if config.drain { "SIGTERM" } else { "SIGKILL" },
            config.docnodes,
            config.kills,
            if config.drain {
                "planned drain"
            } else {
                "crash"
            },
            if config.drain { "SIGTERM" } else { "kill -9" },
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0),
            self.pauses.count(),
            self.acknowledged,
            self.reconnects,
            if self.converged { "yes" } else { "NO" },
        )
    }

    /// The same as JSON.
    pub fn json(&self) -> Value {
        json!({
            "p50_ms": self.pauses.quantile_ms(0.5),
            "p90_ms": self.pauses.quantile_ms(0.9),
            "p99_ms": self.pauses.quantile_ms(0.99),
            "max_ms": self.pauses.quantile_ms(1.0),
            "samples_ms": self.samples_ms,
            "acknowledged": self.acknowledged,
            "reconnects": self.reconnects,
            "converged": self.converged,
        })
    }
}

fn free_port() -> Result<u16, ScenarioError> {
    try_free_port().map_err(|e| ScenarioError::Setup(format!("no free loopback port: {e}")))
}

/// Starts a process of the cluster and waits until it is ready.
async fn start(process: &mut Process) -> Result<(), ScenarioError> {
    process.spawn()?;
    process.wait_ready(READY_WITHIN).await?;
    Ok(())
}

/// Stops a process of the cluster: SIGTERM (a planned drain) or SIGKILL (a crash), and waits
/// for it to exit.
async fn bring_down(process: &mut Process, drain: bool) -> Result<(), ScenarioError> {
    if drain {
        process.stop().await?;
    } else {
        process.kill();
    }
    Ok(())
}

/// Acknowledgement times of each document's typist.
type Acks = Arc<Mutex<Vec<Vec<Instant>>>>;

/// Types one character at a time into `document`, reconnecting (and resuming) whenever the
/// connection breaks, until `stop` is set; records each acknowledgement's time.
async fn typist(
    base: String,
    document: String,
    index: usize,
    acks: Acks,
    stop: Arc<std::sync::atomic::AtomicBool>,
    reconnects: Arc<std::sync::atomic::AtomicU64>,
) -> Option<Client> {
    let options = Options {
        client_id: Some(format!("failover-{index}-{:08x}", rand::random::<u32>())),
    };
    let mut client = loop {
        match Client::connect(&base, &document, options.clone()).await {
            Ok(c) => break c,
            Err(_) if !stop.load(std::sync::atomic::Ordering::Relaxed) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(_) => return None,
        }
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let end = client.len();
        let sent = client.insert(end, "x").await;
        let mut result = sent.and(Ok(()));
        if result.is_ok() {
            result = client.settle(Duration::from_secs(5)).await;
        }
        match result {
            Ok(()) => {
                if let Ok(mut acks) = acks.lock() {
                    acks[index].push(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(ClientError::Timeout) => {}
            Err(_) => {
                // The owner died or moved: reconnect and resume until it works.
                while client.reconnect().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    Some(client)
}

/// The first acknowledgement of `document` after `since`, waiting at most 30 s.
async fn first_ack_after(acks: &Acks, document: usize, since: Instant) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let found = acks
            .lock()
            .ok()
            .and_then(|a| a[document].iter().copied().find(|t| *t > since));
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Runs the scenario.
pub async fn run(config: &FailoverConfig) -> Result<FailoverOutcome, ScenarioError> {
    let prefix = format!("bench_failover_{:08x}", rand::random::<u32>());
    // The processes' logs; declared first, so it is removed after they are killed.
    let logs = TempDir::try_new("codraft-failover")
        .map_err(|e| ScenarioError::Setup(format!("cannot create a log directory: {e}")))?;
    let common = |extra: Vec<(&str, String)>| -> Vec<(String, String)> {
        let mut env = vec![
            ("REDIS_URL".to_owned(), config.redis_url.clone()),
            ("REDIS_PREFIX".to_owned(), prefix.clone()),
            (
                "MEMBERSHIP_TTL_MS".to_owned(),
                config.membership_ttl_ms.to_string(),
            ),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        env.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        env
    };
    let mut nodes = Vec::new();
    for i in 0..config.docnodes.max(2) {
        let (grpc, admin) = (free_port()?, free_port()?);
        let env = common(vec![
            ("NODE_ID", format!("dn{i}")),
            ("DOCNODE_ADDR", format!("127.0.0.1:{grpc}")),
            ("ADMIN_ADDR", format!("127.0.0.1:{admin}")),
            ("DATABASE_URL", config.database_url.clone()),
            ("SHUTDOWN_TIMEOUT_SECS", "5".to_owned()),
        ]);
        nodes.push(Process::new(
            &format!("docnode dn{i}"),
            &config.docnode_bin,
            env,
            logs.path(),
            admin,
        ));
    }
    let port = free_port()?;
    let base = format!("ws://127.0.0.1:{port}");
    let env = common(vec![
        ("PORT", port.to_string()),
        ("BIND", "127.0.0.1".to_owned()),
    ]);
    let mut gateway = Process::new("gateway", &config.gateway_bin, env, logs.path(), port)
        .ready_when(format!("ready: {} docnodes", nodes.len()));
    for node in &mut nodes {
        start(node).await?;
    }
    start(&mut gateway).await?;

    let run = format!("{:08x}", rand::random::<u32>());
    let documents: Vec<String> = (0..config.documents.max(1))
        .map(|i| format!("failover-{run}-{i}"))
        .collect();
    let acks: Acks = Arc::new(Mutex::new(vec![Vec::new(); documents.len()]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reconnects = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let typists: Vec<_> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| {
            tokio::spawn(typist(
                base.clone(),
                d.clone(),
                i,
                Arc::clone(&acks),
                Arc::clone(&stop),
                Arc::clone(&reconnects),
            ))
        })
        .collect();
    // Let every typist get going.
    for d in 0..documents.len() {
        first_ack_after(&acks, d, Instant::now() - Duration::from_secs(60)).await;
    }

    let mut pauses = Latency::new();
    let mut samples_ms = Vec::new();
    let ids: Vec<String> = (0..nodes.len()).map(|i| format!("dn{i}")).collect();
    for kill in 0..config.kills {
        let document = kill % documents.len();
        let owner = codraft_owner(&ids, &documents[document]);
        let killed_at = Instant::now();
        bring_down(&mut nodes[owner], config.drain).await?;
        if let Some(ack) = first_ack_after(&acks, document, killed_at).await {
            let pause = ack - killed_at;
            pauses.record(pause);
            samples_ms.push(pause.as_secs_f64() * 1000.0);
        }
        // Bring it back and let the document settle on it again before the next kill.
        start(&mut nodes[owner]).await?;
        gateway.wait_ready(READY_WITHIN).await?;
        let back = Instant::now();
        first_ack_after(&acks, document, back + Duration::from_millis(300)).await;
    }

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut converged = true;
    let http = HttpTarget::from_ws_url(&base)?;
    for (task, document) in typists.into_iter().zip(&documents) {
        let Ok(Some(mut client)) = task.await else {
            converged = false;
            continue;
        };
        let text = http.document_text(document).await?;
        converged &= client
            .wait_until(Duration::from_secs(10), |c| c.text == text)
            .await
            .is_ok();
    }
    let acknowledged = acks
        .lock()
        .map(|a| a.iter().map(|v| v.len() as u64).sum())
        .unwrap_or(0);
    Ok(FailoverOutcome {
        pauses,
        samples_ms,
        converged,
        acknowledged,
        reconnects: reconnects.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// The index (in `ids`) of the docnode owning `document`, by the same rendezvous hash the
/// gateways and docnodes use.
fn codraft_owner(ids: &[String], document: &str) -> usize {
    codraft_common::ring::owner(ids.iter().map(String::as_str), document)
        .and_then(|owner| ids.iter().position(|id| id == owner))
        .unwrap_or(0)
}
