//! A [`Store`] that wraps another and observes it: every call gets a span (so a trace shows
//! its Postgres or SQLite time) and every failure is counted in
//! `codraft_store_errors_total{operation, kind}`.
//!
//! Counting here, at the one boundary every caller crosses, means no call site can forget,
//! and the stores themselves stay free of metrics.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tracing::{info_span, Instrument};

use super::{
    AuthorInfo, DocumentCommit, HistoryExtent, LoggedOp, PastOp, Snapshot, Store, StoreCounters,
    StoreError, StoredDocument,
};
use crate::metrics::DocnodeMetrics;

/// A store whose calls are traced and whose failures are counted.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<DocnodeMetrics>,
}

impl MeteredStore {
    /// Observes `inner`, counting into `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<DocnodeMetrics>) -> Self {
        Self { inner, metrics }
    }

    /// Counts a failed call.
    fn observe<T>(&self, operation: &str, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(error) = &result {
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
        let span = info_span!("store.load", document);
        let result = self.inner.load(document).instrument(span).await;
        self.observe("load", result)
    }

    async fn commit(&self, batch: Arc<[DocumentCommit]>) -> Result<(), StoreError> {
        let span = info_span!("store.commit", documents = batch.len());
        let result = self.inner.commit(batch).instrument(span).await;
        self.observe("commit", result)
    }

    async fn write_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let span = info_span!(
            "store.write_snapshot",
            document = &*snapshot.document,
            revision = snapshot.revision
        );
        let result = self.inner.write_snapshot(snapshot).instrument(span).await;
        self.observe("write_snapshot", result)
    }

    async fn read_log(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<LoggedOp>, StoreError> {
        let span = info_span!("store.read_log", document, from, to);
        let result = self
            .inner
            .read_log(document, from, to)
            .instrument(span)
            .await;
        self.observe("read_log", result)
    }

    async fn last_seq(&self, document: &str, client_id: &str) -> Result<u64, StoreError> {
        let span = info_span!("store.last_seq", document);
        let result = self
            .inner
            .last_seq(document, client_id)
            .instrument(span)
            .await;
        self.observe("last_seq", result)
    }

    async fn document_count(&self) -> Result<u64, StoreError> {
        // Readiness probes call this every few seconds: no span, only the error count.
        let result = self.inner.document_count().await;
        self.observe("document_count", result)
    }

    async fn compact(&self, retention: Duration) -> Result<u64, StoreError> {
        let span = info_span!("store.compact");
        let result = self.inner.compact(retention).instrument(span).await;
        self.observe("compact", result)
    }

    async fn delete_expired(&self, unused_for: Duration) -> Result<u64, StoreError> {
        let span = info_span!("store.delete_expired");
        let result = self.inner.delete_expired(unused_for).instrument(span).await;
        self.observe("delete_expired", result)
    }

    async fn document_otp(&self, document: &str) -> Result<Option<String>, StoreError> {
        let span = info_span!("store.document_otp", document);
        let result = self.inner.document_otp(document).instrument(span).await;
        self.observe("document_otp", result)
    }

    async fn set_otp(
        &self,
        document: &str,
        epoch: u64,
        otp: Option<String>,
    ) -> Result<(), StoreError> {
        let span = info_span!("store.set_otp", document);
        let result = self
            .inner
            .set_otp(document, epoch, otp)
            .instrument(span)
            .await;
        self.observe("set_otp", result)
    }

    async fn lease_owner(&self, document: &str) -> Result<Option<String>, StoreError> {
        let span = info_span!("store.lease_owner", document);
        let result = self.inner.lease_owner(document).instrument(span).await;
        self.observe("lease_owner", result)
    }

    async fn history_extent(&self, document: &str) -> Result<Option<HistoryExtent>, StoreError> {
        let span = info_span!("store.history_extent", document);
        let result = self.inner.history_extent(document).instrument(span).await;
        self.observe("history_extent", result)
    }

    async fn checkpoint_at_or_before(
        &self,
        document: &str,
        revision: u64,
    ) -> Result<Option<(u64, String)>, StoreError> {
        let span = info_span!("store.checkpoint_at_or_before", document, revision);
        let result = self
            .inner
            .checkpoint_at_or_before(document, revision)
            .instrument(span)
            .await;
        self.observe("checkpoint_at_or_before", result)
    }

    async fn read_past(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<PastOp>, StoreError> {
        let span = info_span!("store.read_past", document, from, to);
        let result = self
            .inner
            .read_past(document, from, to)
            .instrument(span)
            .await;
        self.observe("read_past", result)
    }

    async fn last_revision_at(
        &self,
        document: &str,
        at_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let span = info_span!("store.last_revision_at", document);
        let result = self
            .inner
            .last_revision_at(document, at_ms)
            .instrument(span)
            .await;
        self.observe("last_revision_at", result)
    }

    async fn record_author(&self, document: &str, info: AuthorInfo) -> Result<(), StoreError> {
        let span = info_span!("store.record_author", document);
        let result = self
            .inner
            .record_author(document, info)
            .instrument(span)
            .await;
        self.observe("record_author", result)
    }

    async fn authors(&self, document: &str) -> Result<Vec<AuthorInfo>, StoreError> {
        let span = info_span!("store.authors", document);
        let result = self.inner.authors(document).instrument(span).await;
        self.observe("authors", result)
    }

    fn counters(&self) -> &StoreCounters {
        self.inner.counters()
    }
}
