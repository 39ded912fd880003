//! codraft gateway: terminates client WebSockets and relays each one to the docnode that owns
//! its document. It keeps no document state, so any number of gateways run side by side.
//!
//! An edit travels through this crate like this:
//!
//! 1. [`http`] accepts `GET /api/socket/{id}` and upgrades it (it also serves the web client
//!    from [`assets`], `/api/text`, `/api/stats` and the health endpoints).
//! 2. [`routes`] finds the owner: [`ring`] picks it by rendezvous hashing over the live
//!    docnodes, and a docnode that disagrees redirects to the owner it knows. A [`link`] is
//!    the way to one docnode: gRPC, or a function call in standalone mode.
//! 3. [`relay`] opens one `DocNode.Session` with the owner and relays frames both ways, in
//!    one task per connection, translating with [`protocol`] between Rustpad's JSON and the
//!    typed frames; [`handoff`] lets it move the connection to a new owner.
//!
//! Before any of that, [`gate`] checks the token ([`auth`]) and the document's password; every
//! read path (`/api/text`, presence) goes through it too. Wrong passwords count against the
//! client's address as [`client_addr`] reads it (through TRUSTED_PROXIES), in a budget
//! [`guesses`] shares through Redis.
//!
//! [`config`] holds the settings and [`server`] runs the HTTP server; [`metrics`] holds the
//! Prometheus series and [`pending`] times each edit's round trip (docs/operations.md lists
//! the series and spans). [`presence`] answers `GET /api/documents/{id}/presence` from Redis;
//! [`history`] serves the version-history API (`.../history`, `.../text`, `.../diff`,
//! `.../restore`, docs/api.md) by asking the owner docnode.

pub mod assets;
pub mod auth;
pub mod client_addr;
pub mod config;
pub mod gate;
pub mod guesses;
pub mod handoff;
pub mod history;
pub mod http;
pub mod link;
pub mod metrics;
pub mod pending;
pub mod presence;
pub mod protocol;
pub mod relay;
pub mod ring;
pub mod routes;
pub mod server;
pub mod sessions;

pub use config::GatewayConfig;
pub use ring::{Ring, RingNode};
pub use server::Gateway;
