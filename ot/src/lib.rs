//! Operational transform for plain text, wire-compatible with Rustpad and ot.js.
//!
//! This crate owns the edit algebra of codraft: the [`Operation`] type and its normalised
//! form, applying an operation to a string or a [`ropey::Rope`], composing and transforming
//! operations, moving cursors through an edit, and the JSON array form that Rustpad's and
//! ot.js's clients speak (`[3, "a", -2, 5]`).
//!
//! Every length and position counts Unicode code points (`char`), never bytes or UTF-16
//! units, because that is what the Rustpad wire protocol counts.

#![warn(missing_docs)]

mod algebra;
mod error;
mod json;
mod operation;

pub use error::OtError;
pub use operation::{Component, Operation};

/// The largest count or document length an operation may carry: 2^53 − 1, the largest
/// integer a JavaScript client represents exactly (the wire's bound, `MAX_SAFE_INTEGER` in
/// `codraft-proto`, which has no dependency on this crate; the docnode asserts at compile
/// time that the two agree). Keeping every length below it also means no length arithmetic
/// in this crate can overflow a `u64`.
pub const MAX_LENGTH: u64 = (1 << 53) - 1;
