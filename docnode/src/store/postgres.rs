//! The cluster's store: Postgres through a bounded deadpool of tokio-postgres connections.
//!
//! Three things make it more than a port of the SQLite store:
//!
//! - **Fencing.** Loading a document takes its lease with a fresh epoch; every commit locks
//!   the lease row and is refused unless it still carries the newest epoch. Together with the
//!   unique (document, revision) key this keeps a docnode that lost a document (membership
//!   views disagreed for a moment) from committing to it.
//! - **Group commit that stays cheap.** One flush of the committer is one statement, and so
//!   one transaction and one round trip after taking a connection, whatever the batch holds:
//!   `COMMIT_BATCH` locks the leases, advances the documents, inserts every op row, Yjs update
//!   and client mark from arrays (`UNNEST`), and checks its own fence, raising an error that
//!   names a refused document.
//! - **Failing instead of hanging.** The pool is bounded, waiting for a connection and every
//!   call have deadlines, and a recycled connection is checked with a round trip, so a
//!   Postgres that is down or was restarted gives `StoreError::Unavailable` (which the
//!   committer retries with backoff) rather than a stuck docnode.
//!
//! The schema lives in `docnode/migrations/`, applied at start-up under an advisory lock so
//! several docnodes starting at once are safe.

use std::{
    collections::{BTreeMap, HashSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use codraft_ot::Operation;
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Metrics, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::error::SqlState;
use tracing::info;

use codraft_common::ids::is_yjs;

use super::pg_tls::{self, PgSecurity};
use super::{
    text_checkpoint, AuthorInfo, DocumentCommit, HistoryExtent, HistoryTables, LoggedOp, PastOp,
    PastUpdate, Snapshot, Store, StoreCounters, StoreError, StoredDocument, HISTORY_TABLES,
};

/// A statement parameter.
type Param<'a> = dyn tokio_postgres::types::ToSql + Sync + 'a;

/// One schema change, applied once and recorded in `schema_migrations`.
struct Migration {
    /// Position in the sequence; never reused.
    version: i32,
    /// What it does, for the log.
    name: &'static str,
    /// The statements.
    sql: &'static str,
}

/// Schema changes in order. Never edit an applied one; append the next.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        sql: include_str!("../../migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "history checkpoints and authors",
        sql: include_str!("../../migrations/0002_history.sql"),
    },
    Migration {
        version: 3,
        name: "yjs documents",
        sql: include_str!("../../migrations/0003_yjs.sql"),
    },
    Migration {
        version: 4,
        name: "yjs history checkpoints",
        sql: include_str!("../../migrations/0004_yjs_history.sql"),
    },
    Migration {
        version: 5,
        name: "commit refusal",
        sql: include_str!("../../migrations/0005_commit_refusal.sql"),
    },
];

/// Key of the transaction-scoped advisory lock that serialises migrations across docnodes
/// ("codraft" in ASCII, then a 1).
const MIGRATION_LOCK: i64 = 0x636f_6472_6166_7401;

/// How long opening one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call waits for a free connection before reporting the store unavailable.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long the health check of a pooled connection may take.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);
/// A pooled connection last handed out at least this long ago is checked with an empty query
/// before it is handed out again (see [`checked_before_use`]).
pub const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);
/// How long one store call may take in all; past it the store counts as unavailable. A
/// commit cut off here may still have committed: the committer's retry then meets a
/// revision conflict and the document reloads what is really there.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Op-log rows one compaction statement deletes, so no single transaction grows large.
const COMPACT_CHUNK: i64 = 10_000;
/// Documents one expiry transaction deletes.
const EXPIRE_CHUNK: i64 = 1_000;

/// Takes (or takes over) a document's lease with a new epoch from the global sequence.
const TAKE_LEASE: &str = "\
    INSERT INTO leases (document, owner, epoch, taken_at) \
    VALUES ($1, $2, nextval('lease_epochs'), now()) \
    ON CONFLICT (document) DO UPDATE \
    SET owner = excluded.owner, epoch = excluded.epoch, taken_at = excluded.taken_at \
    RETURNING epoch";

/// Marks a document as used and reads its metadata.
const TOUCH_DOCUMENT: &str = "\
    UPDATE documents SET accessed_at = now() WHERE id = $1 RETURNING revision, language, otp";

/// The newest snapshot (kind 0) and the log rows from its revision on (kind 1), in one
/// statement so both come from the same MVCC snapshot: a snapshot written between two
/// separate reads could otherwise point past the tail that was read.
const READ_TAIL: &str = "\
    SELECT 0 AS kind, revision, text, NULL::text AS operation \
      FROM snapshots WHERE document = $1 \
    UNION ALL \
    SELECT 1, o.revision, NULL::bytea, o.operation FROM oplog o \
     WHERE o.document = $1 \
       AND o.revision >= COALESCE((SELECT s.revision FROM snapshots s WHERE s.document = $1), 0) \
    ORDER BY kind, revision";

/// Locks the leases of a batch's documents, in a fixed order so concurrent flushes and the
/// expiry sweep cannot deadlock, and reads each document's revision.
/// A Yjs document's tail, in the shape of [`READ_TAIL`]'s rows: its compacted state (kind 0)
/// and the updates from there (kind 1), both in the bytes column.
const READ_YJS_TAIL: &str = "\
    SELECT 0 AS kind, revision, state, NULL::text AS operation \
      FROM yjs_snapshots WHERE document = $1 \
    UNION ALL \
    SELECT 1, u.revision, u.update_v1, NULL::text FROM yjs_updates u \
     WHERE u.document = $1 \
       AND u.revision >= COALESCE((SELECT s.revision FROM yjs_snapshots s WHERE s.document = $1), 0) \
    ORDER BY kind, revision";

/// A whole group commit in one statement, so in one round trip and its own transaction (a
/// statement outside a transaction block commits by itself). Its parts, as data-modifying
/// `WITH` clauses of one statement, commit together or not at all:
///
/// - `held` locks the batch's lease rows (in document order, as every writer does) and
///   reads their epochs;
/// - `advanced` moves each document from its base revision to its new one, and `created`
///   makes the row of a document committed for the first time (from revision 0 only);
/// - `ops` and `updates` insert the op log rows and Yjs updates, `marks` raises each
///   (document, client id)'s sequence mark to the batch's highest;
/// - `refused` is every document whose lease is not held at its epoch, whose revision did
///   not move from its base (another writer moved it), or whose rows were not all written
///   (another writer's rows were there): for the first of them the statement calls
///   `codraft_refuse_commit` (migration 5), which raises an error naming it, and the whole
///   transaction is rolled back.
///
/// The clauses run in an order Postgres chooses; the fence holds whatever it is, because the
/// lease lock is held until the statement's transaction ends and a lease taken over before
/// the lock was granted shows its new epoch (the lock re-reads the newest row). `advanced`
/// and `created` join `held`, so a document's lease row is locked before its `documents`
/// row, the order a load takes them in (lease, then the access time): the other order could
/// deadlock a commit with a takeover of one of its documents.
const COMMIT_BATCH: &str = "\
    WITH input AS MATERIALIZED ( \
        SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::text[], $5::int8[], \
                             $6::int8[]) \
            AS t(id, base, revision, language, epoch, logged)), \
    held AS MATERIALIZED ( \
        SELECT l.document, l.epoch FROM leases l \
         WHERE l.document = ANY($1::text[]) \
         ORDER BY l.document \
         FOR UPDATE OF l), \
    advanced AS ( \
        UPDATE documents d \
           SET revision = i.revision, language = COALESCE(i.language, d.language), \
               accessed_at = now() \
          FROM input i JOIN held h ON h.document = i.id AND h.epoch = i.epoch \
         WHERE d.id = i.id AND d.revision = i.base \
        RETURNING d.id), \
    created AS ( \
        INSERT INTO documents (id, revision, language, accessed_at) \
        SELECT i.id, i.revision, i.language, now() \
          FROM input i JOIN held h ON h.document = i.id AND h.epoch = i.epoch \
         WHERE i.base = 0 AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = i.id) \
        ON CONFLICT (id) DO NOTHING \
        RETURNING id), \
    ops AS ( \
        INSERT INTO oplog (document, revision, operation, author, client_id, seq, committed_at) \
        SELECT t.document, t.revision, t.operation, t.author, t.client_id, t.seq, now() \
          FROM UNNEST($7::text[], $8::int8[], $9::text[], $10::int8[], $11::text[], \
                      $12::int8[]) \
            AS t(document, revision, operation, author, client_id, seq) \
        ON CONFLICT (document, revision) DO NOTHING \
        RETURNING document), \
    updates AS ( \
        INSERT INTO yjs_updates (document, revision, update_v1, committed_at) \
        SELECT t.document, t.revision, t.update_v1, now() \
          FROM UNNEST($13::text[], $14::int8[], $15::bytea[]) AS t(document, revision, update_v1) \
        ON CONFLICT (document, revision) DO NOTHING \
        RETURNING document), \
    marks AS ( \
        INSERT INTO client_seqs (document, client_id, seq) \
        SELECT * FROM UNNEST($16::text[], $17::text[], $18::int8[]) \
        ON CONFLICT (document, client_id) DO UPDATE \
        SET seq = GREATEST(client_seqs.seq, excluded.seq)), \
    written AS ( \
        SELECT document, count(*) AS rows \
          FROM (SELECT document FROM ops UNION ALL SELECT document FROM updates) w \
         GROUP BY document), \
    refused AS ( \
        SELECT i.id FROM input i \
          LEFT JOIN held h ON h.document = i.id \
          LEFT JOIN written w ON w.document = i.id \
         WHERE h.epoch IS DISTINCT FROM i.epoch \
            OR (NOT EXISTS (SELECT 1 FROM advanced a WHERE a.id = i.id) \
                AND NOT EXISTS (SELECT 1 FROM created c WHERE c.id = i.id)) \
            OR COALESCE(w.rows, 0) <> i.logged \
         ORDER BY i.id LIMIT 1) \
    SELECT codraft_refuse_commit(id) FROM refused";

/// The message of the error `codraft_refuse_commit` raises (its detail names the document).
const REFUSED: &str = "codraft: commit refused";

/// Documents in Postgres, shared by every docnode of a cluster.
pub struct PgStore {
    /// Bounded pool of connections.
    pool: Pool,
    /// This docnode's identity, written as the owner of the leases it takes.
    node_id: String,
    /// Where the store points (host, port, database; never the password), for messages.
    target: String,
    /// Counters for tests and metrics.
    counters: StoreCounters,
}

impl PgStore {
    /// Connects to the Postgres at `url` with a pool of at most `pool_size` connections,
    /// applies pending migrations, and takes leases as `node_id`. TLS follows `sslmode` in
    /// the URL (see [`pg_tls`]).
    pub async fn connect(url: &str, node_id: &str, pool_size: usize) -> Result<Self, StoreError> {
        Self::connect_secured(url, &PgSecurity::default(), node_id, pool_size).await
    }

    /// Like [`PgStore::connect`], with a CA file and a password file beside the URL.
    pub async fn connect_secured(
        url: &str,
        security: &PgSecurity,
        node_id: &str,
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        let pg_tls::PgConnect {
            mut config,
            tls,
            mode,
        } = pg_tls::prepare(url, security).map_err(StoreError::Unavailable)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(format!("codraft-docnode {node_id}"));
        }
        // A peer that vanished without closing the socket is noticed by keepalives.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        let target = describe_target(&config);
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                // A closed connection is never handed out; whether an open one still has a
                // live peer is asked by `check_idle` below, only of connections that idled.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .post_recycle(Hook::async_fn(|client, metrics| {
                Box::pin(check_idle(client, metrics))
            }))
            .max_size(pool_size.max(1))
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the Postgres pool: {e}")))?;
        let store = Self {
            pool,
            node_id: node_id.to_owned(),
            target,
            counters: StoreCounters::default(),
        };
        let applied = store.migrate().await?;
        info!(database = %store.target, applied, pool_size, sslmode = ?mode, "Postgres store ready");
        Ok(store)
    }

    /// Applies the migrations this database has not had yet, all in one transaction under an
    /// advisory lock (so concurrent start-ups wait for each other instead of racing).
    /// Returns how many it applied; a second run applies none.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        self.bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(|e| self.failed(e))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(|e| self.failed(e))?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ( \
                     version    INTEGER PRIMARY KEY, \
                     name       TEXT NOT NULL, \
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await
            .map_err(|e| self.failed(e))?;
            let applied: HashSet<i32> = tx
                .query("SELECT version FROM schema_migrations", &[])
                .await
                .map_err(|e| self.failed(e))?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(corrupt)?;
            let mut count = 0;
            for migration in MIGRATIONS {
                if applied.contains(&migration.version) {
                    continue;
                }
                info!(
                    version = migration.version,
                    name = migration.name,
                    "applying migration"
                );
                tx.batch_execute(migration.sql).await.map_err(|e| {
                    StoreError::Unavailable(format!(
                        "migration {} ({}) failed on {}: {}",
                        migration.version,
                        migration.name,
                        self.target,
                        describe(&e)
                    ))
                })?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    &[&migration.version, &migration.name],
                )
                .await
                .map_err(|e| self.failed(e))?;
                count += 1;
            }
            tx.commit().await.map_err(|e| self.failed(e))?;
            Ok(count)
        })
        .await
    }

    /// A pooled connection, or `Unavailable` once the pool's deadlines pass.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(_) => StoreError::Unavailable(format!(
                "no Postgres connection to {} became free or could be opened in time \
                 (pool of {}); check that Postgres is up, or raise DATABASE_POOL_SIZE",
                self.target,
                self.pool.status().max_size
            )),
            PoolError::Backend(e) => {
                let reason = describe(&e);
                // A refused certificate is a setting to fix, not a Postgres to restart.
                let hint = if reason.contains("TLS") || reason.contains("certificate") {
                    "check sslmode and sslrootcert in DATABASE_URL, or DATABASE_CA_FILE"
                } else {
                    "check DATABASE_URL and that Postgres is running"
                };
                StoreError::Unavailable(format!(
                    "cannot connect to Postgres at {}: {reason}; {hint}",
                    self.target
                ))
            }
            other => StoreError::Unavailable(format!(
                "cannot get a Postgres connection to {}: {other}",
                self.target
            )),
        })
    }

    /// Runs a call with the overall deadline.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "Postgres at {} did not answer within {}s; check that it is up and not \
                     overloaded",
                    self.target,
                    CALL_TIMEOUT.as_secs()
                )))
            })
    }

    /// A failed statement: whatever it was, retrying later is the only remedy this side has.
    fn failed(&self, e: tokio_postgres::Error) -> StoreError {
        StoreError::Unavailable(format!("Postgres at {}: {}", self.target, describe(&e)))
    }

    /// One nullable text column of at most one row keyed by `document` (a missing row reads
    /// as `None`).
    async fn optional_text(&self, sql: &str, document: &str) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.failed(e))?;
        let row = client
            .query_opt(&statement, &[&document])
            .await
            .map_err(|e| self.failed(e))?;
        match row {
            Some(row) => row.try_get(0).map_err(corrupt),
            None => Ok(None),
        }
    }

    async fn load_inner(&self, document: &str) -> Result<StoredDocument, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.failed(e))?;
        let yjs = is_yjs(document);
        let (take, touch, read) = futures::try_join!(
            tx.prepare_cached(TAKE_LEASE),
            tx.prepare_cached(TOUCH_DOCUMENT),
            tx.prepare_cached(if yjs { READ_YJS_TAIL } else { READ_TAIL }),
        )
        .map_err(|e| self.failed(e))?;
        // Pipelined, and Postgres runs them in order: the lease is taken first (waiting for
        // an older owner's flush that holds the lease row), so the reads after it see
        // everything that owner committed, and nothing it commits later can succeed.
        let lease_params: [&Param<'_>; 2] = [&document, &self.node_id];
        let document_param: [&Param<'_>; 1] = [&document];
        let (lease, meta, rows) = futures::try_join!(
            tx.query_one(&take, &lease_params),
            tx.query_opt(&touch, &document_param),
            tx.query(&read, &document_param),
        )
        .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        drop(client);

        let epoch = from_sql(lease.try_get(0).map_err(corrupt)?)?;
        let (revision, language, otp) = match meta {
            Some(row) => (
                from_sql(row.try_get(0).map_err(corrupt)?)?,
                row.try_get(1).map_err(corrupt)?,
                row.try_get(2).map_err(corrupt)?,
            ),
            None => (0, None, None),
        };
        if yjs {
            let parts = self.yjs_tail(document, &rows, revision)?;
            return Ok(StoredDocument {
                text: String::new(),
                revision,
                language,
                otp,
                epoch,
                yjs: parts,
            });
        }
        let mut rows = rows.iter().peekable();
        let (mut at, text) = match rows.peek() {
            Some(row) if row.try_get::<_, i32>(0).map_err(corrupt)? == 0 => {
                let revision = from_sql(row.try_get(1).map_err(corrupt)?)?;
                let bytes: Vec<u8> = row.try_get(2).map_err(corrupt)?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    StoreError::Corrupt(format!("the snapshot of {document} is not UTF-8"))
                })?;
                rows.next();
                (revision, text)
            }
            _ => (0, String::new()),
        };
        let mut rope = ropey::Rope::from_str(&text);
        let mut read_rows = 0;
        for row in rows {
            read_rows += 1;
            let revision = from_sql(row.try_get(1).map_err(corrupt)?)?;
            if revision != at {
                StoreCounters::add(&self.counters.log_rows_read, read_rows);
                return Err(StoreError::Corrupt(format!(
                    "op log of {document} jumps from revision {at} to {revision}"
                )));
            }
            let json: String = row.try_get(3).map_err(corrupt)?;
            parse_op(&json)?
                .apply(&mut rope)
                .map_err(|e| StoreError::Corrupt(format!("op {revision} of {document}: {e}")))?;
            at += 1;
        }
        StoreCounters::add(&self.counters.log_rows_read, read_rows);
        if at != revision {
            return Err(StoreError::Corrupt(format!(
                "{document} is at revision {revision} but its snapshot and log end at {at}"
            )));
        }
        Ok(StoredDocument {
            text: rope.to_string(),
            revision,
            language,
            otp,
            epoch,
            yjs: Vec::new(),
        })
    }

    /// A Yjs document's compacted state and updates from [`READ_YJS_TAIL`]'s rows, checked to
    /// end at `revision`.
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
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT revision, {content} FROM {checkpoints} WHERE document = $1 \
                     AND revision <= $2 ORDER BY revision DESC LIMIT 1"
                ))
                .await
                .map_err(|e| self.failed(e))?;
            let row = client
                .query_opt(&statement, &[&document, &to_sql(revision)])
                .await
                .map_err(|e| self.failed(e))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let bytes: Vec<u8> = row.try_get(1).map_err(corrupt)?;
            Ok(Some((from_sql(row.try_get(0).map_err(corrupt)?)?, bytes)))
        })
        .await
    }

    /// [`Store::compact`] of one kind of document (OT or Yjs: its log and checkpoints).
    async fn compact_log(
        &self,
        tables: HistoryTables,
        retention: Duration,
    ) -> Result<u64, StoreError> {
        let HistoryTables {
            log, checkpoints, ..
        } = tables;
        let retention = interval_secs(retention);
        // Per document, the newest checkpoint whose preceding op is old (or gone already):
        // commit times grow with revisions, so every op below it is old too. Only documents
        // with something below it are listed.
        let floors: Vec<(String, i64)> = self
            .bounded(async {
                let client = self.client().await?;
                let rows = client
                    .query(
                        &format!(
                            "SELECT c.document, max(c.revision) FROM {checkpoints} c \
                              WHERE NOT EXISTS (SELECT 1 FROM {log} o \
                                     WHERE o.document = c.document AND o.revision = c.revision - 1 \
                                       AND o.committed_at >= now() - make_interval(secs => $1)) \
                              GROUP BY c.document \
                             HAVING EXISTS (SELECT 1 FROM {log} o WHERE o.document = c.document \
                                     AND o.revision < max(c.revision))"
                        ),
                        &[&retention],
                    )
                    .await
                    .map_err(|e| self.failed(e))?;
                rows.iter()
                    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                    .collect::<Result<_, tokio_postgres::Error>>()
                    .map_err(corrupt)
            })
            .await?;
        let mut deleted = 0;
        for (document, floor) in floors {
            // Chunks, each its own short statement: a first compaction of a large log must
            // not hold one huge transaction open.
            loop {
                let chunk = self
                    .bounded(async {
                        let client = self.client().await?;
                        let statement = client
                            .prepare_cached(&format!(
                                "DELETE FROM {log} o USING ( \
                                     SELECT revision FROM {log} \
                                      WHERE document = $1 AND revision < $2 LIMIT $3) v \
                                  WHERE o.document = $1 AND o.revision = v.revision"
                            ))
                            .await
                            .map_err(|e| self.failed(e))?;
                        client
                            .execute(&statement, &[&document, &floor, &COMPACT_CHUNK])
                            .await
                            .map_err(|e| self.failed(e))
                    })
                    .await?;
                deleted += chunk;
                if chunk < COMPACT_CHUNK as u64 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    fn yjs_tail(
        &self,
        document: &str,
        rows: &[tokio_postgres::Row],
        revision: u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut at = 0;
        let mut parts = Vec::with_capacity(rows.len());
        for row in rows {
            let kind: i32 = row.try_get(0).map_err(corrupt)?;
            let row_revision = from_sql(row.try_get(1).map_err(corrupt)?)?;
            if kind == 0 {
                at = row_revision;
            } else if row_revision != at {
                return Err(StoreError::Corrupt(format!(
                    "update log of {document} jumps from revision {at} to {row_revision}"
                )));
            } else {
                at += 1;
            }
            parts.push(row.try_get(2).map_err(corrupt)?);
        }
        StoreCounters::add(&self.counters.log_rows_read, rows.len() as u64);
        if at != revision {
            return Err(StoreError::Corrupt(format!(
                "{document} is at revision {revision} but its updates end at {at}"
            )));
        }
        Ok(parts)
    }

    async fn commit_inner(&self, batch: &[DocumentCommit]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let arrays = BatchArrays::build(batch)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(COMMIT_BATCH)
            .await
            .map_err(|e| self.failed(e))?;
        let params: [&Param<'_>; 18] = [
            &arrays.documents,
            &arrays.bases,
            &arrays.revisions,
            &arrays.languages,
            &arrays.epochs,
            &arrays.logged,
            &arrays.op_documents,
            &arrays.op_revisions,
            &arrays.op_json,
            &arrays.op_authors,
            &arrays.op_clients,
            &arrays.op_seqs,
            &arrays.update_documents,
            &arrays.update_revisions,
            &arrays.updates,
            &arrays.seq_documents,
            &arrays.seq_clients,
            &arrays.seq_values,
        ];
        client
            .execute(&statement, &params)
            .await
            .map_err(|e| self.commit_failed(e, batch))?;
        StoreCounters::add(&self.counters.commits, 1);
        StoreCounters::add(
            &self.counters.ops_committed,
            (arrays.op_revisions.len() + arrays.update_revisions.len()) as u64,
        );
        Ok(())
    }

    /// A failed commit statement: a key clash is a conflict (the batch's only possible
    /// clashes are with another writer); anything else means try again later.
    fn commit_failed(&self, e: tokio_postgres::Error, batch: &[DocumentCommit]) -> StoreError {
        // The statement's own fence refused a document, and named it.
        if let Some(db) = e.as_db_error() {
            if db.code() == &SqlState::RAISE_EXCEPTION && db.message() == REFUSED {
                let named = db
                    .detail()
                    .and_then(|d| batch.iter().find(|c| &*c.document == d));
                if let Some(commit) = named.or(batch.first()) {
                    return conflict(commit);
                }
            }
        }
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            // The statements skip clashing rows, so this is a race on a brand-new row; name
            // the document if Postgres' detail ("Key (id)=(doc) already exists") does, else
            // the first one.
            let detail = e.as_db_error().and_then(|db| db.detail()).unwrap_or("");
            let named = batch.iter().find(|c| {
                detail.contains(&format!("=({})", c.document))
                    || detail.contains(&format!("=({},", c.document))
            });
            if let Some(commit) = named.or(batch.first()) {
                return conflict(commit);
            }
        }
        self.failed(e)
    }
}

/// The column arrays of one batch, built once so the statements stay the same size whatever
/// the batch holds.
struct BatchArrays<'a> {
    documents: Vec<&'a str>,
    bases: Vec<i64>,
    revisions: Vec<i64>,
    languages: Vec<Option<&'a str>>,
    /// The lease epoch each document is committed under.
    epochs: Vec<i64>,
    /// Rows (ops and Yjs updates) each document writes.
    logged: Vec<i64>,
    op_documents: Vec<&'a str>,
    op_revisions: Vec<i64>,
    op_json: Vec<String>,
    op_authors: Vec<i64>,
    op_clients: Vec<Option<&'a str>>,
    op_seqs: Vec<Option<i64>>,
    seq_documents: Vec<&'a str>,
    seq_clients: Vec<&'a str>,
    seq_values: Vec<i64>,
    update_documents: Vec<&'a str>,
    update_revisions: Vec<i64>,
    updates: Vec<&'a [u8]>,
}

impl<'a> BatchArrays<'a> {
    fn build(batch: &'a [DocumentCommit]) -> Result<Self, StoreError> {
        let ops: usize = batch.iter().map(|c| c.ops.len()).sum();
        let mut arrays = Self {
            documents: Vec::with_capacity(batch.len()),
            bases: Vec::with_capacity(batch.len()),
            revisions: Vec::with_capacity(batch.len()),
            languages: Vec::with_capacity(batch.len()),
            epochs: Vec::with_capacity(batch.len()),
            logged: Vec::with_capacity(batch.len()),
            op_documents: Vec::with_capacity(ops),
            op_revisions: Vec::with_capacity(ops),
            op_json: Vec::with_capacity(ops),
            op_authors: Vec::with_capacity(ops),
            op_clients: Vec::with_capacity(ops),
            op_seqs: Vec::with_capacity(ops),
            seq_documents: Vec::new(),
            seq_clients: Vec::new(),
            seq_values: Vec::new(),
            update_documents: Vec::new(),
            update_revisions: Vec::new(),
            updates: Vec::new(),
        };
        let mut seen = HashSet::with_capacity(batch.len());
        let mut marks: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for commit in batch {
            let document: &str = &commit.document;
            // The committer sends each document at most once per batch, its ops continuing
            // its log; anything else cannot be committed as one step, so the writer reloads.
            let continues = commit
                .ops
                .iter()
                .zip(commit.base_revision..)
                .all(|(op, revision)| op.revision == revision);
            if !seen.insert(document) || !continues {
                return Err(conflict(commit));
            }
            arrays.documents.push(document);
            arrays.bases.push(to_sql(commit.base_revision));
            arrays.revisions.push(to_sql(commit.new_revision()));
            arrays.epochs.push(to_sql(commit.epoch));
            arrays.logged.push(to_sql(
                commit.ops.len() as u64 + commit.updates.len() as u64,
            ));
            let first_update = commit.base_revision + commit.ops.len() as u64;
            for (update, revision) in commit.updates.iter().zip(first_update..) {
                arrays.update_documents.push(document);
                arrays.update_revisions.push(to_sql(revision));
                arrays.updates.push(update);
            }
            arrays.languages.push(commit.language.as_deref());
            for op in &commit.ops {
                arrays.op_documents.push(document);
                arrays.op_revisions.push(to_sql(op.revision));
                arrays.op_json.push(op.operation.to_json());
                arrays.op_authors.push(to_sql(op.author));
                arrays.op_clients.push(op.client_id.as_deref());
                arrays.op_seqs.push(op.seq.map(to_sql));
                if let (Some(client), Some(seq)) = (&op.client_id, op.seq) {
                    let mark = marks.entry((document, client)).or_insert(0);
                    *mark = (*mark).max(to_sql(seq));
                }
            }
        }
        for ((document, client), seq) in marks {
            arrays.seq_documents.push(document);
            arrays.seq_clients.push(client);
            arrays.seq_values.push(seq);
        }
        Ok(arrays)
    }
}

fn conflict(commit: &DocumentCommit) -> StoreError {
    StoreError::Conflict {
        document: commit.document.to_string(),
        expected: commit.base_revision,
    }
}

/// A Postgres error as a person needs it: the server's code and message if it sent one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => {
            // tokio-postgres keeps the reason (a refused certificate, a reset) in the source
            // chain; without it "error performing TLS handshake" says nothing actionable.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text.push_str(": ");
                    text.push_str(&cause_text);
                }
                source = cause.source();
            }
            text
        }
    }
}

/// Whether a pooled connection is checked with a round trip before it is handed out: only
/// one that idled for [`CHECK_AFTER_IDLE`]. A connection in steady use answers every call;
/// checking it too cost each commit a round trip (an empty query on every checkout, the
/// pool's `Verified` method: 7–12% of edits/s at 1 doc × 8, BENCHMARKS.md). One that idled is
/// where a restarted Postgres or a vanished peer hides, and the check finds that out before
/// a real call does. A dead connection used without a check fails its call, which the
/// committer retries (and a read reports the store unavailable, as any outage does);
/// connections Postgres closed are never handed out (`is_closed`, the `Fast` method).
fn checked_before_use(metrics: &Metrics) -> bool {
    metrics.last_used() >= CHECK_AFTER_IDLE
}

/// The pool's check of a connection it is about to hand out (see [`checked_before_use`]):
/// an empty query, answered within RECYCLE_TIMEOUT, or the connection is dropped and
/// another one tried.
async fn check_idle(
    client: &mut deadpool_postgres::ClientWrapper,
    metrics: &Metrics,
) -> Result<(), HookError> {
    if !checked_before_use(metrics) {
        return Ok(());
    }
    match tokio::time::timeout(RECYCLE_TIMEOUT, client.simple_query("")).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(HookError::Backend(e)),
        Err(_) => Err(HookError::Message(
            "a pooled connection did not answer its check".into(),
        )),
    }
}

/// Host, port and database of a connection config, for messages (never the password).
fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{database}")
}

fn corrupt(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(format!("unexpected column in a Postgres row: {e}"))
}

fn parse_op(json: &str) -> Result<Operation, StoreError> {
    Operation::from_json(json).map_err(|e| StoreError::Corrupt(format!("bad stored op: {e}")))
}

/// Postgres has no unsigned integers; revisions, ids and sequence numbers stay below 2^53,
/// so this never clamps in practice, but a wild value must not wrap around.
fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_sql(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative value {n}")))
}

/// A duration as seconds for `make_interval`, capped at a century: beyond that nothing is old
/// enough, and a larger interval would overflow Postgres' timestamps.
fn interval_secs(d: Duration) -> f64 {
    d.as_secs_f64().min(100.0 * 365.0 * 86_400.0)
}

#[async_trait]
impl Store for PgStore {
    async fn load(&self, document: &str) -> Result<StoredDocument, StoreError> {
        self.bounded(self.load_inner(document)).await
    }

    async fn commit(&self, batch: Arc<[DocumentCommit]>) -> Result<(), StoreError> {
        self.bounded(self.commit_inner(&batch)).await
    }

    async fn document_otp(&self, document: &str) -> Result<Option<String>, StoreError> {
        self.bounded(self.optional_text("SELECT otp FROM documents WHERE id = $1", document))
            .await
    }

    async fn set_otp(
        &self,
        document: &str,
        epoch: u64,
        otp: Option<String>,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            // One statement: the lease row is locked and its epoch checked in the same
            // transaction that writes, so a stale owner cannot change the password.
            let statement = client
                .prepare_cached(
                    "WITH lease AS (SELECT epoch FROM leases WHERE document = $1 FOR UPDATE) \
                     INSERT INTO documents (id, revision, otp, accessed_at) \
                     SELECT $1, 0, $2, now() WHERE EXISTS (SELECT 1 FROM lease WHERE epoch = $3) \
                     ON CONFLICT (id) DO UPDATE SET otp = excluded.otp",
                )
                .await
                .map_err(|e| self.failed(e))?;
            let changed = client
                .execute(&statement, &[&document, &otp, &to_sql(epoch)])
                .await
                .map_err(|e| self.failed(e))?;
            if changed == 0 {
                return Err(StoreError::Conflict {
                    document: document.to_owned(),
                    expected: 0,
                });
            }
            Ok(())
        })
        .await
    }

    async fn lease_owner(&self, document: &str) -> Result<Option<String>, StoreError> {
        self.bounded(self.optional_text("SELECT owner FROM leases WHERE document = $1", document))
            .await
    }

    async fn write_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    // Every snapshot is a checkpoint of the history as well.
                    "WITH checkpoint AS ( \
                         INSERT INTO checkpoints (document, revision, text) VALUES ($1, $2, $3) \
                         ON CONFLICT (document, revision) DO NOTHING) \
                     INSERT INTO snapshots (document, revision, text) VALUES ($1, $2, $3) \
                     ON CONFLICT (document) DO UPDATE \
                     SET revision = excluded.revision, text = excluded.text \
                     WHERE excluded.revision > snapshots.revision",
                )
                .await
                .map_err(|e| self.failed(e))?;
            client
                .execute(
                    &statement,
                    &[
                        &&*snapshot.document,
                        &to_sql(snapshot.revision),
                        &snapshot.text.as_bytes(),
                    ],
                )
                .await
                .map_err(|e| self.failed(e))?;
            Ok(())
        })
        .await
    }

    async fn write_yjs_snapshot(
        &self,
        document: &str,
        revision: u64,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            // An older snapshot never replaces a newer one; every snapshot is a checkpoint of
            // the history as well, and the updates below it stay until compaction finds them
            // older than the retention.
            let statement = client
                .prepare_cached(
                    "WITH written AS ( \
                         INSERT INTO yjs_snapshots (document, revision, state) VALUES ($1, $2, $3) \
                         ON CONFLICT (document) DO UPDATE \
                         SET revision = excluded.revision, state = excluded.state \
                         WHERE excluded.revision > yjs_snapshots.revision) \
                     INSERT INTO yjs_checkpoints (document, revision, state) VALUES ($1, $2, $3) \
                     ON CONFLICT (document, revision) DO NOTHING",
                )
                .await
                .map_err(|e| self.failed(e))?;
            client
                .execute(&statement, &[&document, &to_sql(revision), &state])
                .await
                .map_err(|e| self.failed(e))?;
            Ok(())
        })
        .await
    }

    async fn read_yjs_updates(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT update_v1 FROM yjs_updates \
                      WHERE document = $1 AND revision >= $2 AND revision < $3 ORDER BY revision",
                    &[&document, &to_sql(from), &to_sql(to)],
                )
                .await
                .map_err(|e| self.failed(e))?;
            rows.iter()
                .map(|row| row.try_get(0).map_err(corrupt))
                .collect()
        })
        .await
    }

    async fn read_log(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<LoggedOp>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT revision, operation, author, client_id, seq FROM oplog \
                     WHERE document = $1 AND revision >= $2 AND revision < $3 \
                     ORDER BY revision",
                )
                .await
                .map_err(|e| self.failed(e))?;
            let rows = client
                .query(&statement, &[&document, &to_sql(from), &to_sql(to)])
                .await
                .map_err(|e| self.failed(e))?;
            StoreCounters::add(&self.counters.log_rows_read, rows.len() as u64);
            rows.iter()
                .map(|row| {
                    let json: &str = row.try_get(1).map_err(corrupt)?;
                    let seq: Option<i64> = row.try_get(4).map_err(corrupt)?;
                    Ok(LoggedOp {
                        revision: from_sql(row.try_get(0).map_err(corrupt)?)?,
                        operation: parse_op(json)?,
                        author: from_sql(row.try_get(2).map_err(corrupt)?)?,
                        client_id: row.try_get(3).map_err(corrupt)?,
                        seq: seq.map(from_sql).transpose()?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn last_seq(&self, document: &str, client_id: &str) -> Result<u64, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT seq FROM client_seqs WHERE document = $1 AND client_id = $2",
                )
                .await
                .map_err(|e| self.failed(e))?;
            let row = client
                .query_opt(&statement, &[&document, &client_id])
                .await
                .map_err(|e| self.failed(e))?;
            match row {
                Some(row) => from_sql(row.try_get(0).map_err(corrupt)?),
                None => Ok(0),
            }
        })
        .await
    }

    async fn document_count(&self) -> Result<u64, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT count(*) FROM documents", &[])
                .await
                .map_err(|e| self.failed(e))?;
            from_sql(row.try_get(0).map_err(corrupt)?)
        })
        .await
    }

    async fn compact(&self, retention: Duration) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for tables in HISTORY_TABLES {
            deleted += self.compact_log(tables, retention).await?;
        }
        Ok(deleted)
    }

    async fn history_extent(&self, document: &str) -> Result<Option<HistoryExtent>, StoreError> {
        let HistoryTables {
            log, checkpoints, ..
        } = HistoryTables::of(document);
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT d.revision, \
                            (SELECT min(o.revision) FROM {log} o WHERE o.document = d.id), \
                            ARRAY(SELECT c.revision FROM {checkpoints} c \
                                   WHERE c.document = d.id ORDER BY c.revision) \
                       FROM documents d WHERE d.id = $1"
                ))
                .await
                .map_err(|e| self.failed(e))?;
            let Some(row) = client
                .query_opt(&statement, &[&document])
                .await
                .map_err(|e| self.failed(e))?
            else {
                return Ok(None);
            };
            let revision = from_sql(row.try_get(0).map_err(corrupt)?)?;
            let oldest: Option<i64> = row.try_get(1).map_err(corrupt)?;
            let checkpoints: Vec<i64> = row.try_get(2).map_err(corrupt)?;
            Ok(Some(HistoryExtent {
                revision,
                exact_from: oldest.map(from_sql).transpose()?.unwrap_or(revision),
                checkpoints: checkpoints
                    .into_iter()
                    .map(from_sql)
                    .collect::<Result<_, _>>()?,
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
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT revision, update_v1, \
                            (extract(epoch FROM committed_at) * 1000)::int8 FROM yjs_updates \
                     WHERE document = $1 AND revision >= $2 AND revision < $3 \
                     ORDER BY revision",
                )
                .await
                .map_err(|e| self.failed(e))?;
            let rows = client
                .query(&statement, &[&document, &to_sql(from), &to_sql(to)])
                .await
                .map_err(|e| self.failed(e))?;
            StoreCounters::add(&self.counters.log_rows_read, rows.len() as u64);
            rows.iter()
                .map(|row| {
                    Ok(PastUpdate {
                        revision: from_sql(row.try_get(0).map_err(corrupt)?)?,
                        update: row.try_get(1).map_err(corrupt)?,
                        committed_at_ms: row.try_get(2).map_err(corrupt)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn read_past(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<PastOp>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT revision, operation, author, client_id, seq, \
                            (extract(epoch FROM committed_at) * 1000)::int8 FROM oplog \
                     WHERE document = $1 AND revision >= $2 AND revision < $3 \
                     ORDER BY revision",
                )
                .await
                .map_err(|e| self.failed(e))?;
            let rows = client
                .query(&statement, &[&document, &to_sql(from), &to_sql(to)])
                .await
                .map_err(|e| self.failed(e))?;
            StoreCounters::add(&self.counters.log_rows_read, rows.len() as u64);
            rows.iter()
                .map(|row| {
                    let json: &str = row.try_get(1).map_err(corrupt)?;
                    let seq: Option<i64> = row.try_get(4).map_err(corrupt)?;
                    Ok(PastOp {
                        op: LoggedOp {
                            revision: from_sql(row.try_get(0).map_err(corrupt)?)?,
                            operation: parse_op(json)?,
                            author: from_sql(row.try_get(2).map_err(corrupt)?)?,
                            client_id: row.try_get(3).map_err(corrupt)?,
                            seq: seq.map(from_sql).transpose()?,
                        },
                        committed_at_ms: row.try_get(5).map_err(corrupt)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn last_revision_at(
        &self,
        document: &str,
        at_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let log = HistoryTables::of(document).log;
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT max(revision) FROM {log} WHERE document = $1 \
                     AND committed_at <= to_timestamp($2::float8 / 1000)"
                ))
                .await
                .map_err(|e| self.failed(e))?;
            let row = client
                .query_one(&statement, &[&document, &(at_ms as f64)])
                .await
                .map_err(|e| self.failed(e))?;
            let revision: Option<i64> = row.try_get(0).map_err(corrupt)?;
            revision.map(from_sql).transpose()
        })
        .await
    }

    async fn record_author(&self, document: &str, info: AuthorInfo) -> Result<(), StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO authors (document, author, name, hue) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (document, author) DO UPDATE \
                     SET name = excluded.name, hue = excluded.hue",
                )
                .await
                .map_err(|e| self.failed(e))?;
            let hue = i32::try_from(info.hue).unwrap_or(0);
            client
                .execute(
                    &statement,
                    &[&document, &to_sql(info.author), &info.name, &hue],
                )
                .await
                .map_err(|e| self.failed(e))?;
            Ok(())
        })
        .await
    }

    async fn authors(&self, document: &str) -> Result<Vec<AuthorInfo>, StoreError> {
        self.bounded(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT author, name, hue FROM authors WHERE document = $1")
                .await
                .map_err(|e| self.failed(e))?;
            let rows = client
                .query(&statement, &[&document])
                .await
                .map_err(|e| self.failed(e))?;
            rows.iter()
                .map(|row| {
                    let hue: i32 = row.try_get(2).map_err(corrupt)?;
                    Ok(AuthorInfo {
                        author: from_sql(row.try_get(0).map_err(corrupt)?)?,
                        name: row.try_get(1).map_err(corrupt)?,
                        hue: u32::try_from(hue).unwrap_or(0),
                    })
                })
                .collect()
        })
        .await
    }

    async fn delete_expired(&self, unused_for: Duration) -> Result<u64, StoreError> {
        let unused_for = interval_secs(unused_for);
        let mut deleted = 0;
        loop {
            let chunk = self
                .bounded(async {
                    let mut client = self.client().await?;
                    let tx = client.transaction().await.map_err(|e| self.failed(e))?;
                    let candidates: Vec<String> = tx
                        .query(
                            "SELECT id FROM documents \
                              WHERE accessed_at < now() - make_interval(secs => $1) \
                              ORDER BY id LIMIT $2",
                            &[&unused_for, &EXPIRE_CHUNK],
                        )
                        .await
                        .map_err(|e| self.failed(e))?
                        .iter()
                        .map(|row| row.try_get(0))
                        .collect::<Result<_, _>>()
                        .map_err(corrupt)?;
                    if candidates.is_empty() {
                        // Leases of documents never written (opened, never edited) have no
                        // documents row to expire with; they go once as old.
                        tx.execute(
                            "DELETE FROM leases l \
                              WHERE l.taken_at < now() - make_interval(secs => $1) \
                                AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.id = l.document)",
                            &[&unused_for],
                        )
                        .await
                        .map_err(|e| self.failed(e))?;
                        tx.commit().await.map_err(|e| self.failed(e))?;
                        return Ok((0, 0));
                    }
                    // Lock the leases in the committer's order first, then delete only what
                    // is still unused: a commit that slipped in between touched accessed_at.
                    tx.execute(
                        "SELECT 1 FROM leases WHERE document = ANY($1) \
                          ORDER BY document FOR UPDATE",
                        &[&candidates],
                    )
                    .await
                    .map_err(|e| self.failed(e))?;
                    let expired: Vec<String> = tx
                        .query(
                            "DELETE FROM documents WHERE id = ANY($1) \
                                AND accessed_at < now() - make_interval(secs => $2) \
                             RETURNING id",
                            &[&candidates, &unused_for],
                        )
                        .await
                        .map_err(|e| self.failed(e))?
                        .iter()
                        .map(|row| row.try_get(0))
                        .collect::<Result<_, _>>()
                        .map_err(corrupt)?;
                    let expired_param: [&Param<'_>; 1] = [&expired];
                    futures::try_join!(
                        tx.execute("DELETE FROM oplog WHERE document = ANY($1)", &expired_param),
                        tx.execute(
                            "DELETE FROM snapshots WHERE document = ANY($1)",
                            &expired_param
                        ),
                        tx.execute(
                            "DELETE FROM client_seqs WHERE document = ANY($1)",
                            &expired_param
                        ),
                        tx.execute(
                            "DELETE FROM checkpoints WHERE document = ANY($1)",
                            &expired_param
                        ),
                        tx.execute(
                            "DELETE FROM authors WHERE document = ANY($1)",
                            &expired_param,
                        ),
                        tx.execute(
                            "DELETE FROM yjs_updates WHERE document = ANY($1)",
                            &expired_param,
                        ),
                        tx.execute(
                            "DELETE FROM yjs_snapshots WHERE document = ANY($1)",
                            &expired_param
                        ),
                        tx.execute(
                            "DELETE FROM yjs_checkpoints WHERE document = ANY($1)",
                            &expired_param
                        ),
                        tx.execute(
                            "DELETE FROM leases WHERE document = ANY($1)",
                            &expired_param
                        ),
                    )
                    .map_err(|e| self.failed(e))?;
                    tx.commit().await.map_err(|e| self.failed(e))?;
                    // A chunk whose candidates were all touched meanwhile still counts as
                    // progress, so the loop moves on rather than stopping early.
                    Ok((expired.len() as u64, candidates.len() as i64))
                })
                .await;
            match chunk? {
                (n, seen) if seen >= EXPIRE_CHUNK => deleted += n,
                (n, _) => return Ok(deleted + n),
            }
        }
    }

    fn counters(&self) -> &StoreCounters {
        &self.counters
    }

    fn pool_status(&self) -> Option<super::PoolStatus> {
        let status = self.pool.status();
        Some(super::PoolStatus {
            max: status.max_size,
            open: status.size,
            idle: status.available,
            waiting: status.waiting,
        })
    }

    fn db_system(&self) -> &'static str {
        "postgresql"
    }

    fn server_address(&self) -> String {
        // `target` is host:port/database; the semantic convention wants the host alone.
        let host_port = self.target.split('/').next().unwrap_or_default();
        host_port
            .rsplit_once(':')
            .map_or(host_port, |(host, _)| host)
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn handed_out(ago: Duration) -> Metrics {
        let now = Instant::now();
        Metrics {
            created: now.checked_sub(Duration::from_secs(3600)).unwrap_or(now),
            recycled: Some(now.checked_sub(ago).unwrap_or(now)),
            recycle_count: 7,
        }
    }

    /// A connection in steady use goes out without a round trip; one that idled, or one
    /// never handed out since it was opened long ago, is asked first.
    #[test]
    fn only_connections_that_idled_are_checked_before_use() {
        assert!(!checked_before_use(&handed_out(Duration::from_millis(5))));
        assert!(!checked_before_use(&handed_out(
            CHECK_AFTER_IDLE - Duration::from_millis(100)
        )));
        assert!(checked_before_use(&handed_out(CHECK_AFTER_IDLE)));
        assert!(checked_before_use(&handed_out(Duration::from_secs(60))));
        let opened_long_ago = Metrics {
            recycled: None,
            ..handed_out(Duration::ZERO)
        };
        assert!(checked_before_use(&opened_long_ago));
    }
}
