//! What the gateway and the docnode both need, in one small crate: how logs and traces are
//! set up ([`telemetry`]), how Prometheus series are kept ([`metrics`]) and served on the admin
//! port with health and readiness ([`admin`]), who the live docnodes are ([`membership`]),
//! who is in a document ([`presence`], kept in Redis), which of them owns a document
//! ([`ring`]), the TLS material every connection reads ([`tls`]), and how threads ask for the
//! CPU ([`sched`]). Each module owns one concept; nothing else belongs here.

pub mod admin;
pub mod ids;
pub mod membership;
pub mod metrics;
pub mod presence;
pub mod ring;
pub mod sched;
pub mod telemetry;
pub mod tls;

pub use telemetry::TelemetryConfig;
