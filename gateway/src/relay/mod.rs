//! One client WebSocket relayed to the document's owner, in one task.
//!
//! The task's loop waits on whatever can happen to the connection and handles it:
//!
//! - [`reader`]: the client's next message becomes a frame for the docnode (held until the
//!   docnode's queue has room: while one waits, the socket is not read — backpressure
//!   instead of buffering), a notice back, or the end;
//! - [`writer`]: queued messages go to the socket as it takes them. When
//!   [`writer::QUEUE`] wait, the loop stops taking docnode frames (HTTP/2 flow control, or
//!   the in-process session's queue, pushes that back to the docnode, which gives the client
//!   a catch-up or drops it) yet keeps forwarding the client's own messages. A socket that
//!   takes nothing for WRITE_WAIT_SECS ends the connection;
//! - [`session`]: the session with the docnode, and what a move to a new owner needs
//!   ([`crate::handoff::Handoff`]): when the old owner lets the connection go, or dies, the
//!   loop opens a session with the new one and carries on, the socket staying open.
//!
//! One task and no channel between reading, writing and relaying: an idle connection costs
//! its socket buffers and this task's state, and a frame for the client is written by the
//! task that received it. Nothing here knows about documents beyond their id.
//!
//! Observability: each Edit gets a `gateway.edit` span, the root of that edit's trace; its
//! W3C context rides to the docnode inside the frame. The session keeps the span open until
//! the History entry acknowledging the edit returns, and times that round trip.

mod reader;
mod refusal;
mod session;
mod writer;
mod yjs;

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures::{
    stream::{SplitSink, SplitStream},
    StreamExt,
};
use tokio::time::Instant;
use tonic::Code;
use tracing::debug;

use crate::{
    auth::{Access, Grant},
    config::GatewayConfig,
    handoff::Handoff,
    metrics::{GatewayMetrics, MOVE_DONE, MOVE_FAILED, MOVE_REFUSED},
    protocol,
    routes::Routes,
};
use reader::{Ending, Read, Reader};
use session::{FromDocnode, Opening, Session};
use writer::Writer;

pub use refusal::{refuse, refuse_yjs};
pub use yjs::relay_yjs;

// Close codes are defined once, in the gRPC contract; these are the gateway's names for them.
pub use codraft_proto::close::{
    INTERNAL, INVALID_MESSAGE as BAD_REQUEST, READ_ONLY, TOO_LARGE, TOO_MANY as RATE_LIMITED,
    UNAVAILABLE,
};

/// The gRPC service the gateway's client spans call (`rpc.service`).
const RPC_SERVICE: &str = "codraft.docnode.v1.DocNode";

/// What the client asked for in the socket URL.
#[derive(Debug, Clone)]
pub struct SocketRequest {
    /// Document id (already validated).
    pub document_id: String,
    /// Exactly-once client id (already validated).
    pub client_id: Option<String>,
    /// Log revision to resume from.
    pub resume: Option<u64>,
    /// One-time password.
    pub otp: Option<String>,
    /// What the connection may do, and the name its token gives.
    pub grant: Grant,
}

/// Why the relay stops, and what the client is told.
enum Stop {
    /// Close the socket with this code and reason.
    Close(u16, String),
    /// The client is gone (closed, or stopped reading): nothing to say.
    Gone,
}

/// What the loop does after one event.
enum Step {
    /// Waits for the next.
    Next,
    /// Moves the connection to the document's new owner.
    Move,
}

impl Stop {
    fn close(code: u16, reason: impl Into<String>) -> Self {
        Self::Close(code, reason.into())
    }
}

/// What the HTTP route hands the relay: the request and the gateway's shared parts.
pub struct Relay<G> {
    /// What the client asked for.
    pub request: SocketRequest,
    /// The way to the docnodes.
    pub routes: Arc<Routes>,
    /// The gateway's settings.
    pub config: Arc<GatewayConfig>,
    /// Changes to true when the gateway stops.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The gateway's series.
    pub metrics: Arc<GatewayMetrics>,
    /// Held until the connection ends (the gateway's connection count).
    pub guard: G,
}

/// Relays one client (its socket split in two) until either side ends.
///
/// Kept small on purpose: the task's future is what every connection costs for its whole
/// life, idle or not. Opening the session (routing, retries, a gRPC call) is a large future,
/// so it is boxed and gone once the session is open; the socket arrives already split (a
/// whole `WebSocket` argument would keep its size in the future for good).
pub async fn relay<G: Send + 'static>(
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    relay: Relay<G>,
) {
    if let Some(connection) = Box::pin(Connection::open(sink, stream, relay)).await {
        connection.run().await;
    }
}

/// Everything one connection's task holds.
struct Connection<G> {
    reader: Reader,
    stream: SplitStream<WebSocket>,
    writer: Writer,
    session: Session,
    request: SocketRequest,
    routes: Arc<Routes>,
    config: Arc<GatewayConfig>,
    stopping: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<GatewayMetrics>,
    _guard: G,
}

impl<G: Send + 'static> Connection<G> {
    /// Opens the session with the document's owner, or closes the socket saying why not.
    async fn open(
        sink: SplitSink<WebSocket, Message>,
        stream: SplitStream<WebSocket>,
        relay: Relay<G>,
    ) -> Option<Self> {
        let Relay {
            request,
            routes,
            config,
            stopping,
            metrics,
            guard,
        } = relay;
        let mut writer = Writer::new(sink, config.write_wait());
        let handoff = Handoff::new(request.client_id.clone());
        let opened = session::open(&routes, &request, &handoff, Opening::First).await;
        let read_only = request.grant.access == Access::Read;
        let session = match opened {
            Ok(opened) => Session::new(opened, handoff, read_only),
            Err(status) => {
                let (code, reason) = close_for(&status);
                writer.close(&metrics, code, &reason).await;
                return None;
            }
        };
        debug!(document = %request.document_id, "relaying");
        // Said before anything else, so a client never lets a reader type into text that
        // the server will refuse to change.
        if read_only || request.grant.name.is_some() {
            writer.text(protocol::access_message(
                read_only,
                request.grant.name.as_deref(),
            ));
        }
        Some(Self {
            reader: Reader::new(request.grant.clone(), &config),
            stream,
            writer,
            session,
            request,
            routes,
            config,
            stopping,
            metrics,
            _guard: guard,
        })
    }

    /// Relays until the connection ends, then closes the socket if there is something to
    /// say.
    async fn run(mut self) {
        match self.serve().await {
            Stop::Close(code, reason) => self.writer.close(&self.metrics, code, &reason).await,
            Stop::Gone => {}
        }
    }

    /// The loop: until the connection ends, and why.
    async fn serve(&mut self) -> Stop {
        let document = self.request.document_id.clone();
        // When the client last sent anything (pongs included).
        let mut heard = Instant::now();
        let mut ping = tokio::time::interval(self.config.ping_period());
        ping.reset();
        // Fires at or before the writer's deadline while it is busy: when it fires early (the
        // socket took something since it was armed) it is armed again, so a busy writer costs
        // at most one timer per WRITE_WAIT_SECS, not one per message.
        let write_timer = tokio::time::sleep(self.config.write_wait());
        tokio::pin!(write_timer);
        // One wait for a restart for the whole loop: a new `changed()` every turn registered
        // with the watch again each time (2% of a busy gateway's CPU).
        let mut stopping = self.stopping.clone();
        let stopped = stopping.changed();
        tokio::pin!(stopped);
        loop {
            let session = &mut self.session;
            let writer = &mut self.writer;
            let step = tokio::select! {
                // In this order: a restart first, then the docnode's frames, so that every
                // frame already here is queued before the writer flushes (one write for all
                // of them, where taking turns would make one per frame).
                biased;
                _ = &mut stopped => {
                    // Clients reconnect (through another gateway) and resume.
                    return Stop::close(UNAVAILABLE, "gateway restarting; reconnect");
                }
                // Only while the client's queue has room: a slow client holds the docnode's
                // frames back, never the gateway's memory.
                frame = session.inbound.next(), if writer.has_room() => match frame {
                    Some(Ok(frame)) => match session.state.docnode_frame(frame, &self.metrics) {
                        FromDocnode::Send(rendered) => {
                            writer.text(rendered.text);
                            if let Some((code, reason)) = rendered.close {
                                return Stop::Close(code, reason);
                            }
                            Step::Next
                        }
                        FromDocnode::Nothing => Step::Next,
                        FromDocnode::Move => Step::Move,
                        FromDocnode::Fail(reason) => {
                            self.metrics.moves.with_label_values(&[MOVE_FAILED]).inc();
                            return Stop::Close(UNAVAILABLE, reason);
                        }
                    },
                    // The docnode went away without a word (it crashed): its documents move.
                    None if session.state.handoff.resume_point().is_some() => Step::Move,
                    Some(Err(status))
                        if session.state.handoff.resume_point().is_some() && may_move(&status) =>
                    {
                        Step::Move
                    }
                    None => return Stop::close(UNAVAILABLE, "document closed; reconnect"),
                    Some(Err(status)) => {
                        let (code, reason) = close_for(&status);
                        return Stop::Close(code, reason);
                    }
                },
                message = self.stream.next(),
                    if session.state.held.is_none() && writer.takes_notices() =>
                {
                    heard = Instant::now();
                    match self.reader.read(message, &self.metrics) {
                        Read::Frame(frame) => session.state.held = Some(Box::new(frame)),
                        Read::Notice(text) => writer.text(text),
                        Read::Nothing => {}
                        Read::End(Ending::Closed) => return Stop::Gone,
                        Read::End(Ending::TooLarge(limit)) => {
                            let reason = format!("message larger than {} KiB", limit / 1024);
                            writer.text(protocol::error_message(TOO_LARGE, &reason));
                            return Stop::close(TOO_LARGE, reason);
                        }
                        Read::End(Ending::Limited(reason)) => {
                            writer.text(protocol::error_message(RATE_LIMITED, reason));
                            return Stop::close(RATE_LIMITED, reason);
                        }
                    }
                    Step::Next
                }
                written = writer.drain(), if writer.is_busy() => match written {
                    Ok(()) => Step::Next,
                    Err(_) => return Stop::Gone,
                },
                // The client stopped reading for WRITE_WAIT_SECS, or is gone.
                () = &mut write_timer, if writer.is_busy() => match writer.rearm(write_timer.as_mut()) {
                    Ok(()) => Step::Next,
                    Err(_) => return Stop::Gone,
                },
                permit = session.outbound.reserve(),
                    if session.state.held.is_some() && session.open =>
                {
                    match permit {
                        Ok(permit) => match session.state.take_held(&document, &self.metrics) {
                            Some(Ok(frame)) => permit.send(frame),
                            Some(Err(reason)) => {
                                self.metrics.moves.with_label_values(&[MOVE_FAILED]).inc();
                                return Stop::close(UNAVAILABLE, format!("{reason}; reconnect"));
                            }
                            None => {}
                        },
                        // The session ended; the inbound side says how. The frame goes to the
                        // next one.
                        Err(_) => session.open = false,
                    }
                    Step::Next
                }
                _ = ping.tick() => {
                    if let Err(stop) = ping_client(writer, heard, &self.config) {
                        return stop;
                    }
                    Step::Next
                }
            };
            if let Step::Move = step {
                if let Err(stop) = self.move_session(&document).await {
                    return stop;
                }
            }
        }
    }

    /// Carries the connection to the document's new owner; the socket stays open.
    async fn move_session(&mut self, document: &str) -> Result<(), Stop> {
        let Some(point) = self.session.state.handoff.resume_point() else {
            self.metrics.moves.with_label_values(&[MOVE_REFUSED]).inc();
            return Err(Stop::close(UNAVAILABLE, "document moved; reconnect"));
        };
        let began = Instant::now();
        let replay = self.session.state.handoff.begin_move(point);
        // Boxed: see `relay`.
        let mut opening = Box::pin(session::open(
            &self.routes,
            &self.request,
            &self.session.state.handoff,
            Opening::Move(point),
        ));
        let opened = while_opening(opening.as_mut(), &mut self.writer, &mut self.stopping).await?;
        drop(opening);
        match opened {
            Ok(opened) => {
                self.session.moved(opened, replay).await;
                self.metrics.moves.with_label_values(&[MOVE_DONE]).inc();
                self.metrics
                    .move_duration
                    .observe(began.elapsed().as_secs_f64());
                debug!(%document, moves = self.session.state.handoff.moves(), "moved a live connection");
                Ok(())
            }
            Err(status) => {
                self.metrics.moves.with_label_values(&[MOVE_FAILED]).inc();
                let (code, reason) = close_for(&status);
                Err(Stop::Close(code, reason))
            }
        }
    }
}

/// Waits for a move's new session to open. What the client sends meanwhile waits (the
/// socket is not read); what it was sent before the move keeps going out.
async fn while_opening<T>(
    mut opening: std::pin::Pin<&mut impl std::future::Future<Output = T>>,
    writer: &mut Writer,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<T, Stop> {
    loop {
        tokio::select! {
            opened = &mut opening => return Ok(opened),
            written = writer.drain(), if writer.is_busy() => {
                if written.is_err() {
                    return Err(Stop::Gone);
                }
            }
            _ = stopping.changed() => {
                return Err(Stop::close(UNAVAILABLE, "gateway restarting; reconnect"));
            }
        }
    }
}

/// A ping period passed: ends the connection if the client answered nothing for PONG_WAIT,
/// else pings it (unless its queue is full: a slow client is not kept waiting for a ping
/// either).
fn ping_client(writer: &mut Writer, heard: Instant, config: &GatewayConfig) -> Result<(), Stop> {
    if heard.elapsed() > config.pong_wait() {
        return Err(Stop::close(UNAVAILABLE, "no response to pings"));
    }
    writer.try_push(Message::Ping(Default::default()));
    Ok(())
}

/// Whether a session that failed with `status` lost its docnode (so the document moves).
fn may_move(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted
    )
}

/// The close code and reason for a gRPC failure.
fn close_for(status: &tonic::Status) -> (u16, String) {
    match status.code() {
        Code::InvalidArgument => (BAD_REQUEST, status.message().to_owned()),
        Code::Internal | Code::Unknown => (INTERNAL, "internal error; reconnect".to_owned()),
        _ => (
            UNAVAILABLE,
            format!("document unavailable ({}); reconnect", status.message()),
        ),
    }
}
