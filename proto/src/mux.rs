//! The plumbing both ends of `DocNode.Sessions` share: many sessions over one stream, each
//! with its own flow control in frames (the windows are part of the contract, see
//! `docnode.proto`).
//!
//! A sender may have at most a window of a session's frames in flight; the receiver grants
//! credit for what it took every half window ([`Returning`]), and the sender's side of the
//! stream only takes a session's next frame while it has credit ([`Gated`]). The half-window
//! rule cannot deadlock: a sender out of credit has a full window in flight, of which fewer
//! than half are taken and not yet granted, so more than half still wait to be taken, and
//! taking them grants credit. [`Merged`] is the one stream the sessions' gated frames, and
//! the control messages (credit, ends), go out on.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use futures_core::Stream;
use futures_util::stream::{SelectAll, StreamExt};
use tokio::sync::mpsc;

/// A session's ClientFrames a gateway may have in flight.
pub const UP_WINDOW: u32 = 32;

/// A session's ServerFrames a docnode may have in flight.
pub const DOWN_WINDOW: u32 = 64;

/// The request header of `Sessions` by which a gateway says it reads
/// `DocnodeMessage.also`: only then does a docnode send one History frame for several
/// sessions.
pub const SHARED_HISTORY_HEADER: &str = "codraft-shared-history";

/// What the receiving side granted and the sending side has not used yet, for one session.
#[derive(Debug)]
pub struct Credit {
    state: Mutex<CreditState>,
}

#[derive(Debug)]
struct CreditState {
    available: u32,
    waiting: Option<Waker>,
    /// The session is over on the other side: what is left is dropped, not sent.
    closed: bool,
}

impl Credit {
    /// A session's credit, starting with a whole `window`.
    pub fn new(window: u32) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(CreditState {
                available: window,
                waiting: None,
                closed: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CreditState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The receiver took `frames` more; wakes the sender if it was out of credit.
    pub fn grant(&self, frames: u32) {
        let waker = {
            let mut state = self.lock();
            state.available = state.available.saturating_add(frames);
            state.waiting.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The other side ended the session: its [`Gated`] stream ends now, whatever it still
    /// holds and whatever its credit (a session out of credit would otherwise never see the
    /// end of its frames, and stay in the merged stream for good).
    pub fn close(&self) {
        let waker = {
            let mut state = self.lock();
            state.closed = true;
            state.waiting.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Credit left now.
    pub fn available(&self) -> u32 {
        self.lock().available
    }

    /// Whether one frame may go now (`Ready(false)`: the session is closed); if not, `cx`
    /// is woken by the next grant.
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.lock();
        if state.closed {
            Poll::Ready(false)
        } else if state.available > 0 {
            Poll::Ready(true)
        } else {
            state.waiting = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Counts one frame sent against the credit.
    pub fn used(&self) {
        let mut state = self.lock();
        state.available = state.available.saturating_sub(1);
    }

    /// Whether the session is open and one more of its frames may go now.
    pub fn may_send(&self) -> bool {
        let state = self.lock();
        !state.closed && state.available > 0
    }
}

/// A session's frames, taken from `inner` only while the session has credit.
pub struct Gated<S> {
    inner: S,
    credit: Arc<Credit>,
}

impl<S> Gated<S> {
    /// `inner`'s frames within `credit`.
    pub fn new(inner: S, credit: Arc<Credit>) -> Self {
        Self { inner, credit }
    }
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if !std::task::ready!(self.credit.poll_ready(cx)) {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(self.inner.poll_next_unpin(cx));
        if item.is_some() {
            self.credit.used();
        }
        Poll::Ready(item)
    }
}

/// The receiving end of a session's queue: every `every` frames taken, it calls `grant`
/// with their number, which sends that credit to the other side.
pub struct Returning<T, F> {
    frames: mpsc::Receiver<T>,
    taken: u32,
    every: u32,
    grant: F,
}

impl<T, F: FnMut(u32)> Returning<T, F> {
    /// Grants credit for `frames` every `every` frames taken (half the window).
    pub fn new(frames: mpsc::Receiver<T>, every: u32, grant: F) -> Self {
        Self {
            frames,
            taken: 0,
            every: every.max(1),
            grant,
        }
    }
}

impl<T, F: FnMut(u32) + Unpin> Stream for Returning<T, F> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let item = std::task::ready!(self.frames.poll_recv(cx));
        if item.is_some() {
            self.taken += 1;
            if self.taken >= self.every {
                let taken = std::mem::take(&mut self.taken);
                (self.grant)(taken);
            }
        }
        Poll::Ready(item)
    }
}

/// A boxed session stream, as [`Merged`] holds them.
pub type SessionStream<T> = Pin<Box<dyn Stream<Item = T> + Send>>;

/// One outgoing stream: control messages first, then whichever session has a frame ready.
/// It ends once both of its senders are dropped and every session stream has ended.
pub struct Merged<T> {
    control: mpsc::UnboundedReceiver<T>,
    added: mpsc::UnboundedReceiver<SessionStream<T>>,
    sessions: SelectAll<SessionStream<T>>,
    control_open: bool,
    added_open: bool,
}

/// Where control messages and new sessions go into a [`Merged`] stream.
#[derive(Clone)]
pub struct MergedSenders<T> {
    /// Control messages (credit, ends): never held back by a session's credit.
    pub control: mpsc::UnboundedSender<T>,
    /// A new session's stream.
    pub added: mpsc::UnboundedSender<SessionStream<T>>,
}

impl<T> Merged<T> {
    /// An empty merged stream and its senders.
    pub fn new() -> (Self, MergedSenders<T>) {
        let (control_tx, control) = mpsc::unbounded_channel();
        let (added_tx, added) = mpsc::unbounded_channel();
        (
            Self {
                control,
                added,
                sessions: SelectAll::new(),
                control_open: true,
                added_open: true,
            },
            MergedSenders {
                control: control_tx,
                added: added_tx,
            },
        )
    }
}

impl<T> Stream for Merged<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        if this.control_open {
            match this.control.poll_recv(cx) {
                Poll::Ready(Some(message)) => return Poll::Ready(Some(message)),
                Poll::Ready(None) => this.control_open = false,
                Poll::Pending => {}
            }
        }
        while this.added_open {
            match this.added.poll_recv(cx) {
                Poll::Ready(Some(session)) => this.sessions.push(session),
                Poll::Ready(None) => this.added_open = false,
                Poll::Pending => break,
            }
        }
        match this.sessions.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            // An empty set of sessions is not the end while more can come.
            Poll::Ready(None) if this.control_open || this.added_open => Poll::Pending,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{stream, FutureExt};

    fn now<S: Stream + Unpin>(stream: &mut S) -> Option<Option<S::Item>> {
        stream.next().now_or_never()
    }

    #[test]
    fn a_gated_session_sends_its_window_then_waits_for_credit() {
        let credit = Credit::new(3);
        let mut gated = Gated::new(stream::iter(0..10), Arc::clone(&credit));
        assert_eq!(
            (0..3).map(|_| now(&mut gated)).collect::<Vec<_>>(),
            [Some(Some(0)), Some(Some(1)), Some(Some(2))]
        );
        assert_eq!(
            now(&mut gated),
            None,
            "a fourth frame went out without credit"
        );
        credit.grant(2);
        assert_eq!(now(&mut gated), Some(Some(3)));
        assert_eq!(now(&mut gated), Some(Some(4)));
        assert_eq!(now(&mut gated), None);
    }

    #[test]
    fn a_closed_session_ends_at_once_even_out_of_credit() {
        let credit = Credit::new(1);
        let mut gated = Gated::new(stream::iter(0..10), Arc::clone(&credit));
        assert_eq!(now(&mut gated), Some(Some(0)));
        assert_eq!(now(&mut gated), None);
        credit.close();
        assert_eq!(now(&mut gated), Some(None));
    }

    #[test]
    fn returning_grants_every_half_window_of_frames_taken() {
        let (tx, rx) = mpsc::channel(16);
        let granted = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&granted);
        let mut returning = Returning::new(rx, 4, move |n| log.lock().unwrap().push(n));
        for i in 0..9 {
            tx.try_send(i).unwrap();
        }
        for _ in 0..9 {
            assert!(now(&mut returning).is_some());
        }
        assert_eq!(*granted.lock().unwrap(), [4, 4]);
    }

    /// Seeded random schedules of a sender and a receiver that take turns at random: the
    /// sender never has more than a window in flight, and every frame arrives (no deadlock),
    /// for windows and frame counts of every size.
    #[test]
    fn credit_never_overflows_the_window_and_never_deadlocks() {
        for seed in 0..500u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let window = 1 + next(8) as u32;
            let frames = next(200) as u32;
            let credit = Credit::new(window);
            let mut gated = Gated::new(stream::iter(0..frames), Arc::clone(&credit));
            // The receiver's queue holds exactly one window: a frame beyond it is a breach.
            let (queue, rx) = mpsc::channel(window as usize);
            let returned = Arc::clone(&credit);
            let mut returning = Returning::new(rx, window.div_ceil(2), move |n| returned.grant(n));
            let (mut sent, mut received) = (0, 0);
            let mut idle = 0;
            while received < frames {
                let progressed = if next(2) == 0 {
                    match now(&mut gated) {
                        Some(Some(frame)) => {
                            queue
                                .try_send(frame)
                                .unwrap_or_else(|_| panic!("seed {seed}: window overflowed"));
                            sent += 1;
                            true
                        }
                        _ => false,
                    }
                } else {
                    match now(&mut returning) {
                        Some(Some(frame)) => {
                            assert_eq!(frame, received, "seed {seed}: out of order");
                            received += 1;
                            true
                        }
                        _ => false,
                    }
                };
                idle = if progressed { 0 } else { idle + 1 };
                assert!(
                    idle < 64,
                    "seed {seed}: stuck at {sent} sent, {received} taken"
                );
            }
        }
    }

    #[test]
    fn merged_sends_control_first_and_ends_only_when_everything_has() {
        let (mut merged, senders) = Merged::<u32>::new();
        senders
            .added
            .send(Box::pin(stream::iter([10, 11])))
            .unwrap();
        senders.control.send(1).unwrap();
        assert_eq!(now(&mut merged), Some(Some(1)));
        assert_eq!(now(&mut merged), Some(Some(10)));
        assert_eq!(now(&mut merged), Some(Some(11)));
        assert_eq!(now(&mut merged), None, "ended while its senders are open");
        drop(senders);
        assert_eq!(now(&mut merged), Some(None));
    }
}
