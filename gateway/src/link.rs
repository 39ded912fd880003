//! How a gateway reaches one docnode: over gRPC in a cluster, or by a function call when
//! the docnode runs in the same process (standalone). Both speak the contract of `proto/`
//! with the same messages and statuses; the in-process one skips protobuf, HTTP/2 and the
//! socket, which were most of standalone mode's CPU per edit (BENCHMARKS.md, "Side by side
//! with Rustpad").

use std::{sync::Arc, time::Duration};

use codraft_proto as pb;
use pb::{
    doc_node_client::DocNodeClient,
    in_process::{InProcess, Inbound, InboundStream},
};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::{
    transport::{Channel, ClientTlsConfig, Endpoint},
    Response, Status,
};

use crate::sessions::{Multiplexer, Session};

/// Client frames queued for a docnode before the relay waits for room. Boxed: a channel
/// allocates its slots in blocks of 32 up front, and an idle connection should not pay for
/// 32 whole frames (5 KiB).
const SESSION_QUEUE: usize = 32;

/// A way to one docnode; clones share it (one HTTP/2 connection per docnode over gRPC, and
/// on it one stream for every client session).
#[derive(Clone)]
pub enum Link {
    /// A docnode across the network.
    Grpc(DocNodeClient<Channel>, Arc<Multiplexer>),
    /// The docnode of this process.
    InProcess(Arc<dyn InProcess>),
}

/// One unary call of the contract, the same over both links.
macro_rules! unary {
    ($(#[$doc:meta])* $name:ident($request:ty) -> $response:ty) => {
        $(#[$doc])*
        pub async fn $name(&self, request: $request) -> Result<Response<$response>, Status> {
            match self {
                Self::Grpc(client, _) => client.clone().$name(request).await,
                Self::InProcess(node) => node.$name(tonic::Request::new(request)).await,
            }
        }
    };
}

/// HTTP/2 flow-control windows of a docnode connection, whose one `Sessions` stream carries
/// every client session (each session's own window is in frames, see `sessions`).
pub const STREAM_WINDOW: u32 = 1 << 20;
/// See [`STREAM_WINDOW`].
pub const CONNECTION_WINDOW: u32 = 2 << 20;

/// Largest gRPC message the gateway accepts from a docnode (a join snapshot).
pub const MAX_GRPC_MESSAGE: usize = 64 << 20;

impl Link {
    /// A lazily connected gRPC link to the docnode at `url`: TLS (verified, and presenting
    /// this gateway's certificate when it has one) for `https://`, plaintext for `http://`.
    pub fn connect(
        url: &str,
        tls: Option<&ClientTlsConfig>,
    ) -> Result<Self, tonic::transport::Error> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            // Every session shares one stream: its window is room for many sessions' frames.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        if url.starts_with("https://") {
            endpoint = endpoint.tls_config(tls.cloned().unwrap_or_default())?;
        }
        let client = DocNodeClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        let sessions = Arc::new(Multiplexer::new(client.clone()));
        Ok(Self::Grpc(client, sessions))
    }

    /// Opens a session: `open` goes first, then whatever the returned sender is given.
    pub async fn session(&self, open: pb::Open) -> Result<Session, Status> {
        if let Self::Grpc(_, sessions) = self {
            if let Some(session) = sessions.session(open.clone()).await? {
                return Ok(session);
            }
        }
        let (outbound, frames) = mpsc::channel::<Box<pb::ClientFrame>>(SESSION_QUEUE);
        let frames = ReceiverStream::new(frames).map(|frame| *frame);
        let inbound = match self {
            Self::Grpc(client, _) => {
                let first = pb::ClientFrame {
                    kind: Some(pb::client_frame::Kind::Open(open)),
                };
                let frames = tokio_stream::once(first).chain(frames);
                let stream = client.clone().session(frames).await?.into_inner();
                Box::pin(stream.map(|frame| frame.map(Inbound::from))) as InboundStream
            }
            Self::InProcess(node) => node.open_session(open, Box::pin(frames)).await?,
        };
        Ok((inbound, outbound))
    }

    unary!(
        /// `DocNode.GetText`.
        get_text(pb::GetTextRequest) -> pb::GetTextResponse
    );
    unary!(
        /// `DocNode.GetStats`.
        get_stats(pb::GetStatsRequest) -> pb::GetStatsResponse
    );
    unary!(
        /// `DocNode.Authorize`.
        authorize(pb::AuthorizeRequest) -> pb::AuthorizeResponse
    );
    unary!(
        /// `DocNode.GetHistory`.
        get_history(pb::GetHistoryRequest) -> pb::GetHistoryResponse
    );
    unary!(
        /// `DocNode.GetTextAt`.
        get_text_at(pb::GetTextAtRequest) -> pb::GetTextAtResponse
    );
    unary!(
        /// `DocNode.GetDiff`.
        get_diff(pb::GetDiffRequest) -> pb::GetDiffResponse
    );
    unary!(
        /// `DocNode.Restore`.
        restore(pb::RestoreRequest) -> pb::RestoreResponse
    );
}
