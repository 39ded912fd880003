//! `gateway`: the stateless WebSocket front of a codraft cluster.

use anyhow::Context;
use clap::Parser;
use codraft_common::membership::{self, MembershipConfig};
use codraft_common::{admin::AdminConfig, TelemetryConfig};
use codraft_gateway::{Gateway, GatewayConfig};

/// codraft gateway: relays client WebSockets to the docnodes that own their documents.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    gateway: GatewayConfig,
    #[command(flatten)]
    admin: AdminConfig,
    #[command(flatten)]
    membership: MembershipConfig,
    #[command(flatten)]
    telemetry: TelemetryConfig,
}

fn main() -> anyhow::Result<()> {
    codraft_common::sched::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Kept to the end: dropping it exports the spans still queued.
    let telemetry = codraft_common::telemetry::init(&cli.telemetry, "codraft-gateway")?;
    codraft::limits::raise_open_files_limit();
    if cli.membership.docnodes.is_empty() && cli.membership.redis_url.is_none() {
        anyhow::bail!(
            "no docnodes: set REDIS_URL for discovery, or DOCNODES (e.g. DOCNODES=a=http://127.0.0.1:50051)"
        );
    }
    let (_keep_view, view) =
        membership::watch_view(&cli.membership).context("bad membership configuration")?;
    let mut gateway = Gateway::with_view(cli.gateway, view)?
        .with_auth_from_config()?
        .with_admin_addr(cli.admin.admin_addr);
    if let Some(url) = &cli.membership.redis_url {
        let redis = codraft_common::tls::redis_client(url, cli.membership.redis_ca_file.as_deref())
            .context("REDIS_URL / REDIS_CA_FILE")?;
        gateway = gateway.with_shared_guesses(redis, &cli.membership.redis_prefix)?;
    }
    if let Some(presence) = codraft_gateway::presence::redis(&cli.membership) {
        gateway = gateway
            .with_routes(move |state| codraft_gateway::presence::routes(presence, state.clone()));
    }
    gateway.serve(codraft::shutdown::signal()).await?;
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
