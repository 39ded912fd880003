//! One client connection as a document actor sees it: where its frames go, and how its
//! revision numbers map to the document's log.
//!
//! A connection counts revisions from its own start (see docs/protocol.md, "Joining"): a fresh
//! joiner's revision 1 is the log revision it joined at, a resuming client's revision 0 is the
//! log revision it resumed from. [`Numbering`] is that translation; after a compacted
//! catch-up (one entry standing for several log revisions) it also keeps breakpoints.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    task::Poll,
};

use codraft_proto as pb;
use pb::in_process::{Fanout, Inbound};
use prost::Message;
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

/// What a connection's queue holds: a frame of its own, or committed entries shared by
/// every connection they fan out to (one copy per commit, not per recipient), turned into a
/// frame only when the stream takes it. A frame of its own is boxed: the channel allocates
/// its slots in blocks of 32, and an idle connection should not pay for 32 whole frames.
enum Queued {
    Frame(Box<pb::ServerFrame>),
    History { start: u64, fanout: Arc<Fanout> },
}

/// How much one client's queue may hold: frames, and bytes (their encoded size).
#[derive(Clone)]
pub struct QueueLimits {
    /// Most frames queued.
    pub frames: usize,
    /// Most bytes queued; a frame is always taken into an empty queue, whatever its size.
    pub bytes: usize,
    /// Bytes queued for all clients of the docnode (`codraft_client_queue_bytes`).
    pub gauge: Option<prometheus::IntGauge>,
}

impl QueueLimits {
    /// A queue of `frames` frames and no byte budget (short-lived queues).
    pub fn frames(frames: usize) -> Self {
        Self {
            frames,
            bytes: usize::MAX,
            gauge: None,
        }
    }
}

/// Bytes queued on one connection, shared by its two ends.
struct Usage {
    bytes: AtomicUsize,
    gauge: Option<prometheus::IntGauge>,
}

impl Usage {
    fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(gauge) = &self.gauge {
            gauge.add(n as i64);
        }
    }

    fn sub(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
        if let Some(gauge) = &self.gauge {
            gauge.sub(n as i64);
        }
    }
}

/// The sending end of a client's bounded frame queue, plus the reason it was closed, which the
/// stream delivers as its last frame.
pub struct Outbox {
    tx: mpsc::Sender<(Queued, usize)>,
    closed: Arc<OnceLock<pb::Error>>,
    usage: Arc<Usage>,
    budget: usize,
}

/// The frame that tells the client why the docnode closed its connection, if it did; sent
/// after the connection's last queued frame.
pub fn close_frame(closed: &OnceLock<pb::Error>) -> Option<pb::ServerFrame> {
    closed.get().map(|error| pb::ServerFrame {
        kind: Some(pb::server_frame::Kind::Error(error.clone())),
    })
}

/// The receiving end: what the gRPC stream drains.
pub struct Inbox {
    frames: mpsc::Receiver<(Queued, usize)>,
    /// The queue's head, taken off to see whether it is shared (see [`Inbox::take_shared`]).
    peeked: Option<(Queued, usize)>,
    usage: Arc<Usage>,
    /// Set when the docnode closed the connection; sent after the last frame.
    pub closed: Arc<OnceLock<pb::Error>>,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // Whatever is still queued is no longer held on the client's account.
        self.frames.close();
        if let Some((_, bytes)) = self.peeked.take() {
            self.usage.sub(bytes);
        }
        while let Ok((_, bytes)) = self.frames.try_recv() {
            self.usage.sub(bytes);
        }
    }
}

impl Inbox {
    fn taken(&self, (queued, bytes): (Queued, usize)) -> Inbound {
        self.usage.sub(bytes);
        match queued {
            Queued::Frame(frame) => Inbound::Frame(frame),
            Queued::History { start, fanout } => Inbound::History { start, fanout },
        }
    }

    /// The next frame, or `cx` is woken when there is one; `None` once the queue is closed
    /// and empty.
    pub fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Inbound>> {
        if let Some(queued) = self.peeked.take() {
            return Poll::Ready(Some(self.taken(queued)));
        }
        self.frames
            .poll_recv(cx)
            .map(|queued| queued.map(|queued| self.taken(queued)))
    }

    /// The next frame if one is queued now.
    pub fn try_next(&mut self) -> Result<pb::ServerFrame, mpsc::error::TryRecvError> {
        let queued = match self.peeked.take() {
            Some(queued) => queued,
            None => self.frames.try_recv()?,
        };
        Ok(self.taken(queued).into_frame())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.peeked.is_none() && self.frames.is_empty()
    }

    /// Takes the queue's head if it is `fanout` (the same one, by address), returning
    /// the connection's revision of their first; anything else stays where it is, so the
    /// connection's frames keep their order.
    pub fn take_shared(&mut self, fanout: &Arc<Fanout>) -> Option<u64> {
        if self.peeked.is_none() {
            self.peeked = Some(self.frames.try_recv().ok()?);
        }
        match &self.peeked {
            Some((Queued::History { start, fanout: f }, _)) if Arc::ptr_eq(f, fanout) => {
                let start = *start;
                if let Some((_, bytes)) = self.peeked.take() {
                    self.usage.sub(bytes);
                }
                Some(start)
            }
            _ => None,
        }
    }
}

impl Outbox {
    /// A queue within `limits`.
    pub fn new(limits: QueueLimits) -> (Self, Inbox) {
        let (tx, frames) = mpsc::channel(limits.frames.max(1));
        let closed = Arc::new(OnceLock::new());
        let usage = Arc::new(Usage {
            bytes: AtomicUsize::new(0),
            gauge: limits.gauge,
        });
        (
            Self {
                tx,
                closed: Arc::clone(&closed),
                usage: Arc::clone(&usage),
                budget: limits.bytes,
            },
            Inbox {
                frames,
                peeked: None,
                usage,
                closed,
            },
        )
    }

    fn queue(&self, queued: Queued, bytes: usize) -> Result<(), SendFailure> {
        let held = self.usage.bytes.load(Ordering::Relaxed);
        if held > 0 && held.saturating_add(bytes) > self.budget {
            return Err(if self.tx.is_closed() {
                SendFailure::Gone
            } else {
                SendFailure::Full
            });
        }
        self.tx.try_send((queued, bytes)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendFailure::Full,
            mpsc::error::TrySendError::Closed(_) => SendFailure::Gone,
        })?;
        self.usage.add(bytes);
        Ok(())
    }

    /// Queues a frame without waiting: a document never waits for one slow client.
    pub fn send(&self, kind: pb::server_frame::Kind) -> Result<(), SendFailure> {
        let frame = pb::ServerFrame { kind: Some(kind) };
        let bytes = frame.encoded_len();
        self.queue(Queued::Frame(Box::new(frame)), bytes)
    }

    /// Queues committed entries shared with other connections (`bytes`: their encoded size).
    pub fn send_shared(
        &self,
        start: u64,
        fanout: &Arc<Fanout>,
        bytes: usize,
    ) -> Result<(), SendFailure> {
        let fanout = Arc::clone(fanout);
        self.queue(Queued::History { start, fanout }, bytes)
    }

    /// Sets the byte budget (a joiner's greeting is queued before it, whatever its size).
    pub fn limit_bytes(&mut self, bytes: usize) {
        self.budget = bytes;
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.usage.bytes.load(Ordering::Relaxed)
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

    fn entries(text: &str) -> Arc<Fanout> {
        let op = pb::Operation {
            components: vec![pb::Component {
                kind: Some(pb::component::Kind::Insert(text.to_owned())),
            }],
        };
        Arc::new(Fanout::new(vec![pb::HistoryEntry {
            operation: Some(op),
            ..Default::default()
        }]))
    }

    fn start_of(next: Option<Inbound>) -> Option<u64> {
        match next? {
            Inbound::History { start, .. } => Some(start),
            Inbound::Frame(_) => None,
        }
    }

    /// Another connection's stream may take a queue's head when it is the very fan-out it
    /// sends (the same entries by address, not merely equal ones), and nothing else: what
    /// it leaves comes out in order, and the bytes taken are no longer counted.
    #[test]
    fn take_shared_takes_only_the_same_fan_out_at_the_head() {
        let (outbox, mut inbox) = Outbox::new(QueueLimits::frames(8));
        let (x, y) = (entries("x"), entries("x"));
        outbox
            .send(pb::server_frame::Kind::Language(pb::Language::default()))
            .expect("queued");
        outbox.send_shared(3, &x, 10).expect("queued");
        outbox.send_shared(4, &y, 10).expect("queued");
        assert_eq!(
            inbox.take_shared(&x),
            None,
            "taken from behind another frame"
        );
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let Poll::Ready(Some(Inbound::Frame(_))) = inbox.poll_next(&mut cx) else {
            panic!("the frame of its own is not first any more");
        };
        assert_eq!(
            inbox.take_shared(&y),
            None,
            "equal entries of another fan-out taken"
        );
        let held = outbox.queued_bytes();
        assert_eq!(inbox.take_shared(&x), Some(3));
        assert_eq!(outbox.queued_bytes(), held - 10);
        assert_eq!(inbox.take_shared(&x), None, "taken twice");
        let Poll::Ready(next) = inbox.poll_next(&mut cx) else {
            panic!("the second fan-out is gone");
        };
        assert_eq!(start_of(next), Some(4));
        assert!(inbox.is_empty());
    }

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
        let (outbox, inbox) = Outbox::new(QueueLimits::frames(1));
        let frame = || pb::server_frame::Kind::Identity(pb::Identity { user_id: 1 });
        assert_eq!(outbox.send(frame()), Ok(()));
        assert_eq!(outbox.send(frame()), Err(SendFailure::Full));
        drop(inbox);
        assert_eq!(outbox.send(frame()), Err(SendFailure::Gone));
    }

    #[test]
    fn a_queue_holds_at_most_its_bytes_and_shares_fanned_out_entries() {
        let gauge = prometheus::IntGauge::new("queued", "test").expect("gauge");
        let limits = QueueLimits {
            frames: 100,
            bytes: 1000,
            gauge: Some(gauge.clone()),
        };
        let (outbox, mut inbox) = Outbox::new(limits);
        let entry = pb::HistoryEntry {
            user_id: 1,
            operation: Some(pb::Operation {
                components: vec![pb::Component {
                    kind: Some(pb::component::Kind::Insert("x".repeat(600))),
                }],
            }),
            client_id: None,
            seq: None,
        };
        let bytes = entry.encoded_len();
        let entries = Arc::new(Fanout::new(vec![entry]));
        assert_eq!(
            outbox.send_shared(0, &entries, bytes),
            Ok(()),
            "an empty queue takes it"
        );
        assert_eq!(
            outbox.send_shared(1, &entries, bytes),
            Err(SendFailure::Full),
            "a second one is over the byte budget"
        );
        assert_eq!(Arc::strong_count(&entries), 2, "queued as a shared copy");
        assert_eq!(gauge.get(), bytes as i64);
        let frame = inbox.try_next().expect("a frame");
        assert!(matches!(
            frame.kind,
            Some(pb::server_frame::Kind::History(h)) if h.entries.len() == 1 && h.start == 0
        ));
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(gauge.get(), 0);
        assert_eq!(outbox.send_shared(1, &entries, bytes), Ok(()));
        drop(inbox);
        assert_eq!(gauge.get(), 0, "a dropped queue gives its bytes back");
    }
}
