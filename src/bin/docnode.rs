//! `docnode`: owns documents, runs their editing sessions and commits them durably.

use anyhow::Context;
use clap::Parser;
use codraft_common::{
    membership::{self, MembershipConfig},
    tls::GrpcTlsConfig,
    TelemetryConfig,
};
use codraft_docnode::{Docnode, DocnodeConfig};

/// codraft docnode: the owner of a share of the documents.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    docnode: DocnodeConfig,
    #[command(flatten)]
    grpc_tls: GrpcTlsConfig,
    #[command(flatten)]
    membership: MembershipConfig,
    #[command(flatten)]
    telemetry: TelemetryConfig,
}

fn main() -> anyhow::Result<()> {
    codraft_common::sched::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    cli.docnode.grpc_tls = cli.grpc_tls.clone();
    // Kept to the end: dropping it exports the spans still queued.
    let telemetry = codraft_common::telemetry::init(&cli.telemetry, "codraft-docnode")?;
    codraft::limits::raise_open_files_limit();
    if let Some(warning) = cli.docnode.unroutable_advertisement(&cli.membership) {
        tracing::warn!("{warning}");
    }
    // The view decides which documents this docnode owns: DOCNODES if given, else the live
    // set in Redis, else (neither) every document.
    let (_keep_view, view) =
        membership::watch_view(&cli.membership).context("bad membership configuration")?;
    let docnode = Docnode::open_with_view(cli.docnode, view)
        .await
        .context("cannot open the document store")?;
    let register = cli.membership.redis_url.is_some().then_some(cli.membership);
    docnode.serve(register, codraft::shutdown::signal()).await?;
    telemetry.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_setting_is_defined_once() {
        codraft::assert_settings_defined_once(&super::Cli::command());
    }
}
