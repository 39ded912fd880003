//! codraft docnode: owns a share of the documents and runs their editing sessions.
//!
//! An edit travels through this crate like this:
//!
//! 1. [`service`] receives a client's frames on a `DocNode.Session` gRPC stream from a gateway
//!    and hands them to the document's actor through its [`DocumentHandle`].
//! 2. [`registry`] finds the document's actor, or starts one; the actor loads its own state
//!    from the [`store`], so nothing waits on a lock while a document loads.
//! 3. [`document`] is the actor: one task per loaded document that alone owns the text,
//!    revision, history window, users and cursors. It transforms the edit against what the
//!    client had not seen, assigns it the next revision and queues it for commit.
//! 4. [`commit`] gathers the queued ops of all documents into one store transaction (group
//!    commit) and reports back to each actor.
//! 5. Only then does the actor apply the op to its text and fan it out to every client. A
//!    client whose queue is full is skipped and later sent one compacted catch-up
//!    (`document/catch_up.rs`); [`connection`] keeps each client's revision numbering.
//!
//! [`wire`] converts between the gRPC contract and OT types; [`config`] holds the settings;
//! [`server`] wires everything together and serves gRPC (under TLS through [`tls_listener`])
//! and the admin endpoints ([`admin`]);
//! [`presence`] publishes who is in each document (names, cursors) to Redis and restores it
//! when a document moves here; [`sweeper`] compacts the op log and deletes expired documents in the background;
//! [`memory`] returns the memory of unloaded documents to the operating system;
//! [`timeline`] reads a document's past (text at a revision, sessions, diffs, blame) from the store;
//! [`metrics`] holds the Prometheus series (docs/operations.md lists them and the spans).

pub mod admin;
pub mod commit;
pub mod config;
pub mod connection;
pub mod document;
pub mod history_rpc;
pub mod memory;
pub mod metrics;
pub mod ownership;
pub mod presence;
pub mod registry;
pub mod server;
pub mod service;
pub mod sessions;
pub mod store;
pub mod sweeper;
pub mod timeline;
pub mod tls_listener;
pub mod wire;
pub mod yjs;

pub use config::DocnodeConfig;
pub use document::DocumentHandle;
pub use server::Docnode;
