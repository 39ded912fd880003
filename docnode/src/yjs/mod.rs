//! Yjs documents: the second document kind, spoken with y-websocket's protocol (y-protocols
//! sync and awareness) and kept with the same guarantees as OT documents.
//!
//! A Yjs document's id is `y:<room>`. It has an actor like an OT document's (one task that
//! alone owns its state, fed by the same mailbox, registry, leases and group commit), but
//! its state is a [`yrs::Doc`] and its log holds the binary updates clients sent:
//!
//! 1. A client's update (sync step 2 or update) is checked (it decodes, it fits the limits),
//!    queued, and committed in the next group commit with the OT documents' edits.
//! 2. Only once its transaction committed is it applied to the document and sent to every
//!    client, its sender included. The document a joiner syncs against is therefore always
//!    durable, and an update a client sees come back is stored.
//! 3. A client that reconnects (or that its gateway carries to a new owner) syncs again: the
//!    docnode's step 1 makes it send whatever the document lacks, and re-applying an update is
//!    idempotent, so nothing it sent is lost and nothing counts twice.
//!
//! Awareness (names, colours, cursors) is not durable: the actor relays it to every client
//! of the document, remembers each client's newest state for joiners, and removes the states
//! of a connection that leaves or that nothing renewed for [`AWARENESS_TIMEOUT`].
//!
//! Loads stay short and the log bounded: every SNAPSHOT_EVERY updates (and at unload) the
//! actor stores the document's compacted state (`encode_state_as_update`), which a load
//! starts from; each is also a checkpoint of the history ([`history`]), and compaction
//! deletes the updates below a checkpoint once they are older than HISTORY_RETENTION_DAYS,
//! as for OT documents. yrs garbage-collects deleted content as it goes.

mod awareness;
pub mod history;
#[cfg(test)]
mod model_tests;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use codraft_common::presence::{now_ms, PresenceEntry, PresenceWrite};
use codraft_proto as pb;
use pb::server_frame::Kind;
use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, warn};
use yrs::{
    encoding::write::Write,
    sync::{Message, SyncMessage},
    updates::{
        decoder::Decode,
        encoder::{Encode, Encoder, EncoderV1},
    },
    GetString, ReadTxn, StateVector, Transact, Update,
};

use crate::{
    commit::CommitResult,
    connection::{ConnId, Outbox, QueueLimits, SendFailure},
    document::{
        close, farewell, gather, note_exit, otp_matches, reroutes, store_password, wait_result,
        Command, Deps, DocumentMail, Exit, Join, JoinRefused,
    },
    store::{DocumentCommit, StoreError, StoredDocument},
};
use awareness::Awareness;

/// How long an awareness state lives without being renewed (y-protocols' own timeout;
/// clients renew theirs every half of it).
pub const AWARENESS_TIMEOUT: Duration = Duration::from_secs(30);

/// codraft's extension message: a writable client protects the document with a password
/// (a lib0 string after the tag; empty removes it).
pub const MSG_SET_PASSWORD: u8 = 100;

/// The root `GET /api/text` reads: the `Y.Text` the web editor (y-codemirror.next) edits.
pub const TEXT_ROOT: &str = "codemirror";

/// Commits a stopping actor still makes for updates that keep arriving.
const LAST_COMMITS: u32 = 3;

/// How often lagging clients are offered their catch-up.
const CATCH_UP_EVERY: Duration = Duration::from_millis(50);

/// `reason` labels of `codraft_yjs_refused_total`.
const MALFORMED: &str = "malformed";
const UPDATE_TOO_LARGE: &str = "update_too_large";
const DOCUMENT_TOO_LARGE: &str = "document_too_large";
const AWARENESS_TOO_LARGE: &str = "awareness_too_large";
const OUT_OF_ORDER: &str = "out_of_order";

/// Least time between two requests to one client to sync again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// A client of the document.
struct Peer {
    outbox: Outbox,
    /// Set while its queue was too full for an update: the document's state vector before
    /// the first update it missed. Once it has room it gets everything since, as one update.
    lagging: Option<(StateVector, Instant)>,
    /// When the client was last asked to sync again after an update with a gap.
    asked: Option<Instant>,
}

/// Updates on their way to the store.
struct Inflight {
    result: CommitResult,
    updates: Vec<Queued>,
}

/// A checked update: its bytes (stored, and sent to every client) and its decoded form
/// (applied once committed), so it is decoded once.
struct Queued {
    bytes: Bytes,
    update: Update,
}

/// The state only the actor touches.
struct YjsDocument {
    id: Arc<str>,
    deps: Deps,
    /// The committed document: every update in it is durable.
    doc: yrs::Doc,
    /// Updates committed so far (the document's revision).
    committed: u64,
    /// Bytes of the stored state and updates (what YJS_MAX_DOCUMENT_KB bounds).
    stored_bytes: usize,
    /// How far the committed and queued updates reach, per Yjs client: an update must
    /// continue from here (see [`continues`]).
    head: StateVector,
    /// Checked updates waiting for the next commit.
    queued: Vec<Queued>,
    queued_bytes: usize,
    inflight: Option<Inflight>,
    peers: HashMap<ConnId, Peer>,
    awareness: Awareness,
    otp: Option<String>,
    epoch: u64,
    last_snapshot: u64,
    stopping: bool,
    moving: bool,
    /// Commit rounds since the actor began stopping (at most [`LAST_COMMITS`]).
    commits_while_stopping: u32,
    /// This actor's own mailbox, for answers of work it hands to other tasks.
    own: mpsc::WeakSender<DocumentMail>,
    /// The name and hue stored for the history per Yjs client with an awareness state, so
    /// a cursor move (a new awareness state) does not write them again.
    authors: HashMap<u64, (String, u32)>,
}

/// Serves a loaded Yjs document until it stops; returns why.
pub(crate) async fn run(
    id: Arc<str>,
    deps: Deps,
    stored: StoredDocument,
    rx: &mut mpsc::Receiver<DocumentMail>,
    own: mpsc::WeakSender<DocumentMail>,
) -> Exit {
    let doc = yrs::Doc::new();
    let mut stored_bytes = 0;
    {
        let mut txn = doc.transact_mut();
        for part in &stored.yjs {
            stored_bytes += part.len();
            let applied = Update::decode_v1(part)
                .map_err(|e| e.to_string())
                .and_then(|update| txn.apply_update(update).map_err(|e| e.to_string()));
            if let Err(error) = applied {
                return Exit::Failed(format!("stored update of {id} is corrupt: {error}"));
            }
        }
    }
    debug!(document = %id, revision = stored.revision, bytes = stored_bytes, "loaded a Yjs document");
    let mut document = YjsDocument {
        id,
        deps,
        doc,
        committed: stored.revision,
        stored_bytes,
        head: StateVector::default(),
        queued: Vec::new(),
        queued_bytes: 0,
        inflight: None,
        peers: HashMap::new(),
        awareness: Awareness::default(),
        otp: stored.otp,
        epoch: stored.epoch,
        last_snapshot: stored.revision,
        stopping: false,
        moving: false,
        commits_while_stopping: 0,
        own,
        authors: HashMap::new(),
    };
    document.head = document.doc.transact().state_vector();
    let exit = document.serve(rx).await;
    document.finish(&exit).await;
    exit
}

impl YjsDocument {
    async fn serve(&mut self, rx: &mut mpsc::Receiver<DocumentMail>) -> Exit {
        let mut idle_since: Option<Instant> = None;
        let heartbeat = self.deps.presence.ttl() / 3;
        let mut heartbeat_at = Instant::now() + heartbeat;
        // A deadline, not a sleep made anew on every pass: a busy document wakes the loop far
        // more often than CATCH_UP_EVERY.
        let mut catch_up_at: Option<Instant> = None;
        loop {
            if self.inflight.is_none() && !self.queued.is_empty() && !self.stopping {
                let limit = self.deps.config.max_pending_bytes();
                gather(
                    rx,
                    self,
                    |y| !y.stopping && y.queued_bytes < limit,
                    |y, mail| y.handle(*mail),
                )
                .await;
            }
            if self.inflight.is_none() {
                // Once stopping, a few more commits take what keeps arriving; after them the
                // actor goes (what is left comes back with the clients' next sync), so a
                // busy client cannot hold a drain up.
                if self.stopping {
                    self.commits_while_stopping += 1;
                }
                if self.commits_while_stopping <= LAST_COMMITS {
                    self.start_commit().await;
                }
            }
            if self.stopping && self.inflight.is_none() {
                return if self.moving {
                    Exit::Moved
                } else {
                    Exit::Shutdown
                };
            }
            let idle = self.peers.is_empty() && self.inflight.is_none();
            idle_since = match (idle, idle_since) {
                (false, _) => None,
                (true, since) => Some(since.unwrap_or_else(Instant::now)),
            };
            let unload_at = idle_since.map(|since| since + self.deps.config.idle_unload());
            let lagging = self.peers.values().any(|p| p.lagging.is_some());
            catch_up_at = match (lagging, catch_up_at) {
                (false, _) => None,
                (true, at) => Some(at.unwrap_or_else(|| Instant::now() + CATCH_UP_EVERY)),
            };
            // Queued updates at their limit: commands wait in the mailbox, and as it fills
            // the clients' streams push back.
            let accepting = self.queued_bytes < self.deps.config.max_pending_bytes();
            let expiry = self.awareness.next_expiry();
            tokio::select! {
                result = wait_inflight(&mut self.inflight) => match result {
                    Ok(()) => self.committed(),
                    Err(StoreError::Conflict { .. }) => return Exit::Stale,
                    Err(error) => return Exit::Failed(error.to_string()),
                },
                command = rx.recv(), if accepting => match command {
                    Some(command) => self.handle(*command),
                    None => return Exit::Shutdown,
                },
                _ = tokio::time::sleep_until(unload_at.unwrap_or_else(Instant::now)),
                    if unload_at.is_some() => return Exit::Idle,
                _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)),
                    if expiry.is_some() => self.expire_awareness(),
                _ = tokio::time::sleep_until(catch_up_at.unwrap_or_else(Instant::now)),
                    if catch_up_at.is_some() =>
                {
                    catch_up_at = None;
                    self.catch_up();
                }
                _ = tokio::time::sleep_until(heartbeat_at), if self.deps.presence.is_shared() => {
                    heartbeat_at = Instant::now() + heartbeat;
                    self.refresh_presence();
                }
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Join(join) => self.join(join),
            Command::Yjs { conn, message } => self.message(conn, &message),
            Command::Leave { conn } => self.leave(conn),
            Command::CheckOtp { otp, reply } => {
                let _ = reply.send(otp_matches(self.otp.as_deref(), otp.as_deref()));
            }
            Command::OtpStored { otp, result } => match result {
                Ok(()) => self.otp = otp,
                Err(error) => warn!(document = %self.id, %error, "could not store the password"),
            },
            Command::Text { reply } => {
                let txn = self.doc.transact();
                let text = txn
                    .get_text(TEXT_ROOT)
                    .map(|t| t.get_string(&txn))
                    .unwrap_or_default();
                let _ = reply.send(Ok(text));
            }
            Command::Shutdown => self.stopping = true,
            Command::Release => {
                self.stopping = true;
                self.moving = true;
            }
            Command::Restore { reply, .. } => {
                let _ = reply.send(Err(JoinRefused::Unavailable(
                    "a Yjs document has no restore".to_owned(),
                )));
            }
            // Only an OT document's joins read marks or backfill.
            Command::Marks { join, .. } | Command::Backfill { join, .. } => {
                let _ = join.reply.send(Err(JoinRefused::Retry));
            }
            #[cfg(test)]
            Command::Inspect { .. } => {}
            // The OT protocol's commands never reach a Yjs document (the gateway speaks only
            // y-websocket to it).
            Command::Edit { .. }
            | Command::SetLanguage { .. }
            | Command::ClientInfo { .. }
            | Command::CursorData { .. }
            | Command::SetOtp { .. } => {}
        }
    }

    /// A client joins: it gets the document's state vector (sync step 1), to which it
    /// answers with what the document lacks, and everyone's awareness.
    fn join(&mut self, join: Join) {
        if self.stopping {
            let _ = join.reply.send(Err(JoinRefused::Retry));
            return;
        }
        let refusal = if !otp_matches(self.otp.as_deref(), join.otp.as_deref()) {
            Some((
                close::UNAUTHORIZED,
                "this document is protected: open it with the right ?otp=".to_owned(),
            ))
        } else if self.peers.len() >= self.deps.config.max_connections_per_document {
            Some((
                close::TOO_MANY,
                format!(
                    "document has {} clients, its limit; try again later",
                    self.peers.len()
                ),
            ))
        } else {
            None
        };
        if let Some((code, reason)) = refusal {
            let (outbox, inbox) = Outbox::new(QueueLimits::frames(2));
            outbox.close(code, reason);
            let _ = join.reply.send(Ok(inbox));
            return;
        }
        let (outbox, inbox) = Outbox::new(QueueLimits {
            frames: self.deps.config.client_queue.max(4),
            bytes: self.deps.config.client_queue_bytes(),
            gauge: Some(self.deps.metrics.client_queue_bytes.clone()),
        });
        let step1 = Message::Sync(SyncMessage::SyncStep1(self.doc.transact().state_vector()));
        let _ = outbox.send(Kind::Yjs(step1.encode_v1().into()));
        if let Some(states) = self.awareness.everyone() {
            let _ = outbox.send(Kind::Yjs(states));
        }
        if join.reply.send(Ok(inbox)).is_ok() {
            self.peers.insert(
                join.conn,
                Peer {
                    outbox,
                    lagging: None,
                    asked: None,
                },
            );
        }
    }

    fn leave(&mut self, conn: ConnId) {
        if self.peers.remove(&conn).is_some() {
            if let Some(removed) = self.awareness.remove_connection(conn) {
                self.awareness_changed(removed);
            }
        }
    }

    /// One y-websocket message from a client.
    fn message(&mut self, conn: ConnId, bytes: &[u8]) {
        // While stopping (a drain, a move) messages are still taken: an update that arrives
        // before the actor's last commit is committed and echoed like any other, so even a
        // client that never re-sends loses nothing to an orderly drain.
        if !self.peers.contains_key(&conn) {
            return;
        }
        let message = match Message::decode_v1(bytes) {
            Ok(message) => message,
            Err(error) => {
                self.refuse(
                    conn,
                    MALFORMED,
                    close::INVALID_MESSAGE,
                    format!("not a y-websocket message: {error}"),
                );
                return;
            }
        };
        match message {
            Message::Sync(SyncMessage::SyncStep1(state_vector)) => {
                self.answer_step1(conn, state_vector)
            }
            Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
                self.update(conn, update);
            }
            Message::Awareness(update) => {
                let limit = self.deps.config.yjs_max_awareness_kb.saturating_mul(1024);
                if bytes.len() > limit {
                    self.deps
                        .metrics
                        .yjs_refused
                        .with_label_values(&[AWARENESS_TOO_LARGE])
                        .inc();
                    return;
                }
                if let Some(changed) = self.awareness.apply(conn, update, Instant::now()) {
                    self.awareness_changed(changed);
                }
            }
            Message::AwarenessQuery => {
                if let Some(states) = self.awareness.everyone() {
                    self.send(conn, states);
                }
            }
            Message::Custom(MSG_SET_PASSWORD, password) => self.set_password(password),
            // Auth is the server's to send; other tags are no concern of the document.
            Message::Auth(_) | Message::Custom(..) => {}
        }
    }

    /// Answers a client's sync step 1 with what it lacks (step 2). A client whose queue has
    /// no room for it is caught up with the same content once it has (see `catch_up`): the
    /// answer is never dropped, or the client would never learn the document.
    fn answer_step1(&mut self, conn: ConnId, state_vector: StateVector) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if let Some((since, _)) = &mut peer.lagging {
            *since = lower(since, &state_vector);
            return;
        }
        let diff = self.doc.transact().encode_state_as_update_v1(&state_vector);
        let step2 = Message::Sync(SyncMessage::SyncStep2(diff)).encode_v1();
        match peer.outbox.send(Kind::Yjs(step2.into())) {
            Ok(()) => {}
            Err(SendFailure::Full) => {
                self.deps.metrics.lagging_clients.inc();
                peer.lagging = Some((state_vector, Instant::now()));
            }
            Err(SendFailure::Gone) => self.leave(conn),
        }
    }

    /// Sends a client the document's state vector (a sync step 1), so it answers with
    /// everything the document lacks; at most once a second per client.
    fn ask_to_sync(&mut self, conn: ConnId) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let now = Instant::now();
        if peer
            .asked
            .is_some_and(|at| now.duration_since(at) < ASK_AGAIN_AFTER)
        {
            return;
        }
        peer.asked = Some(now);
        let step1 = Message::Sync(SyncMessage::SyncStep1(self.head.clone()));
        let _ = peer.outbox.send(Kind::Yjs(step1.encode_v1().into()));
    }

    /// A client's update: checked and queued for the next commit.
    fn update(&mut self, conn: ConnId, update: Vec<u8>) {
        let limit = self.deps.config.yjs_max_update_kb.saturating_mul(1024);
        if update.len() > limit {
            let reason = format!("Yjs update larger than {} KiB", limit / 1024);
            self.refuse(conn, UPDATE_TOO_LARGE, close::TOO_LARGE, reason);
            return;
        }
        let decoded = match Update::decode_v1(&update) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.refuse(
                    conn,
                    MALFORMED,
                    close::INVALID_MESSAGE,
                    format!("malformed Yjs update: {error}"),
                );
                return;
            }
        };
        // A sync step 2 from a client that has nothing new is the common case: nothing to
        // store. Anything else is stored, even if it may repeat what the document has (yrs'
        // `Update::extends` says "continues the document directly", not "adds something").
        if decoded.is_empty() {
            return;
        }
        let max = self.deps.config.yjs_max_document_kb.saturating_mul(1024);
        if self.stored_bytes + self.queued_bytes + update.len() > max {
            let reason = format!("document larger than {} KiB", max / 1024);
            self.refuse(conn, DOCUMENT_TOO_LARGE, close::TOO_LARGE, reason);
            return;
        }
        // An update with a gap (its client's earlier update never reached this owner: it went
        // to one that stopped) is not stored: applied, yrs would hold it as pending, and an
        // update later filling the gap over it integrates it twice (a duplicated run of
        // items, seen in the model test). The client is asked to sync instead: its step 2
        // answering our step 1 carries everything from where the document is.
        // Checked last: only an update that is queued may advance `head`.
        if !continues(&mut self.head, &decoded) {
            self.deps
                .metrics
                .yjs_refused
                .with_label_values(&[OUT_OF_ORDER])
                .inc();
            self.ask_to_sync(conn);
            return;
        }
        self.queued_bytes += update.len();
        self.queued.push(Queued {
            bytes: Bytes::from(update),
            update: decoded,
        });
    }

    /// Refuses a client's message: counted, and the client is closed with `code`.
    fn refuse(&mut self, conn: ConnId, reason: &'static str, code: u16, message: String) {
        self.deps
            .metrics
            .yjs_refused
            .with_label_values(&[reason])
            .inc();
        debug!(document = %self.id, conn, %message, "Yjs message refused");
        if let Some(peer) = self.peers.remove(&conn) {
            peer.outbox.close(code, message);
            if let Some(removed) = self.awareness.remove_connection(conn) {
                self.awareness_changed(removed);
            }
        }
    }

    fn set_password(&mut self, password: Vec<u8>) {
        let Ok(password) = String::from_utf8(password) else {
            return;
        };
        let otp = (!password.is_empty()).then_some(password);
        store_password(&self.deps, &self.id, self.epoch, self.own.clone(), otp);
    }

    /// Hands the queued updates to the group committer, if there are any.
    async fn start_commit(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let updates = std::mem::take(&mut self.queued);
        self.queued_bytes = 0;
        let commit = DocumentCommit {
            document: Arc::clone(&self.id),
            base_revision: self.committed,
            epoch: self.epoch,
            ops: Vec::new(),
            language: None,
            updates: updates.iter().map(|q| q.bytes.clone()).collect(),
        };
        let result = self.deps.committer.submit(commit, Vec::new()).await;
        self.inflight = Some(Inflight { result, updates });
    }

    /// The in-flight updates are durable: apply them and send them to everyone.
    fn committed(&mut self) {
        let Some(Inflight { updates, .. }) = self.inflight.take() else {
            return;
        };
        let before = self.doc.transact().state_vector();
        let count = updates.len() as u64;
        let mut sent = Vec::with_capacity(updates.len());
        {
            let mut txn = self.doc.transact_mut();
            for Queued { bytes, update } in updates {
                // Checked when it arrived; a failure here would be a yrs bug, and the update
                // stays stored for the next load to try again.
                if let Err(error) = txn.apply_update(update) {
                    warn!(document = %self.id, %error, "a committed Yjs update did not apply");
                }
                sent.push(bytes);
            }
        }
        self.committed += count;
        self.stored_bytes += sent.iter().map(Bytes::len).sum::<usize>();
        self.deps.metrics.yjs_updates_committed.inc_by(count);
        for update in &sent {
            let message = update_message(update);
            self.fan_out(&message, &before);
        }
        if self.committed - self.last_snapshot >= self.deps.config.snapshot_every.max(1) {
            self.snapshot_in_background();
        }
    }

    /// Sends a committed update to every client with room; a client without is marked
    /// lagging as of `before` and caught up later.
    fn fan_out(&mut self, message: &Bytes, before: &StateVector) {
        let mut gone = Vec::new();
        for (&conn, peer) in &mut self.peers {
            if peer.lagging.is_some() {
                continue;
            }
            match peer.outbox.send(Kind::Yjs(message.clone())) {
                Ok(()) => {}
                Err(SendFailure::Full) => {
                    self.deps.metrics.lagging_clients.inc();
                    peer.lagging = Some((before.clone(), Instant::now()));
                }
                Err(SendFailure::Gone) => gone.push(conn),
            }
        }
        for conn in gone {
            self.leave(conn);
        }
    }

    /// Lagging clients with room get everything since they fell behind, as one update;
    /// those still without room after SLOW_CLIENT_GRACE_MS are closed with 4508 (their
    /// client reconnects and syncs).
    fn catch_up(&mut self) {
        let grace = self.deps.config.slow_client_grace();
        let mut closed = Vec::new();
        let txn = self.doc.transact();
        for (&conn, peer) in &mut self.peers {
            let Some((since, at)) = &peer.lagging else {
                continue;
            };
            if peer.outbox.room() > 0 && peer.outbox.queued_bytes() == 0 {
                let diff = txn.encode_state_as_update_v1(since);
                let message = update_message(&diff);
                peer.lagging = None;
                self.deps.metrics.lagging_clients.dec();
                self.deps.metrics.slow_client_catchups.inc();
                if peer.outbox.send(Kind::Yjs(message)).is_err() {
                    closed.push(conn);
                }
            } else if at.elapsed() > grace {
                closed.push(conn);
            }
        }
        drop(txn);
        for conn in closed {
            if let Some(peer) = self.peers.remove(&conn) {
                if peer.lagging.is_some() {
                    self.deps.metrics.lagging_clients.dec();
                }
                self.deps.metrics.slow_client_closes.inc();
                peer.outbox
                    .close(close::TOO_SLOW, "client too slow to keep up; reconnect");
            }
            if let Some(removed) = self.awareness.remove_connection(conn) {
                self.awareness_changed(removed);
            }
        }
    }

    fn expire_awareness(&mut self) {
        if let Some(removed) = self.awareness.expire(Instant::now(), AWARENESS_TIMEOUT) {
            self.awareness_changed(removed);
        }
    }

    /// Relays an awareness change to every client, and to Redis (presence), where any
    /// gateway's presence API reads it.
    fn awareness_changed(&mut self, change: awareness::Change) {
        self.broadcast(&change.message);
        for (client, state) in &change.clients {
            match state.as_deref().and_then(user_of) {
                Some(user) => self.remember_author(*client, user),
                None => {
                    self.authors.remove(client);
                }
            }
        }
        if !self.deps.presence.is_shared() {
            return;
        }
        for (client, state) in change.clients {
            let write = match state {
                Some(json) => PresenceWrite::Put {
                    document: self.id.to_string(),
                    entry: self.presence_entry(client, &json),
                },
                None => PresenceWrite::Remove {
                    document: self.id.to_string(),
                    key: presence_key(client),
                    user_id: client,
                },
            };
            self.deps.presence.send(write);
        }
    }

    /// The heartbeat: every awareness state in Redis again, with a fresh expiry (so a crashed
    /// docnode's users vanish after PRESENCE_TTL_SECS).
    fn refresh_presence(&mut self) {
        let entries: Vec<PresenceEntry> = self
            .awareness
            .states()
            .map(|(client, json)| self.presence_entry(client, json))
            .collect();
        if !entries.is_empty() {
            self.deps.presence.send(PresenceWrite::Refresh {
                document: self.id.to_string(),
                entries,
            });
        }
    }

    /// Stores a Yjs client's name and hue for the history (its updates' author is its client
    /// id), once per change, without waiting: a lost write only leaves its edits unnamed.
    fn remember_author(&mut self, client: u64, user: (String, u32)) {
        if self.authors.get(&client) == Some(&user) {
            return;
        }
        let author = crate::store::AuthorInfo {
            author: client,
            name: user.0.clone(),
            hue: user.1,
        };
        self.authors.insert(client, user);
        let store = Arc::clone(&self.deps.store);
        let document = self.id.to_string();
        tokio::spawn(async move {
            if let Err(error) = store.record_author(&document, author).await {
                debug!(%error, "a Yjs author's name not stored for the history");
            }
        });
    }

    /// A Yjs client's presence entry: its name and hue (see [`user_of`]), no cursor (Yjs
    /// cursors are relative positions, meaningless outside the document).
    fn presence_entry(&self, client: u64, json: &str) -> PresenceEntry {
        let ttl_ms = u64::try_from(self.deps.presence.ttl().as_millis()).unwrap_or(u64::MAX);
        PresenceEntry {
            key: presence_key(client),
            user_id: client,
            info: user_of(json),
            cursor: None,
            node: self.deps.presence.node().to_owned(),
            expires_ms: now_ms().saturating_add(ttl_ms),
        }
    }

    /// Sends a message that is not part of the document (awareness) to every client; a
    /// client without room misses it (the next one carries the newest state anyway).
    fn broadcast(&mut self, message: &Bytes) {
        for peer in self.peers.values() {
            let _ = peer.outbox.send(Kind::Yjs(message.clone()));
        }
    }

    fn send(&mut self, conn: ConnId, message: Bytes) {
        if let Some(peer) = self.peers.get(&conn) {
            let _ = peer.outbox.send(Kind::Yjs(message));
        }
    }

    /// The document's compacted state, written by another task: loads start from it, and the
    /// history keeps it as a checkpoint.
    fn snapshot_in_background(&mut self) {
        let state = self
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let (store, id, revision) = (
            Arc::clone(&self.deps.store),
            Arc::clone(&self.id),
            self.committed,
        );
        self.last_snapshot = revision;
        self.stored_bytes = state.len();
        tokio::spawn(async move {
            if let Err(error) = store.write_yjs_snapshot(&id, revision, state).await {
                warn!(document = %id, %error, "Yjs snapshot failed");
            }
        });
    }

    /// Last words: close or reroute every client and store the compacted state.
    async fn finish(&mut self, exit: &Exit) {
        let (code, message) = farewell(exit);
        note_exit(&self.deps, &self.id, exit).await;
        for (_, peer) in self.peers.drain() {
            if peer.lagging.is_some() {
                self.deps.metrics.lagging_clients.dec();
            }
            if reroutes(exit) {
                peer.outbox.reroute(code, message.clone());
            } else {
                peer.outbox.close(code, message.clone());
            }
        }
        if matches!(exit, Exit::Idle | Exit::Shutdown | Exit::Moved)
            && self.committed > self.last_snapshot
        {
            let state = self
                .doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            let write = self
                .deps
                .store
                .write_yjs_snapshot(&self.id, self.committed, state);
            match tokio::time::timeout(Duration::from_secs(5), write).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(document = %self.id, %error, "final Yjs snapshot failed"),
                Err(_) => warn!(document = %self.id, "final Yjs snapshot timed out"),
            }
        }
    }
}

/// Waits for the in-flight commit, or forever when there is none.
async fn wait_inflight(inflight: &mut Option<Inflight>) -> Result<(), StoreError> {
    match inflight {
        Some(inflight) => wait_result(&mut inflight.result).await,
        None => std::future::pending().await,
    }
}

/// The name and hue in an awareness state's `user`: `{"user":{"name":…,"hue":…}}` as the
/// web editor sets it, or y-codemirror.next's usual `{"user":{"name":…,"color":"#rrggbb"}}`
/// (the colour's hue). Names are cut to 64 characters, like OT clients' names.
fn user_of(json: &str) -> Option<(String, u32)> {
    let state: serde_json::Value = serde_json::from_str(json).ok()?;
    let user = &state["user"];
    let name: String = user["name"].as_str()?.chars().take(64).collect();
    let hue = user["hue"]
        .as_u64()
        .map(|h| h % 360)
        .or_else(|| user["color"].as_str().and_then(hue_of))
        .and_then(|h| u32::try_from(h).ok());
    Some((name, hue.unwrap_or(0)))
}

/// The hue (0-359) of a CSS colour `#rrggbb`.
fn hue_of(color: &str) -> Option<u64> {
    let hex = color.strip_prefix('#').filter(|h| h.len() == 6)?;
    let channel = |i: usize| {
        u8::from_str_radix(hex.get(i..i + 2)?, 16)
            .ok()
            .map(|c| f64::from(c) / 255.0)
    };
    let (r, g, b) = (channel(0)?, channel(2)?, channel(4)?);
    let max = r.max(g).max(b);
    let delta = max - r.min(g).min(b);
    if delta == 0.0 {
        return Some(0);
    }
    let sector = if max == r {
        ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        (b - r) / delta + 2.0
    } else {
        (r - g) / delta + 4.0
    };
    Some((sector * 60.0).round() as u64 % 360)
}

/// The presence hash field of a Yjs client.
fn presence_key(client: u64) -> String {
    format!("y:{client}")
}

/// Whether `update` continues the document at `head` without a gap: every client's inserted
/// ranges start at or below what `head` (and the ranges before them) reach, and every
/// deletion names items that exist by then. If so, `head` advances over the update.
fn continues(head: &mut StateVector, update: &Update) -> bool {
    let mut next = head.clone();
    let inserted = update.insertions(true);
    for (client, ranges) in inserted.iter() {
        let mut ranges: Vec<_> = ranges.iter().cloned().collect();
        ranges.sort_by_key(|r| r.start);
        let mut end = next.get(client);
        for range in ranges {
            if range.start > end {
                return false;
            }
            end = end.max(range.end);
        }
        next.set_max(*client, end);
    }
    for (client, ranges) in update.delete_set().iter() {
        let end = next.get(client);
        if ranges.iter().any(|r| r.end > end) {
            return false;
        }
    }
    *head = next;
    true
}

/// The clocks both state vectors have reached: a client that has at least one of them has
/// at least this.
fn lower(a: &StateVector, b: &StateVector) -> StateVector {
    a.iter()
        .map(|(client, &clock)| (*client, clock.min(b.get(client))))
        .collect()
}

/// A sync "update" message carrying `update`.
fn update_message(update: &[u8]) -> Bytes {
    let mut encoder = EncoderV1::new();
    encoder.write_var(yrs::sync::protocol::MSG_SYNC);
    encoder.write_var(yrs::sync::protocol::MSG_SYNC_UPDATE);
    encoder.write_buf(update);
    Bytes::from(encoder.to_vec())
}
