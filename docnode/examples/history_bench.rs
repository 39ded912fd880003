//! How fast a long document's past reads back: the text at a random revision, and one page
//! of the history, on the embedded store and on Postgres, plus the storage each revision
//! costs (op-log rows and checkpoints).
//!
//! ```text
//! cargo run --release -p codraft-docnode --example history_bench -- --revisions 280000
//! ```
//!
//! The document is typed one character at a time (mostly inserts at random places, some
//! deletes) by three authors taking turns every 1,000 edits, committed in batches of
//! `--snapshot-every` revisions, each followed by a snapshot (so a checkpoint), as a docnode
//! writes them. DATABASE_URL names the Postgres server (default postgres://postgres@127.0.0.1:5432/
//! test); the benchmark works in a scratch database created and dropped around the run.
//! `--skip-postgres` measures the embedded store only.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use codraft_docnode::{
    store::{postgres::PgStore, sqlite::SqliteStore, DocumentCommit, LoggedOp, Snapshot, Store},
    timeline,
};
use codraft_ot::Operation;
use rand::{rngs::StdRng, Rng, SeedableRng};
use ropey::Rope;
use tokio_postgres::NoTls;

/// Command-line settings.
#[derive(Debug, Parser)]
#[command(about = "Reading a long document's history: text at a revision, a history page")]
struct Args {
    /// Postgres server to use (a scratch database is created on it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// Revisions of the document.
    #[arg(long, default_value_t = 280_000)]
    revisions: u64,
    /// A snapshot (and so a checkpoint) every this many revisions, as SNAPSHOT_EVERY.
    #[arg(long, default_value_t = 500)]
    snapshot_every: u64,
    /// Random revisions read back.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Measure the embedded store only.
    #[arg(long)]
    skip_postgres: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path())?);
    measure("embedded (SQLite)", &args, &sqlite, || {
        let files = [
            "codraft.db",
            "codraft.db-wal",
            "journal.db",
            "journal.db-wal",
        ]
        .map(|name| dir.path().join(name));
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        async move { Ok(files.iter().map(|p| size(p)).sum()) }
    })
    .await?;
    if args.skip_postgres {
        return Ok(());
    }
    let admin = connect(&args.database_url).await?;
    let scratch = format!("codraft_history_bench_{:08x}", rand::random::<u32>());
    admin
        .batch_execute(&format!("CREATE DATABASE {scratch}"))
        .await?;
    let url = with_database(&args.database_url, &scratch);
    let result = async {
        let pg: Arc<dyn Store> = Arc::new(PgStore::connect(&url, "bench", 4).await?);
        let sizer = connect(&url).await?;
        let sizer = &sizer;
        measure("Postgres", &args, &pg, || async move {
            let row = sizer
                .query_one(
                    "SELECT (pg_total_relation_size('oplog') \
                           + pg_total_relation_size('checkpoints'))::int8",
                    &[],
                )
                .await?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
        .await
    }
    .await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
        .await?;
    result
}

/// Writes the document into `store`, then reads it back and prints the figures.
async fn measure<F, Fut>(
    name: &str,
    args: &Args,
    store: &Arc<dyn Store>,
    size: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let document = "long";
    let epoch = store.load(document).await?.epoch;
    let mut rng = StdRng::seed_from_u64(16);
    let mut rope = Rope::new();
    let started = Instant::now();
    let mut revision = 0;
    while revision < args.revisions {
        let mut ops = Vec::new();
        let end = (revision + args.snapshot_every.max(1)).min(args.revisions);
        for r in revision..end {
            let len = rope.len_chars() as u64;
            let mut op = Operation::new();
            if len > 0 && rng.random_bool(0.3) {
                let at = rng.random_range(0..len);
                op.retain(at).delete(1).retain(len - at - 1);
            } else {
                let at = rng.random_range(0..=len);
                let c = char::from(b'a' + rng.random_range(0..26u8));
                op.retain(at).insert(&c.to_string()).retain(len - at);
            }
            op.apply(&mut rope)?;
            ops.push(LoggedOp {
                revision: r,
                operation: op,
                author: 1 + (r / 1000) % 3,
                client_id: None,
                seq: None,
            });
        }
        store
            .commit(Arc::from(vec![DocumentCommit {
                document: Arc::from(document),
                base_revision: revision,
                epoch,
                ops,
                language: None,
                updates: Vec::new(),
            }]))
            .await?;
        revision = end;
        if revision % args.snapshot_every == 0 {
            store
                .write_snapshot(Snapshot {
                    document: Arc::from(document),
                    revision,
                    text: rope.to_string(),
                })
                .await?;
        }
    }
    let written = started.elapsed();
    let extent = timeline::extent(&**store, document).await?;

    let mut text_times = Vec::new();
    for _ in 0..args.samples {
        let revision = rng.random_range(0..=extent.revision);
        let started = Instant::now();
        let text = timeline::text_at(&**store, document, &extent, revision).await?;
        text_times.push(started.elapsed());
        std::hint::black_box(text);
    }
    let mut page_times = Vec::new();
    for i in 0..args.samples {
        let before = (i > 0).then(|| rng.random_range(1..=extent.revision));
        let started = Instant::now();
        let (sessions, _) = timeline::sessions(&**store, document, &extent, before, 50).await?;
        page_times.push(started.elapsed());
        std::hint::black_box(sessions);
    }
    let bytes = size().await?;
    println!(
        "{name}: {} revisions, final text {} characters, {} checkpoints, written in {:.1} s",
        extent.revision,
        rope.len_chars(),
        extent.checkpoints.len(),
        written.as_secs_f64()
    );
    println!(
        "  text at a random revision ({} samples): {}",
        args.samples,
        summary(&mut text_times)
    );
    println!(
        "  history page of 50 sessions ({} samples): {}",
        args.samples,
        summary(&mut page_times)
    );
    println!(
        "  storage: {:.1} MiB, {:.0} bytes per revision (op log and checkpoints)\n",
        bytes as f64 / 1_048_576.0,
        bytes as f64 / extent.revision.max(1) as f64
    );
    Ok(())
}

/// Median, 99th percentile and maximum, in milliseconds.
fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(url, NoTls))
            .await
            .map_err(|_| {
                anyhow::anyhow!("connecting to {url} timed out; is Postgres running?")
            })??;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `url` pointing at database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{name}{query}", &base[..path_start])
}
