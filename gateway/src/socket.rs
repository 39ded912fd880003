//! One client WebSocket relayed over one gRPC stream to the document's owner.
//!
//! Three tasks per client: a reader parses client messages into a small bounded queue (when it
//! is full, the gateway stops reading the socket: backpressure instead of buffering); a writer
//! owns the socket's sending half; and the relay in between forwards client frames to the
//! owning docnode and renders docnode frames for the writer's bounded queue. When that queue
//! is full the relay stops reading the docnode's stream (HTTP/2 flow control pushes that back
//! to the docnode, which gives the client a catch-up or drops it), yet keeps forwarding the
//! client's own messages. A write stuck for WRITE_WAIT_SECS ends the connection. The relay
//! also moves the connection to a document's new owner ([`Handoff`]). Nothing here knows
//! about documents beyond their id.
//!
//! Observability: each Edit gets a `gateway.edit` span, the root of that edit's trace; its
//! W3C context rides to the docnode inside the frame. [`PendingEdits`] keeps the span open
//! until the History entry acknowledging the edit returns, and times that round trip.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use codraft_common::telemetry;
use codraft_proto as pb;
use futures::{stream::SplitSink, SinkExt, StreamExt};
use governor::{Quota, RateLimiter};
use pb::client_frame::Kind as In;
use pb::server_frame::Kind as Out;
use std::num::NonZeroU32;
use tokio::{sync::mpsc, time::Instant};
use tonic::Code;
use tracing::{debug, info_span, Instrument};

use crate::{
    auth::{Access, Grant},
    config::GatewayConfig,
    gate::Refusal,
    handoff::{Handoff, Incoming},
    metrics::{GatewayMetrics, LIMIT_EDITS, LIMIT_MESSAGES, MOVE_DONE, MOVE_FAILED, MOVE_REFUSED},
    pending::PendingEdits,
    protocol::{self, INVALID_MESSAGE},
    routes::{Routes, Session},
};

// Close codes are defined once, in the gRPC contract; these are the gateway's names for them.
pub use codraft_proto::close::{
    INTERNAL, INVALID_MESSAGE as BAD_REQUEST, READ_ONLY, TOO_LARGE, TOO_MANY as RATE_LIMITED,
    UNAVAILABLE,
};

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

/// Relays one client until either side ends.
pub async fn relay(
    socket: WebSocket,
    request: SocketRequest,
    routes: Arc<Routes>,
    config: GatewayConfig,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<GatewayMetrics>,
) {
    let (sink, mut stream) = socket.split();
    let out = Outgoing::spawn(sink, config.write_wait());
    let mut handoff = Handoff::new(request.client_id.clone());
    let open_span = info_span!(
        parent: None,
        "gateway.open",
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = RPC_SERVICE,
        rpc.method = "Session",
        server.address = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        document = %request.document_id,
    );
    let open = pb::Open {
        document_id: request.document_id.clone(),
        client_id: Some(handoff.client_id().to_owned()),
        // Resuming needs the client's own id: a made-up one has nothing to resume.
        resume_revision: request.resume.filter(|_| !handoff.made_up()),
        otp: request.otp.clone(),
        trace_context: telemetry::trace_context(&open_span),
        user_id: None,
        made_up_client_id: handoff.made_up(),
    };
    let Session {
        mut inbound,
        mut outbound,
        node,
        ..
    } = match routes.open(open).instrument(open_span.clone()).await {
        Ok(session) => {
            open_span.record(
                "server.address",
                server_address(session.url.as_deref().unwrap_or(&session.node)),
            );
            session
        }
        Err(status) => {
            failed(&open_span, &status);
            let (code, reason) = close_for(&status);
            out.close(&metrics, code, &reason).await;
            return;
        }
    };
    // The open span covers routing and opening the session, not the session's whole life.
    drop(open_span);
    debug!(document = %request.document_id, %node, "relaying");
    // Said before anything else, so a client never lets a reader type into text that the
    // server will refuse to change.
    let read_only = request.grant.access == Access::Read;
    if read_only || request.grant.name.is_some() {
        out.text(protocol::access_message(
            read_only,
            request.grant.name.as_deref(),
        ))
        .await;
    }

    // Errors the gateway itself reports (bad JSON) go out through the one writer below.
    let (notices, mut notices_rx) = mpsc::channel::<String>(8);
    // Parsed client frames, sent on by the loop below to whichever docnode owns the document.
    // Boxed: a channel allocates its slots up front, and an idle connection should not pay
    // for sixteen whole frames.
    let (client_frames, mut client_rx) = mpsc::channel::<Box<pb::ClientFrame>>(16);
    let max_message = config.max_message_bytes();
    let grant = request.grant.clone();
    let edits = RateLimiter::direct(
        Quota::per_second(
            NonZeroU32::new(config.edits_per_second.max(1)).unwrap_or(NonZeroU32::MIN),
        )
        .allow_burst(NonZeroU32::new(config.edit_burst.max(1)).unwrap_or(NonZeroU32::MIN)),
    );
    let messages = RateLimiter::direct(Quota::per_second(
        NonZeroU32::new(config.messages_per_second.max(1)).unwrap_or(NonZeroU32::MIN),
    ));
    // Milliseconds since `started` at which the client last sent anything (pongs included).
    let started = Instant::now();
    let heard = Arc::new(AtomicU64::new(0));
    let heard_by_reader = Arc::clone(&heard);
    let metrics_by_reader = Arc::clone(&metrics);
    let upstream = async move {
        while let Some(message) = stream.next().await {
            let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            heard_by_reader.store(now, Ordering::Relaxed);
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Binary(_)) => {
                    let _ = notices
                        .send(protocol::error_message(
                            INVALID_MESSAGE,
                            "binary messages are not part of the protocol",
                        ))
                        .await;
                    continue;
                }
                Ok(Message::Close(_)) => return Upstream::Closed,
                Ok(_) => continue,
                Err(error) => {
                    let text = error.to_string();
                    if text.contains("too long") || text.contains("too big") {
                        return Upstream::TooLarge(max_message);
                    }
                    return Upstream::Closed;
                }
            };
            if messages.check().is_err() {
                metrics_by_reader
                    .rate_limited
                    .with_label_values(&[LIMIT_MESSAGES])
                    .inc();
                return Upstream::Limited("too many messages per second");
            }
            match protocol::parse_client(text.as_str()) {
                Ok(mut frame) => {
                    match &mut frame.kind {
                        Some(In::Edit(_) | In::SetLanguage(_) | In::SetOtp(_))
                            if grant.access == Access::Read =>
                        {
                            let _ = notices
                                .send(protocol::error_message(
                                    READ_ONLY,
                                    "this connection is read-only: your token does not grant write access",
                                ))
                                .await;
                            continue;
                        }
                        Some(In::Edit(_)) if edits.check().is_err() => {
                            metrics_by_reader
                                .rate_limited
                                .with_label_values(&[LIMIT_EDITS])
                                .inc();
                            return Upstream::Limited("too many edits per second");
                        }
                        Some(In::ClientInfo(info)) => {
                            if let Some(name) = &grant.name {
                                name.clone_into(&mut info.name);
                            }
                        }
                        _ => {}
                    }
                    // Full: the loop is waiting on the docnode, so stop reading the socket.
                    if client_frames.send(Box::new(frame)).await.is_err() {
                        return Upstream::Closed;
                    }
                }
                Err(error) => {
                    let _ = notices
                        .send(protocol::error_message(INVALID_MESSAGE, &error.to_string()))
                        .await;
                }
            }
        }
        Upstream::Closed
    };
    // Its own task, so the client's messages keep being read while a write to a slow client
    // waits (a paused reader's edits still reach the docnode). Aborted when the relay ends.
    let mut upstream = tokio::spawn(upstream);
    let _reader = AbortOnDrop(upstream.abort_handle());

    let document = request.document_id.as_str();
    let mut pending = PendingEdits::default();
    // A client frame waiting for room in the docnode's queue.
    let mut held: Option<pb::ClientFrame> = None;
    let mut client_done = false;
    let mut session_open = true;
    let mut ping = tokio::time::interval(config.ping_period());
    ping.reset();
    loop {
        // Set when the current session ends in a way that lets the connection move on.
        let mut move_now = false;
        tokio::select! {
            ended = &mut upstream => match ended.unwrap_or(Upstream::Closed) {
                Upstream::TooLarge(limit) => {
                    let reason = format!("message larger than {} KiB", limit / 1024);
                    out.text(protocol::error_message(TOO_LARGE, &reason)).await;
                    out.close(&metrics, TOO_LARGE, &reason).await;
                    return;
                }
                Upstream::Limited(reason) => {
                    out.text(protocol::error_message(RATE_LIMITED, reason)).await;
                    out.close(&metrics, RATE_LIMITED, reason).await;
                    return;
                }
                Upstream::Closed => return,
            },
            Some(notice) = notices_rx.recv(), if out.has_room() => {
                if !out.text(notice).await {
                    return;
                }
            }
            // The writer gave up: the client stopped reading for WRITE_WAIT_SECS, or is gone.
            () = out.closed() => return,
            // The client's queue was full and has room again: take docnode frames again.
            () = out.room(), if !out.has_room() => {}
            frame = client_rx.recv(), if held.is_none() && !client_done => match frame {
                Some(frame) => held = Some(*frame),
                // The reader ended; its branch above says why.
                None => client_done = true,
            },
            permit = outbound.reserve(), if held.is_some() && session_open => match (permit, held.take()) {
                (Ok(permit), Some(frame)) => match handoff.outgoing(frame) {
                    Ok(mut frame) => {
                        if let Some(In::Edit(edit)) = &mut frame.kind {
                            metrics.edits.inc();
                            let span = edit_span(document, edit);
                            edit.trace_context = telemetry::trace_context(&span);
                            pending.sent(Instant::now(), edit.seq, span);
                        }
                        permit.send(frame);
                    }
                    Err(reason) => {
                        metrics.moves.with_label_values(&[MOVE_FAILED]).inc();
                        let reason = format!("{reason}; reconnect");
                        out.close(&metrics, UNAVAILABLE, &reason).await;
                        return;
                    }
                },
                // The session ended; the inbound side says how. The frame goes to the next one.
                (Err(_), frame) => {
                    held = frame;
                    session_open = false;
                }
                (Ok(_), None) => {}
            },
            // Only while the client's queue has room: a slow client holds the docnode's frames
            // back (HTTP/2 flow control), never the gateway's memory.
            frame = inbound.message(), if out.has_room() => match frame {
                Ok(Some(frame)) => match handoff.incoming(frame) {
                    Incoming::Forward(frame) => {
                        match &frame.kind {
                            Some(Out::Identity(identity)) => pending.identity(identity.user_id),
                            Some(Out::History(history)) => {
                                for round_trip in pending.acknowledged(history, Instant::now()) {
                                    metrics.edit_round_trip.observe(round_trip.as_secs_f64());
                                }
                            }
                            _ => {}
                        }
                        let Some(rendered) = protocol::render(&frame, handoff.visible_client_id(), read_only) else { continue };
                        if !out.text(rendered.text).await {
                            return;
                        }
                        if let Some((code, reason)) = rendered.close {
                            out.close(&metrics, code, &reason).await;
                            return;
                        }
                    }
                    Incoming::Drop => {}
                    Incoming::Move => move_now = true,
                    Incoming::Fail(reason) => {
                        metrics.moves.with_label_values(&[MOVE_FAILED]).inc();
                        let reason = format!("{reason}; reconnect");
                        out.close(&metrics, UNAVAILABLE, &reason).await;
                        return;
                    }
                },
                // The docnode went away without a word (it crashed): its documents move.
                Ok(None) if handoff.resume_point().is_some() => move_now = true,
                Err(status) if handoff.resume_point().is_some() && may_move(&status) => move_now = true,
                Ok(None) => {
                    out.close(&metrics, UNAVAILABLE, "document closed; reconnect").await;
                    return;
                }
                Err(status) => {
                    let (code, reason) = close_for(&status);
                    out.close(&metrics, code, &reason).await;
                    return;
                }
            },
            _ = stopping.changed() => {
                // Clients reconnect (through another gateway) and resume.
                out.close(&metrics, UNAVAILABLE, "gateway restarting; reconnect").await;
                return;
            }
            _ = ping.tick() => {
                let silent_since = started + Duration::from_millis(heard.load(Ordering::Relaxed));
                if silent_since.elapsed() > config.pong_wait() {
                    out.close(&metrics, UNAVAILABLE, "no response to pings").await;
                    return;
                }
                // A client whose queue is full is not kept waiting for a ping either.
                out.try_send(Message::Ping(Default::default()));
            }
        }
        if !move_now {
            continue;
        }
        // Carry the connection to the document's new owner; the socket stays open.
        let Some(point) = handoff.resume_point() else {
            metrics.moves.with_label_values(&[MOVE_REFUSED]).inc();
            out.close(&metrics, UNAVAILABLE, "document moved; reconnect")
                .await;
            return;
        };
        let began = Instant::now();
        let replay = handoff.begin_move(point);
        let open_span = info_span!(
            parent: None,
            "gateway.move",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = RPC_SERVICE,
            rpc.method = "Session",
            server.address = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            document = %document,
            resume = point.log,
        );
        let open = pb::Open {
            document_id: request.document_id.clone(),
            client_id: Some(handoff.client_id().to_owned()),
            resume_revision: Some(point.log),
            otp: request.otp.clone(),
            trace_context: telemetry::trace_context(&open_span),
            user_id: handoff.user_id(),
            made_up_client_id: handoff.made_up(),
        };
        let opened = tokio::select! {
            opened = routes.open(open).instrument(open_span.clone()) => opened,
            _ = &mut upstream => return,
            _ = stopping.changed() => {
                out.close(&metrics, UNAVAILABLE, "gateway restarting; reconnect").await;
                return;
            }
        };
        match opened {
            Ok(session) => {
                open_span.record(
                    "server.address",
                    server_address(session.url.as_deref().unwrap_or(&session.node)),
                );
                drop(open_span);
                inbound = session.inbound;
                outbound = session.outbound;
                session_open = true;
                for frame in replay {
                    if outbound.send(frame).await.is_err() {
                        break;
                    }
                }
                metrics.moves.with_label_values(&[MOVE_DONE]).inc();
                metrics.move_duration.observe(began.elapsed().as_secs_f64());
                debug!(%document, node = %session.node, moves = handoff.moves(), "moved a live connection");
            }
            Err(status) => {
                failed(&open_span, &status);
                metrics.moves.with_label_values(&[MOVE_FAILED]).inc();
                let (code, reason) = close_for(&status);
                out.close(&metrics, code, &reason).await;
                return;
            }
        }
    }
}

/// The gRPC service the gateway's client spans call (`rpc.service`).
const RPC_SERVICE: &str = "codraft.docnode.v1.DocNode";

/// The OpenTelemetry `server.address` of a docnode named by id or by URL: the URL's host, or
/// the id (a pod name, which is its host name too).
fn server_address(node: &str) -> String {
    let Some((_, rest)) = node.split_once("://") else {
        return node.to_owned();
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_owned(),
        _ => authority.to_owned(),
    }
}

/// Marks a span as failed with the gRPC status that ended it.
fn failed(span: &tracing::Span, status: &tonic::Status) {
    span.record("otel.status_code", "ERROR");
    span.record(
        "otel.status_description",
        format!("{:?}: {}", status.code(), status.message()),
    );
}

/// The root of an edit's trace; it ends when the edit comes back acknowledged.
fn edit_span(document: &str, edit: &pb::Edit) -> tracing::Span {
    if telemetry::traces_enabled() {
        info_span!(
            parent: None,
            "gateway.edit",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = RPC_SERVICE,
            rpc.method = "Session",
            document = %document,
            revision = edit.revision,
            seq = edit.seq,
        )
    } else {
        tracing::Span::none()
    }
}

/// Refuses a socket the gate turned away: a browser cannot read an HTTP refusal of the
/// upgrade (it only sees 1006), so the socket opens, says why in a `Refused` message and
/// closes with 4401, 4403 or 4429 and a reason starting with the refusal's kind.
pub async fn refuse(mut socket: WebSocket, refusal: Refusal, login_url: Option<String>) {
    let code = refusal.close_code();
    let body = refusal.body(login_url.as_deref());
    let text =
        protocol::refused_message(code, body.error, &body.message, body.login_url.as_deref());
    let closing = async {
        socket.send(Message::Text(Utf8Bytes::from(text))).await?;
        socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from(refusal.close_reason()),
            })))
            .await?;
        // Wait for the client's close, so the close reaches it before the TCP connection
        // ends.
        while let Some(message) = socket.next().await {
            if matches!(message?, Message::Close(_)) {
                break;
            }
        }
        Ok::<(), axum::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_WAIT, closing).await;
}

/// How long a refused socket waits for the client to acknowledge its close.
const REFUSAL_WAIT: Duration = Duration::from_secs(5);

/// Whether a session that failed with `status` lost its docnode (so the document moves).
fn may_move(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted
    )
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How the client-to-server direction ended.
enum Upstream {
    Closed,
    TooLarge(usize),
    Limited(&'static str),
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

/// Messages queued for one client's socket before the relay stops taking docnode frames.
const OUTGOING_QUEUE: usize = 16;

/// The client's side of the socket, written by a task of its own, so the relay never waits
/// for a slow client: it keeps forwarding the client's own messages while a write is stuck,
/// and stops taking docnode frames once `OUTGOING_QUEUE` messages wait. A write that takes
/// longer than WRITE_WAIT_SECS ends the connection.
struct Outgoing {
    tx: mpsc::Sender<Message>,
}

impl Outgoing {
    fn spawn(mut sink: SplitSink<WebSocket, Message>, write_wait: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(OUTGOING_QUEUE);
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                let closing = matches!(message, Message::Close(_));
                match tokio::time::timeout(write_wait, sink.send(message)).await {
                    Ok(Ok(())) if !closing => {}
                    _ => break,
                }
            }
            // Dropping the queue first tells the relay the writer has ended.
            drop(rx);
            let _ = tokio::time::timeout(write_wait, sink.close()).await;
        });
        Self { tx }
    }

    /// Whether a message can be queued without waiting.
    fn has_room(&self) -> bool {
        self.tx.capacity() > 0
    }

    /// Resolves when a message can be queued without waiting (or the writer has ended).
    async fn room(&self) {
        let _ = self.tx.reserve().await;
    }

    /// Queues a text message; false once the writer has ended.
    async fn text(&self, text: String) -> bool {
        self.tx
            .send(Message::Text(Utf8Bytes::from(text)))
            .await
            .is_ok()
    }

    /// Queues a message if there is room, else drops it.
    fn try_send(&self, message: Message) {
        let _ = self.tx.try_send(message);
    }

    /// Resolves when the writer has ended.
    async fn closed(&self) {
        self.tx.closed().await
    }

    /// Closes the socket with `code` (counted in `codraft_closes_total`) and `reason`, after
    /// what is queued, and waits (at most about one write wait) for the writer to finish.
    async fn close(&self, metrics: &GatewayMetrics, code: u16, reason: &str) {
        metrics.closed(code);
        // A close reason may be at most 123 bytes; cut on a character boundary.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(&reason[..end]),
        }));
        if self.tx.send(frame).await.is_ok() {
            self.tx.closed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_is_the_docnode_host() {
        assert_eq!(
            server_address("http://dn-0.dn.ns.svc:50051"),
            "dn-0.dn.ns.svc"
        );
        assert_eq!(server_address("https://[::1]:7000/"), "[::1]");
        assert_eq!(server_address("dn-0"), "dn-0");
    }
}
