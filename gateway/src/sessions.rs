//! The gateway's end of `DocNode.Sessions`: every client session this gateway relays to one
//! docnode goes over one stream (docs/architecture.md, "One stream per gateway"), each with
//! its own flow control in frames ([`codraft_proto::mux`]).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use codraft_proto as pb;
use futures::{future::ready, stream, StreamExt};
use pb::{
    doc_node_client::DocNodeClient,
    docnode_message::Kind as Down,
    gateway_message::Kind as Up,
    in_process::{Fanout, Inbound, InboundStream},
    mux::{
        Credit, Gated, Merged, MergedSenders, Returning, DOWN_WINDOW, SHARED_HISTORY_HEADER,
        UP_WINDOW,
    },
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{metadata::MetadataMap, transport::Channel, Code, Status, Streaming};
use tracing::{debug, warn};

/// A session's frames from the docnode, as its relay reads them.
type Received = Result<Inbound, Box<Status>>;

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

/// How long a failed open is remembered: sessions that queued behind it fail with it at
/// once, rather than each waiting out its own connect timeout in turn (the relay's routing
/// waits for the view to change and tries again).
const REMEMBER_FAILURE: Duration = Duration::from_secs(1);

/// The stream to a docnode, as the next session finds it.
enum Current {
    /// Not opened yet.
    None,
    /// Open (until its reader clears `alive`).
    Open(Arc<Shared>),
    /// The last attempt to open it failed, at that instant.
    Failed(Instant, Status),
}

/// The sessions stream to one docnode, opened on first use and again after it broke.
pub struct Multiplexer {
    client: DocNodeClient<Channel>,
    current: tokio::sync::Mutex<Current>,
    /// The docnode answered `Unimplemented` (an older docnode): one stream per session.
    unsupported: AtomicBool,
    /// Attempts to open the stream so far.
    attempts: AtomicU64,
}

/// A session: the docnode's frames, and where the client's go.
pub type Session = (InboundStream, mpsc::Sender<Box<pb::ClientFrame>>);

impl Multiplexer {
    /// Sessions over `client`'s connection.
    pub fn new(client: DocNodeClient<Channel>) -> Self {
        Self {
            client,
            current: tokio::sync::Mutex::new(Current::None),
            unsupported: AtomicBool::new(false),
            attempts: AtomicU64::new(0),
        }
    }

    /// How many times the stream was opened, or tried to be.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
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
        .map(|received: Received| received.map_err(|status| *status));
        Ok(Some((Box::pin(inbound), outbound)))
    }

    /// The open stream, or a new one (or the failure of the last try, if it was recent).
    async fn stream(&self) -> Result<Arc<Shared>, Status> {
        let mut current = self.current.lock().await;
        match &*current {
            Current::Open(shared) if shared.alive.load(Ordering::Relaxed) => {
                return Ok(Arc::clone(shared));
            }
            Current::Failed(at, status) if at.elapsed() < REMEMBER_FAILURE => {
                return Err(status.clone());
            }
            _ => {}
        }
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let (outgoing, senders) = Merged::new();
        let mut request = tonic::Request::new(outgoing);
        // This gateway reads `DocnodeMessage.also`: one History frame for several sessions.
        request.metadata_mut().insert(
            SHARED_HISTORY_HEADER,
            tonic::metadata::AsciiMetadataValue::from_static("1"),
        );
        let incoming = match self.client.clone().sessions(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                *current = Current::Failed(Instant::now(), status.clone());
                return Err(status);
            }
        };
        let shared = Arc::new(Shared {
            senders,
            slots: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            alive: AtomicBool::new(true),
        });
        tokio::spawn(read_docnode(Arc::clone(&shared), incoming));
        *current = Current::Open(Arc::clone(&shared));
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
        let mut message = match incoming.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                debug!(%status, "a docnode's sessions stream broke");
                break;
            }
        };
        let id = message.session;
        let mut slots = shared.slots();
        if let Some(Down::Frame(frame)) = &mut message.kind {
            if !message.also.is_empty() {
                share(&mut slots, id, std::mem::take(frame), &message.also);
                continue;
            }
        }
        let Some(slot) = slots.get_mut(&id) else {
            continue;
        };
        match message.kind {
            Some(Down::Opened(_)) => {
                if let Some(opened) = slot.opened.take() {
                    let _ = opened.send(Ok(()));
                }
            }
            Some(Down::Frame(frame)) => deliver(&mut slots, id, frame.into()),
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

/// Queues a History frame for session `id` and every session in `also`, each at its own
/// start: its entries shared by all of them, or a copy each when a fan-out cannot stand for
/// the frame (a compacted catch-up, which a docnode does not share today).
fn share(slots: &mut HashMap<u64, Slot>, id: u64, frame: pb::ServerFrame, also: &[pb::AlsoFor]) {
    use pb::server_frame::Kind;
    match frame.kind {
        Some(Kind::History(history)) if !history.compacted && history.log_revision.is_none() => {
            let fanout = Arc::new(Fanout::new(history.entries));
            for also in also {
                let fanout = Arc::clone(&fanout);
                let start = also.start;
                deliver(slots, also.session, Inbound::History { start, fanout });
            }
            let start = history.start;
            deliver(slots, id, Inbound::History { start, fanout });
        }
        kind => {
            let frame = pb::ServerFrame { kind };
            for also in also {
                let mut copy = frame.clone();
                if let Some(Kind::History(history)) = &mut copy.kind {
                    history.start = also.start;
                }
                deliver(slots, also.session, copy.into());
            }
            deliver(slots, id, frame.into());
        }
    }
}

/// Queues a frame for session `id`, if it is still open; a session the docnode sent past
/// its window ends (its relay sees the stream end, as after a broken stream).
fn deliver(slots: &mut HashMap<u64, Slot>, id: u64, frame: Inbound) {
    let Some(slot) = slots.get(&id) else {
        return;
    };
    if let Err(mpsc::error::TrySendError::Full(_)) = slot.frames.try_send(Ok(frame)) {
        warn!(session = id, "a docnode sent past a session's window");
        if let Some(slot) = slots.remove(&id) {
            end_slot(slot, None);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::transport::Endpoint;

    /// Three open sessions, and what each was queued.
    fn three_slots() -> (HashMap<u64, Slot>, Vec<mpsc::Receiver<Received>>) {
        let mut slots = HashMap::new();
        let mut received = Vec::new();
        for id in 1..=3 {
            let (frames, rx) = mpsc::channel(4);
            let credit = Credit::new(UP_WINDOW);
            let opened = None;
            slots.insert(
                id,
                Slot {
                    frames,
                    opened,
                    credit,
                },
            );
            received.push(rx);
        }
        (slots, received)
    }

    fn history(start: u64, compacted: bool) -> pb::ServerFrame {
        let entry = pb::HistoryEntry {
            user_id: 1,
            ..Default::default()
        };
        pb::ServerFrame {
            kind: Some(pb::server_frame::Kind::History(pb::History {
                start,
                entries: vec![entry; 2],
                compacted,
                log_revision: compacted.then_some(40),
            })),
        }
    }

    /// A History frame for several sessions reaches each at its own start: a plain one as
    /// one fan-out of the entries for all, a compacted one (which a fan-out cannot carry)
    /// as a whole copy each, its compaction kept.
    #[test]
    fn a_frame_for_several_sessions_reaches_each_at_its_own_start() {
        let also = [
            pb::AlsoFor {
                session: 2,
                start: 7,
            },
            pb::AlsoFor {
                session: 3,
                start: 9,
            },
        ];
        for compacted in [false, true] {
            let (mut slots, mut received) = three_slots();
            share(&mut slots, 1, history(5, compacted), &also);
            let mut fanouts = Vec::new();
            for (rx, start) in received.iter_mut().zip([5, 7, 9]) {
                match rx.try_recv().expect("queued").expect("a frame") {
                    Inbound::History { start: at, fanout } => {
                        assert!(!compacted, "a compacted frame shared");
                        assert_eq!((at, fanout.entries().len()), (start, 2));
                        fanouts.push(fanout);
                    }
                    Inbound::Frame(frame) => {
                        assert!(compacted, "a plain History copied");
                        assert_eq!(*frame, history(start, true));
                    }
                }
            }
            if !compacted {
                assert!(fanouts.iter().all(|f| Arc::ptr_eq(f, &fanouts[0])));
            }
        }
    }

    /// A docnode address that stopped answering: a listener that never accepts, with its
    /// backlog full, so a connection attempt waits out its timeout (as with a black-holed
    /// address, but on loopback). Sessions queued behind the one attempt to open the stream
    /// fail with it, rather than each trying (and waiting) in turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_queued_behind_a_failed_open_fail_with_it() {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let address = socket.local_addr().expect("address");
        let _listener = socket.listen(1).expect("listen");
        let mut backlog = Vec::new();
        for _ in 0..8 {
            let connect = tokio::net::TcpStream::connect(address);
            match tokio::time::timeout(Duration::from_millis(300), connect).await {
                Ok(Ok(stream)) => backlog.push(stream),
                _ => break,
            }
        }
        assert!(backlog.len() < 8, "the backlog never filled");
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .expect("url")
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy();
        let sessions = Arc::new(Multiplexer::new(DocNodeClient::new(channel)));
        let open = || pb::Open {
            document_id: "unanswered".to_owned(),
            ..Default::default()
        };
        let tries: Vec<_> = (0..3)
            .map(|_| {
                let sessions = Arc::clone(&sessions);
                let open = open();
                tokio::spawn(async move { sessions.session(open).await.map(|_| ()) })
            })
            .collect();
        for attempt in tries {
            let result = tokio::time::timeout(Duration::from_secs(30), attempt)
                .await
                .expect("the attempt ends")
                .expect("no panic");
            assert!(result.is_err(), "a session opened with nobody answering");
        }
        assert_eq!(
            sessions.attempts(),
            1,
            "each queued session tried again itself"
        );
    }
}
