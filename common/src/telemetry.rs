//! Logging set-up shared by every codraft binary.
//!
//! Logs go to standard error, human-readable by default and one JSON object per line with
//! `LOG_FORMAT=json` (what log shippers on Kubernetes want). `RUST_LOG` filters as usual and
//! defaults to `info`.

use clap::{Args, ValueEnum};
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line flags (and environment variables) for logging.
#[derive(Debug, Clone, Args)]
pub struct TelemetryConfig {
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Installs the global subscriber. Call once, at the start of `main`.
pub fn init(config: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match config.log_format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init(),
    }
}
