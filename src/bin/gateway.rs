//! `gateway`: the stateless WebSocket front of a codraft cluster.

use anyhow::Context;
use clap::Parser;
use codraft_gateway::{Gateway, GatewayConfig};
use codraft_telemetry::TelemetryConfig;

/// codraft gateway: relays client WebSockets to the docnodes that own their documents.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    gateway: GatewayConfig,
    #[command(flatten)]
    telemetry: TelemetryConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    codraft_telemetry::init(&cli.telemetry);
    if cli.gateway.docnodes.is_empty() {
        anyhow::bail!("no docnodes: set DOCNODES (e.g. DOCNODES=http://127.0.0.1:50051)");
    }
    let gateway = Gateway::from_config(cli.gateway).context("bad gateway configuration")?;
    gateway.serve(codraft::shutdown::signal()).await?;
    Ok(())
}
