//! Group commit: one store transaction carries the queued ops of many documents.
//!
//! Each document actor hands its uncommitted ops to the [`Committer`] and keeps working; it
//! has at most one request in flight, so its ops reach the store in revision order. The
//! committer task takes every request waiting, waits up to the configured window for more
//! (zero by default: whatever queued while the previous flush ran is the batch), commits
//! them in one transaction and answers every request with the same result. At most
//! COMMIT_PARALLELISM flushes run at once (by default what the store can run at once: 2 on
//! PostgreSQL, where one builds while another waits for its fsync; 1 on the embedded store,
//! whose one connection commits one batch at a time), so under load the batch grows by itself
//! and the per-op cost of a commit falls.
//!
//! Each flush is one `group_commit` span. It belongs to no single edit's trace, so it links to
//! the span of every edit it carries instead (each edit's trace shows its own wait for it).

use std::{sync::Arc, time::Duration};

use codraft_common::telemetry::{self, SpanLink};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info_span, warn, Instrument};

use crate::{
    config::DocnodeConfig,
    metrics::DocnodeMetrics,
    store::{DocumentCommit, Store, StoreError},
};

/// A document's request to commit its pending ops.
struct Request {
    commit: DocumentCommit,
    /// The spans of the edits among the ops, for the flush's span to link to.
    links: Vec<SpanLink>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Handle to the group-commit task; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

/// Settings of the group-commit task.
#[derive(Debug, Clone, Copy)]
pub struct CommitPolicy {
    /// How long to wait for more ops once one arrived.
    pub window: Duration,
    /// Most ops in one transaction.
    pub max_batch: usize,
    /// Flushes in flight at once. Each document has at most one request in flight, so
    /// concurrent flushes never share a document; a second flush builds its batch while the
    /// first waits for its fsync.
    pub parallelism: usize,
}

impl CommitPolicy {
    /// The policy the configuration asks for; flushes in flight default to what `store` can
    /// run at once.
    pub fn new(config: &DocnodeConfig, store: &dyn Store) -> Self {
        Self {
            window: config.commit_window(),
            max_batch: config.commit_max_batch,
            parallelism: config
                .commit_parallelism
                .unwrap_or_else(|| store.concurrent_commits()),
        }
    }
}

/// What a document's actor waits on after submitting: its transaction's result.
pub type CommitResult = oneshot::Receiver<Result<(), StoreError>>;

impl Committer {
    /// Starts the committer task; it ends when every handle is dropped and the queue is empty.
    pub fn start(
        store: Arc<dyn Store>,
        policy: CommitPolicy,
        metrics: Arc<DocnodeMetrics>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        // Each document has at most one request in flight, so this bounds nothing that the
        // number of loaded documents does not already bound; it only smooths bursts.
        let (tx, rx) = mpsc::channel(4096);
        let task = tokio::spawn(run(store, policy, metrics, rx));
        (Self { tx }, task)
    }

    /// Queues ops for commit; the returned receiver yields the result of their transaction.
    /// `links` are the spans of the edits among the ops (empty when tracing is off).
    pub async fn submit(&self, commit: DocumentCommit, links: Vec<SpanLink>) -> CommitResult {
        let (done, result) = oneshot::channel();
        let request = Request {
            commit,
            links,
            done,
        };
        if let Err(mpsc::error::SendError(request)) = self.tx.send(request).await {
            let _ = request.done.send(Err(StoreError::Unavailable(
                "the committer has stopped".into(),
            )));
        }
        result
    }
}

async fn run(
    store: Arc<dyn Store>,
    policy: CommitPolicy,
    metrics: Arc<DocnodeMetrics>,
    mut rx: mpsc::Receiver<Request>,
) {
    let max_batch = policy.max_batch.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(policy.parallelism.max(1)));
    loop {
        // Wait for a free slot first: requests keep queuing meanwhile, so the next batch is
        // whatever arrived while every slot was busy.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut ops = first.commit.ops.len();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + policy.window;
        // Whether the tasks that were ready have run since the queue was last found empty.
        let mut others_ran = false;
        while ops < max_batch {
            let next = match rx.try_recv() {
                Ok(request) => {
                    others_ran = false;
                    Some(request)
                }
                // Every task that is ready runs before the batch is sealed: the documents a
                // commit just answered submit their next ops in that turn and go in this
                // batch, rather than the first of them in a batch of its own (an fsync for
                // one document) and the rest in the next. Idle, it costs one yield; busy, it
                // ends once a turn brings nothing new, and each document has at most one
                // request in flight, so a batch never waits for more turns than documents.
                Err(_) if policy.window.is_zero() && !others_ran => {
                    others_ran = true;
                    tokio::task::yield_now().await;
                    continue;
                }
                Err(_) if policy.window.is_zero() => None,
                Err(_) => tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten(),
            };
            let Some(request) = next else { break };
            ops += request.commit.ops.len();
            batch.push(request);
        }
        metrics.commit_batch_ops.observe(ops as f64);
        metrics.commit_batch_documents.observe(batch.len() as f64);
        let span = info_span!("group_commit", documents = batch.len(), ops);
        telemetry::add_links(
            &span,
            batch.iter_mut().flat_map(|r| std::mem::take(&mut r.links)),
        );
        let (store, metrics) = (Arc::clone(&store), Arc::clone(&metrics));
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            flush(&*store, batch, ops).instrument(span).await;
            metrics
                .commit_duration
                .observe(started.elapsed().as_secs_f64());
            drop(slot);
        });
    }
}

/// Commits a batch. A conflict belongs to one document (a stale owner), so that document is
/// answered with it and the rest of the batch is committed without it. While the store is
/// unavailable the batch is retried with backoff: documents pause (and, as their mailboxes
/// fill, push back on clients) instead of failing. A retry after a commit whose answer was
/// lost meets a revision conflict, which makes the document reload what was committed.
async fn flush(store: &dyn Store, mut batch: Vec<Request>, ops: usize) {
    let mut backoff = Duration::from_millis(50);
    let mut retried = false;
    loop {
        let commits: Arc<[DocumentCommit]> = batch.iter().map(|r| r.commit.clone()).collect();
        let result = store.commit(commits).await;
        match &result {
            Ok(()) => debug!(documents = batch.len(), ops, "group commit"),
            Err(StoreError::Unavailable(error)) => {
                warn!(documents = batch.len(), ops, %error, retry_in = ?backoff, "store unavailable; retrying the flush");
                retried = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                // Waiters that gave up (their document stopped) need no commit.
                batch.retain(|r| !r.done.is_closed());
                if batch.is_empty() {
                    return;
                }
                continue;
            }
            Err(StoreError::Conflict { document, .. }) if retried || batch.len() > 1 => {
                let (named, rest): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .partition(|r| &*r.commit.document == document.as_str());
                if named.is_empty() {
                    // The store named a document that is not in the batch: fail them all.
                    for request in rest {
                        let _ = request.done.send(result.clone());
                    }
                    return;
                }
                for request in named {
                    // After a lost answer the "conflict" may be our own earlier attempt: if
                    // the log holds exactly these ops, they are committed.
                    let ours = retried && already_committed(store, &request.commit).await;
                    if ours {
                        debug!(%document, "a retried flush found its ops committed");
                        let _ = request.done.send(Ok(()));
                    } else {
                        warn!(%document, "commit refused for a stale copy");
                        let _ = request.done.send(result.clone());
                    }
                }
                batch = rest;
                if batch.is_empty() {
                    return;
                }
                continue;
            }
            Err(error) => warn!(documents = batch.len(), ops, %error, "group commit failed"),
        }
        for request in batch {
            let _ = request.done.send(result.clone());
        }
        return;
    }
}

/// Whether the log already holds exactly `commit`'s ops (same revisions, authors, sequence
/// numbers and operations) or Yjs updates (same bytes at the same revisions): then an
/// earlier attempt committed them and only its answer was lost.
async fn already_committed(store: &dyn Store, commit: &DocumentCommit) -> bool {
    if !commit.updates.is_empty() {
        // A Yjs document's commit: the same update bytes at the same revisions.
        let to = commit.new_revision();
        return match store
            .read_yjs_updates(&commit.document, commit.base_revision, to)
            .await
        {
            Ok(stored) => {
                stored.len() == commit.updates.len()
                    && stored
                        .iter()
                        .zip(&commit.updates)
                        .all(|(a, b)| a[..] == b[..])
            }
            Err(_) => false,
        };
    }
    if commit.ops.is_empty() {
        return false;
    }
    let to = commit.base_revision + commit.ops.len() as u64;
    match store
        .read_log(&commit.document, commit.base_revision, to)
        .await
    {
        Ok(logged) => logged == commit.ops,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{memory::MemoryStore, sqlite::SqliteStore};

    fn config(args: &[&str]) -> DocnodeConfig {
        crate::config::from_flags(args).0
    }

    #[test]
    fn flushes_in_flight_default_to_what_the_store_runs_at_once() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let sqlite = SqliteStore::open(dir.path()).expect("store");
        let memory = MemoryStore::new();
        assert_eq!(CommitPolicy::new(&config(&[]), &sqlite).parallelism, 1);
        assert_eq!(CommitPolicy::new(&config(&[]), &*memory).parallelism, 2);
        let set = config(&["--commit-parallelism", "3"]);
        assert_eq!(
            CommitPolicy::new(&set, &sqlite).parallelism,
            3,
            "the setting wins"
        );
    }

    /// No window, one flush in flight: the embedded store's policy.
    fn one_flush_at_a_time() -> CommitPolicy {
        CommitPolicy {
            window: Duration::ZERO,
            max_batch: 2048,
            parallelism: 1,
        }
    }

    fn empty_commit(document: &str) -> DocumentCommit {
        DocumentCommit {
            document: document.into(),
            base_revision: 0,
            epoch: 0,
            ops: Vec::new(),
            language: None,
            updates: Vec::new(),
        }
    }

    /// With one flush in flight at a time, what arrives during a flush waits for it and goes
    /// in the next batch together, instead of a second flush of its own.
    #[tokio::test]
    async fn one_flush_at_a_time_carries_everything_that_queued_during_it() {
        let store = MemoryStore::new();
        let metrics = DocnodeMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let policy = one_flush_at_a_time();
        let batches = || metrics.commit_batch_documents.get_sample_count();
        let (committer, _task) = Committer::start(store.clone(), policy, Arc::clone(&metrics));
        store.set_fault(crate::store::memory::Fault::Stall);
        let first = committer.submit(empty_commit("a"), Vec::new()).await;
        for _ in 0..1_000 {
            if batches() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(batches(), 1, "the first request is flushed on its own");
        let mut rest = Vec::new();
        for document in ["b", "c", "d"] {
            rest.push(committer.submit(empty_commit(document), Vec::new()).await);
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(batches(), 1, "no second flush while the first is in flight");
        store.release();
        assert!(matches!(first.await, Ok(Ok(()))));
        for result in rest {
            assert!(matches!(result.await, Ok(Ok(()))));
        }
        assert_eq!(batches(), 2, "the three queued requests went in one batch");
        assert_eq!(metrics.commit_batch_documents.get_sample_sum(), 4.0);
    }

    /// The documents one commit answers submit their next ops together, and those go in one
    /// batch. On a runtime whose woken tasks run last-woken-first (tokio's LIFO slot, one
    /// worker as in a pinned standalone server), the committer, woken by the end of the
    /// flush after the documents, used to run first and seal a batch around whichever
    /// document submitted first: a batch of one, then one of the rest, an fsync each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_documents_a_commit_answers_go_in_the_next_batch_together() {
        const DOCUMENTS: usize = 20;
        const ROUNDS: u64 = 10;
        let store = MemoryStore::new();
        let metrics = DocnodeMetrics::register(&prometheus::Registry::new()).expect("metrics");
        let policy = one_flush_at_a_time();
        let (committer, _task) = Committer::start(store.clone(), policy, Arc::clone(&metrics));
        // Every document waits for the first commit's answer, as documents with ops pending
        // behind a commit do.
        store.set_fault(crate::store::memory::Fault::Stall);
        let first = committer.submit(empty_commit("first"), Vec::new()).await;
        let (answered, _) = tokio::sync::broadcast::channel::<()>(1);
        let documents: Vec<_> = (0..DOCUMENTS)
            .map(|d| {
                let (committer, mut answered) = (committer.clone(), answered.subscribe());
                tokio::spawn(async move {
                    let _ = answered.recv().await;
                    for _ in 0..ROUNDS {
                        let result = committer.submit(empty_commit(&format!("d{d}")), Vec::new());
                        assert!(matches!(result.await.await, Ok(Ok(()))));
                    }
                })
            })
            .collect();
        // The answer wakes them from within the runtime, as a flush does.
        let answer = tokio::spawn(async move {
            assert!(matches!(first.await, Ok(Ok(()))));
            answered.send(()).expect("documents wait");
        });
        tokio::task::yield_now().await;
        store.release();
        answer.await.expect("answer task");
        for document in documents {
            document.await.expect("document task");
        }
        let batches = metrics.commit_batch_documents.get_sample_count() - 1;
        assert!(
            batches <= ROUNDS + 1,
            "{DOCUMENTS} documents × {ROUNDS} rounds took {batches} batches"
        );
    }
}
