//! Gateway settings: environment variables with matching command-line flags.

use std::{net::IpAddr, time::Duration};

use clap::Args;

use codraft_common::tls::GrpcTlsConfig;

use crate::{auth::AuthConfig, client_addr::Cidr};

/// Everything a gateway can be told at start-up.
#[derive(Debug, Clone, Args)]
pub struct GatewayConfig {
    /// HTTP and WebSocket port.
    #[arg(long, env = "PORT", default_value_t = 3030)]
    pub port: u16,

    /// Address to bind the HTTP port on.
    #[arg(long, env = "BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Largest WebSocket message a client may send, in KiB.
    #[arg(long, env = "MAX_MESSAGE_SIZE_KB", default_value_t = 2048)]
    pub max_message_size_kb: usize,

    /// Edits a connection may send per second on average (token bucket).
    #[arg(long, env = "EDITS_PER_SECOND", default_value_t = 100)]
    pub edits_per_second: u32,

    /// Edits a connection may send in a burst above the average.
    #[arg(long, env = "EDIT_BURST", default_value_t = 200)]
    pub edit_burst: u32,

    /// Messages of any kind a connection may send per second (cursor floods included).
    #[arg(long, env = "MESSAGES_PER_SECOND", default_value_t = 400)]
    pub messages_per_second: u32,

    /// Wrong one-time passwords a client address may try per minute.
    #[arg(long, env = "OTP_FAILURES_PER_MINUTE", default_value_t = 10)]
    pub otp_failures_per_minute: u32,

    /// Proxies (CIDRs, comma separated, e.g. 10.0.0.0/8,127.0.0.1) whose Forwarded /
    /// X-Forwarded-For headers name the client; from anyone else the headers are ignored
    /// and the TCP peer is the client. Empty: never read the headers.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,

    /// Most WebSocket connections this gateway holds at once.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Seconds between WebSocket pings to each client.
    #[arg(long, env = "PING_PERIOD_SECS", default_value_t = 54)]
    pub ping_period_secs: u64,

    /// Seconds without any message from a client (pongs included) before it is dropped.
    #[arg(long, env = "PONG_WAIT_SECS", default_value_t = 60)]
    pub pong_wait_secs: u64,

    /// Seconds one write to a client may take before the client counts as gone (a socket
    /// whose peer stopped reading, or a half-open connection) and is dropped.
    #[arg(long, env = "WRITE_WAIT_SECS", default_value_t = 10)]
    pub write_wait_secs: u64,

    /// Optional JWT access control.
    #[command(flatten)]
    pub auth: AuthConfig,

    /// Optional (mutual) TLS to the docnodes.
    #[command(flatten)]
    pub grpc_tls: GrpcTlsConfig,

    /// The client TLS built from `grpc_tls` once at start-up (files read and checked), used
    /// for every `https://` docnode.
    #[arg(skip)]
    pub docnode_tls: Option<tonic::transport::ClientTlsConfig>,
}

impl GatewayConfig {
    /// The largest client message in bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_size_kb.saturating_mul(1024)
    }

    /// Time between pings.
    pub fn ping_period(&self) -> Duration {
        Duration::from_secs(self.ping_period_secs.max(1))
    }

    /// Time a client may stay silent.
    pub fn pong_wait(&self) -> Duration {
        Duration::from_secs(self.pong_wait_secs.max(1))
    }

    /// Time one write to a client may take.
    pub fn write_wait(&self) -> Duration {
        Duration::from_secs(self.write_wait_secs.max(1))
    }
}
