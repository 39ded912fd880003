//! What a gateway remembers about one client connection so that it can move the connection
//! to a document's new owner without closing the client's WebSocket.
//!
//! When a docnode drains or a document moves, the old owner ends the session with a
//! *reroute* error. The gateway then opens a session with the new owner that resumes from a
//! log revision the client's state can be traced back to, re-sends the edits the client has
//! not seen acknowledged (exactly-once makes that safe: an edit the old owner committed is
//! recognised by its client id and sequence number), and from then on translates revision
//! numbers both ways, so the client keeps counting as if nothing had happened.
//!
//! Revisions in three numberings meet here:
//! - the *client's* revision: History entries it was sent on this socket;
//! - the *session's* revision: the docnode's numbering of the current gRPC session; the
//!   first session's equals the client's, a moved session's revision 0 is client revision
//!   `offset`;
//! - the *log* revision: the document's op log. `anchor` ties one client revision to its log
//!   revision; entries count one log revision each, except in a compacted catch-up, after
//!   which the docnode names the log revision reached and the anchor moves there.
//!
//! A connection cannot be moved (and is closed with 4503 as before, the client resuming by
//! itself) when the gateway cannot prove the translation right: no anchor, an edit without a
//! sequence number from a client that brought its own client id, an unacknowledged edit from
//! before the anchor, or the new owner answering with a different user id or revision.

use std::collections::VecDeque;

use codraft_proto as pb;
use pb::client_frame::Kind as In;
use pb::in_process::Inbound;
use pb::server_frame::Kind as Out;
use prost::Message;

/// How far back (in entries sent to the client) a moved session resumes, so that an edit the
/// client bases on a revision still on its way to it can be translated.
pub const SLACK: u64 = 256;
/// Most unacknowledged edits remembered; a client with more is not moved.
pub const MAX_UNACKED: usize = 1024;
/// Most bytes of unacknowledged edits remembered (their encoded size); a client with more
/// is not moved (it is closed with 4503 if its document moves, and re-sends them itself).
pub const MAX_UNACKED_BYTES: usize = 4 << 20;

/// What the relay does with a frame from the docnode.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// Send it to the client (revisions already translated).
    Forward(Inbound),
    /// Nothing for the client (e.g. the new owner's join frames after a move).
    Drop,
    /// The old owner let the connection go: move it to the new owner.
    Move,
    /// The translation cannot be trusted any more: close the socket so the client resumes.
    Fail(&'static str),
}

/// Where a moved session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// The log revision the new session resumes from.
    pub log: u64,
    /// The client revision that log revision is.
    pub client: u64,
}

/// The gateway's memory of one client connection.
#[derive(Debug)]
pub struct Handoff {
    client_id: String,
    /// The client sent no client id: the gateway made one up and numbers its edits.
    made_up: bool,
    next_seq: u64,
    user_id: Option<u64>,
    /// History entries sent to the client: the client's latest revision.
    forwarded: u64,
    /// The client revision of the current session's revision 0.
    offset: u64,
    /// A client revision and its log revision, valid for every later client revision.
    anchor: Option<(u64, u64)>,
    /// The highest revision an edit of the client was based on (a client's revisions only
    /// grow, so later edits are based on this or later).
    last_edit: u64,
    /// Edits sent and not yet acknowledged, in the client's numbering.
    unacked: VecDeque<pb::Edit>,
    /// Their encoded size.
    unacked_bytes: usize,
    /// The highest seq the docnode acknowledged (in `Joined.last_seq` or a History entry):
    /// an edit at or below it is a re-send, not kept.
    acked_seq: u64,
    info: Option<pb::ClientInfo>,
    cursor: Option<pb::CursorData>,
    /// Why this connection can no longer be moved, if it cannot.
    stuck: Option<&'static str>,
    /// The resume point of a move whose session has not confirmed it yet.
    moving: Option<ResumePoint>,
    /// Whether the first session has said where the client joined.
    joined: bool,
    /// How many times the connection was moved.
    moves: u32,
}

impl Handoff {
    /// A connection whose client sent `client_id` (or none: then one is made up).
    pub fn new(client_id: Option<String>) -> Self {
        let made_up = client_id.is_none();
        let client_id = client_id.unwrap_or_else(|| format!("gw_{:032x}", rand::random::<u128>()));
        Self {
            client_id,
            made_up,
            next_seq: 1,
            user_id: None,
            forwarded: 0,
            offset: 0,
            anchor: None,
            last_edit: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            acked_seq: 0,
            info: None,
            cursor: None,
            stuck: None,
            moving: None,
            joined: false,
            moves: 0,
        }
    }

    /// The client id the docnode is given.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether the gateway made the client id up (the docnode need not look it up).
    pub fn made_up(&self) -> bool {
        self.made_up
    }

    /// The client id the client itself uses, which decides how frames are rendered.
    pub fn visible_client_id(&self) -> Option<&str> {
        (!self.made_up).then_some(self.client_id.as_str())
    }

    /// How many times the connection was moved to another docnode.
    pub fn moves(&self) -> u32 {
        self.moves
    }

    /// The user id the docnode gave this connection.
    pub fn user_id(&self) -> Option<u64> {
        self.user_id
    }

    /// Prepares a client frame for the current session: numbers a made-up client's edits,
    /// remembers what a move would need, and translates the edit's revision.
    pub fn outgoing(
        &mut self,
        mut frame: pb::ClientFrame,
    ) -> Result<pb::ClientFrame, &'static str> {
        match &mut frame.kind {
            Some(In::Edit(edit)) => {
                if self.made_up {
                    edit.seq = Some(self.next_seq);
                    self.next_seq += 1;
                } else if edit.seq.is_none() {
                    self.stuck = Some("an edit without a sequence number");
                }
                self.last_edit = self.last_edit.max(edit.revision);
                // A re-send of an acknowledged or already kept seq is forwarded (the docnode
                // answers it) but not kept again.
                let seq = edit.seq.unwrap_or(0);
                let known =
                    seq <= self.acked_seq || self.unacked.iter().any(|e| e.seq == Some(seq));
                if self.stuck.is_none() && !known {
                    let mut kept = edit.clone();
                    kept.trace_context.clear();
                    let bytes = kept.encoded_len();
                    if self.unacked.len() < MAX_UNACKED
                        && self.unacked_bytes + bytes <= MAX_UNACKED_BYTES
                    {
                        self.unacked.push_back(kept);
                        self.unacked_bytes += bytes;
                    } else {
                        self.stuck = Some("too many unacknowledged edits");
                        self.unacked.clear();
                        self.unacked_bytes = 0;
                    }
                }
                edit.revision = edit
                    .revision
                    .checked_sub(self.offset)
                    .ok_or("an edit based on a revision from before the document moved")?;
            }
            Some(In::ClientInfo(info)) => self.info = Some(info.clone()),
            Some(In::CursorData(data)) => self.cursor = Some(data.clone()),
            _ => {}
        }
        Ok(frame)
    }

    /// Handles a frame from the current session.
    pub fn incoming(&mut self, frame: impl Into<Inbound>) -> Incoming {
        let mut frame = match frame.into() {
            Inbound::Frame(frame) => frame,
            Inbound::History { start, fanout } => {
                return match self.history(start, fanout.entries(), false, None) {
                    Err(outcome) => outcome,
                    Ok((start, 0)) => Incoming::Forward(Inbound::History { start, fanout }),
                    // After a move: only the entries the client has not seen, a copy of its own.
                    Ok((start, seen)) => Incoming::Forward(fanout.frame_after(seen, start).into()),
                };
            }
        };
        match &mut frame.kind {
            Some(Out::Identity(identity)) => {
                if self.moving.is_some() {
                    return if Some(identity.user_id) == self.user_id {
                        Incoming::Drop
                    } else {
                        Incoming::Fail("the new owner gave the connection another user id")
                    };
                }
                self.user_id = Some(identity.user_id);
            }
            Some(Out::Joined(joined)) => {
                if let Some(point) = self.moving.take() {
                    return if joined.resumed && joined.revision == point.log {
                        Incoming::Drop
                    } else {
                        Incoming::Fail("the new owner could not resume the connection")
                    };
                }
                if !self.joined {
                    self.joined = true;
                    // A fresh join's revision 1 is the snapshot at `revision`; a resumed
                    // connection's revision 0 is `revision`.
                    let client = u64::from(!joined.resumed);
                    self.anchor = Some((client, joined.revision));
                    self.acknowledged(joined.last_seq);
                }
                if self.made_up {
                    return Incoming::Drop;
                }
            }
            Some(Out::History(history)) => {
                let (start, compacted) = (history.start, history.compacted);
                match self.history(start, &history.entries, compacted, history.log_revision) {
                    Ok((start, seen)) => {
                        history.entries.drain(..seen);
                        history.start = start;
                    }
                    Err(outcome) => return outcome,
                }
            }
            Some(Out::Error(error))
                if error.close && error.reroute && self.resume_point().is_some() =>
            {
                return Incoming::Move;
            }
            _ => {}
        }
        Incoming::Forward(Inbound::Frame(frame))
    }

    /// Forgets the edits up to `seq`, which the docnode committed.
    fn acknowledged(&mut self, seq: u64) {
        self.acked_seq = self.acked_seq.max(seq);
        while self
            .unacked
            .front()
            .is_some_and(|e| e.seq.is_none_or(|s| s <= seq))
        {
            if let Some(e) = self.unacked.pop_front() {
                self.unacked_bytes = self.unacked_bytes.saturating_sub(e.encoded_len());
            }
        }
        let before = self.unacked.len();
        self.unacked.retain(|e| e.seq.is_some_and(|s| s > seq));
        if self.unacked.len() != before {
            self.unacked_bytes = self.unacked.iter().map(|e| e.encoded_len()).sum();
        }
    }

    /// Bytes of unacknowledged edits kept for a move.
    pub fn unacked_bytes(&self) -> usize {
        self.unacked_bytes
    }

    /// Acknowledges own edits among a History frame's `entries` at session revision `start`
    /// and counts what the client is sent of them: `Ok((client revision, seen))` forwards all
    /// but the first `seen` entries (which the client already has) at that revision.
    fn history(
        &mut self,
        start: u64,
        entries: &[pb::HistoryEntry],
        compacted: bool,
        log_revision: Option<u64>,
    ) -> Result<(u64, usize), Incoming> {
        for entry in entries {
            if entry.client_id.as_deref() == Some(self.client_id.as_str()) {
                if let Some(seq) = entry.seq {
                    self.acknowledged(seq);
                }
            }
        }
        let Some(start) = start.checked_add(self.offset) else {
            return Err(Incoming::Fail("revision out of range"));
        };
        if start > self.forwarded {
            return Err(Incoming::Fail(
                "the docnode skipped entries the client has not seen",
            ));
        }
        // After a move, the new owner replays entries the client already has.
        let seen = usize::try_from(self.forwarded - start).unwrap_or(usize::MAX);
        // An empty History is the answer to a join, which the client waits for; only a moved
        // session's is dropped.
        if seen >= entries.len() && (seen > 0 || self.moves > 0) {
            return Err(Incoming::Drop);
        }
        let start = self.forwarded;
        self.forwarded += (entries.len() - seen) as u64;
        if compacted {
            // Entries no longer count log revisions one to one: anchor again after them.
            self.anchor = log_revision.map(|log| (self.forwarded, log));
        }
        Ok((start, seen))
    }

    /// Where a moved session would resume, or `None` if this connection cannot be moved.
    pub fn resume_point(&self) -> Option<ResumePoint> {
        if self.stuck.is_some() || self.user_id.is_none() {
            return None;
        }
        let (anchor_client, anchor_log) = self.anchor?;
        // Later edits are based on the last edit's revision or later, and most likely on a
        // revision close to what was sent; unacknowledged ones must be re-sent.
        let mut client = self
            .last_edit
            .max(self.forwarded.saturating_sub(SLACK))
            .max(anchor_client)
            .min(self.forwarded);
        if let Some(oldest) = self.unacked.iter().map(|e| e.revision).min() {
            client = client.min(oldest);
        }
        if client < anchor_client {
            return None;
        }
        Some(ResumePoint {
            log: anchor_log + (client - anchor_client),
            client,
        })
    }

    /// Starts moving to a new session that resumes at `point`: from now on the session's
    /// revision 0 is client revision `point.client`. Returns the frames to send first on it:
    /// the client's name and cursor, then its unacknowledged edits.
    pub fn begin_move(&mut self, point: ResumePoint) -> Vec<pb::ClientFrame> {
        self.offset = point.client;
        self.anchor = Some((point.client, point.log));
        self.moving = Some(point);
        self.moves += 1;
        let mut frames = Vec::new();
        if let Some(info) = &self.info {
            frames.push(In::ClientInfo(info.clone()));
        }
        if let Some(data) = &self.cursor {
            frames.push(In::CursorData(data.clone()));
        }
        for edit in &self.unacked {
            let mut edit = edit.clone();
            edit.revision -= self.offset;
            frames.push(In::Edit(edit));
        }
        frames
            .into_iter()
            .map(|kind| pb::ClientFrame { kind: Some(kind) })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(kind: Out) -> pb::ServerFrame {
        pb::ServerFrame { kind: Some(kind) }
    }

    fn entry(user_id: u64, client_id: Option<&str>, seq: Option<u64>) -> pb::HistoryEntry {
        pb::HistoryEntry {
            user_id,
            operation: Some(pb::Operation::default()),
            client_id: client_id.map(str::to_owned),
            seq,
        }
    }

    fn history(start: u64, entries: Vec<pb::HistoryEntry>) -> pb::ServerFrame {
        server(Out::History(pb::History {
            start,
            entries,
            compacted: false,
            log_revision: None,
        }))
    }

    fn edit(revision: u64, seq: Option<u64>) -> pb::ClientFrame {
        pb::ClientFrame {
            kind: Some(In::Edit(pb::Edit {
                revision,
                operation: Some(pb::Operation::default()),
                seq,
                trace_context: Default::default(),
            })),
        }
    }

    fn revision_of(frame: &pb::ClientFrame) -> (u64, Option<u64>) {
        match &frame.kind {
            Some(In::Edit(e)) => (e.revision, e.seq),
            other => panic!("not an edit: {other:?}"),
        }
    }

    fn forwarded_start(incoming: Incoming) -> (u64, usize) {
        match incoming {
            Incoming::Forward(Inbound::Frame(frame)) => match frame.kind {
                Some(Out::History(h)) => (h.start, h.entries.len()),
                other => panic!("expected a History to forward, got {other:?}"),
            },
            other => panic!("expected a History to forward, got {other:?}"),
        }
    }

    /// A fresh join at log revision 100 with ten more entries forwarded (client revision 11).
    fn joined_plain_client() -> Handoff {
        let mut h = Handoff::new(None);
        assert_eq!(
            h.incoming(server(Out::Identity(pb::Identity { user_id: 7 }))),
            Incoming::Forward(server(Out::Identity(pb::Identity { user_id: 7 })).into())
        );
        let joined = server(Out::Joined(pb::Joined {
            revision: 100,
            resumed: false,
            last_seq: 0,
        }));
        assert_eq!(
            h.incoming(joined),
            Incoming::Drop,
            "a made-up id hides Joined"
        );
        assert_eq!(
            forwarded_start(h.incoming(history(0, vec![entry(0, None, None)]))),
            (0, 1)
        );
        let others = (0..10).map(|_| entry(3, Some("other"), Some(1))).collect();
        assert_eq!(forwarded_start(h.incoming(history(1, others))), (1, 10));
        h
    }

    #[test]
    fn a_plain_client_gets_a_made_up_id_and_numbered_edits() {
        let mut h = Handoff::new(None);
        assert!(h.made_up());
        assert!(h.client_id().starts_with("gw_"));
        assert_eq!(h.visible_client_id(), None);
        let first = h
            .outgoing(edit(1, None))
            .expect("first session passes edits through");
        let second = h.outgoing(edit(1, None)).expect("edit");
        assert_eq!(revision_of(&first), (1, Some(1)));
        assert_eq!(revision_of(&second), (1, Some(2)));
        let own = Handoff::new(Some("tab".into()));
        assert_eq!(own.visible_client_id(), Some("tab"));
    }

    #[test]
    fn a_move_resumes_at_the_oldest_unacknowledged_edit_and_translates_both_ways() {
        let mut h = joined_plain_client();
        // The client edits at its revision 8 (three entries still on their way to it).
        h.outgoing(edit(8, None)).expect("edit");
        let reroute = server(Out::Error(pb::Error {
            code: 4503,
            message: "moved".into(),
            close: true,
            reroute: true,
        }));
        assert_eq!(h.incoming(reroute), Incoming::Move);
        let point = h.resume_point().expect("movable");
        // Client revision 8 is log revision 100 + (8 - 1).
        assert_eq!(
            point,
            ResumePoint {
                log: 107,
                client: 8
            }
        );
        let replay = h.begin_move(point);
        assert_eq!(replay.len(), 1);
        assert_eq!(
            revision_of(&replay[0]),
            (0, Some(1)),
            "re-sent in the new numbering"
        );
        // The new owner confirms the same user and the resume point.
        assert_eq!(
            h.incoming(server(Out::Identity(pb::Identity { user_id: 7 }))),
            Incoming::Drop
        );
        let joined = server(Out::Joined(pb::Joined {
            revision: 107,
            resumed: true,
            last_seq: 0,
        }));
        assert_eq!(h.incoming(joined), Incoming::Drop);
        // It replays log 107..111 (session revisions 0..4): three are already with the client,
        // the fourth is the client's own edit, committed by the old owner.
        let mut replayed: Vec<_> = (0..3).map(|_| entry(3, Some("other"), Some(1))).collect();
        let own = h.client_id().to_owned();
        replayed.push(entry(7, Some(&own), Some(1)));
        assert_eq!(forwarded_start(h.incoming(history(0, replayed))), (11, 1));
        assert!(
            h.unacked.is_empty(),
            "the replayed entry acknowledges the edit"
        );
        // A later edit at client revision 12 is session revision 4.
        assert_eq!(
            revision_of(&h.outgoing(edit(12, None)).expect("edit")),
            (4, Some(2))
        );
        // And the next entry the new owner sends (session revision 4) is client revision 12.
        assert_eq!(
            forwarded_start(h.incoming(history(4, vec![entry(3, None, None)]))),
            (12, 1)
        );
        // An edit from before the move's resume point cannot be translated.
        assert!(h.outgoing(edit(5, None)).is_err());
    }

    #[test]
    fn without_edits_a_move_resumes_a_little_behind_what_was_sent() {
        let mut h = Handoff::new(Some("tab".into()));
        h.incoming(server(Out::Identity(pb::Identity { user_id: 2 })));
        let joined = server(Out::Joined(pb::Joined {
            revision: 40,
            resumed: true,
            last_seq: 0,
        }));
        assert!(
            matches!(h.incoming(joined), Incoming::Forward(_)),
            "the client asked for Joined"
        );
        let entries = (0..1000).map(|_| entry(3, None, None)).collect();
        h.incoming(history(0, entries));
        // Resumed at 40: client revision r is log 40 + r.
        assert_eq!(
            h.resume_point(),
            Some(ResumePoint {
                log: 40 + 1000 - SLACK,
                client: 1000 - SLACK
            })
        );
    }

    #[test]
    fn a_connection_is_not_moved_when_the_translation_is_unknown() {
        // An edit without a sequence number from a client with its own id.
        let mut h = Handoff::new(Some("tab".into()));
        h.incoming(server(Out::Identity(pb::Identity { user_id: 2 })));
        h.incoming(server(Out::Joined(pb::Joined {
            revision: 0,
            resumed: false,
            last_seq: 0,
        })));
        h.incoming(history(0, vec![entry(0, None, None)]));
        assert!(h.resume_point().is_some());
        h.outgoing(edit(1, None)).expect("edit");
        assert_eq!(h.resume_point(), None);

        // A compacted catch-up without its log revision ends the anchor.
        let mut h = joined_plain_client();
        h.incoming(server(Out::History(pb::History {
            start: 11,
            entries: vec![entry(3, None, None)],
            compacted: true,
            log_revision: None,
        })));
        assert_eq!(h.resume_point(), None);
        let reroute = server(Out::Error(pb::Error {
            code: 4503,
            message: "moved".into(),
            close: true,
            reroute: true,
        }));
        assert!(
            matches!(h.incoming(reroute), Incoming::Forward(_)),
            "closes as before"
        );

        // An edit based on the empty document before the join snapshot.
        let mut h = joined_plain_client();
        h.outgoing(edit(0, None)).expect("edit");
        assert_eq!(h.resume_point(), None);
    }

    #[test]
    fn the_new_owner_must_confirm_the_user_and_the_revision() {
        let mut h = joined_plain_client();
        let point = h.resume_point().expect("movable");
        h.begin_move(point);
        assert!(matches!(
            h.incoming(server(Out::Identity(pb::Identity { user_id: 8 }))),
            Incoming::Fail(_)
        ));

        let mut h = joined_plain_client();
        let point = h.resume_point().expect("movable");
        h.begin_move(point);
        h.incoming(server(Out::Identity(pb::Identity { user_id: 7 })));
        let fresh = server(Out::Joined(pb::Joined {
            revision: 500,
            resumed: false,
            last_seq: 0,
        }));
        assert!(matches!(h.incoming(fresh), Incoming::Fail(_)));
    }

    #[test]
    fn a_gap_in_the_new_owners_history_fails_the_move() {
        let mut h = joined_plain_client();
        assert!(matches!(
            h.incoming(history(12, vec![entry(3, None, None)])),
            Incoming::Fail(_)
        ));
    }

    #[test]
    fn a_compacted_catch_up_moves_the_anchor_to_the_log_revision_it_reached() {
        let caught_up = || {
            server(Out::History(pb::History {
                start: 11,
                entries: vec![entry(3, None, None)],
                compacted: true,
                log_revision: Some(150),
            }))
        };
        // Client revision 11 is log 110; one composed entry brings it to log 150.
        let mut h = joined_plain_client();
        assert_eq!(forwarded_start(h.incoming(caught_up())), (11, 1));
        h.outgoing(edit(12, None)).expect("edit");
        assert_eq!(
            h.resume_point(),
            Some(ResumePoint {
                log: 150,
                client: 12
            })
        );
        // An unacknowledged edit from before the catch-up cannot be placed in the log.
        let mut h = joined_plain_client();
        h.outgoing(edit(11, None)).expect("edit");
        h.incoming(caught_up());
        assert_eq!(h.resume_point(), None);
    }

    fn big_edit(revision: u64, seq: u64, bytes: usize) -> pb::ClientFrame {
        let mut frame = edit(revision, Some(seq));
        if let Some(In::Edit(e)) = &mut frame.kind {
            e.operation = Some(pb::Operation {
                components: vec![pb::Component {
                    kind: Some(pb::component::Kind::Insert("x".repeat(bytes))),
                }],
            });
        }
        frame
    }

    /// A client with its own id that joined and had its edit seq 1 acknowledged.
    fn acknowledged_client() -> Handoff {
        let mut h = Handoff::new(Some("mine".into()));
        h.incoming(server(Out::Identity(pb::Identity { user_id: 7 })));
        h.incoming(server(Out::Joined(pb::Joined {
            revision: 0,
            resumed: false,
            last_seq: 0,
        })));
        h.incoming(history(0, vec![entry(0, None, None)]));
        h.outgoing(edit(1, Some(1))).expect("edit");
        h.incoming(history(1, vec![entry(7, Some("mine"), Some(1))]));
        assert_eq!(h.unacked_bytes(), 0, "the acknowledged edit is forgotten");
        h
    }

    #[test]
    fn re_sent_acknowledged_edits_are_not_kept() {
        let mut h = acknowledged_client();
        for _ in 0..150 {
            h.outgoing(big_edit(2, 1, 64 << 10)).expect("forwarded");
        }
        assert_eq!(
            h.unacked.len(),
            0,
            "seq 1 was acknowledged: nothing to re-send"
        );
        assert_eq!(h.unacked_bytes(), 0);
        // A re-send of a still pending seq is kept once.
        h.outgoing(big_edit(2, 2, 10)).expect("forwarded");
        h.outgoing(big_edit(2, 2, 10)).expect("forwarded");
        assert_eq!(h.unacked.len(), 1);
    }

    #[test]
    fn unacknowledged_edits_are_bounded_in_bytes() {
        let mut h = acknowledged_client();
        let size = 256 << 10;
        let mut seq = 2;
        while h.unacked_bytes() + size <= MAX_UNACKED_BYTES {
            h.outgoing(big_edit(2, seq, size)).expect("forwarded");
            seq += 1;
        }
        assert!(h.unacked.len() > 1 && h.resume_point().is_some());
        h.outgoing(big_edit(2, seq, size)).expect("forwarded");
        assert_eq!(
            h.unacked_bytes(),
            0,
            "over the budget the edits are dropped"
        );
        assert!(
            h.resume_point().is_none(),
            "and the connection is not moved (it closes with 4503 and the client re-sends)"
        );
    }

    /// Two connections fed the same frames, one with its History frames shared (as a
    /// gateway reads a fan-out) and one with copies of its own, must do the same thing with
    /// every frame: the same outcome, the same frame for the client (the shared one still
    /// shared when the client is sent all of its entries), the same resume point. Seeded
    /// random schedules of joins, History frames at random starts (replays after a move,
    /// gaps), the client's own edits and moves; `HANDOFF_SEED` replays one.
    #[test]
    fn a_shared_history_is_handled_as_a_copy_of_its_own_would_be() {
        use pb::in_process::Fanout;
        use rand::{rngs::StdRng, Rng, SeedableRng};
        use std::sync::Arc;
        let seeds: Vec<u64> = match std::env::var("HANDOFF_SEED") {
            Ok(seed) => vec![seed.parse().expect("HANDOFF_SEED is a number")],
            Err(_) => (0..200).map(|_| rand::random()).collect(),
        };
        let mut shared_forwarded = 0;
        for seed in seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let (mut own, mut shared) = (
                Handoff::new(Some("me".into())),
                Handoff::new(Some("me".into())),
            );
            let both = |own: &mut Handoff, shared: &mut Handoff, frame: pb::ServerFrame| {
                assert_eq!(
                    own.incoming(frame.clone()),
                    shared.incoming(frame),
                    "seed {seed}"
                );
            };
            both(
                &mut own,
                &mut shared,
                server(Out::Identity(pb::Identity { user_id: 7 })),
            );
            let joined = server(Out::Joined(pb::Joined {
                revision: 100,
                resumed: false,
                last_seq: 0,
            }));
            both(&mut own, &mut shared, joined);
            // The session's revision the docnode is at, and the client's next seq.
            let (mut at, mut seq) = (1, 1);
            for step in 0..40 {
                match rng.random_range(0..10) {
                    0..=5 => {
                        let entries: Vec<_> = (0..rng.random_range(0..4))
                            .map(|_| match rng.random_bool(0.3) {
                                true => entry(7, Some("me"), Some(rng.random_range(0..seq))),
                                false => entry(3, Some("other"), Some(1)),
                            })
                            .collect();
                        let start =
                            at - rng.random_range(0..=at.min(3)) + u64::from(rng.random_bool(0.05));
                        at = at.max(start + entries.len() as u64);
                        let fanout = Arc::new(Fanout::new(entries.clone()));
                        let copied = own.incoming(history(start, entries));
                        let sent = shared.incoming(Inbound::History { start, fanout });
                        if let Incoming::Forward(Inbound::History { .. }) = &sent {
                            shared_forwarded += 1;
                        }
                        let sent = match sent {
                            Incoming::Forward(frame) => {
                                Incoming::Forward(frame.into_frame().into())
                            }
                            other => other,
                        };
                        assert_eq!(copied, sent, "seed {seed}, step {step}");
                    }
                    6..=7 => {
                        let revision = rng.random_range(0..=own.forwarded);
                        let (a, b) = (
                            own.outgoing(edit(revision, Some(seq))),
                            shared.outgoing(edit(revision, Some(seq))),
                        );
                        assert_eq!(a, b, "seed {seed}, step {step}");
                        seq += 1;
                    }
                    _ => {
                        let reroute = server(Out::Error(pb::Error {
                            code: 4503,
                            message: "moved".into(),
                            close: true,
                            reroute: true,
                        }));
                        both(&mut own, &mut shared, reroute);
                        let point = own.resume_point();
                        assert_eq!(point, shared.resume_point(), "seed {seed}, step {step}");
                        let Some(point) = point else {
                            break;
                        };
                        assert_eq!(own.begin_move(point), shared.begin_move(point));
                        both(
                            &mut own,
                            &mut shared,
                            server(Out::Identity(pb::Identity { user_id: 7 })),
                        );
                        let joined = server(Out::Joined(pb::Joined {
                            revision: point.log,
                            resumed: true,
                            last_seq: 0,
                        }));
                        both(&mut own, &mut shared, joined);
                        at = 0;
                    }
                }
                assert_eq!(
                    own.resume_point(),
                    shared.resume_point(),
                    "seed {seed}, step {step}"
                );
                assert_eq!(
                    own.unacked_bytes(),
                    shared.unacked_bytes(),
                    "seed {seed}, step {step}"
                );
            }
        }
        assert!(shared_forwarded > 0, "no History frame stayed shared");
    }
}
