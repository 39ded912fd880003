//! Slow clients: a connection whose frame queue is full is not closed at once but marked
//! *lagging*, skipped by every fan-out, and later sent one compacted catch-up.
//!
//! - **Lagging.** The connection keeps the log revision it holds and the text length there;
//!   history and presence frames pass it by. Frames the catch-up cannot rebuild from the
//!   current state (a user leaving, a password change) are remembered.
//! - **Catch-up.** At every commit fan-out and on a short timer while anyone lags, a lagging
//!   connection with room for the whole burst gets one `History` frame: each run of other
//!   users' committed entries after its last own entry composed into one op, its own entries
//!   and everything before them kept as they are (they acknowledge its edits, which were
//!   transformed through each entry one by one), then the current language, departures,
//!   users and cursors. The connection remembers each composed op it was sent
//!   ([`Composed`]): its later edits based before it are transformed through that op, as
//!   the client transformed them, not through the entries it stands for.
//!   An entry standing for several log revisions leaves a breakpoint in the connection's
//!   [`crate::connection::Numbering`]. Clients that resume by log revision (the exactly-once
//!   extension) get every entry as it is, nothing composed: if such a client's connection
//!   drops before it reads a composed entry, it resumes on a new connection and is sent the
//!   entries one by one, and an edit the server had transformed through the composed op
//!   would then land elsewhere in its text than in the server's (transform does not commute
//!   with compose; the model test found it).
//! - **Snapshot.** Lagging from before the history window, a client with no edits of its own
//!   in the gap gets one entry that replaces the whole text.
//! - **Close.** Still lagging after SLOW_CLIENT_GRACE_MS, or impossible to catch up: 4508.
//!   The client reconnects and resumes without loss.
//!
//! None of this waits: the actor only ever tries to queue frames, so a slow client never
//! slows the document or anyone else.

use codraft_ot::{Operation, OtError};
use tokio::time::Instant;
use tracing::debug;

use super::{close, pb, wire, ConnId, Connection, Document, Entry, Kind, SendFailure};

/// How often lagging connections are checked for room when no commit comes by.
const POLL: std::time::Duration = std::time::Duration::from_millis(25);

/// Close reason for a client that stayed lagging for the whole grace period.
const TOO_FAR_BEHIND: &str = "too far behind; reconnect to resync";
/// Close reason for a client lagging from before the history window that cannot take the
/// whole text instead.
const BEYOND_HISTORY: &str = "too far behind to catch up; reconnect to resync";

/// A connection that could not take a frame, and what it has missed.
pub(super) struct Lagging {
    /// When its queue was found full.
    since: Instant,
    /// The log revision the client holds: every committed entry below it was sent.
    log: u64,
    /// The committed text's length at `log`, in code points, for a snapshot catch-up.
    len: u64,
    /// Whether the gap holds edits of its own (then a snapshot would lose their
    /// acknowledgement).
    own_edits: bool,
    /// Users who left while it lagged.
    departed: Vec<u64>,
    /// Whether the document's password changed while it lagged.
    otp_changed: bool,
}

/// One entry of a catch-up, and the log revision the client holds after applying it.
#[derive(Debug)]
pub(super) struct Compacted {
    pub(super) entry: pb::HistoryEntry,
    pub(super) through: u64,
    /// For an entry composed of several log entries: what it stands for (see [`Composed`]).
    pub(super) composed: Option<Composed>,
}

/// A composed catch-up entry a connection was sent, standing for log revisions
/// `from..to`. Transform does not commute with compose (with insert ties next to a delete,
/// an op transformed through a composed run can land elsewhere than through the same ops one
/// by one), so an edit the client based at or before `from` is transformed through exactly
/// this op, as the client transformed its own pending edits.
#[derive(Debug, Clone)]
pub(super) struct Composed {
    /// First log revision the entry stands for.
    pub(super) from: u64,
    /// The log revision after it.
    pub(super) to: u64,
    /// The composed op.
    pub(super) operation: Operation,
}

/// Compacts committed entries for one client. `entries` start at log revision `from`; `own`
/// tells the client's own entries (and, to compose nothing, may say so of every entry), which
/// are kept as they are and in order. Only the run of other entries after the client's last
/// own entry is composed into one entry (author kept
/// when the run has one, else 0): the server transformed each own edit through the entries
/// before it one by one, and the client transforms its pending edit through what it is
/// sent, so what precedes an own entry must be sent as it is.
pub(super) fn compact<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    from: u64,
    own: impl Fn(&Entry) -> bool,
) -> Result<Vec<Compacted>, OtError> {
    /// A run of others' entries being composed.
    struct Run {
        operation: Operation,
        author: u64,
        count: u64,
    }
    fn flush(run: Option<Run>, through: u64, out: &mut Vec<Compacted>) {
        let Some(run) = run else {
            return;
        };
        let composed = (run.count > 1).then(|| Composed {
            from: through - run.count,
            to: through,
            operation: run.operation.clone(),
        });
        out.push(Compacted {
            entry: pb::HistoryEntry {
                user_id: run.author,
                operation: Some(wire::operation_to_proto(&run.operation)),
                client_id: None,
                seq: None,
            },
            through,
            composed,
        });
    }
    let entries: Vec<&Entry> = entries.into_iter().collect();
    let last_own = entries.iter().rposition(|e| own(e));
    let mut out = Vec::new();
    let mut run: Option<Run> = None;
    let mut revision = from;
    for (i, entry) in entries.into_iter().enumerate() {
        let kept_as_is = last_own.is_some_and(|last| i <= last);
        if kept_as_is {
            flush(run.take(), revision, &mut out);
            revision += 1;
            out.push(Compacted {
                entry: entry.to_proto(),
                through: revision,
                composed: None,
            });
            continue;
        }
        revision += 1;
        run = Some(match run.take() {
            None => Run {
                operation: entry.operation.clone(),
                author: entry.author,
                count: 1,
            },
            Some(run) => Run {
                operation: run.operation.compose(&entry.operation)?,
                author: if run.author == entry.author {
                    run.author
                } else {
                    0
                },
                count: run.count + 1,
            },
        });
    }
    flush(run, revision, &mut out);
    Ok(out)
}

impl Connection {
    /// A frame this connection was skipped for while lagging: remember what its catch-up
    /// cannot rebuild from the current state.
    pub(super) fn missed(&mut self, frame: &Kind) {
        let Some(lag) = &mut self.lagging else {
            return;
        };
        match frame {
            Kind::UserInfo(pb::UserInfo {
                user_id,
                info: None,
            }) => lag.departed.push(*user_id),
            Kind::Otp(_) => lag.otp_changed = true,
            _ => {}
        }
    }

    /// An edit of this connection got a revision: if it lags, the gap now holds an edit of
    /// its own.
    pub(super) fn edited(&mut self) {
        if let Some(lag) = &mut self.lagging {
            lag.own_edits = true;
        }
    }

    /// Whether a history entry is this client's own: its user id, or its exactly-once id
    /// (an edit an earlier connection of the same client sent).
    fn owns(&self, entry: &Entry) -> bool {
        entry.author == self.user_id
            || (self.client_id.is_some() && entry.client_id == self.client_id)
    }
}

impl Document {
    /// Marks a connection lagging at log revision `log`, where the text had `len` code points.
    pub(super) fn start_lagging(&mut self, id: ConnId, log: u64, len: u64) {
        let pending = (log.max(self.history_start) - self.history_start) as usize;
        let Some(c) = self.connections.get(&id) else {
            return;
        };
        if c.lagging.is_some() {
            return;
        }
        let own_edits = self.history.iter().skip(pending).any(|e| c.owns(e));
        debug!(document = %self.id, conn = id, revision = log, "client lagging");
        if let Some(c) = self.connections.get_mut(&id) {
            c.lagging = Some(Lagging {
                since: Instant::now(),
                log,
                len,
                own_edits,
                departed: Vec::new(),
                otp_changed: false,
            });
        }
        self.deps.metrics.lagging_clients.inc();
        if self.catch_up_at.is_none() {
            self.catch_up_at = Some(Instant::now() + POLL);
        }
    }

    /// When the actor's loop next checks lagging connections, if any lag.
    pub(super) fn catch_up_deadline(&self) -> Option<Instant> {
        self.catch_up_at
    }

    /// Tries to catch up every lagging connection; closes those past their grace period.
    pub(super) fn catch_up_lagging(&mut self) {
        let lagging: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(_, c)| c.lagging.is_some())
            .map(|(&id, _)| id)
            .collect();
        for id in lagging {
            self.catch_up(id);
        }
        let any = self.connections.values().any(|c| c.lagging.is_some());
        self.catch_up_at = any.then(|| Instant::now() + POLL);
    }

    /// The frames after the History of a catch-up: what others look like now.
    fn presence_frames(&self, id: ConnId, c: &Connection, lag: &Lagging) -> Vec<Kind> {
        let mut frames = Vec::new();
        if let Some(language) = &self.language {
            frames.push(Kind::Language(pb::Language {
                language: language.clone(),
            }));
        }
        if lag.otp_changed {
            frames.push(Kind::Otp(pb::Otp {
                otp: self.otp.clone(),
            }));
        }
        let present = |user: u64| {
            self.connections.values().any(|o| o.user_id == user)
                || self.presence.restored.values().any(|r| r.user_id == user)
        };
        for &user_id in &lag.departed {
            if user_id != c.user_id && !present(user_id) {
                frames.push(Kind::UserInfo(pb::UserInfo {
                    user_id,
                    info: None,
                }));
            }
        }
        self.present_users(Some(id), &mut frames);
        frames
    }

    /// The History entries that bring a lagging client from `lag.log` to `committed`.
    fn catch_up_entries(&self, c: &Connection, lag: &Lagging) -> Result<Vec<Compacted>, OtError> {
        if lag.log >= self.history_start {
            let skip = (lag.log - self.history_start) as usize;
            let count = (self.committed - lag.log) as usize;
            let entries = self.history.iter().skip(skip).take(count);
            // An own edit still pending was transformed through every entry of the gap one
            // by one: then nothing of the gap may be composed. Nor for a client that resumes
            // by log revision: an edit it sends before reading the catch-up is transformed
            // through the composed op, but if its connection drops first it resumes on a new
            // one, is sent the same entries one by one and transforms its pending edit
            // through those, which can put an insert elsewhere than the server did (the
            // model test's seed 2195615455796300605 diverged so).
            let own_pending = self.history.iter().skip(skip + count).any(|e| c.owns(e));
            let compose_none = own_pending || c.resumes_itself;
            return compact(entries, lag.log, |e| compose_none || c.owns(e));
        }
        // Before the window (`catch_up` made sure the client can take the whole text).
        let mut replace = Operation::new();
        replace.delete(lag.len).insert(&self.text.to_string());
        Ok(vec![Compacted {
            entry: pb::HistoryEntry {
                user_id: 0,
                operation: Some(wire::operation_to_proto(&replace)),
                client_id: None,
                seq: None,
            },
            through: self.committed,
            composed: (lag.log < self.committed).then_some(Composed {
                from: lag.log,
                to: self.committed,
                operation: replace,
            }),
        }])
    }

    /// Sends one lagging connection its catch-up if its queue has room for all of it; closes
    /// it if the catch-up is impossible, or it is still lagging after the grace period.
    fn catch_up(&mut self, id: ConnId) {
        let Some(c) = self.connections.get(&id) else {
            return;
        };
        let Some(lag) = &c.lagging else {
            return;
        };
        if lag.log < self.history_start && (c.resumes_itself || lag.own_edits) {
            // Before the window, only a client that counts revisions per connection, with no
            // edit of its own to acknowledge, can take the whole text instead.
            self.close(id, close::TOO_SLOW, BEYOND_HISTORY);
            return;
        }
        let presence = self.presence_frames(id, c, lag);
        // One History frame plus presence; a burst larger than the whole queue waits for an
        // empty queue and sends what fits (the rest is caught up next time).
        let need = (1 + presence.len()).min(c.outbox.max_room());
        if c.outbox.room() < need {
            if lag.since.elapsed() >= self.deps.config.slow_client_grace() {
                self.close(id, close::TOO_SLOW, TOO_FAR_BEHIND);
            }
            return;
        }
        let entries = match self.catch_up_entries(c, lag) {
            Ok(entries) => entries,
            Err(error) => {
                // Committed entries always compose, so this is a bug; the client resyncs.
                tracing::warn!(document = %self.id, %error, "catch-up does not compose");
                self.close(id, close::TOO_SLOW, TOO_FAR_BEHIND);
                return;
            }
        };
        let (committed, text_len) = (self.committed, self.text.len_chars() as u64);
        let history_start = self.history_start;
        let lag_log = lag.log;
        let Some(c) = self.connections.get_mut(&id) else {
            return;
        };
        let start = c.sent;
        // Padded entries keep one entry per log revision; otherwise the gateway must know
        // that this connection's revisions stopped counting log revisions.
        let one_per_revision = entries.len() as u64 == committed - lag_log;
        let frame = Kind::History(pb::History {
            start,
            entries: entries.iter().map(|e| e.entry.clone()).collect(),
            compacted: !one_per_revision,
            log_revision: (!one_per_revision).then_some(committed),
        });
        if let Err(failure) = c.outbox.send(frame) {
            if failure == SendFailure::Gone {
                self.leave(id);
            }
            return;
        }
        for (i, e) in entries.iter().enumerate() {
            c.numbering.mark(start + i as u64 + 1, e.through);
        }
        c.numbering.forget_before(history_start);
        c.composed
            .extend(entries.iter().filter_map(|e| e.composed.clone()));
        c.composed.retain(|span| span.to > history_start);
        c.sent += entries.len() as u64;
        c.lagging = None;
        self.deps.metrics.lagging_clients.dec();
        self.deps.metrics.slow_client_catchups.inc();
        debug!(document = %self.id, conn = id, entries = entries.len(), revision = committed, "client caught up");
        let failed = presence
            .into_iter()
            .find_map(|frame| c.outbox.send(frame).err());
        match failed {
            None => {}
            // The history went out: lag again from here, and the next catch-up sends the
            // rest of the presence.
            Some(SendFailure::Full) => self.start_lagging(id, committed, text_len),
            Some(SendFailure::Gone) => self.leave(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(author: u64, operation: Operation) -> Entry {
        Entry {
            author,
            operation,
            client_id: None,
            seq: None,
            span: None,
            bytes: 0,
        }
    }

    fn insert_at(len: u64, at: u64, text: &str) -> Operation {
        let mut op = Operation::new();
        op.retain(at).insert(text).retain(len - at);
        op
    }

    fn apply_all(text: &str, ops: impl IntoIterator<Item = Operation>) -> String {
        ops.into_iter().fold(text.to_owned(), |t, op| {
            op.apply_str(&t).expect("op applies")
        })
    }

    fn operation(e: &Compacted) -> Operation {
        let proto = e.entry.operation.clone().unwrap_or_default();
        wire::operation_from_proto(&proto).expect("valid op")
    }

    /// Others' entries 1, 2, then own 3, then others' 4 (author 2), 5 (author 4).
    fn gap() -> Vec<Entry> {
        vec![
            entry(2, insert_at(0, 0, "ab")),
            entry(2, insert_at(2, 2, "cd")),
            entry(7, insert_at(4, 0, "X")),
            entry(2, insert_at(5, 5, "ef")),
            entry(4, insert_at(7, 1, "-")),
        ]
    }

    #[test]
    fn only_the_run_after_the_last_own_entry_composes() {
        let gap = gap();
        let out = compact(&gap, 10, |e| e.author == 7).expect("composes");
        let authors: Vec<u64> = out.iter().map(|e| e.entry.user_id).collect();
        assert_eq!(
            authors,
            vec![2, 2, 7, 0],
            "the entries before the own one as they are, then one mixed run"
        );
        let through: Vec<u64> = out.iter().map(|e| e.through).collect();
        assert_eq!(through, vec![11, 12, 13, 15]);
        assert_eq!(out[2].entry.operation, gap[2].to_proto().operation);
        let spans: Vec<(u64, u64)> = out
            .iter()
            .filter_map(|e| e.composed.as_ref().map(|c| (c.from, c.to)))
            .collect();
        assert_eq!(spans, vec![(13, 15)], "the composed run is remembered");
        let compacted = apply_all("", out.iter().map(operation));
        let original = apply_all("", gap.iter().map(|e| e.operation.clone()));
        assert_eq!(compacted, original);
        assert_eq!(compacted, "X-abcdef");
    }

    /// The case: text "ABC"; C lags with `[2,"Z",1]` (Z after B) pending while D
    /// deletes B, then inserts Y where B was. The server transformed C's edit through D's
    /// two ops one by one ("AZYC"); composing them first would put Z after Y ("AYZC").
    #[test]
    fn a_lagging_clients_pending_edit_lands_where_the_server_put_it() {
        let z = {
            let mut op = Operation::new();
            op.retain(2).insert("Z").retain(1);
            op
        };
        let d1 = {
            let mut op = Operation::new();
            op.retain(1).delete(1).retain(1);
            op
        };
        let d2 = insert_at(2, 1, "Y");
        // The server: Z through each of D's ops, then committed after them.
        let server_z = z
            .transform(&d1)
            .and_then(|(z, _)| z.transform(&d2))
            .expect("transforms")
            .0;
        let server_text = apply_all("ABC", [d1.clone(), d2.clone(), server_z.clone()]);
        assert_eq!(server_text, "AZYC");
        // What the client computed when the catch-up composed D's ops.
        let composed = d1.compose(&d2).expect("composes");
        let client_z = z.transform(&composed).expect("transforms").0;
        let composed_text = apply_all("ABC", [composed.clone(), client_z]);
        assert_eq!(composed_text, "AYZC", "the trap is real");
        let gap = [entry(2, d1), entry(2, d2), entry(7, server_z)];
        {
            let out = compact(&gap, 0, |e| e.author == 7).expect("composes");
            // The client (ot.js): others' entries transform its outstanding edit and apply
            // to its text; its own entry acknowledges it.
            let (mut text, mut outstanding) = (apply_all("ABC", [z.clone()]), Some(z.clone()));
            for e in &out {
                let op = operation(e);
                if e.entry.user_id == 7 {
                    outstanding = None;
                    continue;
                }
                let incoming = match outstanding.take() {
                    Some(mine) => {
                        let (mine, incoming) = mine.transform(&op).expect("transforms");
                        outstanding = Some(mine);
                        incoming
                    }
                    None => op,
                };
                text = incoming.apply_str(&text).expect("applies");
            }
            assert_eq!(text, server_text);
        }
    }

    #[test]
    fn an_empty_gap_or_only_own_entries_compact_to_themselves() {
        assert!(compact(&[], 3, |_| false).expect("empty").is_empty());
        let own = [
            entry(7, insert_at(0, 0, "a")),
            entry(7, insert_at(1, 1, "b")),
        ];
        let out = compact(&own, 3, |_| true).expect("own");
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].through, 5);
    }
}
