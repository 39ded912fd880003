//! Which documents are loaded here, and the handle of each one's actor.
//!
//! The map is only ever locked for a lookup or an insert, never across an await: a missing
//! document gets an actor at once, and that actor loads the document itself while commands
//! queue in its mailbox. So a burst of joins to cold documents never serialises on one lock
//! (Rustpad's server hangs in exactly that situation).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use crate::{
    document::{self, Command, Deps, DocumentHandle},
    ownership::Verdict,
};

/// Why a document cannot be served here now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    /// The docnode is shutting down.
    #[error("docnode is shutting down; reconnect")]
    ShuttingDown,
    /// MAX_LOADED_DOCUMENTS is reached.
    #[error("docnode has {0} documents loaded, its limit; retry shortly")]
    Full(usize),
}

/// The loaded documents of this docnode.
pub struct Registry {
    documents: Mutex<HashMap<Arc<str>, DocumentHandle>>,
    next_generation: AtomicU64,
    closing: AtomicBool,
    /// Actors that stopped since [`Registry::take_unloads`] was last called.
    unloads: AtomicU64,
    /// Set once [`Registry::shutdown`] has closed every document (or given up waiting).
    closed: tokio::sync::watch::Sender<bool>,
    deps: Deps,
}

impl Registry {
    /// An empty registry whose actors use `deps`.
    pub fn new(deps: Deps) -> Arc<Self> {
        Arc::new(Self {
            documents: Mutex::default(),
            next_generation: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            unloads: AtomicU64::new(0),
            closed: tokio::sync::watch::Sender::new(false),
            deps,
        })
    }

    /// The handle of a document's actor, starting the actor if the document is not loaded.
    pub fn handle(self: &Arc<Self>, id: &str) -> Result<DocumentHandle, Unavailable> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Unavailable::ShuttingDown);
        }
        let mut documents = self.lock();
        if let Some(handle) = documents.get(id) {
            return Ok(handle.clone());
        }
        if documents.len() >= self.deps.config.max_loaded_documents {
            return Err(Unavailable::Full(documents.len()));
        }
        let id: Arc<str> = Arc::from(id);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let handle = document::spawn(
            Arc::clone(&id),
            generation,
            self.deps.clone(),
            Arc::clone(self),
        );
        documents.insert(id, handle.clone());
        self.deps
            .metrics
            .documents_loaded
            .set(documents.len() as i64);
        Ok(handle)
    }

    /// The handle of a document's actor if it is loaded (never starts one).
    pub fn loaded_handle(&self, id: &str) -> Option<DocumentHandle> {
        self.lock().get(id).cloned()
    }

    /// Forgets an actor that stopped, unless a newer one already took its place.
    pub(crate) fn remove(&self, id: &str, generation: u64) {
        let mut documents = self.lock();
        if documents.get(id).map(DocumentHandle::generation) == Some(generation) {
            documents.remove(id);
            self.unloads.fetch_add(1, Ordering::Relaxed);
            self.deps
                .metrics
                .documents_loaded
                .set(documents.len() as i64);
        }
    }

    /// Asks every loaded document this docnode no longer owns (by its view) to commit, close
    /// its clients (who reconnect to the new owner) and unload. Returns how many were asked.
    pub async fn release_unowned(&self) -> usize {
        let handles: Vec<DocumentHandle> = self
            .lock()
            .values()
            .filter(|h| self.deps.ownership.check(h.id()) != Verdict::Mine)
            .cloned()
            .collect();
        for handle in &handles {
            let _ = handle.send(Command::Release).await;
        }
        handles.len()
    }

    /// Who owns what, by this docnode's view.
    pub fn ownership(&self) -> &Arc<crate::ownership::Ownership> {
        &self.deps.ownership
    }

    /// How many actors stopped since the last call (see [`crate::memory`]).
    pub fn take_unloads(&self) -> u64 {
        self.unloads.swap(0, Ordering::Relaxed)
    }

    /// The docnode's Prometheus series.
    pub fn metrics(&self) -> &Arc<crate::metrics::DocnodeMetrics> {
        &self.deps.metrics
    }

    /// How many documents are loaded.
    pub fn loaded(&self) -> usize {
        self.lock().len()
    }

    /// Refuses new documents, asks every actor to commit and close, and waits (at most
    /// `timeout`) for them to stop.
    pub async fn shutdown(&self, timeout: Duration) {
        self.closing.store(true, Ordering::Release);
        let handles: Vec<DocumentHandle> = self.lock().values().cloned().collect();
        for handle in &handles {
            let _ = handle.send(Command::Shutdown).await;
        }
        let all_stopped = futures::future::join_all(handles.iter().map(|h| h.stopped()));
        if tokio::time::timeout(timeout, all_stopped).await.is_err() {
            tracing::warn!("some documents did not stop in time");
        }
        self.closed.send_replace(true);
    }

    /// Waits until [`Registry::shutdown`] has closed every document: a gateway's sessions
    /// stream, which outlives any one session, ends then.
    pub async fn closed(&self) {
        let _ = self.closed.subscribe().wait_for(|closed| *closed).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, DocumentHandle>> {
        // A panic while holding this lock cannot leave the map half-updated (every critical
        // section is a single insert, lookup or remove), so a poisoned lock is still usable.
        self.documents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
