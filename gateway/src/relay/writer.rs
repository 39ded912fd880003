//! The client's side of the socket, written from the relay's own task: a short queue of
//! messages and the socket's sending half. Nothing here waits: [`Writer::drain`] makes what
//! progress the socket allows and can be dropped at any point (it is one branch of the
//! relay's `select!`), so the relay keeps reading the client and forwarding its messages to
//! the docnode while a write to a slow client is stuck.

use std::{
    collections::VecDeque,
    future::poll_fn,
    task::{ready, Poll},
    time::Duration,
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{stream::SplitSink, SinkExt};
use tokio::time::Instant;

use crate::metrics::GatewayMetrics;

/// Messages queued for one client before the relay stops taking docnode frames (HTTP/2 flow
/// control, or the in-process session's queue, then holds them back at the docnode).
pub const QUEUE: usize = 16;

/// Gateway notices (bad JSON and the like) that may wait beyond [`QUEUE`]; past that the
/// relay stops reading the client until the socket takes some.
const NOTICE_ROOM: usize = 8;

/// The socket's sending half and what waits for it.
pub struct Writer {
    sink: SplitSink<WebSocket, Message>,
    queue: VecDeque<Message>,
    /// Sent to the socket but maybe not flushed.
    unflushed: bool,
    /// Since when the socket has taken nothing while something waited.
    waiting_since: Option<Instant>,
    /// How long a write may wait (WRITE_WAIT_SECS).
    wait: Duration,
}

/// The socket took nothing for WRITE_WAIT_SECS, or failed: the client is gone.
#[derive(Debug)]
pub struct Gone;

impl Writer {
    /// A writer over `sink` whose writes may wait up to `wait`.
    pub fn new(sink: SplitSink<WebSocket, Message>, wait: Duration) -> Self {
        Self {
            sink,
            queue: VecDeque::new(),
            unflushed: false,
            waiting_since: None,
            wait,
        }
    }

    /// Whether a docnode frame may be queued.
    pub fn has_room(&self) -> bool {
        self.queue.len() < QUEUE
    }

    /// Whether the relay may read the client (whose bad messages queue notices).
    pub fn takes_notices(&self) -> bool {
        self.queue.len() < QUEUE + NOTICE_ROOM
    }

    /// Whether something waits to be written or flushed.
    pub fn is_busy(&self) -> bool {
        !self.queue.is_empty() || self.unflushed
    }

    /// Queues a message.
    pub fn push(&mut self, message: Message) {
        if !self.is_busy() {
            self.waiting_since = Some(Instant::now());
        }
        self.queue.push_back(message);
    }

    /// Queues a text message.
    pub fn text(&mut self, text: impl Into<Utf8Bytes>) {
        self.push(Message::Text(text.into()));
    }

    /// Queues a message if there is room for a docnode frame, else drops it (pings).
    pub fn try_push(&mut self, message: Message) {
        if self.has_room() {
            self.push(message);
        }
    }

    /// When the socket will have waited too long, if something waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.waiting_since.map(|since| since + self.wait)
    }

    /// The write timer fired (it fires at or before the deadline while the writer is busy):
    /// `Gone` if the socket took nothing for the whole write wait, else the timer is armed
    /// for the deadline again.
    pub fn rearm(&self, timer: std::pin::Pin<&mut tokio::time::Sleep>) -> Result<(), Gone> {
        match self.deadline() {
            Some(deadline) if deadline <= Instant::now() => Err(Gone),
            Some(deadline) => {
                timer.reset(deadline);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Writes and flushes what is queued; resolves when all of it is flushed. Safe to drop
    /// at any point: a message leaves the queue only once the socket has taken it.
    pub async fn drain(&mut self) -> Result<(), Gone> {
        poll_fn(|cx| {
            while !self.queue.is_empty() {
                ready!(self.sink.poll_ready_unpin(cx)).map_err(|_| Gone)?;
                let Some(message) = self.queue.pop_front() else {
                    break;
                };
                self.sink.start_send_unpin(message).map_err(|_| Gone)?;
                self.unflushed = true;
                self.waiting_since = Some(Instant::now());
            }
            ready!(self.sink.poll_flush_unpin(cx)).map_err(|_| Gone)?;
            self.unflushed = false;
            self.waiting_since = None;
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Closes the socket with `code` (counted in `codraft_closes_total`) and `reason`, after
    /// what is queued, waiting at most about one write wait.
    pub async fn close(&mut self, metrics: &GatewayMetrics, code: u16, reason: &str) {
        metrics.closed(code);
        tracing::debug!(code, reason, "closing a client's socket");
        // A close reason may be at most 123 bytes; cut on a character boundary.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.push(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(&reason[..end]),
        })));
        let _ = tokio::time::timeout(self.wait, async {
            self.drain().await?;
            self.sink.close().await.map_err(|_| Gone)
        })
        .await;
    }
}
