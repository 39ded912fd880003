//! Admission and departure: who may join a document, what a joiner is sent first, and how a
//! connection leaves (by itself, or closed with a code).
//!
//! A join is checked (stopping, password, connection limit), given a user id that survives
//! owner moves, its exactly-once marks, a revision numbering (a fresh join gets the text as one
//! entry; a resuming client the entries it missed), and a greeting: Identity, Joined,
//! History, Language, users and cursors.

use std::{collections::VecDeque, sync::Arc};

use codraft_ot::Operation;
use rand::Rng;
use tracing::debug;

use super::{
    access::otp_matches, close, pb, wire, ConnId, Connection, Document, Entry, Join, JoinRefused,
    Kind, Numbering, Origin, Outbox, QueueLimits,
};

impl Document {
    /// Serves a join: fetches what it needs first (missed entries from the op log), then
    /// admits the client or closes its connection with the reason it was refused.
    pub(super) fn join(&mut self, mut join: Join) {
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
        if join.last_seq.is_none() {
            if let Some(client) = &join.client_id {
                match self.committed_seqs.get(client.as_str()) {
                    // Known here: this actor's marks are the truth (a lookup could see its own
                    // commit whose answer has not arrived, and promise an acknowledgement
                    // that the client's resume would never carry).
                    Some(&seq) => join.last_seq = Some(seq),
                    // A gateway's first session for a made-up id: nothing to look up.
                    None if join.made_up_client_id && join.resume.is_none() => {
                        join.last_seq = Some(0)
                    }
                    None => {
                        self.request_marks(join);
                        return;
                    }
                }
            }
        }
        if let Err((code, reason)) = self.admit(&join) {
            let (outbox, inbox) = Outbox::new(QueueLimits::frames(2));
            outbox.close(code, reason);
            let _ = join.reply.send(Ok(inbox));
            return;
        }
        self.welcome(join);
    }

    /// Whether a client may join: the password, then the connection limit.
    fn admit(&self, join: &Join) -> Result<(), (u16, String)> {
        if !otp_matches(self.otp.as_deref(), join.otp.as_deref()) {
            return Err((
                close::UNAUTHORIZED,
                "this document is protected: open it with the right ?otp=".to_owned(),
            ));
        }
        if self.connections.len() >= self.deps.config.max_connections_per_document {
            return Err((
                close::TOO_MANY,
                format!(
                    "document has {} clients, its limit; try again later",
                    self.connections.len()
                ),
            ));
        }
        Ok(())
    }

    /// Admits a client: its user id, exactly-once marks, numbering and greeting.
    fn welcome(&mut self, join: Join) {
        // A client coming back to a restored entry keeps its user id: others see no change.
        let takeover = self.take_restored(join.client_id.as_deref());
        // A connection a gateway moves here keeps the user id it had, unless it is taken.
        let kept = join
            .user_id
            .filter(|&id| id > 0 && self.connections.values().all(|c| c.user_id != id));
        let user_id = kept
            .or(takeover.as_ref().map(|r| r.user_id))
            .unwrap_or_else(|| rand::rng().random_range(1..(1u64 << 53)));
        let last_seq = self.seed_marks(join.client_id.as_deref(), join.last_seq.unwrap_or(0));
        let (numbering, entries) = self.starting_point(&join);
        // Room for the whole join burst (one UserInfo and one UserCursor per user) on top of
        // the steady-state allowance, so a join into a crowded document is never "too slow".
        let capacity = self.deps.config.client_queue
            + 2 * self.connections.len()
            + self.restored_frames_len()
            + 8;
        // The greeting goes in whatever its size; the byte budget holds from then on.
        let (mut outbox, inbox) = Outbox::new(QueueLimits {
            frames: capacity,
            bytes: usize::MAX,
            gauge: Some(self.deps.metrics.client_queue_bytes.clone()),
        });
        let sent = entries.len() as u64;
        let joined = join.client_id.is_some().then_some(pb::Joined {
            revision: match numbering.origin {
                Origin::Snapshot { joined_at, .. } => joined_at,
                Origin::Resumed { from } => from,
            },
            resumed: matches!(numbering.origin, Origin::Resumed { .. }),
            last_seq,
        });
        for frame in self.greeting(user_id, joined, entries) {
            if outbox.send(frame).is_err() {
                let _ = join.reply.send(Err(JoinRefused::Retry));
                return;
            }
        }
        if join.reply.send(Ok(inbox)).is_err() {
            return;
        }
        outbox.limit_bytes(self.deps.config.client_queue_bytes());
        self.connections.insert(
            join.conn,
            Connection {
                user_id,
                resumes_itself: join.client_id.is_some() && !join.made_up_client_id,
                client_id: join.client_id.map(Into::into),
                outbox,
                numbering,
                sent,
                info: None,
                cursor: None,
                lagging: None,
                composed: VecDeque::new(),
            },
        );
        self.presence_joined(join.conn, takeover);
    }

    /// Merges what the store knows of a client's committed edits (`stored`) into the
    /// exactly-once marks; returns its highest committed seq (0 without a client id).
    fn seed_marks(&mut self, client: Option<&str>, stored: u64) -> u64 {
        let Some(client) = client else {
            return 0;
        };
        let client: Arc<str> = client.into();
        let committed = self.committed_seqs.entry(Arc::clone(&client)).or_default();
        *committed = (*committed).max(stored);
        let committed = *committed;
        let assigned = self.assigned_seqs.entry(client).or_default();
        *assigned = (*assigned).max(committed);
        committed
    }

    /// Where a joiner's numbering starts and the entries it gets first: the ones it missed
    /// when it resumes inside the window, else the committed text as one insert.
    fn starting_point(&self, join: &Join) -> (Numbering, Vec<pb::HistoryEntry>) {
        let resume_from = join
            .resume
            .filter(|_| join.client_id.is_some())
            .filter(|&from| from >= self.history_start && from <= self.committed);
        if let Some(from) = resume_from {
            let skip = (from - self.history_start) as usize;
            let count = (self.committed - from) as usize;
            let entries = self
                .history
                .iter()
                .skip(skip)
                .take(count)
                .map(Entry::to_proto)
                .collect();
            return (Numbering::new(Origin::Resumed { from }), entries);
        }
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

    /// A joiner's first frames: Identity, Joined (exactly-once clients), its History, the
    /// language, and every user and cursor present.
    fn greeting(
        &self,
        user_id: u64,
        joined: Option<pb::Joined>,
        entries: Vec<pb::HistoryEntry>,
    ) -> Vec<Kind> {
        let mut frames = vec![Kind::Identity(pb::Identity { user_id })];
        frames.extend(joined.map(Kind::Joined));
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
        self.present_users(None, &mut frames);
        frames
    }

    /// Takes a connection out of the document, lagging or not.
    pub(super) fn remove_connection(&mut self, conn: ConnId) -> Option<Connection> {
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

    pub(super) fn leave(&mut self, conn: ConnId) {
        if let Some(c) = self.remove_connection(conn) {
            self.presence_gone(conn, &c);
            self.announce_departure(c.user_id);
        }
    }

    pub(super) fn announce_departure(&mut self, user_id: u64) {
        self.broadcast(|_| {
            Kind::UserInfo(pb::UserInfo {
                user_id,
                info: None,
            })
        });
    }

    /// Ends one connection with a close code, and tells the others the user left.
    pub(super) fn close(&mut self, conn: ConnId, code: u16, message: impl Into<String>) {
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
}
