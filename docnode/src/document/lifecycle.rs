//! The actor's life: it loads its document under a fresh lease, serves commands, commit
//! results and timers in one loop, and on its way out (idle, shutdown, move, failure) commits
//! what it can, snapshots, and closes or reroutes every connection.

use std::{sync::Arc, time::Duration};

use codraft_common::{ids::is_yjs, membership::Member};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument, Span};

use super::{close, gather, Command, ConnId, Deps, Document, JoinRefused, Mail};
use crate::{
    commit::CommitResult,
    metrics::{MOVE_FENCED, MOVE_RELEASED},
    registry::Registry,
    store::StoreError,
};

/// A commit in flight: its result, and the head revision it will make committed.
pub(super) struct Inflight {
    /// The transaction's result, when it comes.
    pub(super) result: CommitResult,
    /// The head revision it makes committed.
    pub(super) upto: u64,
    /// The language change it carries.
    pub(super) language: Option<String>,
}

/// Why the actor's loop ended.
pub(crate) enum Exit {
    Idle,
    Shutdown,
    Moved,
    Failed(String),
    Stale,
}

impl Exit {
    /// A short name for spans and logs.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Exit::Idle => "idle",
            Exit::Shutdown => "shutdown",
            Exit::Moved => "moved",
            Exit::Failed(_) => "failed",
            Exit::Stale => "stale",
        }
    }
}

pub(super) async fn run(
    id: Arc<str>,
    generation: u64,
    deps: Deps,
    registry: Arc<Registry>,
    mut rx: mpsc::Receiver<Mail>,
    own: mpsc::WeakSender<Mail>,
    cause: Span,
) {
    let started = tokio::time::Instant::now();
    let load = info_span!(parent: &cause, "load", document = %id);
    // Holding the cause would keep its span open for the actor's whole life.
    drop(cause);
    let loaded = deps.store.load(&id).instrument(load).await;
    deps.metrics
        .document_load_duration
        .observe(started.elapsed().as_secs_f64());
    let exit = match loaded {
        Ok(stored) if is_yjs(&id) => {
            crate::yjs::run(Arc::clone(&id), deps, stored, &mut rx, own).await
        }
        Ok(stored) => {
            // Users the previous owner had (failover, drain), before any join is served.
            let restored = deps.presence.restore(&id).await;
            let mut document = Document::new(Arc::clone(&id), deps, stored, own);
            document.restore_presence(restored);
            debug!(document = %id, revision = document.committed, "loaded");
            let exit = document.serve(&mut rx).await;
            let unload = info_span!(parent: None, "unload", document = %id, reason = exit.reason());
            document.finish(&exit).instrument(unload).await;
            exit
        }
        Err(error) => {
            warn!(document = %id, %error, "load failed");
            Exit::Failed(error.to_string())
        }
    };
    registry.remove(&id, generation);
    rx.close();
    // Whatever reached the mailbox after the actor decided to stop is answered, so callers
    // look the document up again instead of waiting forever.
    let refusal = match &exit {
        Exit::Failed(message) => JoinRefused::Unavailable(message.clone()),
        _ => JoinRefused::Retry,
    };
    while let Some(command) = rx.recv().await {
        match *command {
            Command::Join(join) => {
                let _ = join.reply.send(Err(refusal.clone()));
            }
            Command::Text { reply } => {
                let _ = reply.send(Err(refusal.clone()));
            }
            _ => {}
        }
    }
}

impl Document {
    /// The actor's loop: commands, commit results and the timers.
    pub(super) async fn serve(&mut self, rx: &mut mpsc::Receiver<Mail>) -> Exit {
        let mut inflight: Option<Inflight> = None;
        loop {
            if inflight.is_none() && self.head > self.committed {
                gather(
                    rx,
                    self,
                    |d| !d.stopping && !d.pending_full(),
                    |d, mail| d.handle(*mail),
                )
                .await;
            }
            if inflight.is_none() {
                inflight = self.start_commit().await;
            }
            if self.stopping && inflight.is_none() {
                return if self.moving {
                    Exit::Moved
                } else {
                    Exit::Shutdown
                };
            }
            // Idle since the moment the last client left and nothing was pending: a
            // deadline, not a sleep restarted on every pass (heartbeats and other timers
            // wake the loop far more often than IDLE_UNLOAD_SECS).
            let idle = self.connections.is_empty() && inflight.is_none();
            let idle_since = match (idle, self.idle_since) {
                (false, _) => None,
                (true, Some(since)) => Some(since),
                (true, None) => Some(tokio::time::Instant::now()),
            };
            self.idle_since = idle_since;
            let unload_at = idle_since.map(|since| since + self.deps.config.idle_unload());
            let catch_up = self.catch_up_deadline();
            let accepting = !self.pending_full();
            if !accepting && !self.holding {
                self.deps.metrics.pending_limit_hits.inc();
                warn!(document = %self.id, pending = self.head - self.committed, "uncommitted edits at their limit; holding commands");
            }
            self.holding = !accepting;
            tokio::select! {
                result = wait_commit(&mut inflight) => {
                    let done = inflight.take();
                    match result {
                        Ok(()) => {
                            if let Some(done) = done {
                                self.committed_through(done.upto, done.language);
                            }
                        }
                        Err(StoreError::Conflict { .. }) => return Exit::Stale,
                        Err(error) => return Exit::Failed(error.to_string()),
                    }
                }
                // While uncommitted edits are at their limit, commands wait in the mailbox
                // and, as it fills, in the clients' streams: backpressure, not memory.
                command = rx.recv(), if accepting => match command {
                    Some(command) => self.handle(*command),
                    None => return Exit::Shutdown,
                },
                _ = tokio::time::sleep_until(unload_at.unwrap_or_else(tokio::time::Instant::now)),
                    if unload_at.is_some() => return Exit::Idle,
                _ = tokio::time::sleep_until(self.presence_deadline()) => self.presence_tick(),
                _ = tokio::time::sleep_until(catch_up.unwrap_or_else(tokio::time::Instant::now)),
                    if catch_up.is_some() => self.catch_up_lagging(),
            }
        }
    }

    /// Last words: snapshot what is durable and close every connection.
    pub(super) async fn finish(&mut self, exit: &Exit) {
        let (code, message) = farewell(exit);
        note_exit(&self.deps, &self.id, exit).await;
        // Clients of a document that moves (or of a draining docnode) can be carried over to
        // the new owner by their gateway without closing their sockets.
        let reroute = reroutes(exit);
        let ids: Vec<ConnId> = self.connections.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.remove_connection(id) {
                if reroute {
                    c.outbox.reroute(code, message.clone());
                } else {
                    c.outbox.close(code, message.clone());
                }
            }
        }
        self.deps
            .metrics
            .history_bytes
            .sub(self.history_bytes as i64);
        self.history_bytes = 0;
        if matches!(exit, Exit::Idle | Exit::Shutdown | Exit::Moved)
            && self.committed > self.last_snapshot
        {
            let snapshot = self.snapshot();
            let store = Arc::clone(&self.deps.store);
            let write = store.write_snapshot(snapshot);
            match tokio::time::timeout(Duration::from_secs(5), write).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(%error, "final snapshot failed"),
                Err(_) => warn!("final snapshot timed out"),
            }
        }
    }
}

/// The close code and reason an actor's clients get when it stops for `exit`.
pub(crate) fn farewell(exit: &Exit) -> (u16, String) {
    match exit {
        Exit::Idle => (
            close::UNAVAILABLE,
            "document unloaded; reconnect".to_owned(),
        ),
        Exit::Shutdown => (
            close::UNAVAILABLE,
            "server is restarting; reconnect".to_owned(),
        ),
        Exit::Moved | Exit::Stale => (
            close::UNAVAILABLE,
            "document moved to another server; reconnect".to_owned(),
        ),
        Exit::Failed(error) => (
            close::UNAVAILABLE,
            format!("storage failed ({error}); reconnect"),
        ),
    }
}

/// Whether an actor stopping for `exit` lets its clients' gateways carry them over to the
/// new owner without closing their sockets (a move, or a draining docnode).
pub(crate) fn reroutes(exit: &Exit) -> bool {
    matches!(exit, Exit::Shutdown | Exit::Moved | Exit::Stale)
}

/// Logs and counts why an actor stopped; after a fencing, remembers the winner so this
/// docnode's clients are sent there instead of taking the lease back.
pub(crate) async fn note_exit(deps: &Deps, id: &str, exit: &Exit) {
    match exit {
        Exit::Failed(error) => warn!(document = %id, %error, "document stopped"),
        Exit::Stale => {
            deps.metrics
                .ownership_moves
                .with_label_values(&[MOVE_FENCED])
                .inc();
            info!(document = %id, "another docnode took this document; unloading");
            if let Ok(Some(owner)) = deps.store.lease_owner(id).await {
                deps.ownership.lost_to(id, Member::parse(&owner));
            }
        }
        Exit::Moved => {
            deps.metrics
                .ownership_moves
                .with_label_values(&[MOVE_RELEASED])
                .inc();
            info!(document = %id, "document moved to its new owner");
        }
        _ => debug!(document = %id, "document unloaded"),
    }
}

/// Waits for the in-flight commit, or forever when there is none.
async fn wait_commit(inflight: &mut Option<Inflight>) -> Result<(), StoreError> {
    match inflight {
        Some(inflight) => wait_result(&mut inflight.result).await,
        None => std::future::pending().await,
    }
}

/// Waits for a commit's result; a committer that stopped answers unavailable.
pub(crate) async fn wait_result(result: &mut CommitResult) -> Result<(), StoreError> {
    match result.await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable("the committer stopped".into())),
    }
}
