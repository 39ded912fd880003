//! The presence half of the document actor: who is in the document and where their cursors
//! are, coalescing cursor bursts, heartbeats to Redis, and users restored from Redis.
//!
//! - **Coalescing.** A user's cursor goes out at most once per CURSOR_INTERVAL_MS: a move
//!   inside the interval only replaces the pending position, and a timer in the actor's loop
//!   sends the newest one when the interval ends. Positions pending meanwhile are moved
//!   through committed edits like every other cursor, so what goes out is current.
//! - **Redis.** Each change is handed to the docnode's publisher ([`crate::presence`]) without
//!   waiting; every third of PRESENCE_TTL_SECS the actor republishes all its users with a
//!   fresh expiry (this also repairs Redis after an outage).
//! - **Restore.** A document loading after a failover or drain reads the entries its previous
//!   owner wrote. Those users show to everyone here (late joiners included) and their cursors
//!   move with edits, until their entry expires or their client reconnects with the same
//!   exactly-once client id and takes the entry over, user id included, so the others see no
//!   change at all.

use std::collections::{HashMap, HashSet};

use codraft_common::presence::{entry_key, now_ms, PresenceCursor, PresenceEntry, PresenceWrite};
use tokio::time::Instant;

use super::{pb, ConnId, Connection, Document, Kind};

/// Least time between two republications of cursors moved by edits.
const MOVED_REPUBLISH: std::time::Duration = std::time::Duration::from_millis(250);

/// A user restored from Redis with no connection here (yet).
pub(super) struct Restored {
    /// The user id the others know.
    pub(super) user_id: u64,
    /// Name and hue.
    info: Option<pb::ClientInfo>,
    /// Cursor, moved through every committed edit.
    pub(super) cursor: Option<pb::CursorData>,
    /// When the entry expires unless its client comes back.
    expires: Instant,
}

/// Presence bookkeeping beside the connections.
pub(super) struct PresenceState {
    /// Users restored from Redis, by entry key.
    pub(super) restored: HashMap<String, Restored>,
    /// When each connection's cursor last went out.
    cursor_sent: HashMap<ConnId, Instant>,
    /// Connections whose newest cursor has not gone out yet.
    dirty: HashSet<ConnId>,
    /// When the next pending cursor is due.
    flush_at: Option<Instant>,
    /// When the next heartbeat is due.
    heartbeat_at: Instant,
    /// When cursors moved by edits are next republished to Redis.
    moved_at: Option<Instant>,
}

impl PresenceState {
    /// Empty state; the first heartbeat a third of `ttl` from now.
    pub(super) fn new(ttl: std::time::Duration) -> Self {
        Self {
            restored: HashMap::new(),
            cursor_sent: HashMap::new(),
            dirty: HashSet::new(),
            flush_at: None,
            heartbeat_at: Instant::now() + ttl / 3,
            moved_at: None,
        }
    }
}

fn cursor_from_proto(data: &pb::CursorData) -> PresenceCursor {
    PresenceCursor {
        cursors: data.cursors.clone(),
        selections: data.selections.iter().map(|s| (s.start, s.end)).collect(),
    }
}

fn cursor_to_proto(cursor: &PresenceCursor) -> pb::CursorData {
    pb::CursorData {
        cursors: cursor.cursors.clone(),
        selections: cursor
            .selections
            .iter()
            .map(|&(start, end)| pb::Selection { start, end })
            .collect(),
    }
}

impl Document {
    fn presence_entry(&self, c: &Connection) -> PresenceEntry {
        let ttl_ms = u64::try_from(self.deps.presence.ttl().as_millis()).unwrap_or(u64::MAX);
        PresenceEntry {
            key: entry_key(c.client_id.as_deref(), c.user_id),
            user_id: c.user_id,
            info: c.info.as_ref().map(|i| (i.name.clone(), i.hue)),
            cursor: c.cursor.as_ref().map(cursor_from_proto),
            node: self.deps.presence.node().to_owned(),
            expires_ms: now_ms().saturating_add(ttl_ms),
        }
    }

    fn publish_connection(&self, conn: ConnId) {
        if !self.deps.presence.is_shared() {
            return;
        }
        if let Some(c) = self.connections.get(&conn) {
            self.deps.presence.send(PresenceWrite::Put {
                document: self.id.to_string(),
                entry: self.presence_entry(c),
            });
        }
    }

    /// Takes in what the previous owner left in Redis (called once, right after loading).
    pub(super) fn restore_presence(&mut self, entries: Vec<PresenceEntry>) {
        let now_ms = now_ms();
        let now = Instant::now();
        let len = self.text.len_chars() as u64;
        for entry in entries {
            let left = std::time::Duration::from_millis(entry.expires_ms.saturating_sub(now_ms));
            let cursor = entry
                .cursor
                .as_ref()
                .map(|c| super::cursor::clamp_cursor(cursor_to_proto(c), len));
            self.presence.restored.insert(
                entry.key,
                Restored {
                    user_id: entry.user_id,
                    info: entry.info.map(|(name, hue)| pb::ClientInfo { name, hue }),
                    cursor,
                    expires: now + left,
                },
            );
        }
        if !self.presence.restored.is_empty() {
            tracing::debug!(document = %self.id, users = self.presence.restored.len(), "presence restored");
        }
    }

    /// The restored entry a joining client takes over: its own, by exactly-once client id.
    pub(super) fn take_restored(&mut self, client_id: Option<&str>) -> Option<Restored> {
        let client = client_id?;
        self.presence.restored.remove(&entry_key(Some(client), 0))
    }

    /// How many frames a joiner receives about restored users, at most.
    /// UserInfo and UserCursor frames for every user present (but `except`), restored ones
    /// included: what a joiner, or a client catching up, is told of the others.
    pub(super) fn present_users(&self, except: Option<ConnId>, frames: &mut Vec<Kind>) {
        let others = || {
            self.connections
                .iter()
                .filter(move |(&id, _)| Some(id) != except)
                .map(|(_, c)| c)
        };
        for other in others() {
            if let Some(info) = &other.info {
                frames.push(Kind::UserInfo(pb::UserInfo {
                    user_id: other.user_id,
                    info: Some(info.clone()),
                }));
            }
        }
        for other in others() {
            if let Some(data) = &other.cursor {
                frames.push(Kind::UserCursor(pb::UserCursor {
                    user_id: other.user_id,
                    data: Some(data.clone()),
                }));
            }
        }
        self.restored_frames(frames);
    }

    pub(super) fn restored_frames_len(&self) -> usize {
        2 * self.presence.restored.len()
    }

    /// The restored users' info and cursors, for a joiner.
    pub(super) fn restored_frames(&self, frames: &mut Vec<Kind>) {
        for r in self.presence.restored.values() {
            if let Some(info) = &r.info {
                frames.push(Kind::UserInfo(pb::UserInfo {
                    user_id: r.user_id,
                    info: Some(info.clone()),
                }));
            }
        }
        for r in self.presence.restored.values() {
            if let Some(data) = &r.cursor {
                frames.push(Kind::UserCursor(pb::UserCursor {
                    user_id: r.user_id,
                    data: Some(data.clone()),
                }));
            }
        }
    }

    /// A client joined: it inherits a restored entry it took over, and is published.
    pub(super) fn presence_joined(&mut self, conn: ConnId, takeover: Option<Restored>) {
        if let (Some(restored), Some(c)) = (takeover, self.connections.get_mut(&conn)) {
            c.info = restored.info;
            c.cursor = restored.cursor;
        }
        self.publish_connection(conn);
    }

    /// A client changed its name or colour (already broadcast).
    pub(super) fn presence_info_changed(&mut self, conn: ConnId) {
        self.publish_connection(conn);
    }

    /// A client moved its cursor: send it now if its interval has passed, else later.
    pub(super) fn cursor_moved(&mut self, conn: ConnId, data: pb::CursorData) {
        let len = self.text.len_chars() as u64;
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        c.cursor = Some(super::cursor::clamp_cursor(data, len));
        let interval = self.deps.config.cursor_interval();
        let now = Instant::now();
        match self.presence.cursor_sent.get(&conn) {
            Some(&sent) if now < sent + interval => {
                self.presence.dirty.insert(conn);
                let due = sent + interval;
                self.presence.flush_at = Some(self.presence.flush_at.map_or(due, |f| f.min(due)));
            }
            _ => self.send_cursor(conn, now),
        }
    }

    fn send_cursor(&mut self, conn: ConnId, now: Instant) {
        self.presence.dirty.remove(&conn);
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let Some(data) = c.cursor.clone() else {
            return;
        };
        let user_id = c.user_id;
        self.presence.cursor_sent.insert(conn, now);
        self.deps
            .presence
            .count_cursor_frames(self.connections.len());
        self.publish_connection(conn);
        self.broadcast(|_| {
            Kind::UserCursor(pb::UserCursor {
                user_id,
                data: Some(data.clone()),
            })
        });
    }

    /// Committed edits moved cursors: republish them soon (bounded rate), so a new owner
    /// restores current positions.
    pub(super) fn cursors_moved_by_edits(&mut self) {
        if self.presence.moved_at.is_none() && self.deps.presence.is_shared() {
            self.presence.moved_at = Some(Instant::now() + MOVED_REPUBLISH);
        }
    }

    /// A connection ended: forget it and remove its entry from Redis.
    pub(super) fn presence_gone(&mut self, conn: ConnId, c: &Connection) {
        self.presence.cursor_sent.remove(&conn);
        self.presence.dirty.remove(&conn);
        if self.deps.presence.is_shared() {
            self.deps.presence.send(PresenceWrite::Remove {
                document: self.id.to_string(),
                key: entry_key(c.client_id.as_deref(), c.user_id),
                user_id: c.user_id,
            });
        }
    }

    /// When the actor's loop must next call [`Document::presence_tick`].
    pub(super) fn presence_deadline(&self) -> Instant {
        let mut at = self.presence.heartbeat_at;
        for due in [self.presence.flush_at, self.presence.moved_at]
            .into_iter()
            .flatten()
        {
            at = at.min(due);
        }
        for r in self.presence.restored.values() {
            at = at.min(r.expires);
        }
        at
    }

    /// Sends due cursors, republishes moved ones, and on the heartbeat refreshes every entry
    /// and lets expired restored users go.
    pub(super) fn presence_tick(&mut self) {
        let now = Instant::now();
        if self.presence.flush_at.is_some_and(|at| at <= now) {
            let interval = self.deps.config.cursor_interval();
            let mut next: Option<Instant> = None;
            let dirty: Vec<ConnId> = self.presence.dirty.iter().copied().collect();
            for conn in dirty {
                let due = self
                    .presence
                    .cursor_sent
                    .get(&conn)
                    .map_or(now, |&sent| sent + interval);
                if due <= now {
                    self.send_cursor(conn, now);
                } else {
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
            self.presence.flush_at = next;
        }
        let heartbeat = self.presence.heartbeat_at <= now;
        if heartbeat || self.presence.moved_at.is_some_and(|at| at <= now) {
            self.presence.moved_at = None;
            if self.deps.presence.is_shared() && !self.connections.is_empty() {
                let entries = self
                    .connections
                    .values()
                    .map(|c| self.presence_entry(c))
                    .collect();
                self.deps.presence.send(PresenceWrite::Refresh {
                    document: self.id.to_string(),
                    entries,
                });
            }
        }
        if heartbeat {
            self.presence.heartbeat_at = now + self.deps.presence.ttl() / 3;
        }
        if !self.presence.restored.is_empty() {
            let expired: Vec<String> = self
                .presence
                .restored
                .iter()
                .filter(|(_, r)| r.expires <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                if let Some(r) = self.presence.restored.remove(&key) {
                    self.announce_departure(r.user_id);
                }
            }
        }
    }
}

impl Document {
    /// Stores a user's name and colour for the version history, without waiting: a lost
    /// write only leaves their edits unnamed there.
    pub(super) fn remember_author(&self, user_id: u64, info: &pb::ClientInfo) {
        let store = std::sync::Arc::clone(&self.deps.store);
        let document = self.id.to_string();
        let author = crate::store::AuthorInfo {
            author: user_id,
            name: info.name.chars().take(64).collect(),
            hue: info.hue % 360,
        };
        tokio::spawn(async move {
            if let Err(error) = store.record_author(&document, author).await {
                tracing::debug!(%error, "author's name not stored for the history");
            }
        });
    }
}
