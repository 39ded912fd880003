//! codraft's protocol client, shared by the load generator and the integration tests.
//!
//! [`client::Client`] speaks Rustpad's protocol with codraft's exactly-once extension, keeps
//! its own copy of the text with the usual OT client state machine (one edit outstanding plus
//! a buffer), and can reconnect and resume without applying an edit twice.

pub mod client;
