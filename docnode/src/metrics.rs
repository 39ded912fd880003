//! The docnode's Prometheus series, registered once per docnode in the process's registry.
//!
//! Every series is listed, with its meaning and the alerts worth setting on it, in
//! docs/operations.md. Counters and histograms are updated where things happen (the document
//! actor, the group committer, the metered store); gauges that mirror state elsewhere (loaded
//! documents, membership) are read at scrape time, so they can never drift from the truth.

use std::sync::Arc;

use codraft_common::metrics::AtomicCounter;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    PullingGauge, Registry,
};

use crate::store::{PoolStatus, Store};

/// The docnode's series. Cheap to share: every field is a handle to shared state.
pub struct DocnodeMetrics {
    registry: Registry,
    /// Documents loaded in memory (actors running, loading ones included).
    pub documents_loaded: IntGauge,
    /// Edits received from gateways.
    pub edits_received: IntCounter,
    /// Edits committed and sent to clients.
    pub edits_committed: IntCounter,
    /// Edits refused, by the close code sent (`reason`).
    pub edits_rejected: IntCounterVec,
    /// Re-sent edits recognised as already assigned (exactly-once) and dropped.
    pub edits_duplicate: IntCounter,
    /// Ops per group-commit transaction.
    pub commit_batch_ops: Histogram,
    /// Documents per group-commit transaction.
    pub commit_batch_documents: Histogram,
    /// Time from a flush's start to its answer, retries while the store is down included.
    pub commit_duration: Histogram,
    /// Time a document takes to load from the store.
    pub document_load_duration: Histogram,
    /// Clients closed with 4508: still lagging after the grace period, or too far behind to
    /// catch up.
    pub slow_client_closes: IntCounter,
    /// Lagging clients brought up to date with one compacted catch-up.
    pub slow_client_catchups: IntCounter,
    /// Connections lagging right now (skipped by fan-out until their catch-up).
    pub lagging_clients: IntGauge,
    /// Sessions carried on gateways' shared streams (`DocNode.Sessions`), from their Open
    /// until their last frame has gone (or was dropped).
    pub shared_stream_sessions: IntGauge,
    /// History frames that went to a gateway inside another session's message (one fan-out
    /// crossing the stream once for several clients of a document), not in one of their own.
    pub shared_history_frames: IntCounter,
    /// Times a document stopped taking commands because its uncommitted edits reached
    /// MAX_PENDING_EDITS or MAX_PENDING_KB (the store is slow or down).
    pub pending_limit_hits: IntCounter,
    /// Bytes of edits held in memory by document history windows (pending ones included).
    pub history_bytes: IntGauge,
    /// Bytes of frames queued for clients (encoded size; fanned-out entries are shared, so
    /// this counts what each client holds, an upper bound of the memory).
    pub client_queue_bytes: IntGauge,
    /// Documents that left this docnode for another owner, by `reason`.
    pub ownership_moves: IntCounterVec,
    /// Failed store calls, by `operation` and `kind` (unavailable, conflict, corrupt).
    pub store_errors: IntCounterVec,
    /// Yjs updates committed and sent to clients.
    pub yjs_updates_committed: IntCounter,
    /// Yjs messages refused, by `reason` (see `crate::yjs`).
    pub yjs_refused: IntCounterVec,
}

/// `reason` of [`DocnodeMetrics::ownership_moves`]: the membership view moved the document
/// and this docnode released it in order.
pub const MOVE_RELEASED: &str = "released";
/// `reason` of [`DocnodeMetrics::ownership_moves`]: another docnode took the lease and this
/// docnode's commit was fenced.
pub const MOVE_FENCED: &str = "fenced";

impl DocnodeMetrics {
    /// Registers the docnode's series in `registry`. Fails only if they are already there
    /// (two docnodes sharing one registry).
    pub fn register(registry: &Registry) -> prometheus::Result<Arc<Self>> {
        // Commit latency spans 0.25 ms (SQLite on a fast disk) to seconds (a store outage).
        let latency = exponential_buckets(0.000_25, 2.0, 16)?;
        let metrics = Self {
            registry: registry.clone(),
            documents_loaded: IntGauge::new(
                "codraft_documents_loaded",
                "Documents loaded in memory on this docnode.",
            )?,
            edits_received: IntCounter::new(
                "codraft_edits_received_total",
                "Edits received from gateways.",
            )?,
            edits_committed: IntCounter::new(
                "codraft_edits_committed_total",
                "Edits committed and sent to every client of their document.",
            )?,
            edits_rejected: IntCounterVec::new(
                Opts::new(
                    "codraft_edits_rejected_total",
                    "Edits refused, by the close code sent to the client.",
                ),
                &["reason"],
            )?,
            yjs_updates_committed: IntCounter::new(
                "codraft_yjs_updates_committed_total",
                "Yjs updates committed and sent to clients.",
            )?,
            yjs_refused: IntCounterVec::new(
                Opts::new(
                    "codraft_yjs_refused_total",
                    "Yjs messages refused, by reason: malformed, update_too_large, \
                     document_too_large, awareness_too_large, out_of_order.",
                ),
                &["reason"],
            )?,
            edits_duplicate: IntCounter::new(
                "codraft_edits_duplicate_total",
                "Re-sent edits recognised as already applied (exactly-once) and dropped.",
            )?,
            commit_batch_ops: Histogram::with_opts(
                HistogramOpts::new(
                    "codraft_commit_batch_ops",
                    "Ops carried by one group-commit transaction.",
                )
                .buckets(exponential_buckets(1.0, 2.0, 13)?),
            )?,
            commit_batch_documents: Histogram::with_opts(
                HistogramOpts::new(
                    "codraft_commit_batch_documents",
                    "Documents carried by one group-commit transaction.",
                )
                .buckets(exponential_buckets(1.0, 2.0, 11)?),
            )?,
            commit_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "codraft_commit_duration_seconds",
                    "Time from the start of a group commit to its answer, retries included.",
                )
                .buckets(latency.clone()),
            )?,
            document_load_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "codraft_document_load_duration_seconds",
                    "Time to load a document from the store (snapshot plus log).",
                )
                .buckets(latency),
            )?,
            slow_client_closes: IntCounter::new(
                "codraft_slow_client_closes_total",
                "Clients closed with 4508: still lagging after SLOW_CLIENT_GRACE_MS, or too far \
                 behind to catch up.",
            )?,
            slow_client_catchups: IntCounter::new(
                "codraft_slow_client_catchups_total",
                "Lagging clients brought up to date with one compacted catch-up.",
            )?,
            lagging_clients: IntGauge::new(
                "codraft_lagging_clients",
                "Connections whose send queue filled and that wait for a catch-up.",
            )?,
            shared_stream_sessions: IntGauge::new(
                "codraft_shared_stream_sessions",
                "Client sessions on gateways' shared streams (DocNode.Sessions), from their \
                 Open until their last frame has gone.",
            )?,
            shared_history_frames: IntCounter::new(
                "codraft_shared_history_frames_total",
                "History frames sent to a gateway inside another session's message (one \
                 fan-out crossing the stream once for several clients of a document).",
            )?,
            pending_limit_hits: IntCounter::new(
                "codraft_pending_limit_hits_total",
                "Times a document stopped taking commands because its uncommitted edits reached \
                 MAX_PENDING_EDITS or MAX_PENDING_KB.",
            )?,
            history_bytes: IntGauge::new(
                "codraft_history_bytes",
                "Bytes of edits held in memory by document history windows, pending included.",
            )?,
            client_queue_bytes: IntGauge::new(
                "codraft_client_queue_bytes",
                "Bytes of frames queued for clients, by each client's account (CLIENT_QUEUE_KB \
                 each at most).",
            )?,
            ownership_moves: IntCounterVec::new(
                Opts::new(
                    "codraft_ownership_moves_total",
                    "Documents that left this docnode: released on a membership change, or \
                     fenced by another docnode's lease.",
                ),
                &["reason"],
            )?,
            store_errors: IntCounterVec::new(
                Opts::new(
                    "codraft_store_errors_total",
                    "Failed store (Postgres or SQLite) calls, by operation and kind.",
                ),
                &["operation", "kind"],
            )?,
        };
        registry.register(Box::new(metrics.documents_loaded.clone()))?;
        registry.register(Box::new(metrics.edits_received.clone()))?;
        registry.register(Box::new(metrics.edits_committed.clone()))?;
        registry.register(Box::new(metrics.edits_rejected.clone()))?;
        registry.register(Box::new(metrics.edits_duplicate.clone()))?;
        registry.register(Box::new(metrics.yjs_updates_committed.clone()))?;
        registry.register(Box::new(metrics.yjs_refused.clone()))?;
        registry.register(Box::new(metrics.commit_batch_ops.clone()))?;
        registry.register(Box::new(metrics.commit_batch_documents.clone()))?;
        registry.register(Box::new(metrics.commit_duration.clone()))?;
        registry.register(Box::new(metrics.document_load_duration.clone()))?;
        registry.register(Box::new(metrics.slow_client_closes.clone()))?;
        registry.register(Box::new(metrics.slow_client_catchups.clone()))?;
        registry.register(Box::new(metrics.lagging_clients.clone()))?;
        registry.register(Box::new(metrics.shared_stream_sessions.clone()))?;
        registry.register(Box::new(metrics.shared_history_frames.clone()))?;
        registry.register(Box::new(metrics.pending_limit_hits.clone()))?;
        registry.register(Box::new(metrics.history_bytes.clone()))?;
        registry.register(Box::new(metrics.client_queue_bytes.clone()))?;
        registry.register(Box::new(metrics.ownership_moves.clone()))?;
        registry.register(Box::new(metrics.store_errors.clone()))?;
        // Pre-create the label sets alerts look at, so a quiet docnode shows 0, not nothing.
        for reason in [MOVE_RELEASED, MOVE_FENCED] {
            metrics.ownership_moves.with_label_values(&[reason]);
        }
        Ok(Arc::new(metrics))
    }

    /// The registry holding these series (and whatever else shares it).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds the store's own counters, read at scrape time.
    pub fn register_store(&self, store: &Arc<dyn Store>) -> prometheus::Result<()> {
        type Read = fn(&dyn Store) -> u64;
        let counters: [(&str, &str, Read); 3] = [
            (
                "codraft_commits_total",
                "Group-commit transactions committed.",
                |s| {
                    s.counters()
                        .commits
                        .load(std::sync::atomic::Ordering::Relaxed)
                },
            ),
            (
                "codraft_ops_committed_total",
                "Ops committed to the store.",
                |s| {
                    s.counters()
                        .ops_committed
                        .load(std::sync::atomic::Ordering::Relaxed)
                },
            ),
            (
                "codraft_log_rows_read_total",
                "Op-log rows read while loading documents and catching clients up.",
                |s| {
                    s.counters()
                        .log_rows_read
                        .load(std::sync::atomic::Ordering::Relaxed)
                },
            ),
        ];
        for (name, help, read) in counters {
            let store = Arc::clone(store);
            let counter = AtomicCounter::from_fn(name, help, move || read(&*store))?;
            self.registry.register(Box::new(counter))?;
        }
        if store.pool_status().is_some() {
            self.register_pool(store)?;
        }
        Ok(())
    }

    /// Adds gauges of the store's connection pool, read at scrape time: a pool that stays
    /// full with callers waiting is the first sign of a store too slow for the load.
    fn register_pool(&self, store: &Arc<dyn Store>) -> prometheus::Result<()> {
        type Read = fn(&PoolStatus) -> usize;
        let gauges: [(&str, &str, Read); 4] = [
            (
                "codraft_db_pool_max_connections",
                "Most connections the store's pool opens (DATABASE_POOL_SIZE).",
                |p| p.max,
            ),
            (
                "codraft_db_pool_connections",
                "Connections the store's pool holds open, in use or idle.",
                |p| p.open,
            ),
            (
                "codraft_db_pool_idle_connections",
                "Open connections idle in the store's pool.",
                |p| p.idle,
            ),
            (
                "codraft_db_pool_waiting",
                "Callers waiting for a connection from the store's pool.",
                |p| p.waiting,
            ),
        ];
        for (name, help, read) in gauges {
            let store = Arc::clone(store);
            let gauge = PullingGauge::new(
                name,
                help,
                Box::new(move || store.pool_status().map_or(0.0, |p| read(&p) as f64)),
            )?;
            self.registry.register(Box::new(gauge))?;
        }
        Ok(())
    }

    /// Adds a gauge of the docnodes in this docnode's membership view, read at scrape time.
    pub fn register_membership(
        &self,
        view: tokio::sync::watch::Receiver<codraft_common::membership::View>,
    ) -> prometheus::Result<()> {
        let gauge = PullingGauge::new(
            "codraft_membership_size",
            "Docnodes in this docnode's membership view (0: no membership, owns everything).",
            Box::new(move || view.borrow().len() as f64),
        )?;
        self.registry.register(Box::new(gauge))
    }

    /// Adds the counter of membership heartbeats that did not reach Redis.
    pub fn register_heartbeat_failures(
        &self,
        failures: Arc<std::sync::atomic::AtomicU64>,
    ) -> prometheus::Result<()> {
        let counter = AtomicCounter::new(
            "codraft_membership_heartbeat_failures_total",
            "Membership heartbeats that did not reach Redis.",
            failures,
        )?;
        self.registry.register(Box::new(counter))
    }
}
