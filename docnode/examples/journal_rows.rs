//! What a journal row costs SQLite, numbered by `AUTOINCREMENT` or by the store itself
//! (BENCHMARKS.md, "The journal numbers its own rows"). Inserts rows shaped like the embedded
//! store's journal rows, 1 to 400 per transaction, with `synchronous=OFF` so only the CPU is
//! measured, not the disk.
//!
//! ```sh
//! cargo run --release -p codraft-docnode --example journal_rows
//! ```

use std::time::Instant;

use rusqlite::{params, types::Null, Connection};

const ROWS: i64 = 400_000;

/// Microseconds per row for `ROWS` rows, `per` a transaction.
fn per_row(dir: &std::path::Path, autoincrement: bool, per: i64) -> rusqlite::Result<f64> {
    let path = dir.join(format!("journal-{autoincrement}-{per}.db"));
    let mut conn = Connection::open(&path)?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;")?;
    conn.execute_batch(&format!(
        "CREATE TABLE journal (seq INTEGER PRIMARY KEY {}, document TEXT NOT NULL, \
         revision INTEGER NOT NULL, operation TEXT, author INTEGER, client_id TEXT, \
         client_seq INTEGER, update_v1 BLOB, language TEXT, committed_at INTEGER NOT NULL)",
        if autoincrement { "AUTOINCREMENT" } else { "" }
    ))?;
    // With `AUTOINCREMENT` the row's number is left NULL, for SQLite to give.
    let insert = "INSERT INTO journal (seq, document, revision, operation, author, client_id, \
                  client_seq, update_v1, language, committed_at) \
                  VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
    let started = Instant::now();
    let mut seq = 0i64;
    for batch in 0..ROWS / per {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(insert)?;
            for i in 0..per {
                seq += 1;
                let number = (!autoincrement).then_some(seq);
                let document = format!("doc{}", (i * 7 + batch) % 100);
                let op = "[12,\"x\",40]";
                insert.execute(params![
                    number,
                    document,
                    batch,
                    op,
                    3,
                    "client-abc",
                    batch,
                    Null,
                    Null,
                    1
                ])?;
            }
        }
        tx.commit()?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / ROWS as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    println!("rows a transaction | AUTOINCREMENT µs/row | own numbers µs/row");
    for per in [1, 8, 64, 400] {
        for _ in 0..2 {
            let auto = per_row(dir.path(), true, per)?;
            let own = per_row(dir.path(), false, per)?;
            println!("{per:>18} | {auto:>20.2} | {own:>18.2}");
            for file in std::fs::read_dir(dir.path())? {
                std::fs::remove_file(file?.path())?;
            }
        }
    }
    Ok(())
}
