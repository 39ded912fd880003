//! The gateway's link to a docnode over gRPC: every session to one docnode shares one
//! `DocNode.Sessions` stream, and a docnode that predates it (gateways upgraded first in a
//! rolling upgrade) gets one `DocNode.Session` stream per connection instead. The docnode
//! is a real one in this process (embedded store) behind a layer that records each call's
//! method and can refuse `Sessions` as an older server would. Each test's docnode has a
//! database of its own: the test script exports DATABASE_URL, which the docnode's settings
//! read, and two docnodes on one database would fight over the same document's lease.

use std::{
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

/// What must outlive a test: the docnode, its data directory and its database.
type Held = (TempDir, TestDatabase, Docnode);

/// A docnode serving gRPC on a loopback port, recording calls; its link, its calls, and
/// what must outlive the test.
async fn docnode(older: bool) -> (Link, Calls, Held) {
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
    let link = Link::connect(&format!("http://127.0.0.1:{port}"), None).expect("link");
    (link, calls, (dir, database, docnode))
}

/// Reads a session's frames until one matches, within a few seconds.
async fn until(
    frames: &mut pb::in_process::FrameStream,
    mut wanted: impl FnMut(&Out) -> bool,
) -> Out {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut skipped = Vec::new();
        loop {
            let frame = frames
                .next()
                .await
                .unwrap_or_else(|| panic!("the session ended after {skipped:?}"))
                .unwrap_or_else(|status| panic!("the session failed after {skipped:?}: {status}"));
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
    let (link, calls, _held) = docnode(false).await;
    two_sessions_edit(&link).await;
    assert_eq!(*calls.lock().unwrap(), ["Sessions"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docnode_without_sessions_gets_one_stream_per_connection() {
    let (link, calls, _held) = docnode(true).await;
    two_sessions_edit(&link).await;
    // Asked once; the link remembers the answer.
    assert_eq!(*calls.lock().unwrap(), ["Sessions", "Session", "Session"]);
}
