//! How many durable ops per second the Postgres store commits, with group commit and
//! without, under the same load: many documents, each with a typist whose next edit waits for
//! the previous one to be acknowledged (the worst case for batching within a document).
//!
//! ```text
//! cargo run --release -p codraft-docnode --example commit_bench -- --seconds 3 --documents 100
//! ```
//!
//! DATABASE_URL names the server (default postgres://postgres@127.0.0.1:5432/test). The
//! benchmark works in a scratch database of its own, created and dropped around the run.
//!
//! Modes, each run for `--seconds`:
//! - **single-row INSERT loop**: one connection, one autocommitted one-row INSERT after
//!   another. The floor: what one durable commit costs on this machine.
//! - **1 txn per op, 1 writer**: one document, each op its own `PgStore::commit`.
//! - **1 txn per op, N writers**: every document's typist commits each op in its own
//!   transaction at once, through the pool (Postgres' own WAL flushing groups some of them).
//! - **group commit**: every typist submits through the docnode's `Committer`, which forms
//!   batches exactly as in production: whatever queued while the previous flush ran.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use clap::Parser;
use codraft_docnode::{
    commit::{CommitPolicy, Committer},
    store::{postgres::PgStore, DocumentCommit, Store, StoreError},
};
use codraft_testkit::{
    database::{connect, TestDatabase},
    store::typing,
};

/// Command-line settings.
#[derive(Debug, Parser)]
#[command(about = "Durable ops/s of the Postgres store: group commit vs one transaction per op")]
struct Args {
    /// Postgres server to use (a scratch database is created on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// Seconds each mode runs.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Documents, each with one typist.
    #[arg(long, default_value_t = 100)]
    documents: usize,
    /// Connections in the store's pool.
    #[arg(long, default_value_t = 8)]
    pool_size: usize,
}

/// What one mode measured.
struct Outcome {
    mode: String,
    ops: u64,
    transactions: u64,
    elapsed: Duration,
    /// Submit-to-acknowledgement times, sorted.
    latencies: Vec<Duration>,
}

impl Outcome {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[index.min(self.latencies.len() - 1)]
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Dropped (with FORCE) at the end of main, whatever the run's result.
    let scratch = TestDatabase::create_on(&args.database_url).await?;
    let outcomes = run(&args, &scratch.url).await?;
    print_table(&args, &outcomes);
    Ok(())
}

async fn run(args: &Args, url: &str) -> anyhow::Result<Vec<Outcome>> {
    let duration = Duration::from_secs(args.seconds.max(1));
    let store = Arc::new(PgStore::connect(url, "bench", args.pool_size).await?);
    println!(
        "{} documents, {} s per mode, pool of {} connections\n",
        args.documents,
        duration.as_secs(),
        args.pool_size
    );
    let mut outcomes = Vec::new();

    progress("single-row INSERT loop (floor)");
    outcomes.push(insert_floor(url, duration).await?);
    progress("PgStore, 1 txn per op, 1 writer");
    outcomes.push(per_op(&store, "serial", 1, duration).await?);
    let writers = args.documents;
    progress(&format!("PgStore, 1 txn per op, {writers} writers"));
    outcomes.push(per_op(&store, "parallel", writers, duration).await?);
    progress(&format!("PgStore, group commit, {writers} documents"));
    outcomes.push(group(&store, writers, duration).await?);
    Ok(outcomes)
}

fn progress(mode: &str) {
    println!("running: {mode} ...");
}

/// The floor: one-row autocommitted INSERTs on one plain connection.
async fn insert_floor(url: &str, duration: Duration) -> anyhow::Result<Outcome> {
    let client = connect(url).await?;
    client
        .batch_execute("CREATE TABLE floor (id BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .await?;
    let insert = client
        .prepare("INSERT INTO floor (id, body) VALUES ($1, $2)")
        .await?;
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut id: i64 = 0;
    while started.elapsed() < duration {
        let t = Instant::now();
        client.execute(&insert, &[&id, &"[1,\"x\"]"]).await?;
        latencies.push(t.elapsed());
        id += 1;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Outcome {
        mode: "single-row INSERT loop (floor)".into(),
        ops: latencies.len() as u64,
        transactions: latencies.len() as u64,
        elapsed,
        latencies,
    })
}

/// One typist per document, each op committed in its own transaction.
async fn per_op(
    store: &Arc<PgStore>,
    prefix: &str,
    writers: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let commits_before = store.counters().commits.load(Ordering::Relaxed);
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..writers {
        let store = Arc::clone(store);
        let document: Arc<str> = Arc::from(format!("{prefix}-{n}"));
        tasks.push(tokio::spawn(async move {
            let mut typist = Typist::load(&*store, document).await?;
            while Instant::now() < deadline {
                let commit = typist.next_op();
                let t = Instant::now();
                store.commit(Arc::from([commit])).await?;
                typist.acknowledged(t.elapsed());
            }
            Ok::<_, StoreError>(typist)
        }));
    }
    let typists = join(tasks).await?;
    let elapsed = started.elapsed();
    let transactions = store.counters().commits.load(Ordering::Relaxed) - commits_before;
    let mode = if writers == 1 {
        "PgStore, 1 txn per op, 1 writer".to_owned()
    } else {
        format!("PgStore, 1 txn per op, {writers} writers")
    };
    check(&**store, &typists).await?;
    Ok(outcome(mode, typists, transactions, elapsed))
}

/// One typist per document, every op submitted through the group committer.
async fn group(
    store: &Arc<PgStore>,
    writers: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let commits_before = store.counters().commits.load(Ordering::Relaxed);
    let dyn_store: Arc<dyn Store> = Arc::clone(store) as Arc<dyn Store>;
    let (committer, committer_task) = Committer::start(
        dyn_store,
        // The docnode's defaults: no gathering window, at most 2048 ops per flush.
        CommitPolicy {
            window: Duration::ZERO,
            max_batch: 2048,
            // As the docnode's COMMIT_PARALLELISM (default 2).
            parallelism: std::env::var("COMMIT_PARALLELISM")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2),
        },
        codraft_docnode::metrics::DocnodeMetrics::register(&prometheus::Registry::new())?,
    );
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..writers {
        let store = Arc::clone(store);
        let committer = committer.clone();
        let document: Arc<str> = Arc::from(format!("group-{n}"));
        tasks.push(tokio::spawn(async move {
            let mut typist = Typist::load(&*store, document).await?;
            while Instant::now() < deadline {
                let commit = typist.next_op();
                let t = Instant::now();
                committer
                    .submit(commit, Vec::new())
                    .await
                    .await
                    .map_err(|_| StoreError::Unavailable("committer stopped".into()))??;
                typist.acknowledged(t.elapsed());
            }
            Ok::<_, StoreError>(typist)
        }));
    }
    let typists = join(tasks).await?;
    let elapsed = started.elapsed();
    drop(committer);
    committer_task.abort();
    let transactions = store.counters().commits.load(Ordering::Relaxed) - commits_before;
    check(&**store, &typists).await?;
    Ok(outcome(
        format!("PgStore, group commit, {writers} documents"),
        typists,
        transactions,
        elapsed,
    ))
}

/// A document's single typist: appends one character per op, waiting for each ack.
struct Typist {
    document: Arc<str>,
    epoch: u64,
    revision: u64,
    latencies: Vec<Duration>,
}

impl Typist {
    async fn load(store: &dyn Store, document: Arc<str>) -> Result<Self, StoreError> {
        let loaded = store.load(&document).await?;
        Ok(Self {
            document,
            epoch: loaded.epoch,
            revision: loaded.revision,
            latencies: Vec::new(),
        })
    }

    fn next_op(&self) -> DocumentCommit {
        typing(&self.document, self.epoch, self.revision, 1, "bench")
    }

    fn acknowledged(&mut self, latency: Duration) {
        self.revision += 1;
        self.latencies.push(latency);
    }
}

async fn join(
    tasks: Vec<tokio::task::JoinHandle<Result<Typist, StoreError>>>,
) -> anyhow::Result<Vec<Typist>> {
    let mut typists = Vec::with_capacity(tasks.len());
    for task in tasks {
        typists.push(task.await??);
    }
    Ok(typists)
}

/// Every acknowledged op must be there when the document loads again.
async fn check(store: &dyn Store, typists: &[Typist]) -> anyhow::Result<()> {
    for typist in typists {
        let loaded = store.load(&typist.document).await?;
        anyhow::ensure!(
            loaded.revision == typist.revision && loaded.text.len() as u64 == typist.revision,
            "{} loaded at revision {} but {} ops were acknowledged",
            typist.document,
            loaded.revision,
            typist.revision
        );
    }
    Ok(())
}

fn outcome(mode: String, typists: Vec<Typist>, transactions: u64, elapsed: Duration) -> Outcome {
    let mut latencies: Vec<Duration> = typists.into_iter().flat_map(|t| t.latencies).collect();
    latencies.sort();
    Outcome {
        mode,
        ops: latencies.len() as u64,
        transactions,
        elapsed,
        latencies,
    }
}

fn print_table(args: &Args, outcomes: &[Outcome]) {
    println!();
    println!(
        "{:<42} {:>9} {:>8} {:>8} {:>10} {:>8} {:>8}",
        "mode", "ops", "txns", "ops/txn", "ops/s", "p50 ms", "p99 ms"
    );
    println!("{}", "-".repeat(99));
    for o in outcomes {
        println!(
            "{:<42} {:>9} {:>8} {:>8.1} {:>10.0} {:>8.2} {:>8.2}",
            o.mode,
            o.ops,
            o.transactions,
            o.ops as f64 / o.transactions.max(1) as f64,
            o.ops_per_sec(),
            o.percentile(0.5).as_secs_f64() * 1e3,
            o.percentile(0.99).as_secs_f64() * 1e3,
        );
    }
    let find = |prefix: &str| outcomes.iter().find(|o| o.mode.starts_with(prefix));
    if let (Some(serial), Some(parallel), Some(group)) = (
        find("PgStore, 1 txn per op, 1 writer"),
        outcomes
            .iter()
            .find(|o| o.mode.contains("1 txn per op") && o.mode.ends_with("writers")),
        find("PgStore, group commit"),
    ) {
        println!();
        println!(
            "group commit vs 1 txn per op: {:.1}x the single writer, {:.1}x the {} parallel writers",
            group.ops_per_sec() / serial.ops_per_sec(),
            group.ops_per_sec() / parallel.ops_per_sec(),
            args.documents
        );
    }
}
