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
//! One concern per file: `mailbox.rs` (commands, the handle, spawning), `lifecycle.rs` (load,
//! the loop, unload), `admission.rs` (joins and departures), `backfill.rs` (missed entries
//! from the op log), `edit.rs` (transform and revision), `fanout.rs` (commit and fan-out),
//! `history.rs` (the window and snapshots), `catch_up.rs` (slow clients), `presence.rs`
//! (users and cursors), `restore.rs` (restoring a past revision), `access.rs` (the password) and `cursor.rs` (cursor geometry). This
//! file holds the state they share and dispatches each command.
//!
//! Tracing: each edit gets a `docnode.edit` span, a child of the gateway's span for it (the
//! trace context rides in the `Edit` frame). It lives from arrival until the edit is fanned
//! out, so its trace shows the wait for the group commit, with `transform` and `fanout`
//! children; loading is a `load` span under the join that caused it, and stopping an
//! `unload` span whose `reason` tells an ownership move (`moved`, `stale`) from the rest.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use codraft_proto as pb;
use pb::server_frame::Kind;
use ropey::Rope;
use tokio::sync::mpsc;
use tracing::warn;

mod access;
mod admission;
mod backfill;
mod catch_up;
mod cursor;
mod edit;
mod fanout;
mod history;
mod lifecycle;
mod mailbox;
#[cfg(test)]
mod model_tests;
mod presence;
mod restore;

pub use access::otp_matches;
pub(crate) use access::store_password;
pub(crate) use lifecycle::{farewell, note_exit, reroutes, wait_result, Exit};
use mailbox::Mail;
pub(crate) use mailbox::Mail as DocumentMail;
pub(crate) use mailbox::{gather, spawn};
pub use mailbox::{Command, Deps, DocumentHandle, Join, JoinRefused};
pub use restore::{Restored, RESTORE_AUTHOR};

/// Close codes sent to clients (defined once, in the gRPC contract).
pub use codraft_proto::close;

use crate::{
    connection::{ConnId, Numbering, Origin, Outbox, QueueLimits, SendFailure},
    store::StoredDocument,
    wire,
};
use history::Entry;

/// A connected client.
struct Connection {
    user_id: u64,
    client_id: Option<Arc<str>>,
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
    /// Composed catch-up entries it was sent, oldest first, that its edits may still be
    /// based before (dropped once they end below the history window).
    composed: VecDeque<catch_up::Composed>,
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
    assigned_seqs: HashMap<Arc<str>, u64>,
    /// Highest committed seq per client id that joined here.
    committed_seqs: HashMap<Arc<str>, u64>,
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
    own: mpsc::WeakSender<Mail>,
    /// Restored users, cursor coalescing and heartbeats (see `document/presence.rs`).
    presence: presence::PresenceState,
    /// When lagging connections are next checked for room; `None` while none lags.
    catch_up_at: Option<tokio::time::Instant>,
    /// Since when the document has had no connection and nothing in flight.
    idle_since: Option<tokio::time::Instant>,
    /// Bytes held by the history window's entries, pending ones included.
    history_bytes: usize,
    /// Bytes held by pending entries.
    pending_bytes: usize,
    /// Whether the loop is holding commands back (pending edits at their limit).
    holding: bool,
    /// Restores waiting for their commit: the revision each was assigned, and its answer.
    restores: Vec<(u64, restore::RestoreReply)>,
}

impl Document {
    fn new(id: Arc<str>, deps: Deps, stored: StoredDocument, own: mpsc::WeakSender<Mail>) -> Self {
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
            idle_since: None,
            history_bytes: 0,
            pending_bytes: 0,
            holding: false,
            restores: Vec::new(),
        }
    }

    /// Carries out one command from the mailbox.
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
                self.remember_author(user_id, &info);
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
            // Only a Yjs document's actor takes these; the gateway never sends one here.
            Command::Yjs { .. } => {}
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
            Command::Restore {
                text,
                client_id,
                stored_seq,
                reply,
            } => self.restore(text, client_id, stored_seq, reply),
            Command::Backfill { from, ops, join } => self.backfill(from, ops, join),
            Command::Marks { seq, join } => self.marks_read(seq, join),
            Command::Shutdown => self.stopping = true,
            #[cfg(test)]
            Command::Inspect { reply } => {
                let _ = reply.send(self.inspect());
            }
            Command::Release => {
                self.stopping = true;
                self.moving = true;
            }
        }
    }
}

/// What the model test's oracle checks of an actor's memory.
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Entries in the history window, pending ones included.
    pub history: usize,
    /// Entries the window's buffer has room for without growing.
    pub history_capacity: usize,
    /// Entries not yet committed.
    pub pending: u64,
    /// Bytes of the window's entries, and of the pending ones.
    pub bytes: (usize, usize),
    /// Exactly-once marks kept (assigned and committed).
    pub marks: usize,
    /// Connections.
    pub connections: usize,
    /// Frames queued for clients, over all connections.
    pub queued: usize,
    /// Connections lagging (waiting for a catch-up).
    pub lagging: usize,
    /// Each connection: its id and the History entries sent on it.
    pub sent: Vec<(ConnId, u64)>,
    /// The committed text.
    pub text: String,
}

#[cfg(test)]
impl Document {
    fn inspect(&self) -> Inspection {
        Inspection {
            history: self.history.len(),
            history_capacity: self.history.capacity(),
            pending: self.head - self.committed,
            bytes: (self.history_bytes, self.pending_bytes),
            marks: self.assigned_seqs.len() + self.committed_seqs.len(),
            connections: self.connections.len(),
            queued: self
                .connections
                .values()
                .map(|c| c.outbox.max_room() - c.outbox.room())
                .sum(),
            lagging: self
                .connections
                .values()
                .filter(|c| c.lagging.is_some())
                .count(),
            sent: self
                .connections
                .iter()
                .map(|(&id, c)| (id, c.sent))
                .collect(),
            text: self.text.to_string(),
        }
    }
}
