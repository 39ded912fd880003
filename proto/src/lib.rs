//! The gRPC contract between gateways and docnodes, and nothing else.
//!
//! A gateway relays each client WebSocket over one `DocNode.Session` bidirectional stream to
//! the docnode that owns the document. The gateway turns the client's JSON into these typed
//! frames and the docnode's frames back into JSON; the docnode never sees JSON and the gateway
//! never sees OT. The package is versioned (`codraft.docnode.v1`): a breaking change gets a new
//! package name so that old and new nodes can run side by side during a rolling upgrade.

#![allow(clippy::all, missing_docs)]

/// Generated types and services of `codraft.docnode.v1`.
pub mod v1 {
    tonic::include_proto!("codraft.docnode.v1");
}

pub use v1::*;

/// The codec of the generated client and server: prost, with small per-stream buffers.
///
/// tonic gives every stream an encode and a decode buffer of 8 KiB by default. A gateway
/// holds one stream per client connection, almost all of them idle, so those two buffers
/// were most of what an idle connection cost at a cluster gateway; they start at
/// [`STREAM_BUFFER`] here and grow (and are given back) as frames need.
pub mod codec {
    use std::marker::PhantomData;

    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::{ProstDecoder, ProstEncoder};

    /// A stream's buffers start at this size.
    pub const STREAM_BUFFER: usize = 512;

    /// Encoded bytes after which a stream's encoder yields (tonic's default).
    const YIELD_THRESHOLD: usize = 32 * 1024;

    /// Prost encoding with [`STREAM_BUFFER`]-sized buffers.
    #[derive(Debug, Clone)]
    pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for SmallBuffers<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    fn settings() -> BufferSettings {
        BufferSettings::new(STREAM_BUFFER, YIELD_THRESHOLD)
    }

    impl<T, U> Codec for SmallBuffers<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstEncoder::new(settings())
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstDecoder::new(settings())
        }
    }
}

pub mod mux;

/// WebSocket close codes: the docnode ends a session with one in `Error.code`, the gateway
/// closes the client's socket with it (and uses the gateway-only ones itself). The table,
/// with what a client should do for each, is in docs/protocol.md.
pub mod close {
    /// A message the gateway cannot parse or does not know (the socket stays open).
    pub const INVALID_MESSAGE: u16 = 4400;
    /// The document is protected and the password is missing or wrong.
    pub const UNAUTHORIZED: u16 = 4401;
    /// The connection may read but not write (its token grants read only).
    pub const READ_ONLY: u16 = 4403;
    /// The operation does not fit the document.
    pub const BAD_OPERATION: u16 = 4409;
    /// An edit whose `seq` the document already has (a re-send): it is not applied again;
    /// the socket stays open. Its acknowledgement is the History entry the client saw (or
    /// will see, if the edit is still being committed).
    pub const ALREADY_APPLIED: u16 = 4412;
    /// The edit's revision is older than the history kept.
    pub const REVISION_TOO_OLD: u16 = 4410;
    /// A message, or the document an edit would make, is too large.
    pub const TOO_LARGE: u16 = 4413;
    /// The edit's revision is from the future.
    pub const REVISION_FROM_FUTURE: u16 = 4416;
    /// Too many clients on the document, or too many messages.
    pub const TOO_MANY: u16 = 4429;
    /// An error inside the gateway.
    pub const INTERNAL: u16 = 4500;
    /// The document is moving, the server restarting, or storage failed; reconnect.
    pub const UNAVAILABLE: u16 = 4503;
    /// The client did not keep up.
    pub const TOO_SLOW: u16 = 4508;
}

/// The largest integer a JavaScript number holds exactly (2^53 − 1): no revision, sequence
/// number, user id or operation length on the wire may exceed it.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The contract without the wire: a docnode in the gateway's own process (standalone mode)
/// is called through this trait, with the same messages and the same statuses as over gRPC,
/// but without protobuf encoding, HTTP/2 or a socket in between. Unary calls are the gRPC
/// service's own methods; a session takes its Open frame and the rest of the client's
/// frames as a channel.
pub mod in_process {
    use std::{
        pin::Pin,
        sync::{Arc, OnceLock},
    };

    use bytes::Bytes;
    use futures_core::Stream;

    use crate::{
        doc_node_server::DocNode, server_frame::Kind, ClientFrame, DocnodeMessage, History,
        HistoryEntry, Open, ServerFrame,
    };

    /// A session's frames as the gRPC `Session` call streams them, ending with the close
    /// reason when the docnode closed the session.
    pub type FrameStream = Pin<Box<dyn Stream<Item = Result<ServerFrame, tonic::Status>> + Send>>;

    /// A session's frames as a gateway reads them: over gRPC or from a docnode in the same
    /// process, committed entries come shared by every session of the document that the
    /// gateway relays ([`Inbound::History`]).
    pub type InboundStream = Pin<Box<dyn Stream<Item = Result<Inbound, tonic::Status>> + Send>>;

    /// One frame of a session, as the gateway reads it.
    #[derive(Debug, PartialEq)]
    pub enum Inbound {
        /// A frame of the session's own (boxed: a queue of these allocates its slots ahead).
        Frame(Box<ServerFrame>),
        /// A History frame at the session's revision `start` whose entries every session of
        /// the document shares (the same allocation for all).
        History { start: u64, fanout: Arc<Fanout> },
    }

    impl Inbound {
        /// As the frame the client is sent.
        pub fn into_frame(self) -> ServerFrame {
            match self {
                Self::Frame(frame) => *frame,
                Self::History { start, fanout } => fanout.frame(start),
            }
        }
    }

    impl From<ServerFrame> for Inbound {
        fn from(frame: ServerFrame) -> Self {
            Self::Frame(Box::new(frame))
        }
    }

    /// Entries of one commit, fanned out to every session of the document: one copy for all
    /// of them, and one rendering for every client that wrote none of them.
    #[derive(Debug)]
    pub struct Fanout {
        entries: Box<[HistoryEntry]>,
        /// The gateway's rendering for a client that wrote none of the entries, and the
        /// revision it starts at: made by the first session that needs it, reused by the rest.
        rendered: OnceLock<(u64, Bytes)>,
    }

    /// Two fan-outs are equal when their entries are (whatever either rendered).
    impl PartialEq for Fanout {
        fn eq(&self, other: &Self) -> bool {
            self.entries == other.entries
        }
    }

    impl Fanout {
        /// The fan-out of `entries`.
        pub fn new(entries: Vec<HistoryEntry>) -> Self {
            Self {
                entries: entries.into_boxed_slice(),
                rendered: OnceLock::new(),
            }
        }

        /// The entries, oldest first.
        pub fn entries(&self) -> &[HistoryEntry] {
            &self.entries
        }

        /// A History frame of the entries (a copy) at revision `start`.
        pub fn frame(&self, start: u64) -> ServerFrame {
            self.frame_after(0, start)
        }

        /// A History frame of the entries but the first `seen` (a copy) at revision `start`.
        pub fn frame_after(&self, seen: usize, start: u64) -> ServerFrame {
            ServerFrame {
                kind: Some(Kind::History(History {
                    start,
                    entries: self.entries[seen.min(self.entries.len())..].to_vec(),
                    compacted: false,
                    log_revision: None,
                })),
            }
        }

        /// The shared rendering at revision `start`: the one made already if it starts there,
        /// else `render`'s (kept for the next session if it is the first).
        pub fn rendered(
            &self,
            start: u64,
            render: impl FnOnce() -> Option<Bytes>,
        ) -> Option<Bytes> {
            if let Some((at, bytes)) = self.rendered.get() {
                if *at == start {
                    return Some(bytes.clone());
                }
                return render();
            }
            let made = render()?;
            // Another session may have made it meanwhile; either is the same text.
            let _ = self.rendered.set((start, made.clone()));
            Some(made)
        }
    }

    /// What `DocNode.Sessions` answers with (unused in process: a gateway in the same
    /// process opens each session by a call).
    pub type MessageStream =
        Pin<Box<dyn Stream<Item = Result<DocnodeMessage, tonic::Status>> + Send>>;

    /// The client's frames after Open.
    pub type ClientFrames = Pin<Box<dyn Stream<Item = ClientFrame> + Send>>;

    /// A docnode reachable by a function call.
    #[tonic::async_trait]
    pub trait InProcess:
        DocNode<SessionStream = FrameStream, SessionsStream = MessageStream>
    {
        /// `DocNode.Session` for a gateway in this process: `open` is the stream's first
        /// frame, `frames` the rest.
        async fn open_session(
            &self,
            open: Open,
            frames: ClientFrames,
        ) -> Result<InboundStream, tonic::Status>;
    }
}
