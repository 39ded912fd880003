//! The document actor: one task per loaded document that alone owns its state.
//!
//! Nothing outside this task touches a document's text, revision, history, users or cursors;
//! everything reaches it as a [`Command`] on a bounded channel through a [`DocumentHandle`].
//!
//! The life of an edit inside the actor:
//!
//! 1. It is transformed against every entry since the revision the client based it on, and
//!    gets the next revision at once (`head`), so later edits transform against it.
//! 2. It waits in the history as *pending* until the group committer reports its transaction
//!    committed; the actor keeps accepting edits meanwhile, with one commit in flight.
//! 3. Only then is it applied to the committed text (a rope), moved through every cursor, and
//!    sent to every client, its author included. Joiners always get committed text, so no
//!    client ever sees an op that is not durable. A client whose queue is full is skipped
//!    and caught up later in one compacted frame (see `document/catch_up.rs`).
//!
//! If a commit fails the actor ends: its clients are told to reconnect (code 4503), the next
//! join reloads the document from the store, and clients re-send what was not acknowledged.
//!
//! Tracing: each edit gets a `docnode.edit` span, a child of the gateway's span for it (the
//! trace context rides in the `Edit` frame). It lives from arrival until the edit is fanned
//! out, so its trace shows the wait for the group commit, with `transform` and `fanout`
//! children; loading is a `load` span under the join that caused it, and stopping an
//! `unload` span whose `reason` tells an ownership move (`moved`, `stale`) from the rest.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use codraft_common::membership::Member;
use codraft_common::telemetry;
use codraft_ot::Operation;
use codraft_proto as pb;
use pb::server_frame::Kind;
use rand::Rng;
use ropey::Rope;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, info_span, warn, Instrument, Span};

mod catch_up;
mod presence;

use crate::{
    commit::{CommitResult, Committer},
    config::DocnodeConfig,
    connection::{ConnId, Inbox, Numbering, Origin, Outbox, SendFailure},
    metrics::{DocnodeMetrics, MOVE_FENCED, MOVE_RELEASED},
    ownership::Ownership,
    registry::Registry,
    store::{DocumentCommit, LoggedOp, Snapshot, Store, StoreError, StoredDocument},
    wire,
};

/// Close codes sent to clients; the table lives in docs/protocol.md.
pub mod close {
    /// The operation does not fit the document.
    pub const BAD_OPERATION: u32 = 4409;
    /// The edit's revision is older than the history kept.
    pub const REVISION_TOO_OLD: u32 = 4410;
    /// The edit would make the document too large.
    pub const TOO_LARGE: u32 = 4413;
    /// The edit's revision is from the future.
    pub const REVISION_FROM_FUTURE: u32 = 4416;
    /// Too many clients on the document (or too many messages).
    pub const TOO_MANY: u32 = 4429;
    /// The document is protected and the password is missing or wrong.
    pub const UNAUTHORIZED: u32 = 4401;
    /// The document is moving or storage failed; reconnect.
    pub const UNAVAILABLE: u32 = 4503;
    /// The client did not keep up.
    pub const TOO_SLOW: u32 = 4508;
}

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
    /// Commit what is pending, close every connection and stop.
    Shutdown,
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
    pub last_seq: u64,
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
    tx: mpsc::Sender<Command>,
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
        self.tx.send(command).await.map_err(|e| e.0)
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
    tokio::spawn(run(id, generation, deps, registry, rx, own, cause));
    handle
}

/// One history entry: an op that takes the document from one revision to the next.
struct Entry {
    author: u64,
    operation: Operation,
    client_id: Option<String>,
    seq: Option<u64>,
    /// The edit's span while it is pending; ended once the edit is fanned out.
    span: Option<Span>,
}

impl Entry {
    fn to_proto(&self) -> pb::HistoryEntry {
        pb::HistoryEntry {
            user_id: self.author,
            operation: Some(wire::operation_to_proto(&self.operation)),
            client_id: self.client_id.clone(),
            seq: self.seq,
        }
    }
}

/// A connected client.
struct Connection {
    user_id: u64,
    client_id: Option<String>,
    /// The client resumes by itself after a reconnect, counting History entries (it sent its
    /// own client id), so a catch-up must keep one entry per log revision.
    resumes_itself: bool,
    outbox: Outbox,
    numbering: Numbering,
    /// History entries sent on this connection: the highest revision the client may use.
    sent: u64,
    info: Option<pb::ClientInfo>,
    cursor: Option<pb::CursorData>,
    /// Set while its queue is too full to take fan-out (see `document/catch_up.rs`).
    lagging: Option<catch_up::Lagging>,
}

/// A commit in flight: its result, and the head revision it will make committed.
struct Inflight {
    result: CommitResult,
    upto: u64,
    language: Option<String>,
}

/// Why the actor's loop ended.
enum Exit {
    Idle,
    Shutdown,
    Moved,
    Failed(String),
    Stale,
}

impl Exit {
    /// A short name for spans and logs.
    fn reason(&self) -> &'static str {
        match self {
            Exit::Idle => "idle",
            Exit::Shutdown => "shutdown",
            Exit::Moved => "moved",
            Exit::Failed(_) => "failed",
            Exit::Stale => "stale",
        }
    }
}

/// The state only the actor touches.
struct Document {
    id: Arc<str>,
    deps: Deps,
    /// The text at `committed`.
    text: Rope,
    /// Revision of `text`: every entry below it is durable.
    committed: u64,
    /// Next revision to assign; entries `committed..head` are pending.
    head: u64,
    /// Length of the document at `head`, in code points.
    head_len: u64,
    /// Entries for revisions `history_start..head`.
    history: VecDeque<Entry>,
    history_start: u64,
    language: Option<String>,
    /// A language change waiting for the next commit.
    pending_language: Option<String>,
    connections: HashMap<ConnId, Connection>,
    /// Highest seq assigned a revision per client id: what resubmission is checked against.
    assigned_seqs: HashMap<String, u64>,
    /// Highest committed seq per client id that joined here.
    committed_seqs: HashMap<String, u64>,
    last_snapshot: u64,
    stopping: bool,
    /// The ownership epoch taken at load; every commit carries it.
    epoch: u64,
    /// Stopping because the document moved to another docnode.
    moving: bool,
    /// The one-time password protecting the document, if any.
    otp: Option<String>,
    /// This actor's own mailbox (weak, so it does not keep the actor alive), for results of
    /// work it hands to other tasks.
    own: mpsc::WeakSender<Command>,
    /// Restored users, cursor coalescing and heartbeats (see `document/presence.rs`).
    presence: presence::PresenceState,
    /// When lagging connections are next checked for room; `None` while none lags.
    catch_up_at: Option<tokio::time::Instant>,
}

async fn run(
    id: Arc<str>,
    generation: u64,
    deps: Deps,
    registry: Arc<Registry>,
    mut rx: mpsc::Receiver<Command>,
    own: mpsc::WeakSender<Command>,
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
        match command {
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
    fn new(
        id: Arc<str>,
        deps: Deps,
        stored: StoredDocument,
        own: mpsc::WeakSender<Command>,
    ) -> Self {
        let text = Rope::from_str(&stored.text);
        let head_len = text.len_chars() as u64;
        let deps_presence_ttl = deps.presence.ttl();
        Self {
            id,
            deps,
            text,
            committed: stored.revision,
            head: stored.revision,
            head_len,
            history: VecDeque::new(),
            history_start: stored.revision,
            language: stored.language,
            pending_language: None,
            connections: HashMap::new(),
            assigned_seqs: HashMap::new(),
            committed_seqs: HashMap::new(),
            last_snapshot: stored.revision,
            stopping: false,
            epoch: stored.epoch,
            moving: false,
            otp: stored.otp,
            own,
            presence: presence::PresenceState::new(deps_presence_ttl),
            catch_up_at: None,
        }
    }

    /// The actor's loop: commands, commit results and the idle timer.
    async fn serve(&mut self, rx: &mut mpsc::Receiver<Command>) -> Exit {
        let mut inflight: Option<Inflight> = None;
        loop {
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
            let idle = self.connections.is_empty() && inflight.is_none();
            let idle_timeout = self.deps.config.idle_unload();
            let catch_up = self.catch_up_deadline();
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
                command = rx.recv() => match command {
                    Some(command) => self.handle(command),
                    None => return Exit::Shutdown,
                },
                _ = tokio::time::sleep(idle_timeout), if idle => return Exit::Idle,
                _ = tokio::time::sleep_until(self.presence_deadline()) => self.presence_tick(),
                _ = tokio::time::sleep_until(catch_up.unwrap_or_else(tokio::time::Instant::now)),
                    if catch_up.is_some() => self.catch_up_lagging(),
            }
        }
    }

    /// Submits pending entries (and a pending language) for commit, if there are any.
    async fn start_commit(&mut self) -> Option<Inflight> {
        if self.head == self.committed && self.pending_language.is_none() {
            return None;
        }
        let pending = (self.committed - self.history_start) as usize;
        let ops = self
            .history
            .iter()
            .skip(pending)
            .zip(self.committed..)
            .map(|(entry, revision)| LoggedOp {
                revision,
                operation: entry.operation.clone(),
                author: entry.author,
                client_id: entry.client_id.clone(),
                seq: entry.seq,
            })
            .collect();
        let links = self
            .history
            .iter()
            .skip(pending)
            .filter_map(|entry| entry.span.as_ref().and_then(telemetry::link_to))
            .collect();
        let language = self.pending_language.take();
        let result = self
            .deps
            .committer
            .submit(
                DocumentCommit {
                    document: Arc::clone(&self.id),
                    base_revision: self.committed,
                    epoch: self.epoch,
                    ops,
                    language: language.clone(),
                },
                links,
            )
            .await;
        Some(Inflight {
            result,
            upto: self.head,
            language,
        })
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Join(join) => self.join(join),
            Command::Edit { conn, edit } => self.edit(conn, edit),
            Command::SetLanguage { conn, language } => {
                if self.connections.contains_key(&conn) && !self.stopping {
                    self.pending_language = Some(language);
                }
            }
            Command::ClientInfo { conn, info } => {
                let Some(c) = self.connections.get_mut(&conn) else {
                    return;
                };
                c.info = Some(info.clone());
                let user_id = c.user_id;
                self.broadcast(|_| {
                    Kind::UserInfo(pb::UserInfo {
                        user_id,
                        info: Some(info.clone()),
                    })
                });
                self.presence_info_changed(conn);
            }
            // Coalesced per user: see `document/presence.rs`.
            Command::CursorData { conn, data } => self.cursor_moved(conn, data),
            Command::SetOtp { conn, otp } => self.set_otp(conn, otp),
            Command::OtpStored { otp, result } => match result {
                Ok(()) => {
                    self.otp = otp.clone();
                    self.broadcast(|_| Kind::Otp(pb::Otp { otp: otp.clone() }));
                }
                Err(error) => warn!(document = %self.id, %error, "could not store the password"),
            },
            Command::CheckOtp { otp, reply } => {
                let _ = reply.send(otp_matches(self.otp.as_deref(), otp.as_deref()));
            }
            Command::Leave { conn } => self.leave(conn),
            Command::Text { reply } => {
                let _ = reply.send(Ok(self.text.to_string()));
            }
            Command::Backfill { from, ops, join } => self.backfill(from, ops, join),
            Command::Shutdown => self.stopping = true,
            Command::Release => {
                self.stopping = true;
                self.moving = true;
            }
        }
    }

    fn join(&mut self, mut join: Join) {
        if self.stopping {
            let _ = join.reply.send(Err(JoinRefused::Retry));
            return;
        }
        if let Some(from) = join.resume.filter(|_| join.client_id.is_some()) {
            let behind = self.history_start.saturating_sub(from);
            let limit = 4 * self.deps.config.history_window as u64;
            if from < self.history_start && from <= self.committed && behind <= limit {
                // Older than the window (e.g. the document just moved here): read what the
                // client missed from the op log without blocking the actor, then join.
                self.request_backfill(from, join);
                return;
            }
            if from < self.history_start {
                // Too far behind to replay: a fresh join (Joined.resumed = false).
                join.resume = None;
            }
        }
        if !otp_matches(self.otp.as_deref(), join.otp.as_deref()) {
            let (outbox, inbox) = Outbox::new(2);
            outbox.close(
                close::UNAUTHORIZED,
                "this document is protected: open it with the right ?otp=",
            );
            let _ = join.reply.send(Ok(inbox));
            return;
        }
        if self.connections.len() >= self.deps.config.max_connections_per_document {
            let (outbox, inbox) = Outbox::new(2);
            outbox.close(
                close::TOO_MANY,
                format!(
                    "document has {} clients, its limit; try again later",
                    self.connections.len()
                ),
            );
            let _ = join.reply.send(Ok(inbox));
            return;
        }
        // A client coming back to a restored entry keeps its user id: others see no change.
        let takeover = self.take_restored(join.client_id.as_deref());
        // A connection a gateway moves here keeps the user id it had, unless it is taken.
        let kept = join
            .user_id
            .filter(|&id| id > 0 && self.connections.values().all(|c| c.user_id != id));
        let user_id = kept
            .or(takeover.as_ref().map(|r| r.user_id))
            .unwrap_or_else(|| rand::rng().random_range(1..(1u64 << 53)));
        let last_seq = match &join.client_id {
            Some(client) => {
                let committed = self.committed_seqs.entry(client.clone()).or_default();
                *committed = (*committed).max(join.last_seq);
                let committed = *committed;
                let assigned = self.assigned_seqs.entry(client.clone()).or_default();
                *assigned = (*assigned).max(committed);
                committed
            }
            None => 0,
        };
        let resume_from = join
            .resume
            .filter(|_| join.client_id.is_some())
            .filter(|&from| from >= self.history_start && from <= self.committed);
        let (numbering, entries) = match resume_from {
            Some(from) => {
                let skip = (from - self.history_start) as usize;
                let count = (self.committed - from) as usize;
                let entries: Vec<_> = self
                    .history
                    .iter()
                    .skip(skip)
                    .take(count)
                    .map(Entry::to_proto)
                    .collect();
                (Numbering::new(Origin::Resumed { from }), entries)
            }
            None => {
                let snapshot = pb::HistoryEntry {
                    user_id: 0,
                    operation: Some(wire::operation_to_proto(&Operation::insert_text(
                        &self.text.to_string(),
                    ))),
                    client_id: None,
                    seq: None,
                };
                let numbering = Numbering::new(Origin::Snapshot {
                    joined_at: self.committed,
                    length: self.text.len_chars() as u64,
                });
                (numbering, vec![snapshot])
            }
        };
        // Room for the whole join burst (one UserInfo and one UserCursor per user) on top of
        // the steady-state allowance, so a join into a crowded document is never "too slow".
        let capacity = self.deps.config.client_queue
            + 2 * self.connections.len()
            + self.restored_frames_len()
            + 8;
        let (outbox, inbox) = Outbox::new(capacity);
        let mut frames = vec![Kind::Identity(pb::Identity { user_id })];
        if join.client_id.is_some() {
            frames.push(Kind::Joined(pb::Joined {
                revision: match numbering.origin {
                    Origin::Snapshot { joined_at, .. } => joined_at,
                    Origin::Resumed { from } => from,
                },
                resumed: matches!(numbering.origin, Origin::Resumed { .. }),
                last_seq,
            }));
        }
        let sent = entries.len() as u64;
        frames.push(Kind::History(pb::History {
            start: 0,
            entries,
            compacted: false,
            log_revision: None,
        }));
        if let Some(language) = &self.language {
            frames.push(Kind::Language(pb::Language {
                language: language.clone(),
            }));
        }
        for other in self.connections.values() {
            if let Some(info) = &other.info {
                frames.push(Kind::UserInfo(pb::UserInfo {
                    user_id: other.user_id,
                    info: Some(info.clone()),
                }));
            }
        }
        for other in self.connections.values() {
            if let Some(data) = &other.cursor {
                frames.push(Kind::UserCursor(pb::UserCursor {
                    user_id: other.user_id,
                    data: Some(data.clone()),
                }));
            }
        }
        self.restored_frames(&mut frames);
        for frame in frames {
            if outbox.send(frame).is_err() {
                let _ = join.reply.send(Err(JoinRefused::Retry));
                return;
            }
        }
        if join.reply.send(Ok(inbox)).is_err() {
            return;
        }
        self.connections.insert(
            join.conn,
            Connection {
                user_id,
                resumes_itself: join.client_id.is_some() && !join.made_up_client_id,
                client_id: join.client_id,
                outbox,
                numbering,
                sent,
                info: None,
                cursor: None,
                lagging: None,
            },
        );
        self.presence_joined(join.conn, takeover);
    }

    /// Writes a password change to the store off the actor; it takes effect (and clients
    /// hear of it) only once stored.
    fn set_otp(&mut self, conn: ConnId, otp: Option<String>) {
        if self.stopping || !self.connections.contains_key(&conn) {
            return;
        }
        let (store, id, epoch) = (
            Arc::clone(&self.deps.store),
            Arc::clone(&self.id),
            self.epoch,
        );
        let own = self.own.clone();
        tokio::spawn(async move {
            let result = store.set_otp(&id, epoch, otp.clone()).await;
            if let Some(actor) = own.upgrade() {
                let _ = actor.send(Command::OtpStored { otp, result }).await;
            }
        });
    }

    fn request_backfill(&mut self, from: u64, join: Join) {
        let (store, id, to) = (
            Arc::clone(&self.deps.store),
            Arc::clone(&self.id),
            self.history_start,
        );
        let own = self.own.clone();
        tokio::spawn(async move {
            let ops = match store.read_log(&id, from, to).await {
                Ok(ops) => ops,
                Err(error) => {
                    warn!(document = %id, %error, "could not read the op log for a resuming client");
                    Vec::new()
                }
            };
            if let Some(actor) = own.upgrade() {
                let _ = actor.send(Command::Backfill { from, ops, join }).await;
            }
        });
    }

    /// Puts ops read from the log in front of the history window, if they still join up with
    /// it, and lets the waiting client join.
    fn backfill(&mut self, from: u64, mut ops: Vec<LoggedOp>, mut join: Join) {
        if from < self.history_start {
            // Another resuming client's backfill may have extended the window meanwhile:
            // only the part below the current start is needed.
            let needed = (self.history_start - from) as usize;
            let usable = ops.len() >= needed
                && ops[..needed]
                    .iter()
                    .zip(from..)
                    .all(|(op, rev)| op.revision == rev);
            debug!(document = %self.id, from, read = ops.len(), needed, usable, "backfill for a resuming client");
            if usable {
                ops.truncate(needed);
                for op in ops.into_iter().rev() {
                    self.history.push_front(Entry {
                        author: op.author,
                        operation: op.operation,
                        client_id: op.client_id,
                        seq: op.seq,
                        span: None,
                    });
                }
                self.history_start = from;
            } else {
                // The log no longer has it (compacted): a fresh join.
                join.resume = None;
            }
        }
        self.join(join);
    }

    fn edit(&mut self, conn: ConnId, edit: pb::Edit) {
        self.deps.metrics.edits_received.inc();
        // A child of the gateway's span for this edit, whose context the frame carries. Only
        // built when traces are exported: per edit, a span costs more than the transform.
        let span = if telemetry::traces_enabled() {
            info_span!(
                parent: None,
                "docnode.edit",
                otel.kind = "server",
                document = %self.id,
                conn,
                seq = edit.seq,
                revision = tracing::field::Empty,
            )
        } else {
            Span::none()
        };
        telemetry::set_remote_parent(&span, &edit.trace_context);
        let _entered = span.enter();
        if self.stopping {
            // Not assigned, so not acknowledged: the client re-sends it after reconnecting.
            return;
        }
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        if let (Some(client), Some(seq)) = (&c.client_id, edit.seq) {
            if seq <= self.assigned_seqs.get(client).copied().unwrap_or(0) {
                self.deps.metrics.edits_duplicate.inc();
                debug!(document = %self.id, client, seq, "duplicate edit ignored");
                return;
            }
        }
        let transformed = if span.is_none() {
            self.transform_edit(c, &edit)
        } else {
            info_span!("transform").in_scope(|| self.transform_edit(c, &edit))
        };
        match transformed {
            Ok(operation) => {
                let (author, client_id) = (c.user_id, c.client_id.clone());
                if let (Some(client), Some(seq)) = (&client_id, edit.seq) {
                    self.assigned_seqs.insert(client.clone(), seq);
                }
                span.record("revision", self.head);
                self.head_len = operation.target_len();
                self.head += 1;
                self.history.push_back(Entry {
                    author,
                    operation,
                    client_id,
                    seq: edit.seq,
                    span: (!span.is_none()).then(|| span.clone()),
                });
                if let Some(c) = self.connections.get_mut(&conn) {
                    c.edited();
                }
            }
            Err((code, message)) => {
                self.deps
                    .metrics
                    .edits_rejected
                    .with_label_values(&[code.to_string().as_str()])
                    .inc();
                debug!(document = %self.id, code, %message, "edit refused");
                self.close(conn, code, message);
            }
        }
    }

    /// Brings a client's edit up to `head`, or says why it cannot be.
    fn transform_edit(&self, c: &Connection, edit: &pb::Edit) -> Result<Operation, (u32, String)> {
        let bad =
            |e: codraft_ot::OtError| (close::BAD_OPERATION, format!("invalid operation: {e}"));
        let raw = edit.operation.clone().unwrap_or_default();
        let mut operation = wire::operation_from_proto(&raw).map_err(bad)?;
        if edit.revision > c.sent {
            return Err((
                close::REVISION_FROM_FUTURE,
                format!(
                    "revision {} is ahead of this connection's latest revision {}",
                    edit.revision, c.sent
                ),
            ));
        }
        let base = match (c.numbering.log_revision(edit.revision), c.numbering.origin) {
            (Some(base), _) => base,
            (None, Origin::Snapshot { joined_at, length }) => {
                // Based on the empty document before the join snapshot: it can only insert,
                // and the snapshot (which reached the server first) ends up after it.
                if operation.base_len() != 0 {
                    return Err(bad(codraft_ot::OtError::BaseLengthMismatch {
                        expected: operation.base_len(),
                        actual: 0,
                    }));
                }
                let mut rebased = Operation::new();
                for part in operation.components() {
                    if let codraft_ot::Component::Insert(s) = part {
                        rebased.insert(s);
                    }
                }
                rebased.retain(length);
                operation = rebased;
                joined_at
            }
            (None, Origin::Resumed { from }) => from,
        };
        if base < self.history_start {
            return Err((
                close::REVISION_TOO_OLD,
                format!(
                    "revision {} is older than the history this server keeps; reconnect",
                    edit.revision
                ),
            ));
        }
        let skip = (base - self.history_start) as usize;
        for entry in self.history.iter().skip(skip) {
            operation = operation.transform(&entry.operation).map_err(bad)?.0;
        }
        if operation.base_len() != self.head_len {
            return Err(bad(codraft_ot::OtError::BaseLengthMismatch {
                expected: operation.base_len(),
                actual: self.head_len,
            }));
        }
        let max = self.deps.config.max_document_chars();
        if operation.target_len() > max {
            return Err((
                close::TOO_LARGE,
                format!("the document would exceed its limit of {max} characters"),
            ));
        }
        Ok(operation)
    }

    /// A commit returned: apply what it made durable, move cursors, and tell every client.
    fn committed_through(&mut self, upto: u64, language: Option<String>) {
        // Where a connection that cannot take this fan-out starts lagging.
        let (from, from_len) = (self.committed, self.text.len_chars() as u64);
        let first = (self.committed - self.history_start) as usize;
        let count = (upto - self.committed) as usize;
        let mut entries = Vec::with_capacity(count);
        let mut spans = Vec::new();
        for entry in self.history.iter_mut().skip(first).take(count) {
            spans.extend(entry.span.take());
            if let Err(error) = entry.operation.apply(&mut self.text) {
                // Transform checked every base length, so this is a bug; say so loudly rather
                // than serve a text that differs from the log.
                warn!(document = %self.id, %error, "committed op does not apply");
            }
            for c in self.connections.values_mut() {
                if let Some(cursor) = &mut c.cursor {
                    transform_cursor(cursor, &entry.operation);
                }
            }
            for r in self.presence.restored.values_mut() {
                if let Some(cursor) = &mut r.cursor {
                    transform_cursor(cursor, &entry.operation);
                }
            }
            if let (Some(client), Some(seq)) = (&entry.client_id, entry.seq) {
                let mark = self.committed_seqs.entry(client.clone()).or_default();
                *mark = (*mark).max(seq);
            }
            entries.push(entry.to_proto());
        }
        self.committed = upto;
        if count > 0 {
            self.cursors_moved_by_edits();
        }
        self.deps.metrics.edits_committed.inc_by(count as u64);
        // Every edit of the commit gets its own `fanout` child, so each edit's trace ends
        // with the moment it reached the clients' queues.
        let connections = self.connections.len();
        let fanouts: Vec<Span> = spans
            .iter()
            .map(|span| info_span!(parent: span, "fanout", connections))
            .collect();
        if !entries.is_empty() {
            let mut slow = Vec::new();
            for (&id, c) in self.connections.iter_mut() {
                if c.lagging.is_some() {
                    // Its catch-up will carry these entries.
                    continue;
                }
                let frame = Kind::History(pb::History {
                    start: c.sent,
                    entries: entries.clone(),
                    compacted: false,
                    log_revision: None,
                });
                match c.outbox.send(frame) {
                    Ok(()) => c.sent += entries.len() as u64,
                    Err(failure) => slow.push((id, failure)),
                }
            }
            for (id, failure) in slow {
                match failure {
                    SendFailure::Full => self.start_lagging(id, from, from_len),
                    // Its stream ended before its Leave arrived: not a slow client.
                    SendFailure::Gone => self.leave(id),
                }
            }
        }
        drop(fanouts);
        drop(spans);
        if let Some(language) = language {
            self.language = Some(language.clone());
            self.broadcast(|_| {
                Kind::Language(pb::Language {
                    language: language.clone(),
                })
            });
        }
        if self.catch_up_at.is_some() {
            self.catch_up_lagging();
        }
        self.trim_history();
        if self.committed - self.last_snapshot >= self.deps.config.snapshot_every {
            self.snapshot_in_background();
        }
    }

    fn trim_history(&mut self) {
        let keep = self.deps.config.history_window as u64;
        while self.committed - self.history_start > keep {
            self.history.pop_front();
            self.history_start += 1;
        }
    }

    fn snapshot(&mut self) -> Snapshot {
        self.last_snapshot = self.committed;
        Snapshot {
            document: Arc::clone(&self.id),
            revision: self.committed,
            text: self.text.to_string(),
        }
    }

    fn snapshot_in_background(&mut self) {
        let snapshot = self.snapshot();
        let store = Arc::clone(&self.deps.store);
        tokio::spawn(async move {
            if let Err(error) = store.write_snapshot(snapshot).await {
                warn!(%error, "snapshot failed; the op log still has everything");
            }
        });
    }

    /// Takes a connection out of the document, lagging or not.
    fn remove_connection(&mut self, conn: ConnId) -> Option<Connection> {
        let c = self.connections.remove(&conn)?;
        if c.lagging.is_some() {
            self.deps.metrics.lagging_clients.dec();
        }
        // A gateway-made client id lives as long as its connection (a move to another docnode
        // looks it up in the store there): forget its marks once nothing of it is pending.
        if let (Some(client), false) = (&c.client_id, c.resumes_itself) {
            let assigned = self.assigned_seqs.get(client).copied().unwrap_or(0);
            if assigned <= self.committed_seqs.get(client).copied().unwrap_or(0) {
                self.assigned_seqs.remove(client);
                self.committed_seqs.remove(client);
            }
        }
        Some(c)
    }

    fn leave(&mut self, conn: ConnId) {
        if let Some(c) = self.remove_connection(conn) {
            self.presence_gone(conn, &c);
            self.announce_departure(c.user_id);
        }
    }

    fn announce_departure(&mut self, user_id: u64) {
        self.broadcast(|_| {
            Kind::UserInfo(pb::UserInfo {
                user_id,
                info: None,
            })
        });
    }

    /// Ends one connection with a close code, and tells the others the user left.
    fn close(&mut self, conn: ConnId, code: u32, message: impl Into<String>) {
        if code == close::TOO_SLOW {
            self.deps.metrics.slow_client_closes.inc();
        }
        if let Some(c) = self.remove_connection(conn) {
            let message = message.into();
            debug!(document = %self.id, code, reason = %message, "closing a connection");
            self.presence_gone(conn, &c);
            c.outbox.close(code, message);
            self.announce_departure(c.user_id);
        }
    }

    /// Sends a frame to every connection; one that cannot take it starts lagging, and a
    /// lagging one is skipped (its catch-up sends the current state).
    fn broadcast(&mut self, make: impl Fn(&Connection) -> Kind) {
        let mut failed = Vec::new();
        for (&id, c) in self.connections.iter_mut() {
            if c.lagging.is_some() {
                let frame = make(c);
                c.missed(&frame);
                continue;
            }
            match c.outbox.send(make(c)) {
                Ok(()) => {}
                Err(SendFailure::Full) => failed.push((id, true)),
                Err(SendFailure::Gone) => failed.push((id, false)),
            }
        }
        let (at, len) = (self.committed, self.text.len_chars() as u64);
        for (id, slow) in failed {
            if slow {
                self.start_lagging(id, at, len);
            } else {
                self.leave(id);
            }
        }
    }

    /// Last words: snapshot what is durable and close every connection.
    async fn finish(&mut self, exit: &Exit) {
        let (code, message) = match exit {
            Exit::Idle => (
                close::UNAVAILABLE,
                "document unloaded; reconnect".to_owned(),
            ),
            Exit::Shutdown => (
                close::UNAVAILABLE,
                "server is restarting; reconnect".to_owned(),
            ),
            Exit::Moved => (
                close::UNAVAILABLE,
                "document moved to another server; reconnect".to_owned(),
            ),
            Exit::Failed(error) => (
                close::UNAVAILABLE,
                format!("storage failed ({error}); reconnect"),
            ),
            Exit::Stale => (
                close::UNAVAILABLE,
                "document moved to another server; reconnect".to_owned(),
            ),
        };
        match exit {
            Exit::Failed(error) => warn!(document = %self.id, %error, "document stopped"),
            Exit::Stale => {
                self.deps
                    .metrics
                    .ownership_moves
                    .with_label_values(&[MOVE_FENCED])
                    .inc();
                info!(document = %self.id, "another docnode took this document; unloading");
                // Remember the winner so this docnode's clients are sent there instead of
                // taking the lease back.
                if let Ok(Some(owner)) = self.deps.store.lease_owner(&self.id).await {
                    self.deps.ownership.lost_to(&self.id, Member::parse(&owner));
                }
            }
            Exit::Moved => {
                self.deps
                    .metrics
                    .ownership_moves
                    .with_label_values(&[MOVE_RELEASED])
                    .inc();
                info!(document = %self.id, "document moved to its new owner");
            }
            _ => debug!(document = %self.id, "document unloaded"),
        }
        // Clients of a document that moves (or of a draining docnode) can be carried over to
        // the new owner by their gateway without closing their sockets.
        let reroute = matches!(exit, Exit::Shutdown | Exit::Moved | Exit::Stale);
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

/// Whether a client's password opens a document, compared in constant time.
pub fn otp_matches(required: Option<&str>, given: Option<&str>) -> bool {
    let Some(required) = required else {
        return true;
    };
    let given = given.unwrap_or_default();
    let (a, b) = (required.as_bytes(), given.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Waits for the in-flight commit, or forever when there is none.
async fn wait_commit(inflight: &mut Option<Inflight>) -> Result<(), StoreError> {
    match inflight {
        Some(inflight) => match (&mut inflight.result).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable("the committer stopped".into())),
        },
        None => std::future::pending().await,
    }
}

/// Moves every cursor and selection of a user through a committed op, as Rustpad does.
fn transform_cursor(data: &mut pb::CursorData, operation: &Operation) {
    for cursor in &mut data.cursors {
        *cursor = operation.transform_index(*cursor);
    }
    for selection in &mut data.selections {
        selection.start = operation.transform_index(selection.start);
        selection.end = operation.transform_index(selection.end);
    }
}

/// Clamps positions to the document so a bad client cannot confuse others.
fn clamp_cursor(mut data: pb::CursorData, len: u64) -> pb::CursorData {
    for cursor in &mut data.cursors {
        *cursor = (*cursor).min(len);
    }
    for selection in &mut data.selections {
        selection.start = selection.start.min(len);
        selection.end = selection.end.min(len);
    }
    data
}
