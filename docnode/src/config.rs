//! Docnode settings: environment variables with matching command-line flags.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::Args;
use codraft_common::membership::{Member, MembershipConfig};

/// Everything a docnode can be told at start-up.
#[derive(Debug, Clone, Args)]
pub struct DocnodeConfig {
    /// gRPC listen address (ignored in standalone mode, which serves gRPC in process).
    #[arg(long, env = "DOCNODE_ADDR", default_value = "127.0.0.1:50051")]
    pub docnode_addr: SocketAddr,

    /// Address gateways dial to reach this docnode; defaults to DOCNODE_ADDR.
    #[arg(long, env = "ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// Stable identity of this docnode in the hash ring; defaults to the host name.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// Admin HTTP address: /metrics, /healthz, /readyz.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    pub admin_addr: SocketAddr,

    /// Directory of the embedded file store (used when DATABASE_URL is not set).
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Postgres URL (e.g. postgres://user@host:5432/codraft); when set, documents live there
    /// instead of the embedded file store.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// CA certificates (PEM) that verify Postgres under sslmode=verify-ca/verify-full (and
    /// require); `sslrootcert` in DATABASE_URL wins. Without either, the system's roots.
    #[arg(long, env = "DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,

    /// File holding the Postgres password (e.g. a mounted Secret); overrides one in the URL.
    #[arg(long, env = "DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,

    /// Most Postgres connections this docnode opens.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 8)]
    pub database_pool_size: usize,

    /// Days a document may go unopened and unedited before it is deleted (0: never).
    #[arg(long, env = "EXPIRY_DAYS", default_value_t = 0)]
    pub expiry_days: u64,

    /// Days the ops between history checkpoints are kept; after that only the checkpoints
    /// (one per SNAPSHOT_EVERY revisions and one per editing session) stay.
    #[arg(long, env = "HISTORY_RETENTION_DAYS", default_value_t = 30)]
    pub history_retention_days: u64,

    /// The same retention in seconds, overriding HISTORY_RETENTION_DAYS when set (for tests
    /// and for deployments that kept the old setting).
    #[arg(long, env = "COMPACT_RETENTION_SECS")]
    pub compact_retention_secs: Option<u64>,

    /// Seconds between sweeps (log compaction and expiry); 0 turns sweeping off.
    #[arg(long, env = "SWEEP_INTERVAL_SECS", default_value_t = 3600)]
    pub sweep_interval_secs: u64,

    /// Largest document, in KiB of code points (256 means 262,144 characters, as Rustpad).
    #[arg(long, env = "MAX_DOCUMENT_SIZE_KB", default_value_t = 256)]
    pub max_document_size_kb: u64,

    /// Committed edits each document keeps in memory to transform late edits against.
    #[arg(long, env = "HISTORY_WINDOW", default_value_t = 4096)]
    pub history_window: usize,

    /// Most bytes (KiB) of committed edits each document keeps in memory, besides the
    /// HISTORY_WINDOW count: whichever is reached first trims the window.
    #[arg(long, env = "HISTORY_WINDOW_KB", default_value_t = 16 * 1024)]
    pub history_window_kb: usize,

    /// Most edits of one document waiting for their commit (while the store is slow or
    /// down); beyond it, or beyond MAX_PENDING_KB, the document stops taking commands, so
    /// backpressure reaches its clients' sockets, until commits catch up.
    #[arg(long, env = "MAX_PENDING_EDITS", default_value_t = 1024)]
    pub max_pending_edits: usize,

    /// Most bytes (KiB) of one document's edits waiting for their commit.
    #[arg(long, env = "MAX_PENDING_KB", default_value_t = 8 * 1024)]
    pub max_pending_kb: usize,

    /// Seconds a document with no connections stays loaded.
    #[arg(long, env = "IDLE_UNLOAD_SECS", default_value_t = 60)]
    pub idle_unload_secs: u64,

    /// Milliseconds the group committer waits for more ops before a flush (0: flush at once,
    /// batching whatever arrived while the previous flush ran).
    #[arg(long, env = "COMMIT_WINDOW_MS", default_value_t = 0)]
    pub commit_window_ms: u64,

    /// Most ops in one group-commit transaction.
    #[arg(long, env = "COMMIT_MAX_BATCH", default_value_t = 2048)]
    pub commit_max_batch: usize,

    /// Group-commit flushes in flight at once (default: what the store can run at once to
    /// good effect, 1 for the embedded store, 2 for PostgreSQL).
    #[arg(long, env = "COMMIT_PARALLELISM")]
    pub commit_parallelism: Option<usize>,

    /// A snapshot of a document is written every this many committed ops.
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 500)]
    pub snapshot_every: u64,

    /// Frames queued for one client before it counts as lagging: it is then skipped and
    /// later sent one compacted catch-up.
    #[arg(long, env = "CLIENT_QUEUE", default_value_t = 512)]
    pub client_queue: usize,

    /// Most bytes (KiB) of frames queued for one client before it counts as lagging (besides
    /// the CLIENT_QUEUE count); fan-out frames share one copy of their entries, so this
    /// bounds what one slow client can pin.
    #[arg(long, env = "CLIENT_QUEUE_KB", default_value_t = 4 * 1024)]
    pub client_queue_kb: usize,

    /// Milliseconds a lagging client may stay unable to take its catch-up before it is
    /// closed with 4508.
    #[arg(long, env = "SLOW_CLIENT_GRACE_MS", default_value_t = 5000)]
    pub slow_client_grace_ms: u64,

    /// Seconds a shutdown may take to commit what is pending before the process exits.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,

    /// Most clients connected to one document.
    #[arg(long, env = "MAX_CONNECTIONS_PER_DOCUMENT", default_value_t = 2000)]
    pub max_connections_per_document: usize,

    /// Most documents loaded in memory at once; joins to further documents are refused
    /// (clients retry) until idle ones unload.
    #[arg(long, env = "MAX_LOADED_DOCUMENTS", default_value_t = 100_000)]
    pub max_loaded_documents: usize,

    /// Optional (mutual) TLS for the gRPC port: with a certificate the port speaks TLS only
    /// and the advertised URL is `https://`; with a CA as well, gateways must present a
    /// certificate it signed. Not parsed here: the `docnode` binary parses the GRPC_TLS_*
    /// settings itself and sets this, since the standalone binary (no gRPC port) parses a
    /// gateway's settings beside these and the gateway has the same ones.
    #[arg(skip)]
    pub grpc_tls: codraft_common::tls::GrpcTlsConfig,

    /// Seconds a user's presence (name, colour, cursor) lives in Redis without a heartbeat;
    /// heartbeats come every third of it. Users of a crashed docnode vanish after this.
    #[arg(long, env = "PRESENCE_TTL_SECS", default_value_t = 30)]
    pub presence_ttl_secs: u64,

    /// Least milliseconds between two cursor updates of one user sent to others (bursts are
    /// coalesced to the newest position).
    #[arg(long, env = "CURSOR_INTERVAL_MS", default_value_t = 33)]
    pub cursor_interval_ms: u64,

    /// Largest Yjs update (KiB) a client may send; a larger one closes its connection with
    /// 4413.
    #[arg(long, env = "YJS_MAX_UPDATE_KB", default_value_t = 1024)]
    pub yjs_max_update_kb: usize,

    /// Largest Yjs document (KiB of its stored state and updates); an update that would pass
    /// it closes its connection with 4413.
    #[arg(long, env = "YJS_MAX_DOCUMENT_KB", default_value_t = 16 * 1024)]
    pub yjs_max_document_kb: usize,

    /// Largest awareness message (KiB); larger ones are dropped.
    #[arg(long, env = "YJS_MAX_AWARENESS_KB", default_value_t = 64)]
    pub yjs_max_awareness_kb: usize,
}

impl DocnodeConfig {
    /// HISTORY_WINDOW_KB in bytes.
    pub fn history_window_bytes(&self) -> usize {
        self.history_window_kb.saturating_mul(1024)
    }

    /// MAX_PENDING_KB in bytes.
    pub fn max_pending_bytes(&self) -> usize {
        self.max_pending_kb.saturating_mul(1024)
    }

    /// CLIENT_QUEUE_KB in bytes.
    pub fn client_queue_bytes(&self) -> usize {
        self.client_queue_kb.saturating_mul(1024)
    }

    /// The largest document in code points.
    pub fn max_document_chars(&self) -> u64 {
        self.max_document_size_kb.saturating_mul(1024)
    }

    /// How long an unused document stays in memory.
    pub fn idle_unload(&self) -> Duration {
        Duration::from_secs(self.idle_unload_secs)
    }

    /// How long a document may go unused before it is deleted, if it ever is.
    pub fn expiry(&self) -> Option<Duration> {
        (self.expiry_days > 0).then(|| Duration::from_secs(self.expiry_days.saturating_mul(86_400)))
    }

    /// How long the ops between history checkpoints are kept.
    pub fn history_retention(&self) -> Duration {
        Duration::from_secs(
            self.compact_retention_secs
                .unwrap_or_else(|| self.history_retention_days.saturating_mul(86_400)),
        )
    }

    /// How long presence lives without a heartbeat.
    pub fn presence_ttl(&self) -> Duration {
        Duration::from_secs(self.presence_ttl_secs.max(1))
    }

    /// Least time between two cursor updates of one user.
    pub fn cursor_interval(&self) -> Duration {
        Duration::from_millis(self.cursor_interval_ms)
    }

    /// How long a lagging client may wait for room for its catch-up.
    pub fn slow_client_grace(&self) -> Duration {
        Duration::from_millis(self.slow_client_grace_ms)
    }

    /// The group-commit gathering window.
    pub fn commit_window(&self) -> Duration {
        Duration::from_millis(self.commit_window_ms)
    }

    /// The Postgres settings that live beside DATABASE_URL.
    pub fn database_security(&self) -> crate::store::pg_tls::PgSecurity {
        crate::store::pg_tls::PgSecurity {
            ca_file: self.database_ca_file.clone(),
            password_file: self.database_password_file.clone(),
        }
    }

    /// The gRPC URL gateways dial: ADVERTISE_ADDR (with `http://`, or `https://` under
    /// GRPC_TLS_CERT_FILE, added when it has no scheme), or DOCNODE_ADDR.
    pub fn advertise_url(&self) -> String {
        let addr = self
            .advertise_addr
            .clone()
            .unwrap_or_else(|| self.docnode_addr.to_string());
        if addr.contains("://") {
            addr
        } else if self.grpc_tls.serves_tls() {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        }
    }

    /// Why gateways elsewhere could not dial the address this docnode advertises, if they
    /// could not: `0.0.0.0` (or `::`) is nobody's address, and a loopback address is only
    /// this host's while DOCNODES or REDIS_URL name other hosts (so the cluster spans hosts).
    /// A docnode started with the DOCNODE_ADDR default and no ADVERTISE_ADDR is the usual
    /// cause; it starts anyway (a single-host setup is legitimate) but says so.
    pub fn unroutable_advertisement(&self, membership: &MembershipConfig) -> Option<String> {
        let url = self.advertise_url();
        let host = url_host(&url)?;
        let fix = "set ADVERTISE_ADDR to a name or address gateways can dial \
                   (e.g. http://docnode-0.docnode:50051)";
        match classify(&host) {
            HostKind::Unspecified => Some(format!(
                "this docnode advertises {url}, which no gateway can dial: {fix}"
            )),
            HostKind::Loopback => {
                let others: Vec<String> = membership
                    .docnodes
                    .iter()
                    .map(|entry| Member::parse(entry).url)
                    .chain(membership.redis_url.clone())
                    .filter_map(|url| url_host(&url))
                    .filter(|host| classify(host) == HostKind::Routable)
                    .collect();
                let first = others.first()?;
                Some(format!(
                    "this docnode advertises {url}, a loopback address, while the cluster \
                     names other hosts ({first}): gateways there cannot dial it; {fix}"
                ))
            }
            HostKind::Routable => None,
        }
    }

    /// This node's identity: NODE_ID, or the host name, or "docnode".
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_owned())
                        .filter(|h| !h.is_empty())
                })
                .unwrap_or_else(|| "docnode".to_owned())
        })
    }
}

/// What an advertised host means to a process on another machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKind {
    /// `0.0.0.0` or `::`: a listen address, never a destination.
    Unspecified,
    /// `127.0.0.0/8`, `::1`, `localhost`: this machine only.
    Loopback,
    /// Anything else.
    Routable,
}

fn classify(host: &str) -> HostKind {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost") {
        return HostKind::Loopback;
    }
    match bare.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => HostKind::Unspecified,
        Ok(ip) if ip.is_loopback() => HostKind::Loopback,
        _ => HostKind::Routable,
    }
}

/// The host of a URL such as `http://host:port/path` or `redis://:secret@host:6379/0` (no
/// user information, no port); `None` for a Unix socket or an empty host.
fn url_host(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    if scheme.contains("unix") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(end) = authority.find(']') {
        &authority[..=end]
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// The settings command-line flags give, as the docnode binary reads them (for tests).
#[cfg(test)]
pub(crate) fn from_flags(args: &[&str]) -> (DocnodeConfig, MembershipConfig) {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        docnode: DocnodeConfig,
        #[command(flatten)]
        membership: MembershipConfig,
    }
    let cli = Cli::try_parse_from(std::iter::once("docnode").chain(args.iter().copied()))
        .expect("valid flags");
    (cli.docnode, cli.membership)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warning(args: &[&str]) -> Option<String> {
        let (docnode, membership) = from_flags(args);
        docnode.unroutable_advertisement(&membership)
    }

    #[test]
    fn an_unspecified_address_is_never_routable() {
        let w = warning(&["--docnode-addr", "0.0.0.0:50051"]).expect("a warning");
        assert!(
            w.contains("http://0.0.0.0:50051") && w.contains("ADVERTISE_ADDR"),
            "{w}"
        );
        assert!(warning(&["--advertise-addr", "[::]:50051"]).is_some());
    }

    #[test]
    fn loopback_is_fine_while_everything_else_is_on_this_host() {
        assert_eq!(warning(&[]), None);
        assert_eq!(
            warning(&[
                "--docnodes",
                "a=http://127.0.0.1:50051,b=http://localhost:50052",
                "--redis-url",
                "redis://127.0.0.1:6379",
            ]),
            None
        );
    }

    #[test]
    fn loopback_is_unroutable_when_docnodes_or_redis_name_other_hosts() {
        let w = warning(&[
            "--docnodes",
            "a=http://127.0.0.1:50051,b=http://dn-1.dn:50051",
        ])
        .expect("a warning");
        assert!(w.contains("dn-1.dn") && w.contains("loopback"), "{w}");
        let w = warning(&["--redis-url", "rediss://:secret@cache.example.com:6380/0"])
            .expect("a warning");
        assert!(
            w.contains("cache.example.com") && !w.contains("secret"),
            "{w}"
        );
    }

    #[test]
    fn a_routable_advertisement_needs_no_warning() {
        assert_eq!(
            warning(&[
                "--docnode-addr",
                "0.0.0.0:50051",
                "--advertise-addr",
                "http://dn-0.dn:50051",
                "--redis-url",
                "redis://redis:6379",
            ]),
            None
        );
    }

    #[test]
    fn hosts_are_read_from_urls() {
        assert_eq!(url_host("http://[::1]:5").as_deref(), Some("[::1]"));
        assert_eq!(url_host("redis://u:p@h:1/0").as_deref(), Some("h"));
        assert_eq!(url_host("redis+unix:///run/redis.sock"), None);
        assert_eq!(url_host("dn:50051").as_deref(), Some("dn"));
    }
}
