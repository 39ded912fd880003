//! A store held in memory, with writer fencing like Postgres's and faults on demand: the
//! store of the document actor's model test (`document/model_tests.rs`).
//!
//! It keeps what the real stores keep (op log, snapshot, language, password, per-client
//! sequence marks, an ownership epoch per document taken at every load) and refuses a commit
//! whose base revision or epoch is stale, as `PgStore` does. Everything answers at once, so a
//! test on tokio's paused clock stays deterministic. [`Fault`] makes the next commits fail,
//! stall until released, or succeed with their answer lost.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{DocumentCommit, LoggedOp, Snapshot, Store, StoreCounters, StoreError, StoredDocument};

/// What the next commits do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Commit normally.
    None,
    /// Refuse every commit as unavailable (an outage).
    Down,
    /// Wait until [`MemoryStore::release`], then commit (a slow or partitioned store).
    Stall,
    /// Commit the next batch, then answer as if it failed (the answer was lost).
    LoseAnswer,
}

/// One document as stored.
#[derive(Debug, Default, Clone)]
struct Stored {
    log: Vec<LoggedOp>,
    snapshot: (u64, String),
    language: Option<String>,
    otp: Option<String>,
    epoch: u64,
    seqs: HashMap<String, u64>,
    /// A Yjs document's updates, every one ever committed (never compacted here).
    yjs: Vec<Vec<u8>>,
}

impl Stored {
    /// The document's revision: ops or Yjs updates committed.
    fn revision(&self) -> u64 {
        (self.log.len() + self.yjs.len()) as u64
    }

    fn text(&self) -> Result<String, StoreError> {
        let (revision, text) = &self.snapshot;
        let corrupt = |e: codraft_ot::OtError| StoreError::Corrupt(e.to_string());
        self.log
            .iter()
            .skip(*revision as usize)
            .try_fold(text.clone(), |text, op| {
                op.operation.apply_str(&text).map_err(corrupt)
            })
    }
}

#[derive(Debug)]
struct State {
    documents: HashMap<String, Stored>,
    next_epoch: u64,
    fault: Fault,
}

/// The in-memory store.
pub struct MemoryStore {
    state: Mutex<State>,
    released: Notify,
    counters: StoreCounters,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                documents: HashMap::new(),
                next_epoch: 1,
                fault: Fault::None,
            }),
            released: Notify::new(),
            counters: StoreCounters::default(),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets what the next commits do; leaving `Stall` releases the stalled ones.
    pub fn set_fault(&self, fault: Fault) {
        self.lock().fault = fault;
        if fault != Fault::Stall {
            self.released.notify_waiters();
        }
    }

    /// Lets stalled commits go on (and later ones through).
    pub fn release(&self) {
        self.set_fault(Fault::None);
    }

    /// The committed text of a document (snapshot plus log), as a fresh load would see it.
    pub fn text(&self, document: &str) -> Result<String, StoreError> {
        match self.lock().documents.get(document) {
            Some(stored) => stored.text(),
            None => Ok(String::new()),
        }
    }

    /// The text of a document at log revision `revision`, replayed from the whole log.
    pub fn text_at(&self, document: &str, revision: u64) -> Option<String> {
        let log = self.log(document);
        if revision as usize > log.len() {
            return None;
        }
        log.iter()
            .take(revision as usize)
            .try_fold(String::new(), |text, op| op.operation.apply_str(&text).ok())
    }

    /// Every Yjs update committed to a document, in order (a load's view, without taking
    /// the document's lease).
    pub fn yjs_updates(&self, document: &str) -> Vec<Vec<u8>> {
        self.lock()
            .documents
            .get(document)
            .map(|d| d.yjs.clone())
            .unwrap_or_default()
    }

    /// The whole op log of a document.
    pub fn log(&self, document: &str) -> Vec<LoggedOp> {
        self.lock()
            .documents
            .get(document)
            .map(|d| d.log.clone())
            .unwrap_or_default()
    }

    /// Applies a batch, all or nothing, checking base revisions and epochs.
    fn apply(&self, batch: &[DocumentCommit]) -> Result<(), StoreError> {
        let mut state = self.lock();
        for commit in batch {
            let stored = state
                .documents
                .get(&*commit.document)
                .cloned()
                .unwrap_or_default();
            if stored.revision() != commit.base_revision || stored.epoch > commit.epoch {
                return Err(StoreError::Conflict {
                    document: commit.document.to_string(),
                    expected: commit.base_revision,
                });
            }
        }
        for commit in batch {
            let stored = state
                .documents
                .entry(commit.document.to_string())
                .or_default();
            for op in &commit.ops {
                if let (Some(client), Some(seq)) = (&op.client_id, op.seq) {
                    let mark = stored.seqs.entry(client.clone()).or_default();
                    *mark = (*mark).max(seq);
                }
                stored.log.push(op.clone());
            }
            stored.yjs.extend(commit.updates.iter().map(|u| u.to_vec()));
            if commit.language.is_some() {
                stored.language.clone_from(&commit.language);
            }
            StoreCounters::add(&self.counters.ops_committed, commit.ops.len() as u64);
        }
        StoreCounters::add(&self.counters.commits, 1);
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self, document: &str) -> Result<StoredDocument, StoreError> {
        let mut state = self.lock();
        let epoch = state.next_epoch;
        state.next_epoch += 1;
        let stored = state.documents.entry(document.to_owned()).or_default();
        stored.epoch = epoch;
        Ok(StoredDocument {
            text: stored.text()?,
            revision: stored.revision(),
            language: stored.language.clone(),
            otp: stored.otp.clone(),
            epoch,
            yjs: stored.yjs.clone(),
        })
    }

    async fn commit(&self, batch: Arc<[DocumentCommit]>) -> Result<(), StoreError> {
        loop {
            let fault = self.lock().fault;
            match fault {
                Fault::None => return self.apply(&batch),
                Fault::Down => return Err(StoreError::Unavailable("store is down".into())),
                Fault::Stall => {
                    let released = self.released.notified();
                    if self.lock().fault == Fault::Stall {
                        released.await;
                    }
                }
                Fault::LoseAnswer => {
                    self.lock().fault = Fault::None;
                    self.apply(&batch)?;
                    return Err(StoreError::Unavailable("the answer was lost".into()));
                }
            }
        }
    }

    async fn write_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut state = self.lock();
        let stored = state
            .documents
            .entry(snapshot.document.to_string())
            .or_default();
        if snapshot.revision > stored.snapshot.0 && snapshot.revision <= stored.log.len() as u64 {
            stored.snapshot = (snapshot.revision, snapshot.text);
        }
        Ok(())
    }

    async fn write_yjs_snapshot(
        &self,
        _document: &str,
        _revision: u64,
        _state: Vec<u8>,
    ) -> Result<(), StoreError> {
        // Every update stays: a load replays them all, which is the same document.
        Ok(())
    }

    async fn read_log(
        &self,
        document: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<LoggedOp>, StoreError> {
        Ok(self
            .log(document)
            .into_iter()
            .filter(|op| op.revision >= from && op.revision < to)
            .collect())
    }

    async fn last_seq(&self, document: &str, client_id: &str) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .documents
            .get(document)
            .and_then(|d| d.seqs.get(client_id).copied())
            .unwrap_or(0))
    }

    async fn document_count(&self) -> Result<u64, StoreError> {
        Ok(self.lock().documents.len() as u64)
    }

    async fn compact(&self, _retention: Duration) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn delete_expired(&self, _unused_for: Duration) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn document_otp(&self, document: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .documents
            .get(document)
            .and_then(|d| d.otp.clone()))
    }

    async fn set_otp(
        &self,
        document: &str,
        epoch: u64,
        otp: Option<String>,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let stored = state.documents.entry(document.to_owned()).or_default();
        if stored.epoch > epoch {
            return Err(StoreError::Conflict {
                document: document.to_owned(),
                expected: epoch,
            });
        }
        stored.otp = otp;
        Ok(())
    }

    fn counters(&self) -> &StoreCounters {
        &self.counters
    }
}
