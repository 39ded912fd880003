//! The docnode's side of presence in Redis: one publisher task per docnode that writes what
//! the document actors report, and the read a document does when it loads (restore).
//!
//! Presence must never delay an edit, so actors hand changes over with `try_send` on a
//! bounded channel: when the publisher falls behind (Redis slow or down) changes are dropped
//! and counted. That is safe because presence is soft state: every actor republishes all its
//! users at each heartbeat (a third of PRESENCE_TTL_SECS), which also repairs Redis after an
//! outage. Without REDIS_URL (standalone) nothing is published and presence lives only in the
//! actors, as in Rustpad.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use codraft_common::presence::{PresenceEntry, PresenceRedis, PresenceWrite};
use prometheus::{IntCounter, IntGauge, Opts};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Changes queued for the publisher before further ones are dropped.
const QUEUE: usize = 8192;
/// Most changes written in one Redis round trip.
const BATCH: usize = 512;
/// How long a loading document waits for Redis to restore presence.
const RESTORE_TIMEOUT: Duration = Duration::from_millis(750);

/// Presence series.
#[derive(Clone)]
struct PresenceMetrics {
    /// Changes written to Redis.
    published: IntCounter,
    /// Changes dropped because the queue was full.
    dropped: IntCounter,
    /// Failed Redis writes (each a batch).
    errors: IntCounter,
    /// 1 while Redis is unreachable for presence.
    down: IntGauge,
    /// UserCursor frames queued to clients (one per recipient).
    cursor_frames: IntCounter,
}

impl PresenceMetrics {
    fn new() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("a constant metric name is valid")
        };
        Self {
            published: counter(
                "codraft_presence_published_total",
                "Presence changes written to Redis.",
            ),
            dropped: counter(
                "codraft_presence_dropped_total",
                "Presence changes dropped because the publisher queue was full (Redis slow or down).",
            ),
            errors: counter(
                "codraft_presence_redis_errors_total",
                "Presence writes to Redis that failed.",
            ),
            down: IntGauge::new(
                "codraft_presence_redis_down",
                "1 while Redis is unreachable for presence.",
            )
            .expect("a constant metric name is valid"),
            cursor_frames: counter(
                "codraft_presence_cursor_frames_total",
                "UserCursor frames queued to clients, one per recipient, after coalescing.",
            ),
        }
    }

    fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.published.clone()))?;
        registry.register(Box::new(self.dropped.clone()))?;
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.cursor_frames.clone()))?;
        registry.register(Box::new(self.down.clone()))
    }
}

/// The Redis side once connected.
struct Publisher {
    tx: mpsc::Sender<PresenceWrite>,
    redis: PresenceRedis,
    node: String,
}

/// A docnode's presence publisher: cheap to clone, a no-op until [`Presence::connect`].
#[derive(Clone)]
pub struct Presence {
    publisher: Arc<OnceLock<Publisher>>,
    metrics: PresenceMetrics,
    ttl: Duration,
}

impl Presence {
    /// Presence kept only in the actors (standalone, or until connected).
    pub fn in_process(ttl: Duration) -> Self {
        Self {
            publisher: Arc::default(),
            metrics: PresenceMetrics::new(),
            ttl: ttl.max(Duration::from_secs(1)),
        }
    }

    /// How long an entry lives without a heartbeat.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether changes go to Redis.
    pub fn is_shared(&self) -> bool {
        self.publisher.get().is_some()
    }

    /// The id of the docnode writing entries.
    pub fn node(&self) -> &str {
        self.publisher.get().map_or("", |p| p.node.as_str())
    }

    /// Adds the presence series to `registry`.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.metrics.register(registry)
    }

    /// Starts publishing to Redis at `url` (verified with `ca_file` under `rediss://`) under
    /// `prefix`, as docnode `node`. Documents that are already loaded start publishing at
    /// their next change.
    pub fn connect(
        &self,
        url: &str,
        ca_file: Option<&std::path::Path>,
        prefix: &str,
        node: &str,
    ) -> Result<(), String> {
        // The whole key outlives the longest entry a little, so late readers still see it.
        let redis = PresenceRedis::new(url, ca_file, prefix, self.ttl + Duration::from_secs(1))
            .map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let publisher = Publisher {
            tx,
            redis: redis.clone(),
            node: node.to_owned(),
        };
        if self.publisher.set(publisher).is_ok() {
            tokio::spawn(publish(redis, rx, self.metrics.clone()));
        }
        Ok(())
    }

    /// Counts UserCursor frames fanned out to `recipients` clients.
    pub fn count_cursor_frames(&self, recipients: usize) {
        self.metrics.cursor_frames.inc_by(recipients as u64);
    }

    /// Queues a change without waiting; drops and counts it when the queue is full.
    pub fn send(&self, write: PresenceWrite) {
        if let Some(publisher) = self.publisher.get() {
            if publisher.tx.try_send(write).is_err() {
                self.metrics.dropped.inc();
            }
        }
    }

    /// The live entries of a document in Redis, pruning expired ones; empty without Redis,
    /// on error or after a short timeout (a document never waits long for presence).
    pub async fn restore(&self, document: &str) -> Vec<PresenceEntry> {
        let Some(publisher) = self.publisher.get() else {
            return Vec::new();
        };
        match tokio::time::timeout(RESTORE_TIMEOUT, publisher.redis.read(document, true)).await {
            Ok(Ok(entries)) => entries,
            Ok(Err(error)) => {
                warn!(document, %error, "could not restore presence; starting without it");
                Vec::new()
            }
            Err(_) => {
                warn!(document, "presence restore timed out; starting without it");
                Vec::new()
            }
        }
    }
}

/// The publisher task: writes changes in batches; logs once when Redis goes away and once
/// when it is back, never per change.
async fn publish(
    redis: PresenceRedis,
    mut rx: mpsc::Receiver<PresenceWrite>,
    metrics: PresenceMetrics,
) {
    let mut down = false;
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        match redis.write(&batch).await {
            Ok(()) => {
                metrics.published.inc_by(batch.len() as u64);
                if down {
                    info!(
                        "presence: Redis reachable again; the next heartbeats republish everything"
                    );
                    down = false;
                    metrics.down.set(0);
                }
            }
            Err(error) => {
                metrics.errors.inc();
                if !down {
                    warn!(%error, "presence: Redis unreachable; presence stays local to each docnode until it returns");
                    down = true;
                    metrics.down.set(1);
                }
                // Do not spin on a dead Redis: what queues meanwhile is dropped and counted,
                // and the heartbeat repairs it.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        batch.clear();
    }
}
