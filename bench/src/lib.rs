//! codraft's protocol client, shared by the load generator and the integration tests, and the
//! load generator's scenarios.
//!
//! [`client::Client`] speaks Rustpad's protocol with codraft's exactly-once extension, keeps
//! its own copy of the text with the usual OT client state machine (one edit outstanding plus
//! a buffer), and can reconnect and resume without applying an edit twice.
//!
//! The load generator (`codraft-bench`, src/main.rs) is a thin command line over the library:
//!
//! - [`scenario`]: one file per workload (`typing`, `idle`, `join-storm`, `late-join`,
//!   `failover`), each an async function from a settings struct to an outcome struct;
//! - [`report`]: the outcome as a readable table or as JSON, and the run's environment
//!   (load average, cores) that every figure is published with;
//! - [`latency`]: HDR histograms and their percentile summary;
//! - [`plot`]: the latency plot (SVG) for BENCHMARKS.md;
//! - [`progress`]: the progress bar of long runs;
//! - [`http`]: the tiny HTTP GET that fetches a document's committed text;
//! - [`process`]: what /proc says about the server (RSS, CPU time) and the machine.

#![warn(missing_docs)]

pub mod client;
pub mod http;
pub mod latency;
pub mod plot;
pub mod process;
pub mod progress;
pub mod report;
pub mod scenario;
