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
