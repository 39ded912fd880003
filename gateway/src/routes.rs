//! Finding the docnode that will take a document: the ring's owner first, then wherever a
//! docnode redirects us, waiting briefly for the membership view to settle while nodes come
//! and go. Bounded: after a few seconds the client is told to reconnect (4503).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use codraft_proto as pb;
use pb::in_process::InboundStream;
use tokio::sync::{mpsc, watch};
use tonic::{Code, Status};
use tracing::debug;

use crate::{link::Link, ring::Ring};

/// Status metadata a docnode sets when it refuses a document it does not own.
pub const OWNER_URL_HEADER: &str = "codraft-owner-url";

/// How long a client's connection attempt may look for the owner.
const ROUTE_DEADLINE: Duration = Duration::from_secs(4);
/// How long to wait for the view to change before trying again.
const VIEW_WAIT: Duration = Duration::from_millis(250);
/// Most redirect targets kept with an open channel.
const MAX_DIRECT: usize = 64;

/// The gateway's way to the docnodes.
pub struct Routes {
    ring: watch::Receiver<Ring>,
    direct: Mutex<HashMap<String, Link>>,
    /// TLS for `https://` docnodes reached by redirect.
    tls: Option<tonic::transport::ClientTlsConfig>,
    /// When a TLS failure was last logged (at most one line per [`TLS_WARN_EVERY`]).
    tls_warned: Mutex<Option<std::time::Instant>>,
}

/// Least time between two warnings about a failing TLS handshake with a docnode.
const TLS_WARN_EVERY: Duration = Duration::from_secs(10);

/// The handshake failure inside a refused call, if that is what it was: the status itself
/// only says "transport error", the reason (a refused or missing certificate) is in its
/// source chain.
fn tls_failure(status: &Status) -> Option<String> {
    let mut chain = Vec::new();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        chain.push(format!("{cause:?}"));
        source = cause.source();
    }
    let text = chain.join(": ");
    let lower = text.to_ascii_lowercase();
    (lower.contains("certificate") || lower.contains("alert") || lower.contains("tls"))
        .then_some(text)
}

/// An open session with a docnode.
pub struct Session {
    /// Frames from the docnode.
    pub inbound: InboundStream,
    /// Frames to the docnode (the Open frame is already sent).
    pub outbound: mpsc::Sender<Box<pb::ClientFrame>>,
    /// The docnode's id or URL, for logs.
    pub node: String,
    /// The docnode's gRPC URL (for the span's `server.address`), when known.
    pub url: Option<String>,
}

/// What to do after a refused attempt.
enum Next {
    Redirect(String),
    WaitForView,
    Fail(Status),
}

fn next_step(status: &Status) -> Next {
    match status.code() {
        Code::FailedPrecondition => match status
            .metadata()
            .get(OWNER_URL_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            Some(url) => Next::Redirect(url.to_owned()),
            None => Next::WaitForView,
        },
        // The owner is down or restarting: its entry leaves the view when its heartbeat stops.
        Code::Unavailable | Code::Unknown | Code::Cancelled => Next::WaitForView,
        _ => Next::Fail(status.clone()),
    }
}

impl Routes {
    /// Routes over a ring that membership keeps current.
    pub fn new(
        ring: watch::Receiver<Ring>,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Self {
        Self {
            ring,
            direct: Mutex::default(),
            tls,
            tls_warned: Mutex::default(),
        }
    }

    /// The current ring.
    pub fn ring(&self) -> Ring {
        self.ring.borrow().clone()
    }

    fn owner(&self, document: &str) -> Option<(String, Link)> {
        let ring = self.ring.borrow();
        ring.owner(document)
            .map(|node| (node.id.clone(), node.link.clone()))
    }

    fn direct(&self, url: &str) -> Option<Link> {
        let ring = self.ring.borrow();
        if let Some(node) = ring.nodes().iter().find(|n| n.url == url) {
            return Some(node.link.clone());
        }
        drop(ring);
        let mut direct = self
            .direct
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = direct.get(url) {
            return Some(client.clone());
        }
        let client = Link::connect(url, self.tls.as_ref()).ok()?;
        if direct.len() >= MAX_DIRECT {
            direct.clear();
        }
        direct.insert(url.to_owned(), client.clone());
        Some(client)
    }

    /// Says in the log (rate-limited) that a docnode's TLS handshake failed, and which
    /// settings decide it.
    fn warn_tls(&self, node: &str, reason: &str) {
        let mut warned = self
            .tls_warned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if warned.is_none_or(|at| at.elapsed() >= TLS_WARN_EVERY) {
            *warned = Some(std::time::Instant::now());
            tracing::warn!(
                %node,
                %reason,
                "TLS handshake with docnode failed; check GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE \
                 and GRPC_TLS_CA_FILE on both sides"
            );
        }
    }

    /// Waits until the view changes, or VIEW_WAIT. Only changes after the ring was last
    /// looked at count: a clone of the shared receiver would count every change since the
    /// gateway started, end at once, and turn a refused call into a tight retry loop.
    async fn wait_for_view(&self) {
        let mut ring = self.ring.clone();
        ring.mark_unchanged();
        let _ = tokio::time::timeout(VIEW_WAIT, ring.changed()).await;
    }

    /// Runs `call` against the owner of `document`, following redirects and waiting out
    /// membership changes, until it succeeds, fails for good, or the deadline passes.
    pub async fn call<T, F, Fut>(&self, document: &str, mut call: F) -> Result<(String, T), Status>
    where
        F: FnMut(Link) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.call_referred(document, |link, _| call(link)).await
    }

    /// Like [`Routes::call`]; `call` is also given the gRPC URL of the docnode whose refusal
    /// named the one it is calling, when a redirect is being followed.
    async fn call_referred<T, F, Fut>(
        &self,
        document: &str,
        mut call: F,
    ) -> Result<(String, T), Status>
    where
        F: FnMut(Link, Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let deadline = tokio::time::Instant::now() + ROUTE_DEADLINE;
        // The URL to follow, and the URL of the docnode that named it.
        let mut redirect: Option<(String, Option<String>)> = None;
        // Redirects since the last attempt that did not end in one.
        let mut redirected = 0u32;
        let mut last = Status::unavailable("no docnode is available");
        loop {
            let (target, referred_by) = match redirect.take() {
                Some((url, by)) => (self.direct(&url).map(|c| (url, c)), by),
                None => (self.owner(document), None),
            };
            if let Some((node, client)) = target {
                match call(client, referred_by).await {
                    Ok(value) => return Ok((node, value)),
                    Err(status) => {
                        debug!(%document, %node, %status, "docnode refused; re-routing");
                        if let Some(reason) = tls_failure(&status) {
                            self.warn_tls(&node, &reason);
                        }
                        match next_step(&status) {
                            Next::Redirect(url) => {
                                // One redirect is views settling; a second in a row is two
                                // docnodes naming each other (a view behind, or a lease one
                                // of them lost): wait for the view instead of bouncing
                                // between them as fast as they answer.
                                redirected += 1;
                                if redirected >= 2 {
                                    self.wait_for_view().await;
                                }
                                redirect = Some((url, self.url_of(&node)));
                            }
                            Next::WaitForView => {
                                redirected = 0;
                                self.wait_for_view().await;
                            }
                            Next::Fail(status) => return Err(status),
                        }
                        last = status;
                    }
                }
            } else {
                self.wait_for_view().await;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(last);
            }
        }
    }

    /// The gRPC URL of a docnode named by URL (a redirect) or by id (the ring).
    fn url_of(&self, node: &str) -> Option<String> {
        if node.contains("://") {
            Some(node.to_owned())
        } else {
            self.ring.borrow().node(node).map(|n| n.url.clone())
        }
    }

    /// Opens a session for a client with the owner of its document; a session opened by
    /// following a redirect says which docnode sent it (`Open.referred_by`).
    pub async fn open(&self, open: pb::Open) -> Result<Session, Status> {
        let document = open.document_id.clone();
        let (node, (inbound, outbound)) = self
            .call_referred(&document, |link, referred_by| {
                let open = pb::Open {
                    referred_by,
                    ..open.clone()
                };
                async move { link.session(open).await }
            })
            .await?;
        let url = self.url_of(&node);
        Ok(Session {
            inbound,
            outbound,
            node,
            url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::RingNode;

    fn ring_of(ids: &[&str]) -> Ring {
        Ring::new(
            ids.iter()
                .map(|id| RingNode {
                    id: (*id).to_owned(),
                    url: format!("http://{id}.invalid:1"),
                    link: Link::connect(&format!("http://{id}.invalid:1"), None)
                        .expect("a valid URL"),
                })
                .collect(),
        )
    }

    /// Two docnodes that name each other as the owner (one's view behind the other's, or a
    /// lease one of them lost) once had the gateway bounce between them as fast as they
    /// answered: 99,000 refusals in the 30 s a rolling restart left one document so. A
    /// second redirect in a row waits for the view first.
    #[tokio::test(start_paused = true)]
    async fn docnodes_naming_each_other_are_not_asked_in_a_tight_loop() {
        let (_tx, rx) = watch::channel(ring_of(&["a"]));
        let routes = Routes::new(rx, None);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let result: Result<(String, ()), Status> = routes
            .call("doc", |_| {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    if n >= 1000 {
                        return Err(Status::internal("asked in a tight loop"));
                    }
                    let other = if n.is_multiple_of(2) { "b" } else { "c" };
                    let mut status = Status::failed_precondition("owned elsewhere");
                    let url = format!("http://{other}.invalid:1");
                    if let Ok(value) = url.parse() {
                        status.metadata_mut().insert(OWNER_URL_HEADER, value);
                    }
                    Err(status)
                }
            })
            .await;
        let calls = calls.into_inner();
        assert_eq!(
            result.err().map(|s| s.code()),
            Some(Code::FailedPrecondition),
            "the call ended by its deadline after {calls} attempts"
        );
        assert!(start.elapsed() >= ROUTE_DEADLINE);
        let most = 2 * (ROUTE_DEADLINE.as_millis() / VIEW_WAIT.as_millis()) as u32 + 2;
        assert!(calls <= most, "{calls} attempts in {ROUTE_DEADLINE:?}");
    }

    /// A session opened by following a redirect names the docnode that sent it, so a docnode
    /// fenced out of the document by that very docnode knows the winner let it go.
    #[tokio::test(start_paused = true)]
    async fn a_followed_redirect_names_the_docnode_that_sent_it() {
        let (_tx, rx) = watch::channel(ring_of(&["a"]));
        let routes = Routes::new(rx, None);
        let seen = Mutex::new(Vec::new());
        let result = routes
            .call_referred("doc", |_, referred_by| {
                let first = {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.push(referred_by);
                    seen.len() == 1
                };
                async move {
                    if !first {
                        return Ok(());
                    }
                    let mut status = Status::failed_precondition("owned by b");
                    if let Ok(value) = "http://b.invalid:1".parse() {
                        status.metadata_mut().insert(OWNER_URL_HEADER, value);
                    }
                    Err(status)
                }
            })
            .await;
        assert_eq!(
            result.map(|(node, ())| node).ok().as_deref(),
            Some("http://b.invalid:1")
        );
        assert_eq!(
            seen.into_inner().unwrap_or_else(|p| p.into_inner()),
            vec![None, Some("http://a.invalid:1".to_owned())]
        );
    }

    /// A refused call waits for the view to change (or VIEW_WAIT) before trying again. The
    /// shared receiver is never marked seen, so once the ring had changed at all, every wait
    /// ended at once and a failing docnode was retried in a tight loop for ROUTE_DEADLINE.
    #[tokio::test(start_paused = true)]
    async fn waiting_for_the_view_waits_after_the_ring_has_changed_once() {
        let (tx, rx) = watch::channel(ring_of(&["a"]));
        let routes = Routes::new(rx, None);
        // A change from before the wait (the refused call already routed by this ring).
        tx.send_replace(ring_of(&["a", "b"]));
        let start = tokio::time::Instant::now();
        routes.wait_for_view().await;
        assert!(
            start.elapsed() >= VIEW_WAIT,
            "waited {:?}, not until the view changed or {VIEW_WAIT:?}",
            start.elapsed()
        );
        // A change while waiting ends the wait early.
        let waiting = routes.wait_for_view();
        let changing = async {
            tokio::time::sleep(VIEW_WAIT / 5).await;
            tx.send_replace(ring_of(&["b"]));
        };
        let start = tokio::time::Instant::now();
        tokio::join!(waiting, changing);
        assert!(start.elapsed() < VIEW_WAIT, "a change ended the wait");
    }
}
