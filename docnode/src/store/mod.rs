//! Where documents live durably: one interface, several implementations.
//!
//! The document actor and the group committer talk only to [`Store`]; whether that is the
//! embedded file store of standalone mode ([`sqlite::SqliteStore`]) or Postgres in a cluster
//! ([`postgres::PgStore`]) is decided once, at start-up; either is wrapped in a
//! [`metered::MeteredStore`] that traces every call and counts failures.
//!
//! The model: an op log with one row per (document, revision), a snapshot per document (text
//! at some revision), and per (document, client id) the highest committed edit sequence
//! number, kept even after the log rows are compacted so exactly-once resubmission still
//! recognises an old edit.
//!
//! History: every snapshot is also kept as a *checkpoint* (one per SNAPSHOT_EVERY revisions
//! and one at the end of each editing session, when the document unloads), so the text at
//! any revision is the nearest checkpoint at or before it plus at most SNAPSHOT_EVERY ops.
//! Compaction deletes op-log rows only below a checkpoint whose preceding ops are all older
//! than HISTORY_RETENTION_DAYS: revisions from that checkpoint on stay exact, older ones only
//! at the checkpoints (see [`HistoryExtent`]).
//!
//! Yjs documents (ids `y:<room>`, see `crate::yjs`) use the same documents row (revision,
//! password, lease, access time) and the same group commit, but their log holds the binary
//! updates clients sent (`yjs_updates`), and their snapshot is a compacted state
//! (`encode_state_as_update`, `yjs_snapshots`): a Yjs document's revision counts the updates
//! committed so far. Their history works the same way as an OT document's: every snapshot is
//! also kept as a checkpoint (`yjs_checkpoints`) and compaction deletes updates by the same
//! rule ([`HistoryTables`] names each kind's two tables).

#[cfg(test)]
pub mod memory;
pub mod metered;
pub mod pg_tls;
pub mod postgres;
pub mod sqlite;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use async_trait::async_trait;
use codraft_ot::Operation;

/// A document as loaded: its text at its newest committed revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    /// Text at `revision`.
    pub text: String,
    /// Number of ops committed so far.
    pub revision: u64,
    /// Language for syntax highlighting, if one was set.
    pub language: Option<String>,
    /// The document's one-time password, if it is protected.
    pub otp: Option<String>,
    /// The ownership epoch this docnode took when loading: its commits carry it, and a store
    /// that fences writers refuses them once another docnode has taken a newer epoch.
    pub epoch: u64,
    /// A Yjs document's content (empty for OT documents): its compacted state, if one was
    /// written, then every update committed after it, in order. Applied in order they make
    /// the document at `revision`.
    pub yjs: Vec<Vec<u8>>,
}

/// One committed op of a document's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedOp {
    /// The op takes the document from this revision to the next.
    pub revision: u64,
    /// The transformed op, as applied.
    pub operation: Operation,
    /// User id of the connection that sent it.
    pub author: u64,
    /// Exactly-once client id of the author, if it sent one.
    pub client_id: Option<String>,
    /// The author's sequence number of this edit, if it sent one.
    pub seq: Option<u64>,
}

/// What one document adds in one group commit.
#[derive(Debug, Clone)]
pub struct DocumentCommit {
    /// The document.
    pub document: Arc<str>,
    /// Revision the document had before these ops; the store refuses the commit if its own
    /// revision differs (another writer got there first).
    pub base_revision: u64,
    /// The ownership epoch the writer holds; the store refuses the commit if a newer one was
    /// taken since.
    pub epoch: u64,
    /// Ops in revision order, starting at `base_revision`.
    pub ops: Vec<LoggedOp>,
    /// A new language, if it changed.
    pub language: Option<String>,
    /// A Yjs document's updates (v1 encoding), in order, after its `ops` (which a Yjs
    /// document never has); each takes one revision.
    pub updates: Vec<bytes::Bytes>,
}

impl DocumentCommit {
    /// The revision the document has once this commit is in.
    pub fn new_revision(&self) -> u64 {
        self.base_revision + self.ops.len() as u64 + self.updates.len() as u64
    }
}

/// The text of a document at a revision, written now and then to keep loads short.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The document.
    pub document: Arc<str>,
    /// Revision of `text`.
    pub revision: u64,
    /// The whole text.
    pub text: String,
}

/// What a document's stored history holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryExtent {
    /// The newest committed revision.
    pub revision: u64,
    /// Every revision from this one to `revision` can be rebuilt exactly; below it, the ops
    /// were compacted away and only the checkpoints remain.
    pub exact_from: u64,
    /// Revisions of the kept checkpoints, ascending.
    pub checkpoints: Vec<u64>,
}

/// A logged op with the time it was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastOp {
    /// The op.
    pub op: LoggedOp,
    /// When its transaction committed, in Unix milliseconds (the embedded store keeps whole
    /// seconds).
    pub committed_at_ms: i64,
}

/// A committed Yjs update with the time it was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastUpdate {
    /// The update takes the document from this revision to the next.
    pub revision: u64,
    /// The update as the client sent it (v1 encoding).
    pub update: Vec<u8>,
    /// When its transaction committed, in Unix milliseconds (whole seconds in the embedded
    /// store).
    pub committed_at_ms: i64,
}

/// An author's name and colour as the document last saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorInfo {
    /// The user id ops carry as their author.
    pub author: u64,
    /// The name the author gave.
    pub name: String,
    /// The colour's hue, 0-359.
    pub hue: u32,
}

/// The two tables a document's history lives in: its log (one row per revision, with
/// `committed_at`) and its checkpoints. OT and Yjs documents keep the same shape in
/// different tables, so compaction and the history reads are written once for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HistoryTables {
    /// One row per committed revision.
    pub log: &'static str,
    /// The kept checkpoints.
    pub checkpoints: &'static str,
    /// The checkpoints' content column (an OT document's text, a Yjs document's state).
    pub content: &'static str,
}

/// The OT documents' tables, then the Yjs documents'.
pub(crate) const HISTORY_TABLES: [HistoryTables; 2] = [
    HistoryTables {
        log: "oplog",
        checkpoints: "checkpoints",
        content: "text",
    },
    HistoryTables {
        log: "yjs_updates",
        checkpoints: "yjs_checkpoints",
        content: "state",
    },
];

impl HistoryTables {
    /// The tables of `document`'s kind.
    pub(crate) fn of(document: &str) -> Self {
        HISTORY_TABLES[usize::from(codraft_common::ids::is_yjs(document))]
    }
}

/// An OT checkpoint read as bytes, as text.
pub(crate) fn text_checkpoint(
    found: Option<(u64, Vec<u8>)>,
) -> Result<Option<(u64, String)>, StoreError> {
    found
        .map(|(revision, text)| {
            let text = String::from_utf8(text)
                .map_err(|e| StoreError::Corrupt(format!("checkpoint is not UTF-8: {e}")))?;
            Ok((revision, text))
        })
        .transpose()
}

/// The error stores without history answer with.
fn no_history() -> StoreError {
    StoreError::Unavailable("this store keeps no history".into())
}

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed; retrying later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Another writer committed to this document first; this copy of it is stale.
    #[error("document {document} was changed by another writer (expected revision {expected})")]
    Conflict {
        /// The document.
        document: String,
        /// The revision this writer expected.
        expected: u64,
    },
    /// Stored data could not be read back (a bug or a hand-edited database).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Counters a store keeps about itself, for tests and metrics.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Op-log rows read while loading documents.
    pub log_rows_read: AtomicU64,
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Ops committed.
    pub ops_committed: AtomicU64,
}

impl StoreCounters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// How full a store's connection pool is, for the `codraft_db_pool_*` gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Most connections the pool opens (DATABASE_POOL_SIZE).
    pub max: usize,
    /// Connections open now, in use or idle.
    pub open: usize,
    /// Open connections idle in the pool.
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// Durable storage of documents.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Takes ownership of a document (a new epoch, fencing any earlier owner) and loads it at
    /// its newest revision: latest snapshot plus the log after it. A document never written
    /// loads as empty at revision 0.
    async fn load(&self, document: &str) -> Result<StoredDocument, StoreError>;

    /// Commits the ops of many documents in one transaction: all of them or none.
    async fn commit(&self, batch: Arc<[DocumentCommit]>) -> Result<(), StoreError>;

    /// Stores a snapshot unless a newer one is already there.
    async fn write_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;

    /// Stores a Yjs document's compacted state at `revision` (unless a newer one is there)
    /// and deletes the updates it holds (those below `revision`).
    async fn write_yjs_snapshot(
        &self,
        document: &str,
        revision: u64,
        state: Vec<u8>,
    ) -> Result<(), StoreError>;

    /// A Yjs document's committed updates with `from <= revision < to`, in order (those below
    /// its snapshot are gone).
    async fn read_yjs_updates(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Committed ops of a document with `from <= revision < to`, in order.
    async fn read_log(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<LoggedOp>, StoreError>;

    /// The highest committed sequence number of a client in a document (0 if none).
    async fn last_seq(&self, document: &str, client_id: &str) -> Result<u64, StoreError>;

    /// How many documents are stored.
    async fn document_count(&self) -> Result<u64, StoreError>;

    /// Deletes the op-log rows of each document below its newest checkpoint whose preceding
    /// ops are all older than `retention` (HISTORY_RETENTION_DAYS), so every revision from
    /// that checkpoint on stays exact; checkpoints and per-client sequence marks stay.
    /// Returns the rows deleted.
    async fn compact(&self, retention: std::time::Duration) -> Result<u64, StoreError>;

    /// Deletes documents not accessed for `unused_for`, with all their rows. Returns how many.
    async fn delete_expired(&self, unused_for: std::time::Duration) -> Result<u64, StoreError>;

    /// The one-time password of a document, read without loading or leasing it (the check a
    /// cold document gets before an unauthorised client could make it load).
    async fn document_otp(&self, document: &str) -> Result<Option<String>, StoreError>;

    /// Sets (or with `None` clears) a document's one-time password, as the owner holding
    /// `epoch`; refused with a conflict if a newer owner took the document.
    async fn set_otp(
        &self,
        document: &str,
        epoch: u64,
        otp: Option<String>,
    ) -> Result<(), StoreError>;

    /// The current lease holder of a document, as `NODE_ID=URL`, if the store fences writers
    /// with leases (the embedded store has one writer and answers `None`).
    async fn lease_owner(&self, _document: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// Where a document's history starts and ends, or `None` if it was never written.
    async fn history_extent(&self, _document: &str) -> Result<Option<HistoryExtent>, StoreError> {
        Err(no_history())
    }

    /// The newest checkpoint at or before `revision`: its revision and text.
    async fn checkpoint_at_or_before(
        &self,
        _document: &str,
        _revision: u64,
    ) -> Result<Option<(u64, String)>, StoreError> {
        Err(no_history())
    }

    /// The newest checkpoint of a Yjs document at or before `revision`: its revision and
    /// compacted state (`encode_state_as_update`).
    async fn yjs_checkpoint_at_or_before(
        &self,
        _document: &str,
        _revision: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Err(no_history())
    }

    /// A Yjs document's committed updates with `from <= revision < to` and their commit
    /// times, in order.
    async fn read_yjs_past(
        &self,
        _document: &str,
        _from: u64,
        _to: u64,
    ) -> Result<Vec<PastUpdate>, StoreError> {
        Err(no_history())
    }

    /// Committed ops with `from <= revision < to` and their commit times, in order.
    async fn read_past(
        &self,
        _document: &str,
        _from: u64,
        _to: u64,
    ) -> Result<Vec<PastOp>, StoreError> {
        Err(no_history())
    }

    /// The revision of the newest op committed at or before `at_ms` (Unix milliseconds), if
    /// the log still holds one.
    async fn last_revision_at(
        &self,
        _document: &str,
        _at_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        Err(no_history())
    }

    /// Remembers an author's name and colour for the history (the newest wins).
    async fn record_author(&self, _document: &str, _info: AuthorInfo) -> Result<(), StoreError> {
        Ok(())
    }

    /// The names and colours of a document's authors.
    async fn authors(&self, _document: &str) -> Result<Vec<AuthorInfo>, StoreError> {
        Ok(Vec::new())
    }

    /// The store's own counters.
    fn counters(&self) -> &StoreCounters;

    /// How many group-commit transactions this store runs at once to good effect: the
    /// committer's parallelism unless COMMIT_PARALLELISM says otherwise. A pooled server
    /// overlaps one batch's statements with another's fsync; a store with one connection
    /// commits one batch at a time, and a second flush would only take requests out of the
    /// queue that the next batch would have carried (smaller batches, more fsyncs).
    fn concurrent_commits(&self) -> usize {
        2
    }

    /// The connection pool's state, for stores that pool connections (Postgres).
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }

    /// The OpenTelemetry `db.system.name` of this store (`postgresql`, `sqlite`).
    fn db_system(&self) -> &'static str {
        "other_sql"
    }

    /// Where the store is, as the OpenTelemetry `server.address` (a host name; empty for an
    /// embedded store).
    fn server_address(&self) -> String {
        String::new()
    }
}
