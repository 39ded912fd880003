//! A [`Store`] that wraps another and observes it: every call gets a span (so a trace shows
//! its Postgres or SQLite time) and every failure is counted in
//! `codraft_store_errors_total{operation, kind}`.
//!
//! The spans carry the OpenTelemetry database conventions (`db.system.name`,
//! `db.operation.name`, `server.address`), so a trace backend groups them as database calls,
//! and a failed call sets the span's status to error with the reason.
//!
//! Counting here, at the one boundary every caller crosses, means no call site can forget,
//! and the stores themselves stay free of metrics.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tracing::{field::Empty, Instrument, Span};

use super::{
    AuthorInfo, DocumentCommit, HistoryExtent, LoggedOp, PastOp, PastUpdate, PoolStatus, Snapshot,
    Store, StoreCounters, StoreError, StoredDocument,
};
use crate::metrics::DocnodeMetrics;

/// A span for one store call, with the database conventions and room for an error status.
macro_rules! store_span {
    ($store:expr, $name:literal, $operation:literal $(, $($field:tt)*)?) => {
        tracing::info_span!(
            $name,
            $($($field)*,)?
            otel.kind = "client",
            db.system.name = $store.system,
            db.operation.name = $operation,
            server.address = $store.address.as_deref(),
            otel.status_code = Empty,
            otel.status_description = Empty
        )
    };
}

/// A store whose calls are traced and whose failures are counted.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<DocnodeMetrics>,
    /// `db.system.name` of the inner store.
    system: &'static str,
    /// `server.address` of the inner store, if it has one.
    address: Option<String>,
}

impl MeteredStore {
    /// Observes `inner`, counting into `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<DocnodeMetrics>) -> Self {
        let system = inner.db_system();
        let address = Some(inner.server_address()).filter(|a| !a.is_empty());
        Self {
            inner,
            metrics,
            system,
            address,
        }
    }

    /// Counts a failed call and marks its span as failed.
    fn observe<T>(
        &self,
        span: &Span,
        operation: &str,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Err(error) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", error.to_string());
            let kind = match error {
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Conflict { .. } => "conflict",
                StoreError::Corrupt(_) => "corrupt",
            };
            self.metrics
                .store_errors
                .with_label_values(&[operation, kind])
                .inc();
        }
        result
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn load(&self, document: &str) -> Result<StoredDocument, StoreError> {
        let span = store_span!(self, "store.load", "load", document);
        let result = self.inner.load(document).instrument(span.clone()).await;
        self.observe(&span, "load", result)
    }

    async fn commit(&self, batch: Arc<[DocumentCommit]>) -> Result<(), StoreError> {
        let span = store_span!(self, "store.commit", "commit", documents = batch.len());
        let result = self.inner.commit(batch).instrument(span.clone()).await;
        self.observe(&span, "commit", result)
    }

    async fn write_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let span = store_span!(
            self,
            "store.write_snapshot",
            "write_snapshot",
            document = &*snapshot.document,
            revision = snapshot.revision
        );
        let result = self
            .inner
            .write_snapshot(snapshot)
            .instrument(span.clone())
            .await;
        self.observe(&span, "write_snapshot", result)
    }

    async fn read_yjs_updates(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let span = store_span!(self, "store.read_yjs_updates", "read_yjs_updates", document);
        let result = self
            .inner
            .read_yjs_updates(document, from, to)
            .instrument(span.clone())
            .await;
        self.observe(&span, "read_yjs_updates", result)
    }

    async fn write_yjs_snapshot(
        &self,
        document: &str,
        revision: u64,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let span = store_span!(
            self,
            "store.write_yjs_snapshot",
            "write_yjs_snapshot",
            document,
            revision
        );
        let result = self
            .inner
            .write_yjs_snapshot(document, revision, state)
            .instrument(span.clone())
            .await;
        self.observe(&span, "write_yjs_snapshot", result)
    }

    async fn read_log(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<LoggedOp>, StoreError> {
        let span = store_span!(self, "store.read_log", "read_log", document, from, to);
        let result = self
            .inner
            .read_log(document, from, to)
            .instrument(span.clone())
            .await;
        self.observe(&span, "read_log", result)
    }

    async fn last_seq(&self, document: &str, client_id: &str) -> Result<u64, StoreError> {
        let span = store_span!(self, "store.last_seq", "last_seq", document);
        let result = self
            .inner
            .last_seq(document, client_id)
            .instrument(span.clone())
            .await;
        self.observe(&span, "last_seq", result)
    }

    async fn document_count(&self) -> Result<u64, StoreError> {
        // Readiness probes call this every few seconds: no span, only the error count.
        let result = self.inner.document_count().await;
        self.observe(&Span::none(), "document_count", result)
    }

    async fn compact(&self, retention: Duration) -> Result<u64, StoreError> {
        let span = store_span!(self, "store.compact", "compact");
        let result = self.inner.compact(retention).instrument(span.clone()).await;
        self.observe(&span, "compact", result)
    }

    async fn delete_expired(&self, unused_for: Duration) -> Result<u64, StoreError> {
        let span = store_span!(self, "store.delete_expired", "delete_expired");
        let result = self
            .inner
            .delete_expired(unused_for)
            .instrument(span.clone())
            .await;
        self.observe(&span, "delete_expired", result)
    }

    async fn document_otp(&self, document: &str) -> Result<Option<String>, StoreError> {
        let span = store_span!(self, "store.document_otp", "document_otp", document);
        let result = self
            .inner
            .document_otp(document)
            .instrument(span.clone())
            .await;
        self.observe(&span, "document_otp", result)
    }

    async fn set_otp(
        &self,
        document: &str,
        epoch: u64,
        otp: Option<String>,
    ) -> Result<(), StoreError> {
        let span = store_span!(self, "store.set_otp", "set_otp", document);
        let result = self
            .inner
            .set_otp(document, epoch, otp)
            .instrument(span.clone())
            .await;
        self.observe(&span, "set_otp", result)
    }

    async fn lease_owner(&self, document: &str) -> Result<Option<String>, StoreError> {
        let span = store_span!(self, "store.lease_owner", "lease_owner", document);
        let result = self
            .inner
            .lease_owner(document)
            .instrument(span.clone())
            .await;
        self.observe(&span, "lease_owner", result)
    }

    async fn history_extent(&self, document: &str) -> Result<Option<HistoryExtent>, StoreError> {
        let span = store_span!(self, "store.history_extent", "history_extent", document);
        let result = self
            .inner
            .history_extent(document)
            .instrument(span.clone())
            .await;
        self.observe(&span, "history_extent", result)
    }

    async fn checkpoint_at_or_before(
        &self,
        document: &str,
        revision: u64,
    ) -> Result<Option<(u64, String)>, StoreError> {
        let span = store_span!(
            self,
            "store.checkpoint_at_or_before",
            "checkpoint_at_or_before",
            document,
            revision
        );
        let result = self
            .inner
            .checkpoint_at_or_before(document, revision)
            .instrument(span.clone())
            .await;
        self.observe(&span, "checkpoint_at_or_before", result)
    }

    async fn yjs_checkpoint_at_or_before(
        &self,
        document: &str,
        revision: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let span = store_span!(
            self,
            "store.yjs_checkpoint_at_or_before",
            "yjs_checkpoint_at_or_before",
            document,
            revision
        );
        let result = self
            .inner
            .yjs_checkpoint_at_or_before(document, revision)
            .instrument(span.clone())
            .await;
        self.observe(&span, "yjs_checkpoint_at_or_before", result)
    }

    async fn read_yjs_past(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<PastUpdate>, StoreError> {
        let span = store_span!(
            self,
            "store.read_yjs_past",
            "read_yjs_past",
            document,
            from,
            to
        );
        let result = self
            .inner
            .read_yjs_past(document, from, to)
            .instrument(span.clone())
            .await;
        self.observe(&span, "read_yjs_past", result)
    }

    async fn read_past(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<PastOp>, StoreError> {
        let span = store_span!(self, "store.read_past", "read_past", document, from, to);
        let result = self
            .inner
            .read_past(document, from, to)
            .instrument(span.clone())
            .await;
        self.observe(&span, "read_past", result)
    }

    async fn last_revision_at(
        &self,
        document: &str,
        at_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let span = store_span!(self, "store.last_revision_at", "last_revision_at", document);
        let result = self
            .inner
            .last_revision_at(document, at_ms)
            .instrument(span.clone())
            .await;
        self.observe(&span, "last_revision_at", result)
    }

    async fn record_author(&self, document: &str, info: AuthorInfo) -> Result<(), StoreError> {
        let span = store_span!(self, "store.record_author", "record_author", document);
        let result = self
            .inner
            .record_author(document, info)
            .instrument(span.clone())
            .await;
        self.observe(&span, "record_author", result)
    }

    async fn authors(&self, document: &str) -> Result<Vec<AuthorInfo>, StoreError> {
        let span = store_span!(self, "store.authors", "authors", document);
        let result = self.inner.authors(document).instrument(span.clone()).await;
        self.observe(&span, "authors", result)
    }

    fn counters(&self) -> &StoreCounters {
        self.inner.counters()
    }

    fn pool_status(&self) -> Option<PoolStatus> {
        self.inner.pool_status()
    }

    fn concurrent_commits(&self) -> usize {
        self.inner.concurrent_commits()
    }

    fn db_system(&self) -> &'static str {
        self.system
    }

    fn server_address(&self) -> String {
        self.address.clone().unwrap_or_default()
    }
}
