//! The connection's session with the document's owner: opening it (first, or again after a
//! move), the client frame waiting for room in it, and what the relay does with each frame
//! either way — translation for moves ([`Handoff`]), edit round trips and spans
//! ([`PendingEdits`]), rendering for the client.

use codraft_common::telemetry;
use codraft_proto as pb;
use pb::{
    client_frame::Kind as In,
    in_process::{Inbound, InboundStream},
    server_frame::Kind as Out,
};
use tokio::{sync::mpsc, time::Instant};
use tracing::{info_span, Instrument};

use crate::{
    handoff::{Handoff, Incoming, ResumePoint},
    metrics::GatewayMetrics,
    pending::PendingEdits,
    protocol,
    routes::Routes,
};

use super::{SocketRequest, RPC_SERVICE};

/// A session with a docnode, and the connection's state across sessions.
pub struct Session {
    /// Frames from the docnode.
    pub inbound: InboundStream,
    /// Frames to the docnode.
    pub outbound: mpsc::Sender<Box<pb::ClientFrame>>,
    /// Whether the docnode still takes frames; when not, the inbound side says why.
    pub open: bool,
    /// What outlives one session.
    pub state: State,
}

/// The connection's side of its sessions: what outlives one.
pub struct State {
    /// A client frame waiting for room in the session's queue.
    pub held: Option<Box<pb::ClientFrame>>,
    /// What a move needs to know.
    pub handoff: Handoff,
    /// Edits on their way.
    pending: PendingEdits,
    /// The connection may read only (shown in `Joined`).
    read_only: bool,
}

/// What the relay does with a docnode frame.
pub enum FromDocnode {
    /// Sends this text to the client, then closes it if `close` is set.
    Send(protocol::Rendered),
    /// Nothing.
    Nothing,
    /// The document moved: open a session with its new owner.
    Move,
    /// The connection cannot go on (4503 with this reason).
    Fail(String),
}

/// Which session is being opened: the connection's first, or one resuming at a point.
#[derive(Clone, Copy)]
pub enum Opening {
    /// The client's first session.
    First,
    /// A moved connection's session.
    Move(ResumePoint),
}

/// Opens a session with the owner of `request`'s document, under a client span.
pub async fn open(
    routes: &Routes,
    request: &SocketRequest,
    handoff: &Handoff,
    opening: Opening,
) -> Result<(InboundStream, mpsc::Sender<Box<pb::ClientFrame>>), tonic::Status> {
    let (name, resume) = match opening {
        Opening::First => (
            "gateway.open",
            request.resume.filter(|_| !handoff.made_up()),
        ),
        Opening::Move(point) => ("gateway.move", Some(point.log)),
    };
    let span = session_span(name, &request.document_id, resume);
    let open = pb::Open {
        document_id: request.document_id.clone(),
        client_id: Some(handoff.client_id().to_owned()),
        // Resuming needs the client's own id: a made-up one has nothing to resume.
        resume_revision: resume,
        otp: request.otp.clone(),
        trace_context: Default::default(),
        user_id: handoff.user_id(),
        made_up_client_id: handoff.made_up(),
        referred_by: None,
    };
    open_traced(routes, open, span).await
}

/// The client span of opening a session (`otel.name` = `name`: `gateway.open` or
/// `gateway.move`).
pub fn session_span(name: &str, document: &str, resume: Option<u64>) -> tracing::Span {
    info_span!(
        parent: None,
        "gateway.session",
        otel.name = name,
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = RPC_SERVICE,
        rpc.method = "Session",
        server.address = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        document = %document,
        resume,
    )
}

/// Opens `open`'s session with the document's owner under `span`, whose context it carries.
pub async fn open_traced(
    routes: &Routes,
    mut open: pb::Open,
    span: tracing::Span,
) -> Result<(InboundStream, mpsc::Sender<Box<pb::ClientFrame>>), tonic::Status> {
    open.trace_context = telemetry::trace_context(&span);
    match routes.open(open).instrument(span.clone()).await {
        Ok(session) => {
            span.record(
                "server.address",
                server_address(session.url.as_deref().unwrap_or(&session.node)),
            );
            Ok((session.inbound, session.outbound))
        }
        Err(status) => {
            span.record("otel.status_code", "ERROR");
            span.record(
                "otel.status_description",
                format!("{:?}: {}", status.code(), status.message()),
            );
            Err(status)
        }
    }
}

impl Session {
    /// The connection's first session.
    pub fn new(
        (inbound, outbound): (InboundStream, mpsc::Sender<Box<pb::ClientFrame>>),
        handoff: Handoff,
        read_only: bool,
    ) -> Self {
        Self {
            inbound,
            outbound,
            open: true,
            state: State {
                held: None,
                handoff,
                pending: PendingEdits::default(),
                read_only,
            },
        }
    }

    /// Carries on with a new owner's session, re-sending what the client has not seen
    /// acknowledged first.
    pub async fn moved(
        &mut self,
        (inbound, outbound): (InboundStream, mpsc::Sender<Box<pb::ClientFrame>>),
        replay: Vec<pb::ClientFrame>,
    ) {
        self.inbound = inbound;
        self.outbound = outbound;
        self.open = true;
        for frame in replay {
            if self.outbound.send(Box::new(frame)).await.is_err() {
                break;
            }
        }
    }
}

impl State {
    /// Prepares the held client frame for the docnode (an edit gets its span and its round
    /// trip starts); `Err` when the connection cannot go on.
    pub fn take_held(
        &mut self,
        document: &str,
        metrics: &GatewayMetrics,
    ) -> Option<Result<Box<pb::ClientFrame>, &'static str>> {
        let mut boxed = self.held.take()?;
        let frame = std::mem::take(&mut *boxed);
        Some(self.handoff.outgoing(frame).map(|mut frame| {
            if let Some(In::Edit(edit)) = &mut frame.kind {
                metrics.edits.inc();
                let span = edit_span(document, edit);
                edit.trace_context = telemetry::trace_context(&span);
                self.pending.sent(Instant::now(), edit.seq, span);
            }
            *boxed = frame;
            boxed
        }))
    }

    /// What to do with a frame from the docnode.
    pub fn docnode_frame(&mut self, frame: Inbound, metrics: &GatewayMetrics) -> FromDocnode {
        let frame = match self.handoff.incoming(frame) {
            Incoming::Forward(frame) => frame,
            Incoming::Drop => return FromDocnode::Nothing,
            Incoming::Move => return FromDocnode::Move,
            Incoming::Fail(reason) => return FromDocnode::Fail(format!("{reason}; reconnect")),
        };
        let rendered = match &frame {
            Inbound::History { start, fanout } => {
                self.round_trips(fanout.entries(), metrics);
                protocol::render_shared(*start, fanout, self.handoff.visible_client_id())
            }
            Inbound::Frame(frame) => {
                match &frame.kind {
                    Some(Out::Identity(identity)) => self.pending.identity(identity.user_id),
                    Some(Out::History(history)) => self.round_trips(&history.entries, metrics),
                    _ => {}
                }
                let client_id = self.handoff.visible_client_id();
                protocol::render(frame, client_id, self.read_only)
            }
        };
        match rendered {
            Some(rendered) => FromDocnode::Send(rendered),
            None => FromDocnode::Nothing,
        }
    }

    /// Ends the round trips of the client's edits among committed `entries`.
    fn round_trips(&mut self, entries: &[pb::HistoryEntry], metrics: &GatewayMetrics) {
        for round_trip in self.pending.acknowledged(entries, Instant::now()) {
            metrics.edit_round_trip.observe(round_trip.as_secs_f64());
        }
    }
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
