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

    /// Deletes op-log rows older than `retention` that lie below their document's newest
    /// snapshot (the per-client sequence marks stay). Returns the rows deleted.
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

    /// The store's own counters.
    fn counters(&self) -> &StoreCounters;
}
