//! What the gateway and the docnode both need, in one small crate: how logs and traces are
//! set up ([`telemetry`]), how Prometheus series are served ([`metrics`]), who the live
//! docnodes are ([`membership`]), who is in a document ([`presence`], kept in Redis), and which of them owns a document ([`ring`]), and the TLS material
//! every connection reads ([`tls`]). Each module
//! owns one concept; nothing else belongs here.

pub mod ids;
pub mod membership;
pub mod metrics;
pub mod presence;
pub mod ring;
pub mod telemetry;
pub mod tls;

pub use telemetry::TelemetryConfig;
