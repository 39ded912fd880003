//! The gateway's link to a docnode over gRPC: every session to one docnode shares one
//! `DocNode.Sessions` stream, and a docnode that predates it (gateways upgraded first in a
//! rolling upgrade) gets one `DocNode.Session` stream per connection instead. The docnode
//! is a real one in this process (embedded store) behind a layer that records each call's
//! method and can refuse `Sessions` as an older server would. Each test's docnode has a
//! database of its own: the test script exports DATABASE_URL, which the docnode's settings
//! read, and two docnodes on one database would fight over the same document's lease.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use clap::Parser;
use codraft_docnode::{Docnode, DocnodeConfig};
use codraft_gateway::link::Link;
use codraft_proto as pb;
use codraft_testkit::{
    database::TestDatabase, editing::unique_document, ports::free_port, tempdir::TempDir,
};
use futures::StreamExt;
use pb::{client_frame::Kind as In, server_frame::Kind as Out};
use tonic::{codegen::http, Status};

#[derive(Parser)]
struct Settings {
    #[command(flatten)]
    docnode: DocnodeConfig,
}

/// The methods called, in order.
type Calls = Arc<Mutex<Vec<String>>>;

/// Records every call's method; answers `Sessions` with `Unimplemented` when `older`.
#[derive(Clone)]
struct Recorder<S> {
    inner: S,
    calls: Calls,
    older: bool,
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Recorder<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        self.calls.lock().unwrap().push(method.clone());
        if self.older && method == "Sessions" {
            let refusal = Status::unimplemented("no such method").into_http();
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        Box::pin(self.inner.call(request))
    }
}

/// What must outlive a test: its data directory and its database.
type Held = (TempDir, TestDatabase);

/// A docnode of a test, serving gRPC on a loopback port and recording calls.
struct Node {
    /// A gateway's link to it.
    link: Link,
    calls: Calls,
    url: String,
    docnode: Docnode,
    _held: Held,
}

/// A docnode serving gRPC on a loopback port, recording calls (and refusing `Sessions` as
/// an older docnode would, when `older`).
async fn docnode(older: bool) -> Node {
    let dir = TempDir::new("codraft-link");
    let database = TestDatabase::require().await;
    let settings = Settings::parse_from([
        "docnode".to_owned(),
        format!("--data-dir={}", dir.path().display()),
        format!("--database-url={}", database.url),
    ]);
    let docnode = Docnode::open(settings.docnode)
        .await
        .expect("docnode opens");
    let calls = Calls::default();
    let recorded = Arc::clone(&calls);
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let router = tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(move |inner| Recorder {
            inner,
            calls: Arc::clone(&recorded),
            older,
        }))
        .add_service(docnode.grpc_service());
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let url = format!("http://127.0.0.1:{port}");
    let link = Link::connect(&url, None).expect("link");
    Node {
        link,
        calls,
        url,
        docnode,
        _held: (dir, database),
    }
}

/// Reads a session's frames until one matches, within a few seconds.
async fn until(
    frames: &mut pb::in_process::InboundStream,
    mut wanted: impl FnMut(&Out) -> bool,
) -> Out {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut skipped = Vec::new();
        loop {
            let frame = frames
                .next()
                .await
                .unwrap_or_else(|| panic!("the session ended after {skipped:?}"))
                .unwrap_or_else(|status| panic!("the session failed after {skipped:?}: {status}"))
                .into_frame();
            if let Some(kind) = frame.kind {
                if wanted(&kind) {
                    return kind;
                }
                skipped.push(kind);
            }
        }
    })
    .await
    .expect("the frame arrives")
}

/// Two sessions on one document through `link`: an edit of one reaches the other.
async fn two_sessions_edit(link: &Link) {
    let open = |document: &str| pb::Open {
        document_id: document.to_owned(),
        ..Default::default()
    };
    let document = unique_document("linked");
    let (mut a_in, a_out) = link.session(open(&document)).await.expect("a opens");
    let (mut b_in, _b_out) = link.session(open(&document)).await.expect("b opens");
    // The join's History: one entry at start 0 holding the whole (empty) text.
    until(&mut a_in, |k| matches!(k, Out::History(_))).await;
    until(&mut b_in, |k| matches!(k, Out::History(_))).await;
    let insert = pb::Operation {
        components: vec![pb::Component {
            kind: Some(pb::component::Kind::Insert("hi".to_owned())),
        }],
    };
    let edit = pb::Edit {
        revision: 1,
        operation: Some(insert.clone()),
        ..Default::default()
    };
    a_out
        .send(Box::new(pb::ClientFrame {
            kind: Some(In::Edit(edit)),
        }))
        .await
        .expect("a sends");
    let seen = until(&mut b_in, |k| matches!(k, Out::History(h) if h.start == 1)).await;
    let Out::History(history) = seen else {
        unreachable!()
    };
    assert_eq!(history.entries.len(), 1);
    assert_eq!(history.entries[0].operation, Some(insert));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_to_a_docnode_shares_one_stream() {
    let node = docnode(false).await;
    two_sessions_edit(&node.link).await;
    assert_eq!(*node.calls.lock().unwrap(), ["Sessions"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docnode_without_sessions_gets_one_stream_per_connection() {
    let node = docnode(true).await;
    two_sessions_edit(&node.link).await;
    // Asked once; the link remembers the answer.
    assert_eq!(
        *node.calls.lock().unwrap(),
        ["Sessions", "Session", "Session"]
    );
}

/// History frames the docnode sent inside another session's message so far.
fn shared_frames(node: &Node) -> f64 {
    node.docnode
        .metrics_registry()
        .gather()
        .iter()
        .find(|family| family.name() == "codraft_shared_history_frames_total")
        .map(|family| family.get_metric()[0].get_counter().get_value())
        .expect("the counter is registered")
}

/// A `Sessions` stream opened by hand, as a gateway that reads `also` (`sharing`) or as an
/// older one, which does not send the header.
async fn raw_stream(
    url: &str,
    sharing: bool,
) -> (
    tokio::sync::mpsc::UnboundedSender<pb::GatewayMessage>,
    tonic::Streaming<pb::DocnodeMessage>,
) {
    let client = pb::doc_node_client::DocNodeClient::connect(url.to_owned())
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut request = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    if sharing {
        request.metadata_mut().insert(
            pb::mux::SHARED_HISTORY_HEADER,
            tonic::metadata::AsciiMetadataValue::from_static("1"),
        );
    }
    let incoming = client
        .clone()
        .sessions(request)
        .await
        .expect("sessions")
        .into_inner();
    (tx, incoming)
}

fn up(session: u64, kind: In) -> pb::GatewayMessage {
    pb::GatewayMessage {
        session,
        kind: Some(pb::gateway_message::Kind::Frame(pb::ClientFrame {
            kind: Some(kind),
        })),
    }
}

/// The next message of a hand-opened stream, within a few seconds.
async fn next_message(incoming: &mut tonic::Streaming<pb::DocnodeMessage>) -> pb::DocnodeMessage {
    tokio::time::timeout(Duration::from_secs(10), incoming.message())
        .await
        .expect("a message arrives")
        .expect("the stream holds")
        .expect("the stream goes on")
}

fn history_of(message: &pb::DocnodeMessage) -> Option<&pb::History> {
    match &message.kind {
        Some(pb::docnode_message::Kind::Frame(pb::ServerFrame {
            kind: Some(Out::History(history)),
        })) => Some(history),
        _ => None,
    }
}

/// Three sessions of one document on one stream, and three edits: to a gateway that sent
/// the shared-history header each commit crosses the stream once, naming the other two
/// sessions (each at its own start) in `also`; to an older gateway, which would ignore
/// `also`, each session gets a message of its own. Single-threaded, so the document's
/// fan-out has reached every queue before the stream takes any of it.
#[tokio::test(flavor = "current_thread")]
async fn a_commit_crosses_the_stream_once_for_a_gateway_that_reads_also() {
    let node = docnode(false).await;
    for sharing in [true, false] {
        let (tx, mut incoming) = raw_stream(&node.url, sharing).await;
        let document = unique_document("shared");
        let sessions = [1u64, 2, 3];
        let mut revision = HashMap::new();
        for session in sessions {
            tx.send(up(
                session,
                In::Open(pb::Open {
                    document_id: document.clone(),
                    ..Default::default()
                }),
            ))
            .expect("open");
            // Its join's History before the next joins.
            loop {
                let message = next_message(&mut incoming).await;
                if let Some(history) = history_of(&message) {
                    assert_eq!(message.session, session);
                    revision.insert(session, history.start + history.entries.len() as u64);
                    break;
                }
            }
        }
        let mut text = String::new();
        for (round, &author) in sessions.iter().enumerate() {
            let insert = format!("{round}");
            let mut components = Vec::new();
            if !text.is_empty() {
                components.push(pb::Component {
                    kind: Some(pb::component::Kind::Retain(text.len() as u64)),
                });
            }
            components.push(pb::Component {
                kind: Some(pb::component::Kind::Insert(insert.clone())),
            });
            tx.send(up(
                author,
                In::Edit(pb::Edit {
                    revision: revision[&author],
                    operation: Some(pb::Operation { components }),
                    ..Default::default()
                }),
            ))
            .expect("edit");
            text.push_str(&insert);
            // Every session's copy of the commit, and the messages that carried them.
            let mut reached = HashMap::new();
            let mut carriers = 0;
            while reached.len() < sessions.len() {
                let message = next_message(&mut incoming).await;
                let Some(history) = history_of(&message) else {
                    assert!(message.also.is_empty(), "only History is shared");
                    continue;
                };
                carriers += 1;
                assert!(
                    sharing || message.also.is_empty(),
                    "an older gateway was sent a shared frame"
                );
                let recipients = std::iter::once((message.session, history.start))
                    .chain(message.also.iter().map(|a| (a.session, a.start)));
                for (session, start) in recipients {
                    assert_eq!(start, revision[&session], "session {session}'s start");
                    assert!(
                        reached.insert(session, start).is_none(),
                        "session {session} got the commit twice"
                    );
                    *revision.get_mut(&session).expect("a session") += history.entries.len() as u64;
                }
            }
            assert_eq!(
                carriers,
                if sharing { 1 } else { sessions.len() },
                "messages that carried round {round}'s commit (sharing: {sharing})"
            );
        }
    }
    let shared = shared_frames(&node);
    assert_eq!(
        shared, 6.0,
        "two sessions rode along on each of three commits"
    );
}

/// One client of [`sessions_of_a_document_converge_through_shared_frames`]: its session and
/// its text as the frames it read made it.
struct Client {
    frames: pb::in_process::InboundStream,
    out: tokio::sync::mpsc::Sender<Box<pb::ClientFrame>>,
    text: Vec<char>,
    /// The connection's revision: where its next History must start.
    revision: u64,
}

impl Client {
    /// Applies a frame; a History must start where the last one ended, and apply.
    fn absorb(&mut self, frame: pb::ServerFrame, context: &str) {
        let Some(Out::History(history)) = frame.kind else {
            if let Some(Out::Error(error)) = frame.kind {
                panic!("{context}: the session was closed: {error:?}");
            }
            return;
        };
        assert_eq!(
            history.start, self.revision,
            "{context}: a History out of order"
        );
        for entry in &history.entries {
            let mut at = 0;
            let mut next = Vec::with_capacity(self.text.len() + 1);
            let components = entry.operation.as_ref().map(|o| o.components.as_slice());
            for component in components.unwrap_or_default() {
                match &component.kind {
                    Some(pb::component::Kind::Retain(n)) => {
                        next.extend_from_slice(&self.text[at..at + *n as usize]);
                        at += *n as usize;
                    }
                    Some(pb::component::Kind::Delete(n)) => at += *n as usize,
                    Some(pb::component::Kind::Insert(s)) => next.extend(s.chars()),
                    None => {}
                }
            }
            assert_eq!(at, self.text.len(), "{context}: an entry for another text");
            self.text = next;
        }
        self.revision += history.entries.len() as u64;
    }
}

/// Seeded random schedules of several clients of one document on one shared stream: each
/// step one client types at a random place (at the revision it has read up to) or reads a
/// few of its frames, and one client reads rarely, so it runs out of credit and its queue
/// backs up (the sharing skips it while it is out of credit, and it may fall behind into a
/// catch-up). Every client's History frames must follow on one another, and every client
/// must end with the document's text. `LINK_SEED` replays one seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_a_document_converge_through_shared_frames() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let node = docnode(false).await;
    let seeds: Vec<u64> = match std::env::var("LINK_SEED") {
        Ok(seed) => vec![seed.parse().expect("LINK_SEED is a number")],
        Err(_) => (1..=6).map(|_| rand::random()).collect(),
    };
    for seed in seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let document = unique_document("converge");
        let join = || async {
            let open = pb::Open {
                document_id: document.clone(),
                ..Default::default()
            };
            let (frames, out) = node.link.session(open).await.expect("a session opens");
            Client {
                frames,
                out,
                text: Vec::new(),
                revision: 0,
            }
        };
        let mut clients = Vec::new();
        for _ in 0..rng.random_range(2..=4) {
            clients.push(join().await);
        }
        let slow = rng.random_range(0..clients.len());
        for step in 0..rng.random_range(200..500) {
            let i = rng.random_range(0..clients.len());
            let context = format!("seed {seed}, step {step}, client {i}");
            if clients.len() < 7 && rng.random_bool(0.01) {
                // A late joiner: its connection counts revisions from where it joined, so
                // the clients' starts for one shared frame differ.
                clients.push(join().await);
            } else if rng.random_bool(0.4) {
                let client = &mut clients[i];
                let len = client.text.len() as u64;
                let at = rng.random_range(0..=len);
                let letter = char::from(b'a' + rng.random_range(0..26u8));
                let components = [
                    pb::component::Kind::Retain(at),
                    pb::component::Kind::Insert(letter.to_string()),
                    pb::component::Kind::Retain(len - at),
                ]
                .into_iter()
                .filter(|k| !matches!(k, pb::component::Kind::Retain(0)))
                .map(|kind| pb::Component { kind: Some(kind) })
                .collect();
                let edit = pb::Edit {
                    revision: client.revision,
                    operation: Some(pb::Operation { components }),
                    ..Default::default()
                };
                // A full queue: the client holds back, as a relay would.
                let _ = client.out.try_send(Box::new(pb::ClientFrame {
                    kind: Some(In::Edit(edit)),
                }));
            } else if i != slow || rng.random_bool(0.02) {
                // Up to a few frames, waiting a moment for the first.
                let wait = Duration::from_micros(rng.random_range(0..3000));
                for _ in 0..rng.random_range(1..8) {
                    let client = &mut clients[i];
                    let read = tokio::time::timeout(wait, client.frames.next()).await;
                    match read {
                        Ok(Some(Ok(frame))) => client.absorb(frame.into_frame(), &context),
                        Ok(Some(Err(status))) => panic!("{context}: the session failed: {status}"),
                        Ok(None) => panic!("{context}: the session ended"),
                        Err(_) => break,
                    }
                }
            }
        }
        // Every edit sent is in the log by the time the text is read after a quiet moment;
        // then every client reads until it has that text.
        let mut text = String::new();
        for _ in 0..100 {
            let now = node
                .link
                .get_text(pb::GetTextRequest {
                    document_id: document.clone(),
                })
                .await
                .expect("the text")
                .into_inner()
                .text;
            if now == text && !now.is_empty() {
                break;
            }
            text = now;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let wanted: Vec<char> = text.chars().collect();
        for (i, client) in clients.iter_mut().enumerate() {
            let context = format!("seed {seed}, the end, client {i}");
            tokio::time::timeout(Duration::from_secs(10), async {
                while client.text != wanted {
                    match client.frames.next().await {
                        Some(Ok(frame)) => client.absorb(frame.into_frame(), &context),
                        Some(Err(status)) => panic!("{context}: the session failed: {status}"),
                        None => panic!("{context}: the session ended"),
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{context}: never reached the document's text"));
        }
    }
    let shared = shared_frames(&node);
    assert!(shared > 0.0, "no History frame was ever shared");
}
