//! The progress bar of long runs, on stderr so that `--json` output on stdout stays clean.
//!
//! indicatif hides the bar by itself when stderr is not a terminal (CI logs, pipes), and the
//! scenarios' library callers (tests) pass `enabled: false`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar, or nothing when progress display is off.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The bar; `None` when disabled.
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar of `total` steps, labelled `label`; a no-op when `enabled` is false.
    pub fn new(enabled: bool, label: &str, total: u64) -> Self {
        if !enabled {
            return Self { bar: None };
        }
        let bar = ProgressBar::new(total);
        // The template is a constant known to be valid; fall back to the default style.
        let style = ProgressStyle::with_template(
            "{prefix:>10} [{elapsed_precise}] {bar:30} {pos:>7}/{len:7} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar: Some(bar) }
    }

    /// A bar that shows nothing.
    pub fn hidden() -> Self {
        Self { bar: None }
    }

    /// Moves the bar to step `position`.
    pub fn set_position(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    /// Advances the bar by `n` steps.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Shows `message` beside the bar (live rates, for instance).
    pub fn set_message(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
