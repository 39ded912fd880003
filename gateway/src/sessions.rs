//! The gateway's end of `DocNode.Sessions`: every client session this gateway relays to one
//! docnode goes over one stream (docs/architecture.md, "One stream per gateway"), each with
//! its own flow control in frames ([`codraft_proto::mux`]).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use codraft_proto as pb;
use futures::{future::ready, stream, StreamExt};
use pb::{
    doc_node_client::DocNodeClient,
    docnode_message::Kind as Down,
    gateway_message::Kind as Up,
    in_process::FrameStream,
    mux::{Credit, Gated, Merged, MergedSenders, Returning, DOWN_WINDOW, UP_WINDOW},
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{metadata::MetadataMap, transport::Channel, Code, Status, Streaming};
use tracing::{debug, warn};

/// A session's frames from the docnode, as its relay reads them.
type Received = Result<Box<pb::ServerFrame>, Box<Status>>;

/// One session, as the stream's reader routes the docnode's messages to it.
struct Slot {
    /// Room for a window of frames and the session's end.
    frames: mpsc::Sender<Received>,
    /// Answered when the docnode joined the session (or refused it).
    opened: Option<oneshot::Sender<Result<(), Status>>>,
    /// What the docnode granted for the session's client frames.
    credit: Arc<Credit>,
}

/// One open `Sessions` stream.
struct Shared {
    senders: MergedSenders<pb::GatewayMessage>,
    slots: Mutex<HashMap<u64, Slot>>,
    next: AtomicU64,
    /// Cleared when the docnode's side of the stream ended.
    alive: AtomicBool,
}

impl Shared {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sessions stream to one docnode, opened on first use and again after it broke.
pub struct Multiplexer {
    client: DocNodeClient<Channel>,
    current: tokio::sync::Mutex<Option<Arc<Shared>>>,
    /// The docnode answered `Unimplemented` (an older docnode): one stream per session.
    unsupported: AtomicBool,
}

/// A session: the docnode's frames, and where the client's go.
pub type Session = (FrameStream, mpsc::Sender<Box<pb::ClientFrame>>);

impl Multiplexer {
    /// Sessions over `client`'s connection.
    pub fn new(client: DocNodeClient<Channel>) -> Self {
        Self {
            client,
            current: tokio::sync::Mutex::new(None),
            unsupported: AtomicBool::new(false),
        }
    }

    /// Opens a session over the shared stream; `None` when the docnode has no `Sessions`.
    pub async fn session(&self, open: pb::Open) -> Result<Option<Session>, Status> {
        if self.unsupported.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let shared = match self.stream().await {
            Ok(shared) => shared,
            Err(status) if status.code() == Code::Unimplemented => {
                self.unsupported.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            Err(status) => return Err(status),
        };
        let id = shared.next.fetch_add(1, Ordering::Relaxed);
        let (outbound, client_frames) = mpsc::channel::<Box<pb::ClientFrame>>(UP_WINDOW as usize);
        let (frames, received) = mpsc::channel(DOWN_WINDOW as usize + 1);
        let (opened, answer) = oneshot::channel();
        let credit = Credit::new(UP_WINDOW);
        shared.slots().insert(
            id,
            Slot {
                frames,
                opened: Some(opened),
                credit: Arc::clone(&credit),
            },
        );
        let first = stream::once(ready(message(
            id,
            Up::Frame(pb::ClientFrame {
                kind: Some(pb::client_frame::Kind::Open(open)),
            }),
        )));
        let rest = Gated::new(ReceiverStream::new(client_frames), credit)
            .map(move |frame| message(id, Up::Frame(*frame)));
        let end = stream::once(ready(message(id, Up::End(true))));
        if shared
            .senders
            .added
            .send(Box::pin(first.chain(rest).chain(end)))
            .is_err()
        {
            shared.slots().remove(&id);
            return Err(lost());
        }
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(lost()),
        }
        let control = shared.senders.control.clone();
        let inbound = Returning::new(received, DOWN_WINDOW / 2, move |n| {
            let _ = control.send(message(id, Up::Credit(n)));
        })
        .map(|received: Received| received.map(|frame| *frame).map_err(|status| *status));
        Ok(Some((Box::pin(inbound), outbound)))
    }

    /// The open stream, or a new one.
    async fn stream(&self) -> Result<Arc<Shared>, Status> {
        let mut current = self.current.lock().await;
        if let Some(shared) = current.as_ref() {
            if shared.alive.load(Ordering::Relaxed) {
                return Ok(Arc::clone(shared));
            }
        }
        let (outgoing, senders) = Merged::new();
        let incoming = self.client.clone().sessions(outgoing).await?.into_inner();
        let shared = Arc::new(Shared {
            senders,
            slots: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            alive: AtomicBool::new(true),
        });
        tokio::spawn(read_docnode(Arc::clone(&shared), incoming));
        *current = Some(Arc::clone(&shared));
        Ok(shared)
    }
}

fn message(session: u64, kind: Up) -> pb::GatewayMessage {
    pb::GatewayMessage {
        session,
        kind: Some(kind),
    }
}

fn lost() -> Status {
    Status::unavailable("the docnode's sessions stream ended")
}

/// The status a session ended with, its metadata included.
fn status_of(end: pb::SessionEnd) -> Status {
    let mut metadata = MetadataMap::new();
    for (key, value) in end.metadata {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::AsciiMetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            metadata.insert(key, value);
        }
    }
    Status::with_metadata(Code::from(end.code), end.message, metadata)
}

/// Routes the docnode's messages to their sessions until the stream ends; then every
/// session still open fails as its own broken stream would have.
async fn read_docnode(shared: Arc<Shared>, mut incoming: Streaming<pb::DocnodeMessage>) {
    loop {
        let message = match incoming.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                debug!(%status, "a docnode's sessions stream broke");
                break;
            }
        };
        let id = message.session;
        let mut slots = shared.slots();
        let Some(slot) = slots.get_mut(&id) else {
            continue;
        };
        match message.kind {
            Some(Down::Opened(_)) => {
                if let Some(opened) = slot.opened.take() {
                    let _ = opened.send(Ok(()));
                }
            }
            Some(Down::Frame(frame)) => {
                if let Err(mpsc::error::TrySendError::Full(_)) =
                    slot.frames.try_send(Ok(Box::new(frame)))
                {
                    // Its relay sees the stream end, as after a broken stream.
                    warn!(session = id, "a docnode sent past a session's window");
                    if let Some(slot) = slots.remove(&id) {
                        end_slot(slot, None);
                    }
                }
            }
            Some(Down::Credit(frames)) => slot.credit.grant(frames),
            Some(Down::End(end)) => {
                if let Some(slot) = slots.remove(&id) {
                    end_slot(slot, (end.code != 0).then(|| status_of(end)));
                }
            }
            None => {}
        }
    }
    shared.alive.store(false, Ordering::Relaxed);
    let slots = std::mem::take(&mut *shared.slots());
    for slot in slots.into_values() {
        end_slot(slot, Some(lost()));
    }
}

/// Ends a session: its open fails, or its frames end (with `status` after them, if any);
/// client frames it has not sent are dropped (out of credit, its end would never go).
fn end_slot(mut slot: Slot, status: Option<Status>) {
    slot.credit.close();
    match (slot.opened.take(), status) {
        (Some(opened), status) => {
            let _ = opened.send(Err(status.unwrap_or_else(lost)));
        }
        (None, Some(status)) => {
            let _ = slot.frames.try_send(Err(Box::new(status)));
        }
        (None, None) => {}
    }
}
