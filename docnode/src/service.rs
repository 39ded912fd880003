//! The `DocNode` gRPC service: relays each gateway stream to a document actor.
//!
//! A stream starts with an `Open` frame naming the document. The service joins the document's
//! actor (which looks up the client's exactly-once marks itself, under its lease), then pumps the
//! client's frames into the actor (awaiting room, which is how backpressure reaches the
//! gateway) and the actor's frames back out.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use codraft_common::ids::{valid_any_document_id as valid_document_id, valid_client_id};
use codraft_common::telemetry;
use codraft_proto as pb;
use futures::{Stream, StreamExt};
use pb::{
    client_frame::Kind as In,
    in_process::{FrameStream, Inbound, InboundStream},
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info_span, Instrument};

use crate::{
    connection::{close_frame, ConnId, Inbox},
    document::{otp_matches, Command, DocumentHandle, Join, JoinRefused},
    ownership::{Ownership, Verdict},
    registry::{Registry, Unavailable},
    store::Store,
};

/// Status metadata naming the owner of a document this docnode refused.
pub const OWNER_HEADER: &str = "codraft-owner";
/// Status metadata with the owner's gRPC URL.
pub const OWNER_URL_HEADER: &str = "codraft-owner-url";

/// The service behind the generated `DocNodeServer`; clones share it.
#[derive(Clone)]
pub struct DocNodeService {
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    next_conn: Arc<AtomicU64>,
}

impl DocNodeService {
    /// A service over the given documents and store.
    pub fn new(registry: Arc<Registry>, store: Arc<dyn Store>) -> Self {
        Self {
            registry,
            store,
            next_conn: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Refuses a document another docnode owns (see [`refuse_unless_mine`]).
    fn check_owner(&self, id: &str) -> Result<(), Status> {
        refuse_unless_mine(self.registry.ownership(), id, None)
    }

    /// The loaded documents.
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    fn handle(&self, id: &str) -> Result<DocumentHandle, Status> {
        self.check_owner(id)?;
        self.registry.handle(id).map_err(|e| match e {
            Unavailable::Full(_) => Status::resource_exhausted(e.to_string()),
            Unavailable::ShuttingDown => Status::unavailable(e.to_string()),
        })
    }

    /// Whether `otp` opens `id`: asks the actor if the document is loaded, else reads the
    /// password with a light query, so a refused client never makes a document load.
    async fn check_otp(&self, id: &str, otp: Option<&str>) -> Result<(), Status> {
        let allowed = match self.registry.loaded_handle(id) {
            Some(handle) => {
                let (reply, answer) = oneshot::channel();
                let asked = handle
                    .send(Command::CheckOtp {
                        otp: otp.map(str::to_owned),
                        reply,
                    })
                    .await;
                match (asked, answer.await) {
                    (Ok(()), Ok(allowed)) => allowed,
                    // The actor is unloading: the store has the same answer.
                    _ => self.stored_otp_matches(id, otp).await?,
                }
            }
            None => self.stored_otp_matches(id, otp).await?,
        };
        if allowed {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "this document is protected: open it with the right ?otp=",
            ))
        }
    }

    async fn stored_otp_matches(&self, id: &str, otp: Option<&str>) -> Result<bool, Status> {
        let required = self
            .store
            .document_otp(id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(otp_matches(required.as_deref(), otp))
    }

    /// Joins the document's actor, looking it up again if it was stopping.
    async fn join(&self, open: &pb::Open, conn: ConnId) -> Result<(DocumentHandle, Inbox), Status> {
        join(&self.registry, open, conn).await
    }
}

/// Refuses a document another docnode owns, naming the owner in the status metadata
/// (`codraft-owner`, `codraft-owner-url`) so the gateway can re-route; `referred_by` is the
/// docnode that sent the client here, if one did ([`Ownership::check_referred`]).
fn refuse_unless_mine(
    ownership: &Ownership,
    id: &str,
    referred_by: Option<&str>,
) -> Result<(), Status> {
    match ownership.check_referred(id, referred_by) {
        Verdict::Mine => Ok(()),
        Verdict::Elsewhere { node, url } => {
            let mut status =
                Status::failed_precondition(format!("document {id} is owned by docnode {node}"));
            if let Ok(value) = node.parse() {
                status.metadata_mut().insert(OWNER_HEADER, value);
            }
            if let Some(Ok(value)) = url.map(|u| u.parse()) {
                status.metadata_mut().insert(OWNER_URL_HEADER, value);
            }
            Err(status)
        }
    }
}

/// Joins a client to the actor of `open.document_id` on `registry`, starting the actor if
/// the document is not loaded and looking it up again while it was stopping. The session
/// stream uses this, and so does the actor's model test.
///
/// Ownership is checked before every attempt, not once: an actor is most often found
/// stopping because the view changed and it is moving to its new owner, and starting a fresh
/// one then would take the document's lease from that owner (two docnodes serving one
/// document until the store fences one of them).
pub(crate) async fn join(
    registry: &Arc<Registry>,
    open: &pb::Open,
    conn: ConnId,
) -> Result<(DocumentHandle, Inbox), Status> {
    for _ in 0..10 {
        refuse_unless_mine(
            registry.ownership(),
            &open.document_id,
            open.referred_by.as_deref(),
        )?;
        let handle = registry.handle(&open.document_id).map_err(|e| match e {
            Unavailable::Full(_) => Status::resource_exhausted(e.to_string()),
            Unavailable::ShuttingDown => Status::unavailable(e.to_string()),
        })?;
        let (reply, answer) = oneshot::channel();
        let join = Command::Join(Join {
            conn,
            client_id: open.client_id.clone(),
            resume: open.resume_revision,
            // The actor looks the client's marks up itself, under its own lease.
            last_seq: None,
            otp: open.otp.clone(),
            user_id: open.user_id,
            made_up_client_id: open.made_up_client_id,
            reply,
        });
        let outcome = match handle.send(join).await {
            Ok(()) => answer.await.unwrap_or(Err(JoinRefused::Retry)),
            Err(_) => Err(JoinRefused::Retry),
        };
        match outcome {
            Ok(inbox) => return Ok((handle, inbox)),
            Err(JoinRefused::Retry) => {
                // The actor is unloading: wait for it to finish, then start a fresh one.
                let _ = tokio::time::timeout(Duration::from_secs(5), handle.stopped()).await;
            }
            Err(JoinRefused::Unavailable(message)) => return Err(Status::unavailable(message)),
        }
    }
    Err(Status::unavailable("document keeps unloading; retry"))
}

/// Frames for a gateway in this process: the actor's queue (committed entries still shared
/// by every connection they went to), then the close reason if the actor closed it.
pub(crate) fn inbound(inbox: Inbox) -> InboundStream {
    let closed = Arc::clone(&inbox.closed);
    let frames = futures::stream::unfold(inbox, |mut inbox| async move {
        let frame = std::future::poll_fn(|cx| inbox.poll_next(cx)).await?;
        Some((Ok(frame), inbox))
    });
    let last = futures::stream::once(async move { close_frame(&closed).map(|f| Ok(f.into())) })
        .filter_map(futures::future::ready);
    Box::pin(frames.chain(last))
}

/// Frames for a gateway's `Session` call: [`inbound`]'s, each a frame of its own.
pub(crate) fn outbound(inbox: Inbox) -> FrameStream {
    Box::pin(inbound(inbox).map(|frame| frame.map(Inbound::into_frame)))
}

/// Turns a client frame into the actor command it stands for.
fn command(conn: ConnId, kind: In) -> Option<Command> {
    Some(match kind {
        In::Open(_) => return None,
        In::Edit(edit) => Command::Edit { conn, edit },
        In::SetLanguage(l) => Command::SetLanguage {
            conn,
            language: l.language,
        },
        In::ClientInfo(info) => Command::ClientInfo { conn, info },
        In::CursorData(data) => Command::CursorData { conn, data },
        In::SetOtp(set) => Command::SetOtp { conn, otp: set.otp },
        In::Yjs(message) => Command::Yjs { conn, message },
    })
}

impl DocNodeService {
    /// A session: checks the Open frame, joins the document and pumps the client's
    /// frames into its actor (awaiting room, which is how backpressure reaches the gateway)
    /// until they end. Returns the connection's queue as the actor fills it, which every kind
    /// of session reads (a gRPC stream of its own, a shared `Sessions` stream, a gateway in
    /// this process).
    pub(crate) async fn session<S>(&self, open: pb::Open, mut frames: S) -> Result<Inbox, Status>
    where
        S: Stream<Item = pb::ClientFrame> + Send + Unpin + 'static,
    {
        if !valid_document_id(&open.document_id) {
            return Err(Status::invalid_argument("invalid document id"));
        }
        if open
            .client_id
            .as_deref()
            .is_some_and(|c| !valid_client_id(c))
        {
            return Err(Status::invalid_argument("invalid client id"));
        }
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        // The join continues the gateway's `open` trace; a cold document's `load` nests in it.
        let span = info_span!(
            "docnode.join",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "codraft.docnode.v1.DocNode",
            rpc.method = "Session",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            document = %open.document_id,
            conn
        );
        telemetry::set_remote_parent(&span, &open.trace_context);
        let joined = self.join(&open, conn).instrument(span.clone()).await;
        if let Err(status) = &joined {
            span.record("otel.status_code", "ERROR");
            span.record(
                "otel.status_description",
                format!("{:?}: {}", status.code(), status.message()),
            );
        }
        let (handle, inbox) = joined?;
        debug!(document = %open.document_id, conn, "joined");
        tokio::spawn(async move {
            while let Some(frame) = frames.next().await {
                let Some(command) = frame.kind.and_then(|k| command(conn, k)) else {
                    continue;
                };
                if handle.send(command).await.is_err() {
                    return;
                }
            }
            let _ = handle.send(Command::Leave { conn }).await;
        });
        Ok(inbox)
    }
}

#[tonic::async_trait]
impl pb::in_process::InProcess for DocNodeService {
    async fn open_session(
        &self,
        open: pb::Open,
        frames: pb::in_process::ClientFrames,
    ) -> Result<InboundStream, Status> {
        self.session(open, frames).await.map(inbound)
    }
}

#[tonic::async_trait]
impl pb::doc_node_server::DocNode for DocNodeService {
    type SessionStream = FrameStream;
    type SessionsStream = crate::sessions::MessageStream;

    async fn sessions(
        &self,
        request: Request<Streaming<pb::GatewayMessage>>,
    ) -> Result<Response<Self::SessionsStream>, Status> {
        Ok(Response::new(self.multiplex(request)))
    }

    async fn session(
        &self,
        request: Request<Streaming<pb::ClientFrame>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let open = match inbound.message().await? {
            Some(pb::ClientFrame {
                kind: Some(In::Open(open)),
            }) => open,
            _ => return Err(Status::invalid_argument("the first frame must be Open")),
        };
        // A broken stream ends the session like a finished one.
        let frames = futures::stream::unfold(inbound, |mut inbound| async move {
            let frame = inbound.message().await.ok()??;
            Some((frame, inbound))
        });
        DocNodeService::session(self, open, Box::pin(frames))
            .await
            .map(|inbox| Response::new(outbound(inbox)))
    }

    async fn get_text(
        &self,
        request: Request<pb::GetTextRequest>,
    ) -> Result<Response<pb::GetTextResponse>, Status> {
        let id = request.into_inner().document_id;
        if !valid_document_id(&id) {
            return Err(Status::invalid_argument("invalid document id"));
        }
        for _ in 0..10 {
            let handle = self.handle(&id)?;
            let (reply, answer) = oneshot::channel();
            if handle.send(Command::Text { reply }).await.is_ok() {
                match answer.await {
                    Ok(Ok(text)) => return Ok(Response::new(pb::GetTextResponse { text })),
                    Ok(Err(JoinRefused::Unavailable(message))) => {
                        return Err(Status::unavailable(message))
                    }
                    _ => {}
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), handle.stopped()).await;
        }
        Err(Status::unavailable("document keeps unloading; retry"))
    }

    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let request = request.into_inner();
        if !valid_document_id(&request.document_id) {
            return Err(Status::invalid_argument("invalid document id"));
        }
        self.check_owner(&request.document_id)?;
        self.check_otp(&request.document_id, request.otp.as_deref())
            .await?;
        Ok(Response::new(pb::AuthorizeResponse {}))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        crate::history_rpc::get_history(&*self.store, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_text_at(
        &self,
        request: Request<pb::GetTextAtRequest>,
    ) -> Result<Response<pb::GetTextAtResponse>, Status> {
        crate::history_rpc::get_text_at(&*self.store, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_diff(
        &self,
        request: Request<pb::GetDiffRequest>,
    ) -> Result<Response<pb::GetDiffResponse>, Status> {
        crate::history_rpc::get_diff(&*self.store, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn restore(
        &self,
        request: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        let request = request.into_inner();
        if !valid_document_id(&request.document_id) {
            return Err(Status::invalid_argument("invalid document id"));
        }
        // A restore is an edit: only the owner's actor may make it.
        self.check_owner(&request.document_id)?;
        let id = request.document_id.clone();
        crate::history_rpc::restore(&self.store, request, || self.handle(&id))
            .await
            .map(Response::new)
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let database_size = self
            .store
            .document_count()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::GetStatsResponse {
            num_documents: self.registry.loaded() as u64,
            database_size,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{store::memory::MemoryStore, Docnode, DocnodeConfig};
    use clap::Parser;
    use codraft_common::{membership::Member, ring};

    #[derive(Parser)]
    struct Settings {
        #[command(flatten)]
        docnode: DocnodeConfig,
    }

    fn member(id: &str) -> Member {
        Member {
            id: id.to_owned(),
            url: format!("http://{id}.invalid:1"),
        }
    }

    /// A rolling restart under load showed two docnodes serving one document: a join reached
    /// the old owner just before its view changed, found the actor moving away, waited for
    /// it to stop and started a fresh one — taking the lease from the new owner, whose next
    /// commit was fenced, while clients on either side stopped seeing each other's edits.
    /// A join that finds the actor stopping must look at ownership again before it starts one.
    #[tokio::test]
    async fn a_join_that_waits_out_a_moving_actor_does_not_load_the_document_again() {
        let settings = Settings::try_parse_from([
            "test",
            "--node-id=a",
            "--data-dir=/nonexistent",
            "--sweep-interval-secs=0",
        ])
        .unwrap_or_else(|error| panic!("settings: {error}"));
        let (view, watched) = tokio::sync::watch::channel(Arc::new(vec![member("a")]));
        let store: Arc<dyn crate::store::Store> = Arc::new(MemoryStore::default());
        let node = Docnode::with_store_and_view(settings.docnode, store, watched);
        let registry = node.registry();
        // A document that moves to b once b joins.
        let document = (0..1000)
            .map(|i| format!("moving-{i}"))
            .find(|d| ring::owner(["a", "b"], d) == Some("b"))
            .expect("some document hashes to b");
        let open = pb::Open {
            document_id: document.clone(),
            ..Default::default()
        };
        let (actor, _inbox) = join(registry, &open, 1).await.expect("a owns it alone");

        view.send_replace(Arc::new(vec![member("a"), member("b")]));
        assert_eq!(
            registry.release_unowned().await,
            1,
            "the document moves to b"
        );
        let joined = join(registry, &open, 2).await;
        tokio::time::timeout(Duration::from_secs(5), actor.stopped())
            .await
            .expect("the moving actor stops");

        let status = joined.err().expect("a join of b's document was accepted");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            status
                .metadata()
                .get(OWNER_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("b")
        );
        assert!(
            registry.loaded_handle(&document).is_none(),
            "the document was loaded again after it moved"
        );
    }
}
