//! The edits one connection has sent and not yet seen acknowledged: the gateway's view of an
//! edit's round trip.
//!
//! A client's edit is acknowledged by the History entry that carries it back, with the user id
//! the docnode gave this connection (and, for exactly-once clients, the edit's `seq`). The
//! gateway sees both ends, so it measures the round trip here — transform, group commit and
//! fan-out included — and keeps the edit's span open until then, so a trace shows the whole
//! wait. Bounded: a client with more outstanding edits than [`MAX_PENDING`] simply has the
//! extra ones go unmeasured.

use std::{collections::VecDeque, time::Duration};

use codraft_proto as pb;
use tokio::time::Instant;
use tracing::Span;

/// Most outstanding edits tracked per connection (a Rustpad client has one at a time).
pub const MAX_PENDING: usize = 64;

/// One edit on its way.
struct Pending {
    sent: Instant,
    seq: Option<u64>,
    /// Ends (is exported) when the edit is acknowledged or the connection ends.
    span: Span,
}

/// The outstanding edits of one connection.
#[derive(Default)]
pub struct PendingEdits {
    queue: VecDeque<Pending>,
    /// This connection's user id, once the docnode has said it.
    me: Option<u64>,
}

impl PendingEdits {
    /// Records an edit relayed to the docnode at `sent`.
    pub fn sent(&mut self, sent: Instant, seq: Option<u64>, span: Span) {
        if self.queue.len() < MAX_PENDING {
            self.queue.push_back(Pending { sent, seq, span });
        }
    }

    /// Learns this connection's user id from the docnode's Identity frame.
    pub fn identity(&mut self, user_id: u64) {
        self.me = Some(user_id);
    }

    /// Takes the edits a History frame acknowledges and returns their round-trip times
    /// (measured to `now`); their spans end here.
    pub fn acknowledged(&mut self, entries: &[pb::HistoryEntry], now: Instant) -> Vec<Duration> {
        let Some(me) = self.me else {
            return Vec::new();
        };
        let mut times = Vec::new();
        for entry in entries.iter().filter(|e| e.user_id == me) {
            let done = match entry.seq {
                Some(seq) => {
                    // Edits before this one that never came back were duplicates the docnode
                    // dropped (exactly-once): forget them unmeasured.
                    while self
                        .queue
                        .front()
                        .is_some_and(|p| p.seq.is_some_and(|s| s < seq))
                    {
                        self.queue.pop_front();
                    }
                    if self.queue.front().is_some_and(|p| p.seq == Some(seq)) {
                        self.queue.pop_front()
                    } else {
                        None
                    }
                }
                None => self.queue.pop_front(),
            };
            if let Some(done) = done {
                times.push(now.saturating_duration_since(done.sent));
                drop(done.span);
            }
        }
        times
    }

    /// How many edits are outstanding.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no edit is outstanding.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user_id: u64, seq: Option<u64>) -> pb::HistoryEntry {
        pb::HistoryEntry {
            user_id,
            operation: None,
            client_id: None,
            seq,
        }
    }

    #[test]
    fn own_entries_acknowledge_in_order_and_others_do_not() {
        let t0 = Instant::now();
        let mut pending = PendingEdits::default();
        pending.identity(7);
        pending.sent(t0, None, Span::none());
        pending.sent(t0 + Duration::from_millis(5), None, Span::none());
        let later = t0 + Duration::from_millis(20);
        let times = pending.acknowledged(&[entry(3, None), entry(7, None)], later);
        assert_eq!(times, vec![Duration::from_millis(20)]);
        assert_eq!(pending.len(), 1);
        let times = pending.acknowledged(&[entry(7, None)], later);
        assert_eq!(times, vec![Duration::from_millis(15)]);
        assert!(pending.is_empty());
    }

    #[test]
    fn sequence_numbers_skip_edits_dropped_as_duplicates() {
        let t0 = Instant::now();
        let mut pending = PendingEdits::default();
        pending.identity(1);
        for seq in [4, 5, 6] {
            pending.sent(t0, Some(seq), Span::none());
        }
        // Seq 4 was a duplicate and never comes back; 5 is acknowledged.
        let times = pending.acknowledged(&[entry(1, Some(5))], t0);
        assert_eq!(times.len(), 1);
        assert_eq!(pending.len(), 1);
        // An acknowledgement for something not tracked takes nothing.
        assert!(pending.acknowledged(&[entry(1, Some(9))], t0).is_empty());
        assert!(pending.is_empty());
    }

    #[test]
    fn nothing_is_acknowledged_before_the_identity_and_the_queue_is_bounded() {
        let t0 = Instant::now();
        let mut pending = PendingEdits::default();
        for _ in 0..MAX_PENDING + 10 {
            pending.sent(t0, None, Span::none());
        }
        assert_eq!(pending.len(), MAX_PENDING);
        assert!(pending.acknowledged(&[entry(0, None)], t0).is_empty());
    }
}
