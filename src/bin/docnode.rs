//! `docnode`: owns documents, runs their editing sessions and commits them durably.

use anyhow::Context;
use clap::Parser;
use codraft_docnode::{Docnode, DocnodeConfig};
use codraft_telemetry::TelemetryConfig;

/// codraft docnode: the owner of a share of the documents.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    docnode: DocnodeConfig,
    #[command(flatten)]
    telemetry: TelemetryConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    codraft_telemetry::init(&cli.telemetry);
    let docnode = Docnode::open(cli.docnode)
        .await
        .context("cannot open the document store")?;
    docnode.serve(codraft::shutdown::signal()).await?;
    Ok(())
}
