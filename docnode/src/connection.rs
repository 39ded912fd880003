//! One client connection as a document actor sees it: where its frames go, and how its
//! revision numbers map to the document's log.
//!
//! A connection counts revisions from its own start (see docs/protocol.md, "Joining"): a fresh
//! joiner's revision 1 is the log revision it joined at, a resuming client's revision 0 is the
//! log revision it resumed from. [`Numbering`] is that translation; after a compacted
//! catch-up (one entry standing for several log revisions) it also keeps breakpoints.

use std::{
    collections::VecDeque,
    sync::{Arc, OnceLock},
};

use codraft_proto as pb;
use tokio::sync::mpsc;

/// Identifies a connection within a docnode.
pub type ConnId = u64;

/// Why a frame could not be queued for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// The client's queue is full: it is not keeping up.
    Full,
    /// The client's stream has ended.
    Gone,
}

/// The sending end of a client's bounded frame queue, plus the reason it was closed, which the
/// stream delivers as its last frame.
pub struct Outbox {
    tx: mpsc::Sender<pb::ServerFrame>,
    closed: Arc<OnceLock<pb::Error>>,
}

/// The receiving end: what the gRPC stream drains.
pub struct Inbox {
    /// Frames for the client, in order.
    pub frames: mpsc::Receiver<pb::ServerFrame>,
    /// Set when the docnode closed the connection; sent after the last frame.
    pub closed: Arc<OnceLock<pb::Error>>,
}

impl Outbox {
    /// A queue of `capacity` frames.
    pub fn new(capacity: usize) -> (Self, Inbox) {
        let (tx, frames) = mpsc::channel(capacity.max(1));
        let closed = Arc::new(OnceLock::new());
        (
            Self {
                tx,
                closed: Arc::clone(&closed),
            },
            Inbox { frames, closed },
        )
    }

    /// Queues a frame without waiting: a document never waits for one slow client.
    pub fn send(&self, kind: pb::server_frame::Kind) -> Result<(), SendFailure> {
        self.tx
            .try_send(pb::ServerFrame { kind: Some(kind) })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendFailure::Full,
                mpsc::error::TrySendError::Closed(_) => SendFailure::Gone,
            })
    }

    /// How many frames can be queued right now without waiting.
    pub fn room(&self) -> usize {
        self.tx.capacity()
    }

    /// The most frames the queue ever holds.
    pub fn max_room(&self) -> usize {
        self.tx.max_capacity()
    }

    /// Ends the connection: queued frames are still delivered, then `error`.
    pub fn close(self, code: u16, message: impl Into<String>) {
        self.end(code, message.into(), false);
    }

    /// Ends the connection because the document is moving to another docnode (or this one
    /// is draining): the gateway may carry the client over to the new owner instead of
    /// closing its socket (see docs/architecture.md, "Moving a live connection").
    pub fn reroute(self, code: u16, message: impl Into<String>) {
        self.end(code, message.into(), true);
    }

    fn end(self, code: u16, message: String, reroute: bool) {
        let _ = self.closed.set(pb::Error {
            code: code.into(),
            message,
            close: true,
            reroute,
        });
    }
}

/// Where a connection's revision numbering starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Joined fresh: revision 0 is the empty document before the join snapshot, revision
    /// `r >= 1` is log revision `joined_at + r - 1`.
    Snapshot {
        /// Log revision of the snapshot the client received.
        joined_at: u64,
        /// Length of that snapshot, in code points.
        length: u64,
    },
    /// Resumed: revision `r` is log revision `from + r`.
    Resumed {
        /// The log revision the client held when it reconnected.
        from: u64,
    },
}

/// How a connection's revisions map to the document's log revisions.
///
/// Linear from its [`Origin`] until a compacted catch-up sends one entry for several log
/// revisions; each such entry leaves a breakpoint (connection revision, log revision), and
/// later revisions count on linearly from the newest breakpoint at or below them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbering {
    /// Where the numbering starts.
    pub origin: Origin,
    /// (connection revision, log revision) pairs, both increasing.
    breakpoints: VecDeque<(u64, u64)>,
}

impl Numbering {
    /// A numbering without breakpoints.
    pub fn new(origin: Origin) -> Self {
        Self {
            origin,
            breakpoints: VecDeque::new(),
        }
    }

    /// The log revision of this connection's revision `r`, or `None` for a fresh joiner's
    /// revision 0 (the empty document before its snapshot).
    pub fn log_revision(&self, r: u64) -> Option<u64> {
        if let Some(&(conn, log)) = self.breakpoints.iter().rev().find(|(conn, _)| *conn <= r) {
            return Some(log + (r - conn));
        }
        match self.origin {
            Origin::Snapshot { joined_at, .. } => r.checked_sub(1).map(|r| joined_at + r),
            Origin::Resumed { from } => Some(from + r),
        }
    }

    /// Records that connection revision `conn` is log revision `log`; nothing is stored when
    /// the numbering already says so.
    pub fn mark(&mut self, conn: u64, log: u64) {
        if self.log_revision(conn) != Some(log) {
            self.breakpoints.push_back((conn, log));
        }
    }

    /// Forgets breakpoints no edit can need any more: those below log revision `start` (the
    /// history window's start), except the newest of them, which later revisions count from.
    pub fn forget_before(&mut self, start: u64) {
        while self
            .breakpoints
            .get(1)
            .is_some_and(|&(_, log)| log <= start)
        {
            self.breakpoints.pop_front();
        }
    }

    /// How many breakpoints are kept.
    pub fn breakpoints(&self) -> usize {
        self.breakpoints.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_numbering_starts_after_the_snapshot_entry() {
        let n = Numbering::new(Origin::Snapshot {
            joined_at: 40,
            length: 3,
        });
        assert_eq!(n.log_revision(0), None);
        assert_eq!(n.log_revision(1), Some(40));
        assert_eq!(n.log_revision(5), Some(44));
    }

    #[test]
    fn resumed_numbering_starts_at_the_resume_point() {
        let n = Numbering::new(Origin::Resumed { from: 7 });
        assert_eq!(n.log_revision(0), Some(7));
        assert_eq!(n.log_revision(3), Some(10));
    }

    #[test]
    fn breakpoints_count_on_from_the_newest_one_at_or_below() {
        let mut n = Numbering::new(Origin::Snapshot {
            joined_at: 40,
            length: 3,
        });
        // Revisions 1..=3 are linear; a catch-up entry at revision 4 stands for log 43..=50,
        // then revision 5 is an own entry (log 51) and revision 6 stands for log 52..=60.
        n.mark(3, 42);
        assert_eq!(n.breakpoints(), 0, "a linear mark stores nothing");
        n.mark(4, 50);
        n.mark(5, 51);
        n.mark(6, 60);
        assert_eq!(n.breakpoints(), 2);
        assert_eq!(
            n.log_revision(0),
            None,
            "revision 0 stays the empty document"
        );
        assert_eq!(n.log_revision(2), Some(41));
        assert_eq!(n.log_revision(3), Some(42));
        assert_eq!(n.log_revision(4), Some(50));
        assert_eq!(n.log_revision(5), Some(51));
        assert_eq!(n.log_revision(6), Some(60));
        assert_eq!(n.log_revision(9), Some(63));
    }

    #[test]
    fn forgetting_keeps_the_newest_breakpoint_below_the_window() {
        let mut n = Numbering::new(Origin::Resumed { from: 0 });
        n.mark(1, 10);
        n.mark(2, 20);
        n.mark(3, 30);
        n.forget_before(25);
        assert_eq!(n.breakpoints(), 2);
        assert_eq!(n.log_revision(2), Some(20));
        assert_eq!(n.log_revision(4), Some(31));
        n.forget_before(1000);
        assert_eq!(n.breakpoints(), 1);
        assert_eq!(n.log_revision(3), Some(30));
    }

    #[test]
    fn a_full_outbox_reports_full_and_a_dropped_inbox_reports_gone() {
        let (outbox, inbox) = Outbox::new(1);
        let frame = || pb::server_frame::Kind::Identity(pb::Identity { user_id: 1 });
        assert_eq!(outbox.send(frame()), Ok(()));
        assert_eq!(outbox.send(frame()), Err(SendFailure::Full));
        drop(inbox);
        assert_eq!(outbox.send(frame()), Err(SendFailure::Gone));
    }
}
