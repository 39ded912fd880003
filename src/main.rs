//! `codraft`: standalone mode. A gateway and a docnode in one process; the gateway calls the
//! docnode through the same contract as in a cluster, without the wire (`Link::InProcess`); documents
//! live in the embedded file store under DATA_DIR. With no configuration it serves the editor
//! at http://localhost:3030.
//!
//! The admin port is off unless ADMIN_ADDR is given explicitly (the docnode's default,
//! 127.0.0.1:9090, is not taken here: a laptop run should not claim a second port, and two
//! standalone processes on one machine should not collide on it). Off, the public port keeps
//! `/healthz` and `/readyz`, and `/metrics` is not served.

use anyhow::Context;
use clap::{parser::ValueSource, CommandFactory, FromArgMatches, Parser};
use codraft_common::TelemetryConfig;
use codraft_docnode::{Docnode, DocnodeConfig};
use codraft_gateway::{link::Link, Gateway, GatewayConfig, Ring, RingNode};

/// codraft standalone: gateway and docnode in one process.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    gateway: GatewayConfig,
    #[command(flatten)]
    docnode: DocnodeConfig,
    #[command(flatten)]
    telemetry: TelemetryConfig,
}

fn main() -> anyhow::Result<()> {
    codraft_common::sched::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let admin_addr = match matches.value_source("admin_addr") {
        Some(ValueSource::EnvVariable | ValueSource::CommandLine) => matches
            .get_one::<std::net::SocketAddr>("admin_addr")
            .copied(),
        _ => None,
    };
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Kept to the end: dropping it exports the spans still queued.
    let telemetry = codraft_common::telemetry::init(&cli.telemetry, "codraft")?;
    codraft::limits::raise_open_files_limit();
    let node_id = cli.docnode.node_id();
    let docnode = Docnode::open(cli.docnode)
        .await
        .context("cannot open the document store")?;
    let ring = Ring::new(vec![RingNode {
        id: node_id,
        url: "in-process".into(),
        link: Link::InProcess(docnode.in_process()),
    }]);
    // One registry for both halves: the gateway's `/metrics` shows the docnode's series too.
    let gateway = Gateway::with_ring(cli.gateway, ring)
        .with_auth_from_config()?
        .with_metrics_registry(docnode.metrics_registry().clone())
        .with_admin_addr(admin_addr);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(gateway.serve(async {
        let _ = stop_rx.await;
    }));
    codraft::shutdown::signal().await;
    // Documents first: they commit what is pending and close their clients, then the HTTP
    // server has no open sockets left to wait for.
    docnode.shutdown().await;
    let _ = stop_tx.send(());
    serving.await.context("gateway task failed")??;
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
