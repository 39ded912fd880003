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
