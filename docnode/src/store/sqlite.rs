//! The embedded file store of standalone mode: two SQLite files under DATA_DIR, the tables
//! (`codraft.db`) and the journal of the newest commits (`journal.db`).
//!
//! SQLite runs in WAL mode with `synchronous=FULL`, so a committed transaction survives
//! kill -9 and power loss; that is what lets the docnode acknowledge an edit once its flush
//! returns. SQLite calls block: commits run on a thread of their own (`codraft-journal`), the
//! tables' background writes (folds, below, and snapshots) on another at a lower CPU priority
//! (`codraft-tables`), and the rest on tokio's blocking pool; the connections' mutexes are
//! only ever taken on those threads, never across an await.
//!
//! A group commit appends its rows to a second file, `journal.db`, in the order they come:
//! a batch of a hundred documents then dirties the journal's last page or two instead of a
//! page of each document's log, client marks and row (what a commit cost when it wrote the
//! tables directly: a hundred B-tree pages through the WAL and its fsync). The journal is
//! *folded* into the tables of `codraft.db` (`oplog`, `yjs_updates`, `client_seqs`,
//! `documents`) in one transaction of the tables' connection, which attaches the journal
//! read-only (the logs by `INSERT … SELECT`, the documents and client marks from one pass over
//! the rows, [`RowsFolded`]): in the background once JOURNAL_FOLD_ROWS rows wait, before
//! a call that needs what waits (below), and when the store opens (after a crash). So every
//! call but a commit sees the tables as if each commit had written them itself.
//!
//! A call about every document (counting, compaction, expiry) folds whatever waits; a call
//! about one document folds only if that document has rows waiting; if it has none
//! and the call only reads, it runs on a third connection, a reader of `codraft.db` that WAL
//! lets read beside a fold, so a cold load does not wait for the other documents' fold. A
//! load's access time (which only decides expiry, in days) is kept in memory and written by
//! the next fold or call about every document; a crash before then loses it.
//!
//! The two files have a writer each, so a fold holds up no commit (unless the journal's backlog
//! reaches JOURNAL_BACKLOG_ROWS, see there). `journal_folded` in
//! `codraft.db` records the last journal row folded, in the fold's own transaction: a crash
//! between a fold and the journal's cleanup (later commits delete folded rows, a bounded
//! number at a time) cannot fold a row twice, and the journal never numbers a new row at or
//! below it (the store numbers rows itself, from the last one's number kept in memory). A
//! commit's fence (its base revision must be the document's revision) reads the revision
//! from memory while the document has rows waiting, and from `documents` (attached
//! read-only to the journal's connection) once they are folded: one process owns the files,
//! and the memory changes only with a transaction that committed.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use codraft_common::{ids::is_yjs, sched};
use codraft_ot::Operation;
use rusqlite::{params, types::Null, Connection, OptionalExtension, TransactionBehavior};

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
    r#"
    CREATE TABLE journal_folded (seq INTEGER NOT NULL);
    INSERT INTO journal_folded (seq) VALUES (0);
"#,
];

/// The journal, in `journal.db`: one row per op, Yjs update or marker (a commit that set a
/// language or carried nothing still creates its document's row), numbered in commit order.
/// The journal's table. Its rows are numbered by the commit, from `Journal::appended` (not by
/// `AUTOINCREMENT`, which reads and rewrites `sqlite_sequence` on every insert statement:
/// 0.3–0.5 µs of each row's 1.4–2.9, BENCHMARKS.md "The journal numbers its own rows"). The
/// number never goes back: the store keeps it in memory and, at open, starts above both the
/// last row and `journal_folded`.
const JOURNAL: &str = r#"
    CREATE TABLE IF NOT EXISTS journal (
        seq          INTEGER PRIMARY KEY,
        document     TEXT NOT NULL,
        revision     INTEGER NOT NULL,
        operation    TEXT,
        author       INTEGER,
        client_id    TEXT,
        client_seq   INTEGER,
        update_v1    BLOB,
        language     TEXT,
        committed_at INTEGER NOT NULL
    );
"#;

/// Journal rows waiting at which a commit starts a fold in the background. A fold costs
/// about what one commit of its documents straight into the tables did, so the more rows it
/// carries the less it costs per edit; it holds up reads of the tables, and commits only past
/// JOURNAL_BACKLOG_ROWS.
pub const JOURNAL_FOLD_ROWS: usize = 4096;

/// Journal rows waiting at which a commit folds them itself, on the journal's thread, before
/// it is answered. The background fold runs at BACKGROUND_NICE, so a core kept busy (a closed
/// loop, an overloaded server) can starve it: measured, a Yjs closed loop left the journal
/// growing by ~4 MB/s, 100 MB and a 200 MB WAL after 45 s. Past this many rows the fold runs
/// at the committer's priority and the edits behind it wait: the journal stays bounded, and
/// an overloaded server slows down instead of filling its disk.
pub const JOURNAL_BACKLOG_ROWS: usize = 16 * JOURNAL_FOLD_ROWS;

/// The tables' background writer (folds and snapshots) runs this much lower than the rest of
/// the process (its thread's nice value; Linux keeps one per thread). A fold of
/// JOURNAL_FOLD_ROWS rows is 3–50 ms of CPU and disk, and in standalone mode it shares its
/// core with the runtime and the committer's thread: at normal priority a commit that woke
/// behind it waited for the fold's time slice (an open loop's commits over 4 ms: 8–46 a run
/// at nice 0, 0–12 at 10 or 19; BENCHMARKS.md, "The fold gives way to commits"). 10, not 19:
/// a fold still gets about a tenth of a core that the runtime saturates, so the journal keeps
/// being folded under a closed loop, and a read that waits for a fold (its document's rows
/// are in it) is not held up for long.
pub const BACKGROUND_NICE: i32 = 10;

/// Folded journal rows one commit deletes from the journal at most, so the cleanup is spread
/// thin over the commits after a fold.
const JOURNAL_CLEANUP_ROWS: i64 = 1024;

/// Moves the journal rows numbered above `:from` up to `:to` into the log tables and records
/// `:to` as folded; `documents` and `client_seqs` are written from [`RowsFolded`].
const FOLD: [&str; 3] = [
    "INSERT INTO oplog (document, revision, operation, author, client_id, seq, committed_at) \
     SELECT document, revision, operation, author, client_id, client_seq, committed_at \
     FROM jdb.journal WHERE seq > :from AND seq <= :to AND operation IS NOT NULL \
     ORDER BY document, revision",
    "INSERT INTO yjs_updates (document, revision, update_v1, committed_at) \
     SELECT document, revision, update_v1, committed_at \
     FROM jdb.journal WHERE seq > :from AND seq <= :to AND update_v1 IS NOT NULL \
     ORDER BY document, revision",
    "UPDATE journal_folded SET seq = :to WHERE :from < :to",
];

/// One document's journal rows as the fold sums them up.
#[derive(Default)]
struct DocumentFolded {
    /// The revision after its last op or update, if it has any.
    next: Option<i64>,
    /// When its last row was committed.
    at: i64,
    /// The language its newest row with one set.
    language: Option<String>,
    /// Each client's highest sequence number in the rows.
    marks: HashMap<String, i64>,
}

/// What a fold writes to `documents` and `client_seqs`, read in one pass over the rows in
/// the order they were appended. As SQL (`GROUP BY` document, and document and client),
/// this was three sorts of the rows and half the fold's CPU (BENCHMARKS.md, "The fold sums up
/// in one pass").
struct RowsFolded(HashMap<String, DocumentFolded>);

impl RowsFolded {
    fn read(tx: &rusqlite::Transaction<'_>, from: i64, to: i64) -> rusqlite::Result<Self> {
        let mut documents: HashMap<String, DocumentFolded> = HashMap::new();
        let mut stmt = tx.prepare_cached(
            "SELECT document, revision, operation IS NOT NULL OR update_v1 IS NOT NULL, \
             client_id, client_seq, language, committed_at \
             FROM jdb.journal WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let mut rows = stmt.query(params![from, to])?;
        while let Some(row) = rows.next()? {
            let document = row.get_ref(0)?.as_str()?;
            if !documents.contains_key(document) {
                documents.insert(document.to_owned(), DocumentFolded::default());
            }
            let Some(folded) = documents.get_mut(document) else {
                continue;
            };
            if row.get::<_, bool>(2)? {
                let next = row.get::<_, i64>(1)? + 1;
                folded.next = Some(folded.next.map_or(next, |n| n.max(next)));
            }
            if let (Some(client), Some(seq)) = (
                row.get_ref(3)?.as_str_or_null()?,
                row.get::<_, Option<i64>>(4)?,
            ) {
                match folded.marks.get_mut(client) {
                    Some(mark) => *mark = (*mark).max(seq),
                    None => {
                        folded.marks.insert(client.to_owned(), seq);
                    }
                }
            }
            if let Some(language) = row.get::<_, Option<String>>(5)? {
                folded.language = Some(language);
            }
            folded.at = folded.at.max(row.get(6)?);
        }
        Ok(Self(documents))
    }

    /// Creates the documents new to the tables and brings every one's revision, access
    /// time, language and client marks up to the rows'.
    fn write(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        let mut document = tx.prepare_cached(
            "INSERT INTO documents (id, revision, accessed_at, language) \
             VALUES (?1, COALESCE(?2, 0), ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET revision = COALESCE(?2, revision), \
             accessed_at = MAX(accessed_at, ?3), language = COALESCE(?4, language)",
        )?;
        let mut mark = tx.prepare_cached(
            "INSERT INTO client_seqs (document, client_id, seq) VALUES (?1, ?2, ?3) \
             ON CONFLICT (document, client_id) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        )?;
        for (id, folded) in &self.0 {
            document.execute(params![id, folded.next, folded.at, folded.language])?;
            for (client, seq) in &folded.marks {
                mark.execute(params![id, client, seq])?;
            }
        }
        Ok(())
    }
}

/// Documents in one SQLite file, and their newest commits in a journal beside it.
pub struct SqliteStore {
    /// `codraft.db`, with `journal.db` attached read-only as `jdb`.
    tables: Arc<Mutex<Connection>>,
    journal: Arc<Mutex<Journal>>,
    counters: Arc<StoreCounters>,
    /// Journal rows waiting at which a commit starts a fold.
    fold_rows: usize,
    /// Journal rows waiting at which a commit folds them itself (JOURNAL_BACKLOG_ROWS).
    backlog_rows: usize,
    /// Work for the tables' background writer; dropped with the store, which ends it.
    background: mpsc::Sender<Job>,
    /// The thread every commit runs on; dropped with the store, which ends it.
    committer: JournalThread,
    /// Whether a fold is asked for and not yet started: one queued is enough (a fold takes
    /// every row appended before it starts).
    fold_asked: Arc<AtomicBool>,
    /// A second connection to `codraft.db`, for reads of documents with no rows waiting:
    /// WAL lets it read beside a fold, so a cold load does not wait for one.
    reader: Arc<Mutex<Connection>>,
    /// Documents loaded since the last fold, and when: the fold writes their access times
    /// (which only decide expiry, in days), so a load needs no writer.
    touched: Arc<Mutex<Touches>>,
}

/// The journal's connection, and what it knows of the journal.
struct Journal {
    /// `journal.db`, with `codraft.db` attached read-only as `m`.
    conn: Connection,
    /// The number of the last row appended.
    appended: i64,
    /// Rows up to this number are in the tables.
    folded: i64,
    /// Rows up to this number are deleted.
    deleted: i64,
    /// Each document with rows not yet folded: its revision after them, and the number of
    /// its last row.
    revisions: HashMap<Arc<str>, (u64, i64)>,
}

impl Journal {
    /// Rows appended and not yet folded.
    fn waiting(&self) -> usize {
        usize::try_from(self.appended - self.folded).unwrap_or(0)
    }

    /// Notes that rows up to `to` are in the tables: their documents' revisions are read
    /// from there from now on.
    fn folded_to(&mut self, to: i64) {
        self.folded = self.folded.max(to);
        let folded = self.folded;
        self.revisions.retain(|_, &mut (_, last)| last > folded);
    }
}

/// Documents' access times to write: (document, Unix seconds).
type Touches = HashMap<Arc<str>, i64>;

/// Folds every journal row not yet folded into the tables and writes `touched`'s access
/// times, in one transaction; returns the number of the last row folded.
fn fold_journal(tables: &mut Connection, touched: &Touches) -> Result<i64, StoreError> {
    let failed = |e: rusqlite::Error| StoreError::Unavailable(format!("folding the journal: {e}"));
    let tx = tables
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let from: i64 = tx
        .query_row("SELECT seq FROM journal_folded", [], |r| r.get(0))
        .map_err(failed)?;
    let to: i64 = tx
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM jdb.journal", [], |r| {
            r.get(0)
        })
        .map_err(failed)?;
    for (document, at) in touched {
        tx.prepare_cached("UPDATE documents SET accessed_at = MAX(accessed_at, ?2) WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute(params![&**document, at]))
            .map_err(failed)?;
    }
    if to > from {
        RowsFolded::read(&tx, from, to)
            .and_then(|rows| rows.write(&tx))
            .map_err(failed)?;
        for sql in FOLD {
            tx.prepare_cached(sql)
                .and_then(|mut stmt| {
                    stmt.execute(rusqlite::named_params! {":from": from, ":to": to})
                })
                .map_err(failed)?;
        }
    }
    tx.commit().map_err(failed)?;
    Ok(to.max(from))
}

impl SqliteStore {
    /// Opens (creating if needed) `codraft.db` and `journal.db` in `dir`, applies pending
    /// migrations and folds what the journal holds.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let (tables_path, journal_path) = (dir.join("codraft.db"), dir.join("journal.db"));
        let mut tables = open_file(&tables_path)?;
        migrate(&mut tables)?;
        let mut journal = open_file(&journal_path)?;
        journal.execute_batch(JOURNAL).map_err(unavailable)?;
        attach_read_only(&journal, &tables_path, "m")?;
        attach_read_only(&tables, &journal_path, "jdb")?;
        // What a crash left in the journal is committed: it goes into the tables now.
        let folded = fold_journal(&mut tables, &Touches::new())?;
        let (appended, deleted) = journal_bounds(&mut journal, folded)?;
        let reader = open_file(&tables_path)?;
        let tables = Arc::new(Mutex::new(tables));
        let journal = Arc::new(Mutex::new(Journal {
            conn: journal,
            appended,
            folded,
            deleted,
            revisions: HashMap::new(),
        }));
        let touched = Arc::default();
        let fold_asked = Arc::default();
        let background = start_background_writer(Background {
            tables: Arc::clone(&tables),
            journal: Arc::clone(&journal),
            touched: Arc::clone(&touched),
            fold_asked: Arc::clone(&fold_asked),
        })?;
        Ok(Self {
            tables,
            journal,
            counters: Arc::default(),
            fold_rows: JOURNAL_FOLD_ROWS,
            backlog_rows: JOURNAL_BACKLOG_ROWS,
            background,
            committer: JournalThread::start()?,
            fold_asked,
            reader: Arc::new(Mutex::new(reader)),
            touched,
        })
    }

    /// The same store folding its journal at `rows` rows instead of JOURNAL_FOLD_ROWS (the
    /// tests fold often, to meet every mix of folded and unfolded commits).
    pub fn with_fold_rows(mut self, rows: usize) -> Self {
        self.fold_rows = rows.max(1);
        self
    }

    /// The same store folding on the journal's thread at `rows` rows waiting instead of
    /// JOURNAL_BACKLOG_ROWS (for tests).
    pub fn with_backlog_rows(mut self, rows: usize) -> Self {
        self.backlog_rows = rows.max(1);
        self
    }

    /// Runs `f` with the tables' connection on the blocking pool, once they hold what the
    /// journal holds for `document`, or for every document if `None`: a call about one
    /// document folds the journal only if that document has rows waiting (a cold document
    /// loads without waiting for the other documents' fold).
    async fn with_conn<T, F>(&self, document: Option<&str>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &StoreCounters) -> Result<T, StoreError> + Send + 'static,
    {
        let (tables, journal) = (Arc::clone(&self.tables), Arc::clone(&self.journal));
        let (touched, counters) = (Arc::clone(&self.touched), Arc::clone(&self.counters));
        let document = document.map(Arc::<str>::from);
        blocking(move || {
            let mut tables = lock(&tables)?;
            let waiting = match &document {
                Some(document) => lock(&journal)?.revisions.contains_key(document),
                // A call about every document (expiry among them) sees every access time.
                None => lock(&journal)?.waiting() > 0 || !lock(&touched)?.is_empty(),
            };
            if waiting {
                fold(&mut tables, &journal, &touched)?;
            }
            f(&mut tables, &counters)
        })
        .await
    }

    /// Runs `f`, which only reads, about `document` (handed to `f`): on the reader
    /// connection if the document has no rows waiting (beside any fold), else after a fold,
    /// as `with_conn`.
    async fn with_reader<T, F>(&self, document: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &StoreCounters, &Arc<str>) -> Result<T, StoreError>
            + Send
            + 'static,
    {
        let (tables, journal) = (Arc::clone(&self.tables), Arc::clone(&self.journal));
        let (reader, touched) = (Arc::clone(&self.reader), Arc::clone(&self.touched));
        let counters = Arc::clone(&self.counters);
        let document = Arc::<str>::from(document);
        blocking(move || {
            // Its rows are all folded, by folds that committed before this check: the
            // reader's next transaction sees them. Rows committed after it are not owed.
            if !lock(&journal)?.revisions.contains_key(&document) {
                return f(&mut *lock(&reader)?, &counters, &document);
            }
            let mut tables = lock(&tables)?;
            fold(&mut tables, &journal, &touched)?;
            f(&mut tables, &counters, &document)
        })
        .await
    }

    /// Asks the background writer for a fold unless one is already asked for.
    fn fold_in_background(&self) {
        if !self.fold_asked.swap(true, Ordering::AcqRel) {
            self.send_background(Job::Fold);
        }
    }

    /// Has the background writer write `snapshot` (with others waiting, in one transaction),
    /// and waits for it. A snapshot does not wait for a fold: it is its own row, and every
    /// read of the document's history folds what waits first.
    async fn write_in_background(&self, snapshot: SnapshotRow) -> Result<(), StoreError> {
        let (reply, written) = tokio::sync::oneshot::channel();
        self.send_background(Job::Snapshot(snapshot, reply));
        written
            .await
            .map_err(|_| StoreError::Unavailable("the tables' background writer is gone".into()))?
    }

    fn send_background(&self, job: Job) {
        if self.background.send(job).is_err() {
            // Only a panic ends the writer while the store lives; reads still fold.
            tracing::error!("the tables' background writer is gone");
        }
    }
}

/// Work for the tables' background writer.
enum Job {
    /// Fold the journal.
    Fold,
    /// Write a snapshot and say how that went.
    Snapshot(
        SnapshotRow,
        tokio::sync::oneshot::Sender<Result<(), StoreError>>,
    ),
}

/// A snapshot of either kind of document, which is also a checkpoint of its history.
enum SnapshotRow {
    Text(Snapshot),
    Yjs {
        document: String,
        revision: u64,
        state: Vec<u8>,
    },
}

/// A snapshot's two statements for one kind of document: the latest snapshot (kept only if
/// newer) and the history's checkpoint, written from one template so the kinds cannot drift.
macro_rules! snapshot_statements {
    ($snapshots:literal, $checkpoints:literal, $content:literal) => {
        [
            concat!(
                "INSERT INTO ",
                $snapshots,
                " (document, revision, ",
                $content,
                ") VALUES (?1, ?2, ?3) ON CONFLICT (document) DO UPDATE SET revision = \
                 excluded.revision, ",
                $content,
                " = excluded.",
                $content,
                " WHERE excluded.revision > ",
                $snapshots,
                ".revision"
            ),
            concat!(
                "INSERT INTO ",
                $checkpoints,
                " (document, revision, ",
                $content,
                ") VALUES (?1, ?2, ?3) ON CONFLICT (document, revision) DO NOTHING"
            ),
        ]
    };
}

const TEXT_SNAPSHOT: [&str; 2] = snapshot_statements!("snapshots", "checkpoints", "text");
const YJS_SNAPSHOT: [&str; 2] = snapshot_statements!("yjs_snapshots", "yjs_checkpoints", "state");

impl SnapshotRow {
    fn write(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        let (statements, document, revision, value) = match self {
            Self::Text(s) => (
                TEXT_SNAPSHOT,
                &*s.document,
                s.revision,
                &s.text as &dyn rusqlite::ToSql,
            ),
            Self::Yjs {
                document,
                revision,
                state,
            } => (
                YJS_SNAPSHOT,
                document.as_str(),
                *revision,
                state as &dyn rusqlite::ToSql,
            ),
        };
        // Every snapshot is a checkpoint of the history as well; what it makes older stays
        // until compaction finds it past the retention.
        let revision = to_sql(revision);
        for sql in statements {
            tx.prepare_cached(sql)?
                .execute(params![document, revision, value])?;
        }
        Ok(())
    }
}

/// What the tables' background writer works with.
struct Background {
    tables: Arc<Mutex<Connection>>,
    journal: Arc<Mutex<Journal>>,
    touched: Arc<Mutex<Touches>>,
    fold_asked: Arc<AtomicBool>,
}

impl Background {
    /// Does everything asked so far: the snapshots in one transaction (one sync for all that
    /// came together: documents typed at the same pace reach their snapshot revision
    /// together), then a fold if one was asked for.
    fn run(&self, jobs: impl Iterator<Item = Job>) {
        let mut snapshots = Vec::new();
        let mut fold_asked = false;
        for job in jobs {
            match job {
                Job::Fold => fold_asked = true,
                Job::Snapshot(row, reply) => snapshots.push((row, reply)),
            }
        }
        if !snapshots.is_empty() {
            let written = lock(&self.tables).and_then(|mut tables| {
                let tx = tables
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(unavailable)?;
                for (row, _) in &snapshots {
                    row.write(&tx).map_err(unavailable)?;
                }
                tx.commit().map_err(unavailable)
            });
            for (_, reply) in snapshots {
                // A caller that stopped waiting (its timeout) needs no answer.
                let _ = reply.send(written.clone());
            }
        }
        if fold_asked {
            // Cleared first: a commit from now on asks again, for the rows this fold misses.
            self.fold_asked.store(false, Ordering::Release);
            let folded = lock(&self.tables)
                .and_then(|mut tables| fold(&mut tables, &self.journal, &self.touched));
            if let Err(e) = folded {
                tracing::warn!(error = %e, "journal fold failed; the next read retries it");
            }
        }
    }
}

/// Starts the tables' background writer, `codraft-tables`, at BACKGROUND_NICE, and returns
/// what gives it work; it ends when that is dropped. Its priority is set before this returns.
fn start_background_writer(background: Background) -> Result<mpsc::Sender<Job>, StoreError> {
    let (give, jobs) = mpsc::channel::<Job>();
    let (started, running) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("codraft-tables".into())
        .spawn(move || {
            // Short slices as well: a fold that runs when the runtime wakes gives way at
            // once, not at the end of a default slice (the nice value sets its share).
            sched::short_slices();
            if let Err(error) = sched::lower_priority(BACKGROUND_NICE) {
                tracing::warn!(
                    %error,
                    "cannot lower the tables' writer's priority; folds compete with commits"
                );
            }
            // `open` waits for this, and cannot have gone: it holds `running` until then.
            let _ = started.send(());
            while let Ok(first) = jobs.recv() {
                background.run(std::iter::once(first).chain(jobs.try_iter()));
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the tables' writer: {e}")))?;
    running
        .recv()
        .map_err(|_| StoreError::Unavailable("the tables' writer ended as it started".into()))?;
    Ok(give)
}

/// The journal's committer, `codraft-journal`: a thread of its own that runs every commit,
/// one at a time (the journal has one connection), with short time slices
/// ([`sched::short_slices`]). On tokio's blocking pool a commit often waited a millisecond or more
/// for a thread to be started or scheduled behind the busy runtime on a small server, which
/// every edit of its batch then waited too (BENCHMARKS.md, "Short time slices for the
/// threads an edit waits on").
struct JournalThread {
    jobs: mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl JournalThread {
    /// Starts the thread; it ends when this is dropped and its last job is done.
    fn start() -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("codraft-journal".into())
            .spawn(move || {
                sched::short_slices();
                while let Ok(job) = queue.recv() {
                    // A job that panics loses its answer, not the thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the journal's thread: {e}"))
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the thread, after the jobs before it, and returns what it returned.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    {
        let gone = || StoreError::Unavailable("the journal's thread gave no answer".into());
        let (reply, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                // A caller that stopped waiting needs no answer.
                let _ = reply.send(f());
            }))
            .map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}

/// Folds the journal and the access times waiting, and tells the journal how far.
fn fold(
    tables: &mut Connection,
    journal: &Mutex<Journal>,
    touched: &Mutex<Touches>,
) -> Result<(), StoreError> {
    let touches = std::mem::take(&mut *lock(touched)?);
    if lock(journal)?.waiting() == 0 && touches.is_empty() {
        return Ok(());
    }
    match fold_journal(tables, &touches) {
        Ok(to) => {
            lock(journal)?.folded_to(to);
            Ok(())
        }
        Err(e) => {
            // Kept for the next fold, unless a newer access replaced one meanwhile.
            let mut waiting = lock(touched)?;
            for (document, at) in touches {
                waiting.entry(document).or_insert(at);
            }
            Err(e)
        }
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

/// A connection to one of the store's files: WAL, every commit synced.
fn open_file(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(unavailable)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(unavailable)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(unavailable)?;
    // Statement journals and sorts (a fold's ORDER BY and GROUP BY) in memory, not in temp
    // files: they never need to outlive the statement.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(unavailable)?;
    Ok(conn)
}

/// Attaches the other file read-only: each file keeps one writer, and a transaction that
/// writes one of them takes no lock on the other.
fn attach_read_only(conn: &Connection, path: &Path, name: &str) -> Result<(), StoreError> {
    // A URI filename (the connection opens with SQLITE_OPEN_URI): the characters a URI
    // gives meaning to are escaped.
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3f"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=ro");
    conn.execute(&format!("ATTACH DATABASE ?1 AS {name}"), params![uri])
        .map_err(unavailable)?;
    Ok(())
}

/// The numbers of the journal's last row and last deleted row, once rows up to `folded` are
/// in the tables. If the journal's numbering is behind `folded` (the file was lost or
/// replaced), it moves on past it, so no new row is taken for one already folded. A journal
/// an older build numbered by `AUTOINCREMENT` is replaced by an empty one of today's shape:
/// every row in it is folded by now, and its highest number is carried over.
fn journal_bounds(journal: &mut Connection, folded: i64) -> Result<(i64, i64), StoreError> {
    let tx = journal.transaction().map_err(unavailable)?;
    let one = |sql: &str| tx.query_row(sql, [], |r| r.get::<_, i64>(0));
    let mut numbered = one("SELECT COALESCE(MAX(seq), 0) FROM journal").map_err(unavailable)?;
    let autoincrement = one(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'journal' AND sql LIKE '%AUTOINCREMENT%'",
    )
    .map_err(unavailable)?
        > 0;
    if autoincrement {
        numbered = numbered.max(
            one("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'journal'")
                .map_err(unavailable)?,
        );
        tx.execute_batch(&format!("DROP TABLE journal; {JOURNAL}"))
            .map_err(unavailable)?;
    }
    let oldest: Option<i64> = tx
        .query_row("SELECT MIN(seq) FROM journal", [], |r| r.get(0))
        .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok((numbered.max(folded), oldest.map_or(folded, |seq| seq - 1)))
}

fn lock<T>(mutex: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, StoreError> {
    mutex
        .lock()
        .map_err(|_| StoreError::Unavailable("store connection poisoned".into()))
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
        self.with_reader(document, move |conn, _, document| {
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
    // Only reads, in one snapshot; the access time is the caller's to record.
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

/// Appends a batch to the journal in one transaction, all of it or none: refused with a
/// conflict if a commit's base revision is not its document's revision. The transaction also
/// deletes some rows already folded. Returns the number of rows waiting to be folded.
fn append_batch(
    journal: &mut Journal,
    counters: &StoreCounters,
    batch: &[DocumentCommit],
) -> Result<usize, StoreError> {
    let now = now_secs();
    // Deferred: the first write takes the journal's lock; `m` (the tables) is only read, at
    // the snapshot of the first read.
    let tx = journal.conn.transaction().map_err(unavailable)?;
    let deleted = (journal.deleted + JOURNAL_CLEANUP_ROWS).min(journal.folded);
    if deleted > journal.deleted {
        tx.prepare_cached("DELETE FROM journal WHERE seq > ?1 AND seq <= ?2")
            .and_then(|mut stmt| stmt.execute(params![journal.deleted, deleted]))
            .map_err(unavailable)?;
    }
    // The revisions this batch gives its documents, and the number of each one's last row.
    let mut revisions: HashMap<Arc<str>, (u64, i64)> = HashMap::with_capacity(batch.len());
    let (mut last, mut ops) = (journal.appended, 0);
    {
        // Cached statements: re-preparing these on every commit cost more than running them.
        let mut stored = tx
            .prepare_cached("SELECT revision FROM m.documents WHERE id = ?1")
            .map_err(unavailable)?;
        let mut append = tx
            .prepare_cached(
                "INSERT INTO journal (seq, document, revision, operation, author, client_id, \
                 client_seq, update_v1, language, committed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(unavailable)?;
        for commit in batch {
            let document: &str = &commit.document;
            let revision = match revisions
                .get(document)
                .or_else(|| journal.revisions.get(document))
            {
                Some(&(revision, _)) => revision,
                None => stored
                    .query_row(params![document], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(unavailable)?
                    .map_or(Ok(0), from_sql)?,
            };
            if revision != commit.base_revision {
                return Err(StoreError::Conflict {
                    document: document.to_owned(),
                    expected: commit.base_revision,
                });
            }
            for op in &commit.ops {
                last += 1;
                append
                    .execute(params![
                        last,
                        document,
                        to_sql(op.revision),
                        op.operation.to_json(),
                        to_sql(op.author),
                        op.client_id,
                        op.seq.map(to_sql),
                        Null,
                        Null,
                        now
                    ])
                    .map_err(unavailable)?;
            }
            let first = commit.base_revision + commit.ops.len() as u64;
            for (update, revision) in commit.updates.iter().zip(first..) {
                last += 1;
                append
                    .execute(params![
                        last,
                        document,
                        to_sql(revision),
                        Null,
                        Null,
                        Null,
                        Null,
                        &update[..],
                        Null,
                        now
                    ])
                    .map_err(unavailable)?;
            }
            let logged = commit.ops.len() + commit.updates.len();
            let marker = commit.language.is_some() || logged == 0;
            if marker {
                last += 1;
                append
                    .execute(params![
                        last,
                        document,
                        to_sql(commit.new_revision()),
                        Null,
                        Null,
                        Null,
                        Null,
                        Null,
                        commit.language,
                        now
                    ])
                    .map_err(unavailable)?;
            }
            ops += logged as u64;
            revisions.insert(Arc::clone(&commit.document), (commit.new_revision(), last));
        }
    }
    tx.commit().map_err(unavailable)?;
    journal.appended = last;
    journal.deleted = deleted;
    journal.revisions.extend(revisions);
    StoreCounters::add(&counters.commits, 1);
    StoreCounters::add(&counters.ops_committed, ops);
    Ok(journal.waiting())
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self, document: &str) -> Result<StoredDocument, StoreError> {
        let touched = Arc::clone(&self.touched);
        self.with_reader(document, move |conn, counters, id| {
            let loaded = load_document(conn, counters, id)?;
            // Written by the next fold (or call about every document).
            lock(&touched)?.insert(Arc::clone(id), now_secs());
            Ok(loaded)
        })
        .await
    }

    async fn commit(&self, batch: Arc<[DocumentCommit]>) -> Result<(), StoreError> {
        let (journal, counters) = (Arc::clone(&self.journal), Arc::clone(&self.counters));
        let (tables, touched) = (Arc::clone(&self.tables), Arc::clone(&self.touched));
        let backlog_rows = self.backlog_rows;
        let waiting = self
            .committer
            .run(move || {
                let waiting = append_batch(&mut *lock(&journal)?, &counters, &batch)?;
                if waiting < backlog_rows {
                    return Ok(waiting);
                }
                // The batch is committed whatever the fold does: a fold that fails is left to
                // the background writer and the reads, which retry it.
                let folded = lock(&tables).and_then(|mut t| fold(&mut t, &journal, &touched));
                if let Err(e) = folded {
                    tracing::warn!(error = %e, waiting, "folding a journal backlog failed");
                }
                Ok(lock(&journal).map_or(0, |j| j.waiting()))
            })
            .await?;
        if waiting >= self.fold_rows {
            self.fold_in_background();
        }
        Ok(())
    }

    async fn write_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.write_in_background(SnapshotRow::Text(snapshot)).await
    }

    async fn write_yjs_snapshot(
        &self,
        document: &str,
        revision: u64,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.write_in_background(SnapshotRow::Yjs {
            document: document.to_owned(),
            revision,
            state,
        })
        .await
    }

    async fn read_yjs_updates(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.with_reader(document, move |conn, _, document| {
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
        self.with_reader(document, move |conn, counters, document| {
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
        let client_id = client_id.to_owned();
        self.with_reader(document, move |conn, _, document| {
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
        self.with_conn(None, |conn, _| {
            let n: i64 = conn
                .query_row("SELECT COUNT(*) FROM documents", [], |r| r.get(0))
                .map_err(unavailable)?;
            from_sql(n)
        })
        .await
    }

    async fn document_otp(&self, document: &str) -> Result<Option<String>, StoreError> {
        self.with_reader(document, move |conn, _, document| {
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
        let scope = Some(document);
        let document = document.to_owned();
        self.with_conn(scope, move |conn, _| {
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
        self.with_conn(None, move |conn, _| {
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
        self.with_reader(document, move |conn, _, document| {
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
        self.with_reader(document, move |conn, counters, document| {
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
        self.with_reader(document, move |conn, counters, document| {
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
        self.with_reader(document, move |conn, _, document| {
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
        let scope = Some(document);
        let document = document.to_owned();
        self.with_conn(scope, move |conn, _| {
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
        self.with_reader(document, move |conn, _, document| {
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
        self.with_conn(None, move |conn, _| {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// With the background fold never asked for (as when a busy core starves it), the
    /// journal still never holds more than the backlog: the commit that reaches it folds.
    #[tokio::test]
    async fn a_commit_folds_a_backlog_itself() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path())
            .expect("open")
            .with_fold_rows(usize::MAX)
            .with_backlog_rows(10);
        let mut most = 0;
        for revision in 0..45 {
            let mut operation = Operation::new();
            operation.retain(revision).insert("x");
            let commit = DocumentCommit {
                document: Arc::from("doc"),
                base_revision: revision,
                epoch: 0,
                ops: vec![LoggedOp {
                    revision,
                    operation,
                    author: 1,
                    client_id: None,
                    seq: None,
                }],
                language: None,
                updates: Vec::new(),
            };
            store.commit(Arc::new([commit])).await.expect("commit");
            let waiting = lock(&store.journal).expect("journal").waiting();
            most = most.max(waiting);
        }
        assert_eq!(most, 9, "the most rows the journal held after a commit");
        let loaded = store.load("doc").await.expect("load");
        assert_eq!(loaded.revision, 45);
        assert_eq!(loaded.text, "x".repeat(45));
    }

    /// Jobs run in the order given, each answered with its own result, and one that panics
    /// loses only its own answer: the commits after it still run.
    #[tokio::test]
    async fn the_journal_thread_answers_in_order_and_outlives_a_panic() {
        let thread = JournalThread::start().expect("thread");
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = {
            let order = Arc::clone(&order);
            thread.run(move || {
                lock(&order)?.push(1);
                Ok(std::thread::current().name().map(str::to_owned))
            })
        };
        let panicking = thread.run::<(), _>(|| panic!("a commit that panics"));
        let last = {
            let order = Arc::clone(&order);
            thread.run(move || {
                lock(&order)?.push(3);
                Ok(3)
            })
        };
        let (first, panicked, last) = tokio::join!(first, panicking, last);
        assert_eq!(first.expect("first").as_deref(), Some("codraft-journal"));
        assert!(
            matches!(panicked, Err(StoreError::Unavailable(_))),
            "{panicked:?}"
        );
        assert_eq!(last.expect("last"), 3);
        assert_eq!(*lock(&order).expect("order"), vec![1, 3]);
    }
}
