//! One y-websocket client of a Yjs document relayed to the document's owner, in one task.
//!
//! The gateway stays protocol-thin: binary messages go to the docnode as they came and come
//! back as the docnode sent them. It reads only each message's first two tags, to refuse
//! updates from a read-only connection (sync step 2, update, and codraft's set-password
//! message are dropped; sync step 1, awareness and queries pass) and to remember what a move
//! needs: the client's newest sync step 1 and awareness message.
//!
//! A move (the owner drains, the document is rebalanced, the owner dies) keeps the socket:
//! the relay opens a session with the new owner and sends it the client's sync step 1 (an
//! empty state vector if the client never sent one: a full resync) and awareness. The new
//! owner's own step 1 makes the client send whatever the document lacks, so an update the
//! old owner never committed comes back; re-applying what it did commit changes nothing.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use codraft_proto as pb;
use futures::{
    stream::{SplitSink, SplitStream},
    StreamExt,
};
use pb::{client_frame::Kind as In, in_process::Inbound, server_frame::Kind as Out};
use tokio::time::Instant;

use crate::{
    auth::Access,
    metrics::{GatewayMetrics, LIMIT_MESSAGES, MOVE_DONE, MOVE_FAILED},
    routes::Routes,
};

use super::{
    close_for, may_move, ping_client, reader::per_second, reader::too_large, session,
    while_opening, writer::Writer, Relay, SocketRequest, Stop, BAD_REQUEST, RATE_LIMITED,
    TOO_LARGE, UNAVAILABLE,
};

/// y-protocols' message tags the relay looks at.
const MSG_SYNC: u8 = 0;
const MSG_AWARENESS: u8 = 1;
const SYNC_STEP_1: u8 = 0;
/// codraft's set-password message (see the docnode's `yjs` module).
const MSG_SET_PASSWORD: u8 = 100;

/// A sync step 1 with an empty state vector ("send me everything"): the tags, then the
/// encoded state vector (no clients) as a byte array of length 1.
const FULL_RESYNC: [u8; 4] = [MSG_SYNC, SYNC_STEP_1, 1, 0];

/// Relays one y-websocket client (its socket split in two) until either side ends.
pub async fn relay_yjs<G: Send + 'static>(
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    relay: Relay<G>,
) {
    let mut writer = Writer::new(sink, relay.config.write_wait());
    let opened = Box::pin(open(&relay.routes, &relay.request, "gateway.open")).await;
    let session = match opened {
        Ok(session) => session,
        Err(status) => {
            let (code, reason) = close_for(&status);
            writer.close(&relay.metrics, code, &reason).await;
            return;
        }
    };
    let mut connection = YjsConnection {
        stream,
        writer,
        session,
        client: Client {
            step1: None,
            awareness: None,
            messages: governor::RateLimiter::direct(per_second(relay.config.messages_per_second)),
            read_only: relay.request.grant.access == Access::Read,
        },
        held: None,
        relay,
    };
    match connection.serve().await {
        Stop::Close(code, reason) => {
            connection
                .writer
                .close(&connection.relay.metrics, code, &reason)
                .await
        }
        Stop::Gone => {}
    }
}

/// A session with the document's owner.
struct Open {
    inbound: pb::in_process::InboundStream,
    outbound: tokio::sync::mpsc::Sender<Box<pb::ClientFrame>>,
}

/// Opens a session with the owner of the request's Yjs document.
async fn open(routes: &Routes, request: &SocketRequest, name: &str) -> Result<Open, tonic::Status> {
    let span = session::session_span(name, &request.document_id, None);
    let open = pb::Open {
        document_id: request.document_id.clone(),
        otp: request.otp.clone(),
        ..Default::default()
    };
    let session = session::open_traced(routes, open, span).await?;
    Ok(Open {
        inbound: session.0,
        outbound: session.1,
    })
}

/// Everything one Yjs connection's task holds.
struct YjsConnection<G> {
    stream: SplitStream<WebSocket>,
    writer: Writer,
    session: Open,
    client: Client,
    /// A client message waiting for room in the session's queue.
    held: Option<Bytes>,
    relay: Relay<G>,
}

/// The client's side: its rate limit and what a move needs of what it sent.
struct Client {
    /// The client's newest sync step 1, for a move.
    step1: Option<Bytes>,
    /// The client's newest awareness message, for a move.
    awareness: Option<Bytes>,
    messages: governor::DefaultDirectRateLimiter,
    read_only: bool,
}

/// What one client message comes to.
enum FromClient {
    Forward(Bytes),
    Nothing,
    End(Stop),
}

impl<G: Send + 'static> YjsConnection<G> {
    async fn serve(&mut self) -> Stop {
        let config = Arc::clone(&self.relay.config);
        let mut heard = Instant::now();
        let mut ping = tokio::time::interval(config.ping_period());
        ping.reset();
        let write_timer = tokio::time::sleep(config.write_wait());
        tokio::pin!(write_timer);
        loop {
            let writer = &mut self.writer;
            let moving = tokio::select! {
                // In this order: a restart first, then the docnode's frames, so that every
                // frame already here is queued before the writer flushes (one write for all
                // of them, where taking turns would make one per frame).
                biased;
                _ = self.relay.stopping.changed() => {
                    return Stop::close(UNAVAILABLE, "gateway restarting; reconnect");
                }
                frame = self.session.inbound.next(), if writer.has_room() => match frame.map(|f| f.map(Inbound::into_frame)) {
                    Some(Ok(pb::ServerFrame { kind: Some(Out::Yjs(bytes)) })) => {
                        writer.push(Message::Binary(bytes));
                        false
                    }
                    Some(Ok(pb::ServerFrame { kind: Some(Out::Error(error)) })) => {
                        if error.reroute {
                            true
                        } else {
                            let code = u16::try_from(error.code).unwrap_or(UNAVAILABLE);
                            return Stop::Close(code, error.message);
                        }
                    }
                    Some(Ok(_)) => false,
                    // The docnode went away without a word (it crashed): its documents move.
                    None => true,
                    Some(Err(status)) if may_move(&status) => true,
                    Some(Err(status)) => {
                        let (code, reason) = close_for(&status);
                        return Stop::Close(code, reason);
                    }
                },
                // While a message waits for room in the docnode's queue the socket is not
                // read: backpressure, not buffering.
                message = self.stream.next(), if self.held.is_none() && writer.takes_notices() => {
                    heard = Instant::now();
                    let max_message = self.relay.config.max_message_bytes();
                    match self.client.read(message, &self.relay.metrics, max_message) {
                        FromClient::Forward(bytes) => {
                            self.held = Some(bytes);
                            false
                        }
                        FromClient::Nothing => false,
                        FromClient::End(stop) => return stop,
                    }
                }
                permit = self.session.outbound.reserve(), if self.held.is_some() => {
                    if let (Ok(permit), Some(bytes)) = (permit, self.held.take()) {
                        permit.send(Box::new(pb::ClientFrame { kind: Some(In::Yjs(bytes)) }));
                    }
                    // Else the session ended: its inbound side says how, and what the client
                    // sent goes again after the move (its step 2 to the new owner's step 1).
                    false
                }
                written = writer.drain(), if writer.is_busy() => match written {
                    Ok(()) => false,
                    Err(_) => return Stop::Gone,
                },
                () = &mut write_timer, if writer.is_busy() => match writer.rearm(write_timer.as_mut()) {
                    Ok(()) => false,
                    Err(_) => return Stop::Gone,
                },
                _ = ping.tick() => match ping_client(writer, heard, &config) {
                    Ok(()) => false,
                    Err(stop) => return stop,
                },
            };
            if moving {
                if let Err(stop) = self.move_session().await {
                    return stop;
                }
            }
        }
    }

    /// Carries the connection to the document's new owner; the socket stays open.
    async fn move_session(&mut self) -> Result<(), Stop> {
        let metrics: &GatewayMetrics = &self.relay.metrics;
        let began = Instant::now();
        let mut opening = Box::pin(open(
            &self.relay.routes,
            &self.relay.request,
            "gateway.move",
        ));
        let opened =
            while_opening(opening.as_mut(), &mut self.writer, &mut self.relay.stopping).await?;
        drop(opening);
        let session = match opened {
            Ok(session) => session,
            Err(status) => {
                metrics.moves.with_label_values(&[MOVE_FAILED]).inc();
                let (code, reason) = close_for(&status);
                return Err(Stop::Close(code, reason));
            }
        };
        self.session = session;
        let step1 = self
            .client
            .step1
            .clone()
            .unwrap_or_else(|| Bytes::from_static(&FULL_RESYNC));
        for message in std::iter::once(step1).chain(self.client.awareness.clone()) {
            let frame = Box::new(pb::ClientFrame {
                kind: Some(In::Yjs(message)),
            });
            if self.session.outbound.send(frame).await.is_err() {
                break;
            }
        }
        metrics.moves.with_label_values(&[MOVE_DONE]).inc();
        metrics.move_duration.observe(began.elapsed().as_secs_f64());
        Ok(())
    }
}

impl Client {
    /// What the client's next socket item comes to.
    fn read(
        &mut self,
        message: Option<Result<Message, axum::Error>>,
        metrics: &GatewayMetrics,
        max_message: usize,
    ) -> FromClient {
        let bytes = match message {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Text(_))) => {
                return FromClient::End(Stop::close(
                    BAD_REQUEST,
                    "a Yjs document speaks binary y-websocket messages",
                ))
            }
            Some(Ok(Message::Close(_))) | None => return FromClient::End(Stop::Gone),
            Some(Ok(_)) => return FromClient::Nothing,
            Some(Err(error)) if too_large(&error) => {
                let reason = format!("message larger than {} KiB", max_message / 1024);
                return FromClient::End(Stop::Close(TOO_LARGE, reason));
            }
            Some(Err(_)) => return FromClient::End(Stop::Gone),
        };
        if self.messages.check().is_err() {
            metrics
                .rate_limited
                .with_label_values(&[LIMIT_MESSAGES])
                .inc();
            return FromClient::End(Stop::close(RATE_LIMITED, "too many messages per second"));
        }
        let (tag, sub) = (bytes.first().copied(), bytes.get(1).copied());
        let writes = match (tag, sub) {
            (Some(MSG_SYNC), Some(SYNC_STEP_1)) => {
                self.step1 = Some(bytes.clone());
                false
            }
            (Some(MSG_SYNC), _) | (Some(MSG_SET_PASSWORD), _) => true,
            (Some(MSG_AWARENESS), _) => {
                self.awareness = Some(bytes.clone());
                false
            }
            _ => false,
        };
        if writes && self.read_only {
            // A reader may sync and be seen, but not change the document.
            return FromClient::Nothing;
        }
        FromClient::Forward(bytes)
    }
}
