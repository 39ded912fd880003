//! The actor's mailbox: the commands a document actor takes, and the cloneable
//! [`DocumentHandle`] that sends them over a bounded channel (where backpressure reaches the
//! gateway), plus [`spawn`], which starts an actor that loads itself.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::Span;

use super::pb;
use crate::{
    commit::Committer,
    config::DocnodeConfig,
    connection::{ConnId, Inbox},
    metrics::DocnodeMetrics,
    ownership::Ownership,
    registry::Registry,
    store::{LoggedOp, Store, StoreError},
};

/// A message to a document actor.
pub enum Command {
    /// A client joins.
    Join(Join),
    /// A client's edit.
    Edit {
        /// The sending connection.
        conn: ConnId,
        /// The edit as the gateway parsed it.
        edit: pb::Edit,
    },
    /// A client sets the document's language.
    SetLanguage {
        /// The sending connection.
        conn: ConnId,
        /// The new language.
        language: String,
    },
    /// A client's name and colour.
    ClientInfo {
        /// The sending connection.
        conn: ConnId,
        /// Name and hue.
        info: pb::ClientInfo,
    },
    /// A client's cursors and selections.
    CursorData {
        /// The sending connection.
        conn: ConnId,
        /// Cursor positions.
        data: pb::CursorData,
    },
    /// A y-websocket message from a client of a Yjs document (see `crate::yjs`).
    Yjs {
        /// The sending connection.
        conn: ConnId,
        /// The message as the client sent it.
        message: bytes::Bytes,
    },
    /// A client protects the document with a one-time password, or removes it.
    SetOtp {
        /// The sending connection.
        conn: ConnId,
        /// The new password; `None` removes protection.
        otp: Option<String>,
    },
    /// The store answered a password change.
    OtpStored {
        /// The password written.
        otp: Option<String>,
        /// Whether it was written.
        result: Result<(), StoreError>,
    },
    /// Whether `otp` opens the document.
    CheckOtp {
        /// The password a client gave.
        otp: Option<String>,
        /// The answer.
        reply: oneshot::Sender<bool>,
    },
    /// A client's stream ended.
    Leave {
        /// The connection that ended.
        conn: ConnId,
    },
    /// The committed text, for `GET /api/text`.
    Text {
        /// Where to send it.
        reply: oneshot::Sender<Result<String, JoinRefused>>,
    },
    /// A client's committed sequence number read from the store; the join it was read for
    /// follows.
    Marks {
        /// The highest committed seq the store has for the client, or why the read failed
        /// (the join is then closed with 4503).
        seq: Result<u64, StoreError>,
        /// The waiting join.
        join: Join,
    },
    /// Committed ops read back from the store for a client resuming from before the
    /// history window; the join it was read for follows.
    Backfill {
        /// Log revision of the first op.
        from: u64,
        /// The ops, in order (empty if the read failed).
        ops: Vec<LoggedOp>,
        /// The waiting join.
        join: Join,
    },
    /// Make the text `text` by one new edit (see `document/restore.rs`).
    Restore {
        /// The text of the revision restored.
        text: String,
        /// `restore-<idempotency key>`: the exactly-once id of the restore edit.
        client_id: String,
        /// The committed seq the store has for that id (1 if this restore was committed).
        stored_seq: u64,
        /// Answered once the edit is committed.
        reply: super::restore::RestoreReply,
    },
    /// Commit what is pending, close every connection and stop.
    Shutdown,
    /// The actor's bookkeeping, for the model test's oracle.
    #[cfg(test)]
    Inspect {
        /// Where to send it.
        reply: oneshot::Sender<super::Inspection>,
    },
    /// Like shutdown, because another docnode owns the document now: clients are told it
    /// moved and reconnect to the new owner.
    Release,
}

/// A client's request to join.
pub struct Join {
    /// The new connection's id.
    pub conn: ConnId,
    /// The client's exactly-once id, if it sent one.
    pub client_id: Option<String>,
    /// The log revision the client holds, if it asked to resume.
    pub resume: Option<u64>,
    /// The client's highest committed sequence number as the store knows it.
    /// The client's highest committed sequence number, once the actor has looked it up
    /// (`None` until then; the actor reads it from the store after its own load, so a
    /// previous owner's late commit cannot slip past it).
    pub last_seq: Option<u64>,
    /// The one-time password the client gave, if any.
    pub otp: Option<String>,
    /// The user id the client had on the docnode it is moving from, if any.
    pub user_id: Option<u64>,
    /// The gateway made the client id up: the client never resumes by itself.
    pub made_up_client_id: bool,
    /// Where the actor answers: the connection's frame queue, or why it cannot join.
    pub reply: oneshot::Sender<Result<Inbox, JoinRefused>>,
}

/// Why a join (or a text request) was not served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JoinRefused {
    /// The actor is stopping; look the document up again.
    #[error("document is being unloaded; retry")]
    Retry,
    /// The document could not be loaded.
    #[error("{0}")]
    Unavailable(String),
}

/// A cloneable handle to a document actor.
#[derive(Clone)]
pub struct DocumentHandle {
    id: Arc<str>,
    generation: u64,
    tx: mpsc::Sender<Mail>,
}

impl DocumentHandle {
    /// The document's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which incarnation of the document's actor this is.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sends a command, waiting for room (this is where backpressure reaches the gateway).
    /// Fails only if the actor has stopped.
    pub async fn send(&self, command: Command) -> Result<(), Command> {
        self.tx.send(Box::new(command)).await.map_err(|e| *e.0)
    }

    /// Queues a command if the mailbox has room now; whether it was queued.
    pub fn try_send(&self, command: Command) -> bool {
        self.tx.try_send(Box::new(command)).is_ok()
    }

    /// Resolves when the actor has stopped.
    pub async fn stopped(&self) {
        self.tx.closed().await
    }
}

/// What an actor needs from the docnode around it.
#[derive(Clone)]
pub struct Deps {
    /// Durable storage.
    pub store: Arc<dyn Store>,
    /// The group committer.
    pub committer: Committer,
    /// Settings.
    pub config: Arc<DocnodeConfig>,
    /// Who owns what, by this docnode's view.
    pub ownership: Arc<Ownership>,
    /// Prometheus series.
    pub metrics: Arc<DocnodeMetrics>,
    /// Where presence changes are published (Redis), or nowhere in standalone mode.
    pub presence: crate::presence::Presence,
}

/// What a mailbox holds. Boxed: a channel allocates its slots 32 at a time, and 32 whole
/// commands (an edit with its trace context is the largest) were ~5 KiB of every loaded
/// document's memory, idle or not (BENCHMARKS.md, "100,000 loaded idle documents").
pub(crate) type Mail = Box<Command>;

/// Before an actor with edits waiting and no commit in flight starts one: lets the tasks
/// already runnable go first (other clients' edits on their way to this mailbox), then hands
/// `actor` whatever waits in the mailbox while `more` says it takes more. Under load the
/// commit, and so its fan-out (one write to every client), then carries several edits where
/// it carried one or two: with 100 documents × 4 typists on one core, sends per edit fell
/// from ~2.0 to ~1.4 (BENCHMARKS.md, "Edits gathered before a commit"). Idle, it costs one
/// trip through the scheduler.
pub(crate) async fn gather<A>(
    rx: &mut mpsc::Receiver<Mail>,
    actor: &mut A,
    more: impl Fn(&A) -> bool,
    handle: impl Fn(&mut A, Mail),
) {
    tokio::task::yield_now().await;
    while more(actor) {
        match rx.try_recv() {
            Ok(mail) => handle(actor, mail),
            Err(_) => break,
        }
    }
}

/// Starts the actor of document `id`; it loads itself, so this returns at once.
pub(crate) fn spawn(
    id: Arc<str>,
    generation: u64,
    deps: Deps,
    registry: Arc<Registry>,
) -> DocumentHandle {
    let (tx, rx) = mpsc::channel(1024);
    let own = tx.downgrade();
    let handle = DocumentHandle {
        id: Arc::clone(&id),
        generation,
        tx,
    };
    // The load belongs to the trace of whoever made the document load (a join, usually).
    let cause = Span::current();
    tokio::spawn(super::lifecycle::run(
        id, generation, deps, registry, rx, own, cause,
    ));
    handle
}
