//! The sweeper: one background task that keeps the store from growing without bound.
//!
//! Every SWEEP_INTERVAL_SECS it compacts the op log (rows below a history checkpoint, once
//! older than HISTORY_RETENTION_DAYS) and, when EXPIRY_DAYS is set, deletes documents nobody
//! opened or edited for that long (Kolabpad's expiry). Each sweep has a deadline, so a slow
//! or unreachable store delays the next sweep instead of piling sweeps up; failures are
//! logged and the next sweep tries again. The docnode aborts the task when it stops.

use std::{sync::Arc, time::Duration};

use tokio::{task::JoinHandle, time::MissedTickBehavior};
use tracing::{info, warn};

use crate::{config::DocnodeConfig, store::Store};

/// What the sweeper does and how often.
#[derive(Debug, Clone, Copy)]
pub struct SweepPolicy {
    /// Time between sweeps.
    pub interval: Duration,
    /// Op-log rows younger than this stay even below a checkpoint.
    pub compact_retention: Duration,
    /// Documents unused for this long are deleted; `None` keeps them forever.
    pub expiry: Option<Duration>,
}

impl SweepPolicy {
    /// The policy the configuration asks for, or `None` if sweeping is off.
    pub fn from_config(config: &DocnodeConfig) -> Option<Self> {
        (config.sweep_interval_secs > 0).then(|| Self {
            interval: Duration::from_secs(config.sweep_interval_secs),
            compact_retention: config.history_retention(),
            expiry: config.expiry(),
        })
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Op-log rows deleted by compaction.
    pub compacted: u64,
    /// Documents deleted as expired.
    pub expired: u64,
}

/// Starts the sweeper; the first sweep runs one interval (plus a little jitter, so docnodes
/// started together do not sweep together) after start.
pub fn start(store: Arc<dyn Store>, policy: SweepPolicy) -> JoinHandle<()> {
    tokio::spawn(async move {
        let jitter_ms = u64::try_from(policy.interval.as_millis() / 10).unwrap_or(u64::MAX);
        let first = policy.interval + Duration::from_millis(rand::random_range(0..=jitter_ms));
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + first, policy.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            // A sweep may take at most one interval; the store's own calls have deadlines too.
            match tokio::time::timeout(policy.interval, sweep(&*store, &policy)).await {
                Ok(Ok(report)) => info!(
                    compacted_rows = report.compacted,
                    expired_documents = report.expired,
                    "sweep done"
                ),
                Ok(Err(error)) => warn!(%error, "sweep failed; the next one will try again"),
                Err(_) => warn!(
                    interval = ?policy.interval,
                    "sweep did not finish within one interval; the next one will continue"
                ),
            }
        }
    })
}

/// Runs one sweep: compaction, then expiry if it is on.
pub async fn sweep(
    store: &dyn Store,
    policy: &SweepPolicy,
) -> Result<SweepReport, crate::store::StoreError> {
    let compacted = store.compact(policy.compact_retention).await?;
    let expired = match policy.expiry {
        Some(unused_for) => store.delete_expired(unused_for).await?,
        None => 0,
    };
    Ok(SweepReport { compacted, expired })
}
