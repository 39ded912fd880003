//! The embedded file store of standalone mode: one SQLite file under DATA_DIR.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`, so a committed transaction survives
//! kill -9 and power loss; that is what lets the docnode acknowledge an edit once its flush
//! returns. SQLite calls block, so each one runs on tokio's blocking pool; the connection's
//! mutex is only ever taken there, never across an await.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use codraft_common::ids::is_yjs;
use codraft_ot::Operation;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{
    text_checkpoint, AuthorInfo, DocumentCommit, HistoryExtent, HistoryTables, LoggedOp, PastOp,
    PastUpdate, Snapshot, Store, StoreCounters, StoreError, StoredDocument, HISTORY_TABLES,
};

/// Schema changes in order; each runs once, recorded in `schema_migrations`.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE documents (
        id          TEXT PRIMARY KEY,
        revision    INTEGER NOT NULL,
        language    TEXT,
        otp         TEXT,
        accessed_at INTEGER NOT NULL
    );
    CREATE TABLE oplog (
        document     TEXT NOT NULL,
        revision     INTEGER NOT NULL,
        operation    TEXT NOT NULL,
        author       INTEGER NOT NULL,
        client_id    TEXT,
        seq          INTEGER,
        committed_at INTEGER NOT NULL,
        PRIMARY KEY (document, revision)
    ) WITHOUT ROWID;
    CREATE TABLE snapshots (
        document TEXT PRIMARY KEY,
        revision INTEGER NOT NULL,
        text     TEXT NOT NULL
    );
    CREATE TABLE client_seqs (
        document  TEXT NOT NULL,
        client_id TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        PRIMARY KEY (document, client_id)
    ) WITHOUT ROWID;
"#,
    r#"
    CREATE TABLE checkpoints (
        document TEXT NOT NULL,
        revision INTEGER NOT NULL,
        text     TEXT NOT NULL,
        PRIMARY KEY (document, revision)
    ) WITHOUT ROWID;
    INSERT INTO checkpoints (document, revision, text)
        SELECT document, revision, text FROM snapshots;
    CREATE TABLE authors (
        document TEXT NOT NULL,
        author   INTEGER NOT NULL,
        name     TEXT NOT NULL,
        hue      INTEGER NOT NULL,
        PRIMARY KEY (document, author)
    ) WITHOUT ROWID;
"#,
    r#"
    CREATE TABLE yjs_updates (
        document     TEXT NOT NULL,
        revision     INTEGER NOT NULL,
        update_v1    BLOB NOT NULL,
        committed_at INTEGER NOT NULL,
        PRIMARY KEY (document, revision)
    ) WITHOUT ROWID;
    CREATE TABLE yjs_snapshots (
        document TEXT PRIMARY KEY,
        revision INTEGER NOT NULL,
        state    BLOB NOT NULL
    );
"#,
    r#"
    CREATE TABLE yjs_checkpoints (
        document TEXT NOT NULL,
        revision INTEGER NOT NULL,
        state    BLOB NOT NULL,
        PRIMARY KEY (document, revision)
    ) WITHOUT ROWID;
    INSERT INTO yjs_checkpoints (document, revision, state)
        SELECT document, revision, state FROM yjs_snapshots;
"#,
];

/// Documents in one SQLite file.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    counters: Arc<StoreCounters>,
}

impl SqliteStore {
    /// Opens (creating if needed) `codraft.db` in `dir` and applies pending migrations.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("codraft.db");
        let mut conn = Connection::open(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            counters: Arc::default(),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &StoreCounters) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let counters = Arc::clone(&self.counters);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Unavailable("store connection poisoned".into()))?;
            f(&mut guard, &counters)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

impl SqliteStore {
    /// The newest checkpoint of `document` at or before `revision`, its content as bytes.
    async fn checkpoint_bytes(
        &self,
        document: &str,
        revision: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let HistoryTables {
            checkpoints,
            content,
            ..
        } = HistoryTables::of(document);
        let document = document.to_owned();
        self.with_conn(move |conn, _| {
            let row: Option<(i64, Vec<u8>)> = conn
                .prepare_cached(&format!(
                    "SELECT revision, CAST({content} AS BLOB) FROM {checkpoints} \
                     WHERE document = ?1 AND revision <= ?2 ORDER BY revision DESC LIMIT 1"
                ))
                .and_then(|mut stmt| {
                    stmt.query_row(params![document, to_sql(revision)], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                })
                .map_err(unavailable)?;
            row.map(|(rev, bytes)| Ok((from_sql(rev)?, bytes)))
                .transpose()
        })
        .await
    }
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// SQLite stores integers as i64; revisions and ids stay below 2^53, so this never clamps in
/// practice, but a corrupt value must not wrap around.
fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_sql(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative value {n}")))
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
        .map_err(unavailable)?;
    let applied: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        if version <= applied {
            continue;
        }
        tx.execute_batch(sql).map_err(unavailable)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES (?1)",
            params![version],
        )
        .map_err(unavailable)?;
    }
    tx.commit().map_err(unavailable)
}

fn parse_op(json: &str) -> Result<Operation, StoreError> {
    Operation::from_json(json).map_err(|e| StoreError::Corrupt(format!("bad stored op: {e}")))
}

fn load_document(
    conn: &mut Connection,
    counters: &StoreCounters,
    document: &str,
) -> Result<StoredDocument, StoreError> {
    let tx = conn.transaction().map_err(unavailable)?;
    let row: Option<(i64, Option<String>, Option<String>)> = tx
        .query_row(
            "SELECT revision, language, otp FROM documents WHERE id = ?1",
            params![document],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(unavailable)?;
    // One process owns the file, so there is no other writer to fence: the epoch stays 0.
    let Some((revision, language, otp)) = row else {
        return Ok(StoredDocument {
            text: String::new(),
            revision: 0,
            language: None,
            otp: None,
            epoch: 0,
            yjs: Vec::new(),
        });
    };
    let revision = from_sql(revision)?;
    if is_yjs(document) {
        let yjs = load_yjs(&tx, counters, document, revision)?;
        touch(&tx, document)?;
        tx.commit().map_err(unavailable)?;
        return Ok(StoredDocument {
            text: String::new(),
            revision,
            language,
            otp,
            epoch: 0,
            yjs,
        });
    }
    let snapshot: Option<(i64, String)> = tx
        .query_row(
            "SELECT revision, text FROM snapshots WHERE document = ?1",
            params![document],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(unavailable)?;
    let (mut at, text) = match snapshot {
        Some((rev, text)) => (from_sql(rev)?, text),
        None => (0, String::new()),
    };
    let mut rope = ropey::Rope::from_str(&text);
    let mut stmt = tx
        .prepare_cached(
            "SELECT revision, operation FROM oplog WHERE document = ?1 AND revision >= ?2 \
             ORDER BY revision",
        )
        .map_err(unavailable)?;
    let mut rows = stmt
        .query(params![document, to_sql(at)])
        .map_err(unavailable)?;
    let mut read = 0;
    while let Some(row) = rows.next().map_err(unavailable)? {
        read += 1;
        let rev = from_sql(row.get(0).map_err(unavailable)?)?;
        if rev != at {
            return Err(StoreError::Corrupt(format!(
                "op log of {document} jumps from revision {at} to {rev}"
            )));
        }
        let json: String = row.get(1).map_err(unavailable)?;
        parse_op(&json)?
            .apply(&mut rope)
            .map_err(|e| StoreError::Corrupt(format!("op {rev} of {document}: {e}")))?;
        at += 1;
    }
    StoreCounters::add(&counters.log_rows_read, read);
    if at != revision {
        return Err(StoreError::Corrupt(format!(
            "{document} is at revision {revision} but its log ends at {at}"
        )));
    }
    drop(rows);
    drop(stmt);
    touch(&tx, document)?;
    tx.commit().map_err(unavailable)?;
    Ok(StoredDocument {
        text: rope.to_string(),
        revision,
        language,
        otp,
        epoch: 0,
        yjs: Vec::new(),
    })
}

fn touch(tx: &rusqlite::Transaction<'_>, document: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE documents SET accessed_at = ?2 WHERE id = ?1",
        params![document, now_secs()],
    )
    .map_err(unavailable)?;
    Ok(())
}

/// A Yjs document's compacted state (if any) and the updates after it, checked to end at
/// `revision`.
fn load_yjs(
    tx: &rusqlite::Transaction<'_>,
    counters: &StoreCounters,
    document: &str,
    revision: u64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let snapshot: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT revision, state FROM yjs_snapshots WHERE document = ?1",
            params![document],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(unavailable)?;
    let mut at = 0;
    let mut parts = Vec::new();
    if let Some((rev, state)) = snapshot {
        at = from_sql(rev)?;
        parts.push(state);
    }
    let mut stmt = tx
        .prepare_cached(
            "SELECT revision, update_v1 FROM yjs_updates WHERE document = ?1 AND revision >= ?2 \
             ORDER BY revision",
        )
        .map_err(unavailable)?;
    let mut rows = stmt
        .query(params![document, to_sql(at)])
        .map_err(unavailable)?;
    while let Some(row) = rows.next().map_err(unavailable)? {
        let rev = from_sql(row.get(0).map_err(unavailable)?)?;
        if rev != at {
            return Err(StoreError::Corrupt(format!(
                "update log of {document} jumps from revision {at} to {rev}"
            )));
        }
        parts.push(row.get(1).map_err(unavailable)?);
        at += 1;
    }
    StoreCounters::add(&counters.log_rows_read, at);
    if at != revision {
        return Err(StoreError::Corrupt(format!(
            "{document} is at revision {revision} but its updates end at {at}"
        )));
    }
    Ok(parts)
}

/// A failed insert into a log: a key clash means another writer committed that revision
/// first.
fn log_insert_failed(e: rusqlite::Error, commit: &DocumentCommit) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict {
                document: commit.document.to_string(),
                expected: commit.base_revision,
            }
        }
        other => unavailable(other),
    }
}

fn commit_batch(
    conn: &mut Connection,
    counters: &StoreCounters,
    batch: &[DocumentCommit],
) -> Result<(), StoreError> {
    let now = now_secs();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let mut ops = 0;
    for commit in batch {
        let document: &str = &commit.document;
        // Cached statements: re-preparing these on every commit cost more than running them.
        tx.prepare_cached(
            "INSERT INTO documents (id, revision, accessed_at) VALUES (?1, 0, ?2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut insert| insert.execute(params![document, now]))
        .map_err(unavailable)?;
        let new_revision = commit.new_revision();
        let updated = tx
            .prepare_cached(
                "UPDATE documents SET revision = ?2, language = COALESCE(?3, language), \
                 accessed_at = ?4 WHERE id = ?1 AND revision = ?5",
            )
            .and_then(|mut update| {
                update.execute(params![
                    document,
                    to_sql(new_revision),
                    commit.language,
                    now,
                    to_sql(commit.base_revision)
                ])
            })
            .map_err(unavailable)?;
        if updated != 1 {
            return Err(StoreError::Conflict {
                document: document.to_owned(),
                expected: commit.base_revision,
            });
        }
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO oplog (document, revision, operation, author, client_id, seq, \
                 committed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(unavailable)?;
        let mut seqs = tx
            .prepare_cached(
                "INSERT INTO client_seqs (document, client_id, seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (document, client_id) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            )
            .map_err(unavailable)?;
        for op in &commit.ops {
            insert
                .execute(params![
                    document,
                    to_sql(op.revision),
                    op.operation.to_json(),
                    to_sql(op.author),
                    op.client_id,
                    op.seq.map(to_sql),
                    now
                ])
                .map_err(|e| log_insert_failed(e, commit))?;
            if let (Some(client), Some(seq)) = (&op.client_id, op.seq) {
                seqs.execute(params![document, client, to_sql(seq)])
                    .map_err(unavailable)?;
            }
            ops += 1;
        }
        if !commit.updates.is_empty() {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO yjs_updates (document, revision, update_v1, committed_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(unavailable)?;
            let first = commit.base_revision + commit.ops.len() as u64;
            for (update, revision) in commit.updates.iter().zip(first..) {
                insert
                    .execute(params![document, to_sql(revision), &update[..], now])
                    .map_err(|e| log_insert_failed(e, commit))?;
                ops += 1;
            }
        }
    }
    tx.commit().map_err(unavailable)?;
    StoreCounters::add(&counters.commits, 1);
    StoreCounters::add(&counters.ops_committed, ops);
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self, document: &str) -> Result<StoredDocument, StoreError> {
        let document = document.to_owned();
        self.with_conn(move |conn, counters| load_document(conn, counters, &document))
            .await
    }

    async fn commit(&self, batch: Arc<[DocumentCommit]>) -> Result<(), StoreError> {
        self.with_conn(move |conn, counters| commit_batch(conn, counters, &batch))
            .await
    }

    async fn write_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.with_conn(move |conn, _| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let (document, revision) = (&*snapshot.document, to_sql(snapshot.revision));
            tx.execute(
                "INSERT INTO snapshots (document, revision, text) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (document) DO UPDATE SET revision = excluded.revision, \
                 text = excluded.text WHERE excluded.revision > snapshots.revision",
                params![document, revision, snapshot.text],
            )
            .map_err(unavailable)?;
            // Every snapshot is a checkpoint of the history as well.
            tx.execute(
                "INSERT INTO checkpoints (document, revision, text) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (document, revision) DO NOTHING",
                params![document, revision, snapshot.text],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn write_yjs_snapshot(
        &self,
        document: &str,
        revision: u64,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let document = document.to_owned();
        self.with_conn(move |conn, _| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO yjs_snapshots (document, revision, state) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (document) DO UPDATE SET revision = excluded.revision, \
                 state = excluded.state WHERE excluded.revision > yjs_snapshots.revision",
                params![document, to_sql(revision), state],
            )
            .map_err(unavailable)?;
            // Every snapshot is a checkpoint of the history as well; the updates below it
            // stay until compaction finds them older than the retention.
            tx.execute(
                "INSERT INTO yjs_checkpoints (document, revision, state) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (document, revision) DO NOTHING",
                params![document, to_sql(revision), state],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn read_yjs_updates(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let document = document.to_owned();
        self.with_conn(move |conn, _| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT update_v1 FROM yjs_updates \
                     WHERE document = ?1 AND revision >= ?2 AND revision < ?3 ORDER BY revision",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![document, to_sql(from), to_sql(to)], |r| r.get(0))
                .map_err(unavailable)?;
            rows.collect::<Result<_, _>>().map_err(unavailable)
        })
        .await
    }

    async fn read_log(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<LoggedOp>, StoreError> {
        let document = document.to_owned();
        self.with_conn(move |conn, counters| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT revision, operation, author, client_id, seq FROM oplog \
                     WHERE document = ?1 AND revision >= ?2 AND revision < ?3 ORDER BY revision",
                )
                .map_err(unavailable)?;
            let mut rows = stmt
                .query(params![document, to_sql(from), to_sql(to)])
                .map_err(unavailable)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(unavailable)? {
                let json: String = row.get(1).map_err(unavailable)?;
                let seq: Option<i64> = row.get(4).map_err(unavailable)?;
                out.push(LoggedOp {
                    revision: from_sql(row.get(0).map_err(unavailable)?)?,
                    operation: parse_op(&json)?,
                    author: from_sql(row.get(2).map_err(unavailable)?)?,
                    client_id: row.get(3).map_err(unavailable)?,
                    seq: seq.map(from_sql).transpose()?,
                });
            }
            StoreCounters::add(&counters.log_rows_read, out.len() as u64);
            Ok(out)
        })
        .await
    }

    async fn last_seq(&self, document: &str, client_id: &str) -> Result<u64, StoreError> {
        let (document, client_id) = (document.to_owned(), client_id.to_owned());
        self.with_conn(move |conn, _| {
            let seq: Option<i64> = conn
                .query_row(
                    "SELECT seq FROM client_seqs WHERE document = ?1 AND client_id = ?2",
                    params![document, client_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            seq.map(from_sql).transpose().map(|s| s.unwrap_or(0))
        })
        .await
    }

    async fn document_count(&self) -> Result<u64, StoreError> {
        self.with_conn(|conn, _| {
            let n: i64 = conn
                .query_row("SELECT COUNT(*) FROM documents", [], |r| r.get(0))
                .map_err(unavailable)?;
            from_sql(n)
        })
        .await
    }

    async fn document_otp(&self, document: &str) -> Result<Option<String>, StoreError> {
        let document = document.to_owned();
        self.with_conn(move |conn, _| {
            let otp: Option<Option<String>> = conn
                .query_row(
                    "SELECT otp FROM documents WHERE id = ?1",
                    params![document],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            Ok(otp.flatten())
        })
        .await
    }

    async fn set_otp(
        &self,
        document: &str,
        _epoch: u64,
        otp: Option<String>,
    ) -> Result<(), StoreError> {
        let document = document.to_owned();
        self.with_conn(move |conn, _| {
            conn.execute(
                "INSERT INTO documents (id, revision, otp, accessed_at) VALUES (?1, 0, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET otp = excluded.otp",
                params![document, otp, now_secs()],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn compact(&self, retention: std::time::Duration) -> Result<u64, StoreError> {
        let cutoff =
            now_secs().saturating_sub(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX));
        self.with_conn(move |conn, _| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            // Per document, the newest checkpoint whose preceding op is old (or gone already):
            // commit times grow with revisions, so every op below it is old too. The same
            // for Yjs documents' updates and checkpoints.
            let mut deleted = 0;
            for tables in HISTORY_TABLES {
                let HistoryTables {
                    log, checkpoints, ..
                } = tables;
                let floors: Vec<(String, i64)> = {
                    let mut stmt = tx
                        .prepare(&format!(
                            "SELECT c.document, MAX(c.revision) FROM {checkpoints} c \
                              WHERE NOT EXISTS (SELECT 1 FROM {log} o \
                                     WHERE o.document = c.document \
                                     AND o.revision = c.revision - 1 AND o.committed_at >= ?1) \
                              GROUP BY c.document"
                        ))
                        .map_err(unavailable)?;
                    let rows = stmt
                        .query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(unavailable)?;
                    rows.collect::<Result<_, _>>().map_err(unavailable)?
                };
                for (document, floor) in floors {
                    deleted += tx
                        .execute(
                            &format!("DELETE FROM {log} WHERE document = ?1 AND revision < ?2"),
                            params![document, floor],
                        )
                        .map_err(unavailable)? as u64;
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(deleted)
        })
        .await
    }

    async fn history_extent(&self, document: &str) -> Result<Option<HistoryExtent>, StoreError> {
        let HistoryTables {
            log, checkpoints, ..
        } = HistoryTables::of(document);
        let document = document.to_owned();
        self.with_conn(move |conn, _| {
            let tx = conn.transaction().map_err(unavailable)?;
            let revision: Option<i64> = tx
                .query_row(
                    "SELECT revision FROM documents WHERE id = ?1",
                    params![document],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            let Some(revision) = revision else {
                return Ok(None);
            };
            let revision = from_sql(revision)?;
            let oldest: Option<i64> = tx
                .query_row(
                    &format!("SELECT MIN(revision) FROM {log} WHERE document = ?1"),
                    params![document],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            let checkpoints = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT revision FROM {checkpoints} WHERE document = ?1 ORDER BY revision"
                    ))
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![document], |r| r.get::<_, i64>(0))
                    .map_err(unavailable)?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(from_sql(row.map_err(unavailable)?)?);
                }
                out
            };
            Ok(Some(HistoryExtent {
                revision,
                exact_from: oldest.map(from_sql).transpose()?.unwrap_or(revision),
                checkpoints,
            }))
        })
        .await
    }

    async fn checkpoint_at_or_before(
        &self,
        document: &str,
        revision: u64,
    ) -> Result<Option<(u64, String)>, StoreError> {
        text_checkpoint(self.checkpoint_bytes(document, revision).await?)
    }

    async fn yjs_checkpoint_at_or_before(
        &self,
        document: &str,
        revision: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.checkpoint_bytes(document, revision).await
    }

    async fn read_yjs_past(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<PastUpdate>, StoreError> {
        let document = document.to_owned();
        self.with_conn(move |conn, counters| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT revision, update_v1, committed_at FROM yjs_updates \
                     WHERE document = ?1 AND revision >= ?2 AND revision < ?3 ORDER BY revision",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![document, to_sql(from), to_sql(to)], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (revision, update, at) = row.map_err(unavailable)?;
                out.push(PastUpdate {
                    revision: from_sql(revision)?,
                    update,
                    committed_at_ms: at.saturating_mul(1000),
                });
            }
            StoreCounters::add(&counters.log_rows_read, out.len() as u64);
            Ok(out)
        })
        .await
    }

    async fn read_past(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<PastOp>, StoreError> {
        let document = document.to_owned();
        self.with_conn(move |conn, counters| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT revision, operation, author, client_id, seq, committed_at FROM oplog \
                     WHERE document = ?1 AND revision >= ?2 AND revision < ?3 ORDER BY revision",
                )
                .map_err(unavailable)?;
            let mut rows = stmt
                .query(params![document, to_sql(from), to_sql(to)])
                .map_err(unavailable)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(unavailable)? {
                let json: String = row.get(1).map_err(unavailable)?;
                let seq: Option<i64> = row.get(4).map_err(unavailable)?;
                let at: i64 = row.get(5).map_err(unavailable)?;
                out.push(PastOp {
                    op: LoggedOp {
                        revision: from_sql(row.get(0).map_err(unavailable)?)?,
                        operation: parse_op(&json)?,
                        author: from_sql(row.get(2).map_err(unavailable)?)?,
                        client_id: row.get(3).map_err(unavailable)?,
                        seq: seq.map(from_sql).transpose()?,
                    },
                    committed_at_ms: at.saturating_mul(1000),
                });
            }
            StoreCounters::add(&counters.log_rows_read, out.len() as u64);
            Ok(out)
        })
        .await
    }

    async fn last_revision_at(
        &self,
        document: &str,
        at_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let log = HistoryTables::of(document).log;
        let document = document.to_owned();
        self.with_conn(move |conn, _| {
            let revision: Option<i64> = conn
                .query_row(
                    &format!(
                        "SELECT MAX(revision) FROM {log} WHERE document = ?1 AND committed_at <= ?2"
                    ),
                    params![document, at_ms.div_euclid(1000)],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            revision.map(from_sql).transpose()
        })
        .await
    }

    async fn record_author(&self, document: &str, info: AuthorInfo) -> Result<(), StoreError> {
        let document = document.to_owned();
        self.with_conn(move |conn, _| {
            conn.prepare_cached(
                "INSERT INTO authors (document, author, name, hue) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (document, author) DO UPDATE \
                 SET name = excluded.name, hue = excluded.hue",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![document, to_sql(info.author), info.name, info.hue])
            })
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn authors(&self, document: &str) -> Result<Vec<AuthorInfo>, StoreError> {
        let document = document.to_owned();
        self.with_conn(move |conn, _| {
            let mut stmt = conn
                .prepare_cached("SELECT author, name, hue FROM authors WHERE document = ?1")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![document], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (author, name, hue) = row.map_err(unavailable)?;
                out.push(AuthorInfo {
                    author: from_sql(author)?,
                    name,
                    hue: u32::try_from(hue).unwrap_or(0),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn delete_expired(&self, unused_for: std::time::Duration) -> Result<u64, StoreError> {
        let cutoff =
            now_secs().saturating_sub(i64::try_from(unused_for.as_secs()).unwrap_or(i64::MAX));
        self.with_conn(move |conn, _| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let expired = "SELECT id FROM documents WHERE accessed_at < ?1";
            for table in [
                "oplog",
                "snapshots",
                "client_seqs",
                "checkpoints",
                "authors",
                "yjs_updates",
                "yjs_snapshots",
                "yjs_checkpoints",
            ] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE document IN ({expired})"),
                    params![cutoff],
                )
                .map_err(unavailable)?;
            }
            let deleted = tx
                .execute(
                    "DELETE FROM documents WHERE accessed_at < ?1",
                    params![cutoff],
                )
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(deleted as u64)
        })
        .await
    }

    fn counters(&self) -> &StoreCounters {
        &self.counters
    }

    fn db_system(&self) -> &'static str {
        "sqlite"
    }

    /// One connection: its transactions run one after the other whatever the committer does.
    fn concurrent_commits(&self) -> usize {
        1
    }
}
