//! The gateway's Prometheus series, registered once per gateway in the process's registry.
//!
//! Every series is listed, with its meaning and the alerts worth setting on it, in
//! docs/operations.md. Counters and the round-trip histogram are updated where things happen
//! (the HTTP handlers, the relay); the connection and docnode gauges read the gateway's own
//! state at scrape time, so they can never drift from it.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, PullingGauge,
    Registry,
};

/// `limit` of [`GatewayMetrics::rate_limited`]: EDITS_PER_SECOND / EDIT_BURST.
pub const LIMIT_EDITS: &str = "edits";
/// `limit` of [`GatewayMetrics::rate_limited`]: MESSAGES_PER_SECOND.
pub const LIMIT_MESSAGES: &str = "messages";
/// `limit` of [`GatewayMetrics::rate_limited`]: OTP_FAILURES_PER_MINUTE.
pub const LIMIT_OTP: &str = "otp";

/// The gateway's series. Cheap to share: every field is a handle to shared state.
pub struct GatewayMetrics {
    registry: Registry,
    /// Edit messages relayed to docnodes.
    pub edits: IntCounter,
    /// Time from an Edit message to the History entry that acknowledges it.
    pub edit_round_trip: Histogram,
    /// WebSocket closes sent to clients, by close `code`.
    pub closes: IntCounterVec,
    /// Connections closed (or refused) for exceeding a rate, by `limit`.
    pub rate_limited: IntCounterVec,
    /// Requests refused for their token or password, by `reason`.
    pub auth_refusals: IntCounterVec,
    /// WebSocket upgrades refused because MAX_CONNECTIONS was reached.
    pub connections_refused: IntCounter,
    /// Live connections carried to a document's new owner, by `outcome`.
    pub moves: IntCounterVec,
    /// Time from the old owner letting a connection go to the new owner confirming it.
    pub move_duration: Histogram,
}

/// `outcome` of a move: the connection now talks to the new owner.
pub const MOVE_DONE: &str = "moved";
/// `outcome` of a move: it could not be done and the socket was closed (4503).
pub const MOVE_FAILED: &str = "failed";
/// `outcome` of a move: the connection could not be moved at all (translation unknown).
pub const MOVE_REFUSED: &str = "not_movable";

impl GatewayMetrics {
    /// Registers the gateway's series in `registry`, with gauges reading the open connection
    /// count and the number of docnodes `docnodes` says the gateway routes to. Fails only if they are already there (two
    /// gateways sharing one registry).
    pub fn register(
        registry: &Registry,
        connections: Arc<AtomicUsize>,
        docnodes: impl Fn() -> usize + Send + Sync + 'static,
    ) -> prometheus::Result<Arc<Self>> {
        let metrics = Self {
            registry: registry.clone(),
            edits: IntCounter::new(
                "codraft_gateway_edits_total",
                "Edit messages relayed from clients to docnodes.",
            )?,
            edit_round_trip: Histogram::with_opts(
                HistogramOpts::new(
                    "codraft_edit_round_trip_seconds",
                    "Time from a client's Edit message to the History entry acknowledging it, \
                     as the gateway sees it (transform, group commit and fan-out included).",
                )
                .buckets(exponential_buckets(0.000_5, 2.0, 15)?),
            )?,
            closes: IntCounterVec::new(
                Opts::new(
                    "codraft_closes_total",
                    "WebSocket closes sent to clients, by close code (docs/protocol.md).",
                ),
                &["code"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "codraft_rate_limited_total",
                    "Clients stopped for exceeding a rate limit, by limit.",
                ),
                &["limit"],
            )?,
            auth_refusals: IntCounterVec::new(
                Opts::new(
                    "codraft_auth_refusals_total",
                    "Requests refused for a missing, invalid or insufficient token, or a wrong \
                     document password, by reason.",
                ),
                &["reason"],
            )?,
            connections_refused: IntCounter::new(
                "codraft_connections_refused_total",
                "WebSocket upgrades refused because the gateway was at MAX_CONNECTIONS.",
            )?,
            moves: IntCounterVec::new(
                Opts::new(
                    "codraft_gateway_moves_total",
                    "Live client connections carried to a document's new owner without closing \
                     the WebSocket, by outcome (moved, failed, not_movable).",
                ),
                &["outcome"],
            )?,
            move_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "codraft_gateway_move_seconds",
                    "Time from the old owner letting a connection go to the new owner \
                     confirming it (the client's pause).",
                )
                .buckets(exponential_buckets(0.001, 2.0, 14)?),
            )?,
        };
        let open = PullingGauge::new(
            "codraft_connections",
            "Client WebSockets open on this gateway.",
            Box::new(move || connections.load(Ordering::Relaxed) as f64),
        )?;
        let docnodes = PullingGauge::new(
            "codraft_gateway_docnodes",
            "Docnodes this gateway routes to (its membership view).",
            Box::new(move || docnodes() as f64),
        )?;
        registry.register(Box::new(open))?;
        registry.register(Box::new(docnodes))?;
        registry.register(Box::new(metrics.edits.clone()))?;
        registry.register(Box::new(metrics.edit_round_trip.clone()))?;
        registry.register(Box::new(metrics.closes.clone()))?;
        registry.register(Box::new(metrics.rate_limited.clone()))?;
        registry.register(Box::new(metrics.auth_refusals.clone()))?;
        registry.register(Box::new(metrics.connections_refused.clone()))?;
        registry.register(Box::new(metrics.moves.clone()))?;
        registry.register(Box::new(metrics.move_duration.clone()))?;
        // Pre-create the label sets alerts look at, so a quiet gateway shows 0, not nothing.
        for limit in [LIMIT_EDITS, LIMIT_MESSAGES, LIMIT_OTP] {
            metrics.rate_limited.with_label_values(&[limit]);
        }
        for outcome in [MOVE_DONE, MOVE_FAILED, MOVE_REFUSED] {
            metrics.moves.with_label_values(&[outcome]);
        }
        Ok(Arc::new(metrics))
    }

    /// The registry holding these series (and whatever else shares it).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts a close sent to a client.
    pub fn closed(&self, code: u16) {
        self.closes
            .with_label_values(&[code.to_string().as_str()])
            .inc();
    }
}
