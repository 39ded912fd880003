//! codraft's load generator: its scenarios, measurements and reports.
//!
//! Its clients are the test kit's protocol client (`codraft_testkit::client`, Rustpad's
//! protocol with codraft's exactly-once extension), and the failover scenario starts its
//! cluster with the test kit's process launcher, so the tests and the load generator drive
//! servers with one copy of each.
//!
//! The load generator (`codraft-bench`, src/main.rs) is a thin command line over the library:
//!
//! - [`scenario`]: one file per workload (`typing`, `idle`, `join-storm`, `late-join`,
//!   `failover`, `soak`, and for Yjs documents `yjs-typing` and `yjs-documents`), each an
//!   async function from a settings struct to an outcome struct;
//! - [`provider`]: the Yjs scenarios' client, a y-websocket provider that decodes only what
//!   it must;
//! - [`compare`]: one scenario against two servers (codraft and, say, Rustpad's server),
//!   one after the other, and the ratios of their headline figures;
//! - [`report`]: the outcome as a readable table or as JSON, and the run's environment
//!   (load average, cores) that every figure is published with;
//! - [`latency`]: HDR histograms and their percentile summary;
//! - [`plot`]: the latency plot (SVG) for BENCHMARKS.md;
//! - [`progress`]: the progress bar of long runs;
//! - [`process`]: what /proc says about the server (RSS, CPU time) and the machine.

#![warn(missing_docs)]

pub mod compare;
pub mod latency;
pub mod plot;
pub mod process;
pub mod progress;
pub mod provider;
pub mod report;
pub mod scenario;
