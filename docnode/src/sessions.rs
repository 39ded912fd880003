//! `DocNode.Sessions`: a gateway's client sessions over one stream (docs/architecture.md,
//! "One stream per gateway"). Each session is what a `DocNode.Session` stream is — the same
//! join, the same pump into the document's actor, the same frames out — with its own flow
//! control in frames ([`codraft_proto::mux`]) in place of HTTP/2's per-stream window.
//!
//! With a gateway that reads `DocnodeMessage.also`, a commit's entries fanned out to several
//! sessions of one document go once: the session whose stream takes them first takes the same
//! entries off the heads of its siblings' queues (each within its own credit, none out of its
//! order) and names them in `also`. Encoding, sending and decoding a History frame then cost
//! once per document and gateway instead of once per client.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    task::{Context, Poll},
};

use codraft_proto as pb;
use futures::{future::ready, stream, Stream, StreamExt};
use pb::{
    client_frame::Kind as In,
    docnode_message::Kind as Down,
    gateway_message::Kind as Up,
    in_process::{Fanout, Inbound},
    mux::{
        Credit, Gated, Merged, MergedSenders, Returning, DOWN_WINDOW, SHARED_HISTORY_HEADER,
        UP_WINDOW,
    },
};
use tokio::sync::mpsc;
use tonic::{Request, Status, Streaming};
use tracing::{debug, warn};

use crate::{
    connection::{close_frame, Inbox},
    service::{outbound, DocNodeService},
};

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
        also: Vec::new(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A session's queue, as its own stream and its siblings' take from it.
struct Member {
    inbox: Mutex<Inbox>,
    credit: Arc<Credit>,
}

/// The sessions of one document on one gateway's stream, by session number.
type Siblings = Mutex<Vec<(u64, Arc<Member>)>>;

/// Every document's sessions on one gateway's stream (only when it shares History frames).
type Documents = Arc<Mutex<HashMap<String, Arc<Siblings>>>>;

/// A frame for the gateway and the further sessions it is for.
type Shared = (pb::ServerFrame, Vec<pb::AlsoFor>);

/// One session's frames for a gateway that reads `also`: its queue, then the reason the
/// document closed it, if it did. A History frame takes the same entries along off the
/// heads of its siblings' queues (see the module's text). The session is its document's
/// sibling from its first frame (after its `opened`) until it is dropped.
struct SharingFrames {
    id: u64,
    member: Arc<Member>,
    document: String,
    documents: Documents,
    siblings: Option<Arc<Siblings>>,
    closed: Arc<OnceLock<pb::Error>>,
    done: bool,
    counter: prometheus::IntCounter,
}

impl SharingFrames {
    /// Joins the session to its document's siblings on the stream.
    fn register(&self) -> Arc<Siblings> {
        let siblings = Arc::clone(
            lock(&self.documents)
                .entry(self.document.clone())
                .or_default(),
        );
        lock(&siblings).push((self.id, Arc::clone(&self.member)));
        siblings
    }
}

/// Takes `fanout` off the head of every sibling of session `id` that has them there and has
/// credit for them.
fn take_along(siblings: &Siblings, id: u64, fanout: &Arc<Fanout>) -> Vec<pb::AlsoFor> {
    let mut also = Vec::new();
    for (session, member) in lock(siblings).iter() {
        if *session == id || !member.credit.may_send() {
            continue;
        }
        if let Some(start) = lock(&member.inbox).take_shared(fanout) {
            member.credit.used();
            also.push(pb::AlsoFor {
                session: *session,
                start,
            });
        }
    }
    also
}

impl Stream for SharingFrames {
    type Item = Result<Shared, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.siblings.is_none() {
            this.siblings = Some(this.register());
        }
        let next = std::task::ready!(lock(&this.member.inbox).poll_next(cx));
        Poll::Ready(match next {
            Some(Inbound::History { start, fanout }) => {
                let also = match &this.siblings {
                    Some(siblings) => take_along(siblings, this.id, &fanout),
                    None => Vec::new(),
                };
                this.counter.inc_by(also.len() as u64);
                Some(Ok((fanout.frame(start), also)))
            }
            Some(Inbound::Frame(frame)) => Some(Ok((*frame, Vec::new()))),
            None => {
                this.done = true;
                close_frame(&this.closed).map(|frame| Ok((frame, Vec::new())))
            }
        })
    }
}

impl Drop for SharingFrames {
    fn drop(&mut self) {
        let Some(siblings) = self.siblings.take() else {
            return;
        };
        let empty = {
            let mut list = lock(&siblings);
            list.retain(|(session, _)| *session != self.id);
            list.is_empty()
        };
        if empty {
            let mut documents = lock(&self.documents);
            // Another session of the document may have joined the list meanwhile.
            if documents
                .get(&self.document)
                .is_some_and(|d| Arc::ptr_eq(d, &siblings) && lock(d).is_empty())
            {
                documents.remove(&self.document);
            }
        }
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
    pub(crate) fn multiplex(
        &self,
        request: Request<Streaming<pb::GatewayMessage>>,
    ) -> MessageStream {
        let sharing = request
            .metadata()
            .get(SHARED_HISTORY_HEADER)
            .is_some_and(|value| value == "1");
        let documents = sharing.then(Documents::default);
        let (merged, senders) = Merged::new();
        tokio::spawn(read_gateway(
            self.clone(),
            request.into_inner(),
            senders,
            documents,
        ));
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
    documents: Option<Documents>,
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
                    documents.clone(),
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

/// A session's outgoing frames, each with the further sessions it is for.
type Outgoing = Pin<Box<dyn Stream<Item = Result<Shared, Status>> + Send>>;

/// Joins one session's document, as `DocNode.Session` does, and adds its frames to the
/// merged stream: `opened`, the frames within the gateway's credit, then its end. The
/// session stays counted until that stream is dropped. With `documents` (the gateway reads
/// `also`) its History frames are shared with its document's other sessions on the stream.
async fn open_session(
    service: DocNodeService,
    (id, counted): (u64, Counted),
    open: pb::Open,
    taken: mpsc::Receiver<pb::ClientFrame>,
    credit: Arc<Credit>,
    senders: MergedSenders<pb::DocnodeMessage>,
    documents: Option<Documents>,
) {
    let control = senders.control.clone();
    let frames = Returning::new(taken, UP_WINDOW / 2, move |n| {
        let _ = control.send(message(id, Down::Credit(n)));
    });
    let document = open.document_id.clone();
    let joined = service.session(open, frames).await;
    let outgoing = joined.map(|inbox| -> Outgoing {
        match documents {
            Some(documents) => Box::pin(SharingFrames {
                id,
                closed: Arc::clone(&inbox.closed),
                member: Arc::new(Member {
                    inbox: Mutex::new(inbox),
                    credit: Arc::clone(&credit),
                }),
                document,
                documents,
                siblings: None,
                done: false,
                counter: service.registry().metrics().shared_history_frames.clone(),
            }),
            None => Box::pin(outbound(inbox).map(|item| item.map(|frame| (frame, Vec::new())))),
        }
    });
    match outgoing {
        Ok(outgoing) => {
            let opened = stream::once(ready(message(id, Down::Opened(true))));
            let frames = Gated::new(outgoing, credit).map(move |item| {
                let _counted = &counted;
                match item {
                    Ok((frame, also)) => pb::DocnodeMessage {
                        also,
                        ..message(id, Down::Frame(frame))
                    },
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
