//! `DocNode.Sessions`: a gateway's client sessions over one stream (docs/architecture.md,
//! "One stream per gateway"). Each session is what a `DocNode.Session` stream is — the same
//! join, the same pump into the document's actor, the same frames out — with its own flow
//! control in frames ([`codraft_proto::mux`]) in place of HTTP/2's per-stream window.

use std::{collections::HashMap, sync::Arc};

use codraft_proto as pb;
use futures::{future::ready, stream, StreamExt};
use pb::{
    client_frame::Kind as In,
    docnode_message::Kind as Down,
    gateway_message::Kind as Up,
    mux::{Credit, Gated, Merged, MergedSenders, Returning, DOWN_WINDOW, UP_WINDOW},
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, warn};

use crate::service::DocNodeService;

pub use pb::in_process::MessageStream;

/// Counts a session in `codraft_shared_stream_sessions` for as long as it lives.
struct Counted(prometheus::IntGauge);

impl Counted {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One open session, as the stream's reader routes to it.
struct Slot {
    /// The client's frames, for the session's pump into the actor.
    frames: mpsc::Sender<pb::ClientFrame>,
    /// What the gateway granted for the session's outgoing frames.
    credit: Arc<Credit>,
}

fn message(session: u64, kind: Down) -> pb::DocnodeMessage {
    pb::DocnodeMessage {
        session,
        kind: Some(kind),
    }
}

/// A status as the end of a session, with its ASCII metadata (a refusal's owner).
pub fn session_end(status: &Status) -> pb::SessionEnd {
    let metadata = status
        .metadata()
        .iter()
        .filter_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(key, value) => {
                Some((key.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect();
    pb::SessionEnd {
        code: status.code() as i32,
        message: status.message().to_owned(),
        metadata,
    }
}

impl DocNodeService {
    /// The answer to one gateway's `Sessions` stream: a task reads `incoming` and opens,
    /// feeds and ends sessions; their frames go out merged.
    pub(crate) fn multiplex(&self, incoming: Streaming<pb::GatewayMessage>) -> MessageStream {
        let (merged, senders) = Merged::new();
        tokio::spawn(read_gateway(self.clone(), incoming, senders));
        Box::pin(merged.map(Ok))
    }
}

/// Routes each of the gateway's messages to its session until the stream ends, or until
/// the docnode has closed every document on shutdown (the stream ends then, so the server's
/// graceful shutdown, which waits for open streams, can finish); then every session's
/// frames end too, so each leaves its document.
async fn read_gateway(
    service: DocNodeService,
    mut incoming: Streaming<pb::GatewayMessage>,
    senders: MergedSenders<pb::DocnodeMessage>,
) {
    let mut slots: HashMap<u64, Slot> = HashMap::new();
    let registry = Arc::clone(service.registry());
    let closed = registry.closed();
    tokio::pin!(closed);
    loop {
        let received = tokio::select! {
            biased;
            received = incoming.message() => received,
            () = &mut closed => break,
        };
        let message = match received {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                debug!(%status, "a gateway's sessions stream broke");
                break;
            }
        };
        let id = message.session;
        match message.kind {
            Some(Up::Frame(pb::ClientFrame {
                kind: Some(In::Open(open)),
            })) if !slots.contains_key(&id) => {
                let (frames, taken) = mpsc::channel(UP_WINDOW as usize);
                let credit = Credit::new(DOWN_WINDOW);
                slots.insert(
                    id,
                    Slot {
                        frames,
                        credit: Arc::clone(&credit),
                    },
                );
                let counted = Counted::new(&registry.metrics().shared_stream_sessions);
                tokio::spawn(open_session(
                    service.clone(),
                    (id, counted),
                    open,
                    taken,
                    credit,
                    senders.clone(),
                ));
            }
            Some(Up::Frame(frame)) => {
                let Some(slot) = slots.get(&id) else {
                    continue;
                };
                if let Err(mpsc::error::TrySendError::Full(_)) = slot.frames.try_send(frame) {
                    warn!(session = id, "a gateway sent past a session's window");
                    if let Some(slot) = slots.remove(&id) {
                        slot.credit.close();
                    }
                    let status = Status::resource_exhausted("sent past the session's window");
                    let _ = senders.control.send(message_end(id, &status));
                }
                // Closed: the session is over and its end is on its way to the gateway.
            }
            Some(Up::Credit(frames)) => {
                if let Some(slot) = slots.get(&id) {
                    slot.credit.grant(frames);
                }
            }
            Some(Up::End(_)) => {
                // Its frames end (so it leaves its document), and whatever it has not sent
                // is dropped: out of credit, it would never see its own end otherwise.
                if let Some(slot) = slots.remove(&id) {
                    slot.credit.close();
                }
            }
            None => {}
        }
    }
}

fn message_end(session: u64, status: &Status) -> pb::DocnodeMessage {
    message(session, Down::End(session_end(status)))
}

/// Joins one session's document, as `DocNode.Session` does, and adds its frames to the
/// merged stream: `opened`, the frames within the gateway's credit, then its end. The
/// session stays counted until that stream is dropped.
async fn open_session(
    service: DocNodeService,
    (id, counted): (u64, Counted),
    open: pb::Open,
    taken: mpsc::Receiver<pb::ClientFrame>,
    credit: Arc<Credit>,
    senders: MergedSenders<pb::DocnodeMessage>,
) {
    let control = senders.control.clone();
    let frames = Returning::new(taken, UP_WINDOW / 2, move |n| {
        let _ = control.send(message(id, Down::Credit(n)));
    });
    match service.session(open, frames).await {
        Ok(outgoing) => {
            let opened = stream::once(ready(message(id, Down::Opened(true))));
            let frames = Gated::new(outgoing, credit).map(move |item| {
                let _counted = &counted;
                match item {
                    Ok(frame) => message(id, Down::Frame(frame)),
                    Err(status) => message_end(id, &status),
                }
            });
            let end = stream::once(ready(message(id, Down::End(pb::SessionEnd::default()))));
            let _ = senders
                .added
                .send(Box::pin(opened.chain(frames).chain(end)));
        }
        Err(status) => {
            let _ = senders.control.send(message_end(id, &status));
        }
    }
}
