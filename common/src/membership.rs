//! Who the live docnodes are: registration with a heartbeat, and a watched view.
//!
//! Docnodes register in Redis under REDIS_PREFIX: one sorted set `{prefix}:docnodes` whose
//! members are `NODE_ID=URL` and whose scores are expiry times (Unix milliseconds). A docnode
//! refreshes its score every quarter of the TTL and removes itself on shutdown; one that dies
//! simply stops refreshing and drops out when its score passes. Every change is announced on
//! `{prefix}:membership` so watchers refresh at once instead of at their next poll.
//!
//! A view is a `watch` channel of the live set. A Redis error never empties a view: routing
//! keeps the last known docnodes until Redis answers again. A static list (DOCNODES) is the
//! alternative for setups without discovery.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Args;
use futures::StreamExt;
use redis::{aio::ConnectionManager, AsyncCommands};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// One docnode as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// Stable identity (NODE_ID): what the hash ring hashes.
    pub id: String,
    /// gRPC URL gateways dial.
    pub url: String,
}

impl Member {
    /// Parses `ID=URL`, or a bare `URL` that is then its own id.
    pub fn parse(entry: &str) -> Self {
        match entry.split_once('=') {
            Some((id, url)) => Self {
                id: id.trim().to_owned(),
                url: url.trim().to_owned(),
            },
            None => Self {
                id: entry.trim().to_owned(),
                url: entry.trim().to_owned(),
            },
        }
    }

    fn encode(&self) -> String {
        format!("{}={}", self.id, self.url)
    }
}

/// The live docnodes, sorted by id.
pub type View = Arc<Vec<Member>>;

/// Membership settings shared by gateways and docnodes.
#[derive(Debug, Clone, Args)]
pub struct MembershipConfig {
    /// Redis for membership (and presence), e.g. redis://127.0.0.1:6379.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// CA certificates (PEM) that verify a `rediss://` REDIS_URL; without it, the system's
    /// roots. Managed Redis services with a private CA need it.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// Prefix of every Redis key and channel, so clusters (and tests) can share one Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "codraft")]
    pub redis_prefix: String,

    /// Static list of docnodes, comma separated: `URL` or `NODE_ID=URL`. Used instead of
    /// Redis discovery when set.
    #[arg(long, env = "DOCNODES", value_delimiter = ',')]
    pub docnodes: Vec<String>,

    /// Milliseconds a docnode stays in the live set without a heartbeat.
    #[arg(long, env = "MEMBERSHIP_TTL_MS", default_value_t = 2000)]
    pub membership_ttl_ms: u64,
}

impl MembershipConfig {
    /// The static members, if DOCNODES was given.
    pub fn static_members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .docnodes
            .iter()
            .filter(|e| !e.trim().is_empty())
            .map(|e| Member::parse(e))
            .collect();
        members.sort();
        members.dedup();
        members
    }

    /// How long a registration lives without a heartbeat.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.membership_ttl_ms.max(200))
    }

    fn key(&self) -> String {
        format!("{}:docnodes", self.redis_prefix)
    }

    fn channel(&self) -> String {
        format!("{}:membership", self.redis_prefix)
    }
}

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// REDIS_URL is not a valid Redis URL.
    #[error("invalid REDIS_URL: {0}")]
    BadUrl(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn client(config: &MembershipConfig, url: &str) -> Result<redis::Client, MembershipError> {
    crate::tls::redis_client(url, config.redis_ca_file.as_deref())
        .map_err(|e| MembershipError::BadUrl(e.to_string()))
}

/// A connection manager, or `None` with the reason logged (a refused certificate must show
/// in the log, not only as a docnode nobody can see). `failing` remembers that the last try
/// failed, so an outage is logged once when it starts, not at every retry.
async fn connect(redis: &redis::Client, failing: &mut bool) -> Option<ConnectionManager> {
    match ConnectionManager::new(redis.clone()).await {
        Ok(connection) => {
            if std::mem::take(failing) {
                info!("connected to Redis again");
            }
            Some(connection)
        }
        Err(error) => {
            if !std::mem::replace(failing, true) {
                warn!(%error, "cannot connect to Redis (REDIS_URL, REDIS_CA_FILE); retrying");
            }
            None
        }
    }
}

/// A view that never changes (DOCNODES, or a single in-process docnode).
pub fn fixed_view(members: Vec<Member>) -> (watch::Sender<View>, watch::Receiver<View>) {
    let mut members = members;
    members.sort();
    watch::channel(Arc::new(members))
}

/// Starts watching the live set: static when DOCNODES is given, from Redis when REDIS_URL is,
/// empty otherwise. The returned sender keeps a static view alive; drop it only at exit.
pub fn watch_view(
    config: &MembershipConfig,
) -> Result<(watch::Sender<View>, watch::Receiver<View>), MembershipError> {
    let statics = config.static_members();
    if !statics.is_empty() || config.redis_url.is_none() {
        return Ok(fixed_view(statics));
    }
    let url = config.redis_url.clone().unwrap_or_default();
    let redis = client(config, &url)?;
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    let config = config.clone();
    let sender = tx.clone();
    tokio::spawn(async move { watch_redis(redis, config, sender).await });
    Ok((tx, rx))
}

/// Keeps `view` equal to the live set: polls every quarter TTL and on every announcement.
async fn watch_redis(redis: redis::Client, config: MembershipConfig, view: watch::Sender<View>) {
    let poll = config.ttl() / 4;
    let (notify_tx, mut notify_rx) = tokio::sync::mpsc::channel::<()>(1);
    // Announcements: a separate connection in subscribe mode; reconnects on failure.
    let subscriber = redis.clone();
    let channel = config.channel();
    tokio::spawn(async move {
        loop {
            if let Ok(mut pubsub) = subscriber.get_async_pubsub().await {
                if pubsub.subscribe(&channel).await.is_ok() {
                    let mut messages = pubsub.on_message();
                    while messages.next().await.is_some() {
                        let _ = notify_tx.try_send(());
                    }
                }
            }
            if notify_tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut connection: Option<ConnectionManager> = None;
    let mut failing = false;
    loop {
        if connection.is_none() {
            connection = connect(&redis, &mut failing).await;
        }
        if let Some(con) = connection.as_mut() {
            match read_live(con, &config).await {
                Ok(live) => {
                    view.send_if_modified(|current| {
                        if **current == live {
                            return false;
                        }
                        info!(docnodes = ?live.iter().map(|m| &m.id).collect::<Vec<_>>(), "membership changed");
                        *current = Arc::new(live);
                        true
                    });
                }
                Err(error) => debug!(%error, "membership read failed; keeping the last view"),
            }
        }
        if view.is_closed() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = notify_rx.recv() => {}
        }
    }
}

async fn read_live(
    con: &mut ConnectionManager,
    config: &MembershipConfig,
) -> redis::RedisResult<Vec<Member>> {
    let entries: Vec<String> = con.zrangebyscore(config.key(), now_ms(), "+inf").await?;
    let mut members: Vec<Member> = entries.iter().map(|e| Member::parse(e)).collect();
    members.sort();
    // A node that re-registered with another URL appears twice until the old entry expires;
    // keep one entry per id (the newest registration is announced, so either will do briefly).
    members.dedup_by(|a, b| a.id == b.id);
    Ok(members)
}

/// A docnode's registration: refreshed by a background task until [`Registration::leave`].
pub struct Registration {
    member: Member,
    config: MembershipConfig,
    redis: redis::Client,
    healthy: watch::Receiver<bool>,
    /// Heartbeats that did not reach Redis, for the docnode's metrics.
    failures: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Registration {
    /// Registers `member` and keeps it registered. Redis being down is not an error here: the
    /// heartbeat keeps trying, and [`Registration::is_registered`] says whether it succeeds.
    pub fn start(
        config: &MembershipConfig,
        member: Member,
    ) -> Result<Option<Self>, MembershipError> {
        let Some(url) = config.redis_url.clone() else {
            return Ok(None);
        };
        let redis = client(config, &url)?;
        let (healthy_tx, healthy) = watch::channel(false);
        let failures = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(heartbeat(
            redis.clone(),
            config.clone(),
            member.clone(),
            healthy_tx,
            Arc::clone(&failures),
        ));
        Ok(Some(Self {
            member,
            config: config.clone(),
            redis,
            healthy,
            failures,
            task,
        }))
    }

    /// A receiver of whether the last heartbeat reached Redis (for readiness).
    pub fn health(&self) -> watch::Receiver<bool> {
        self.healthy.clone()
    }

    /// How many heartbeats have failed so far (a counter that only grows).
    pub fn heartbeat_failures(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.failures)
    }

    /// Whether the last heartbeat reached Redis.
    pub fn is_registered(&self) -> bool {
        *self.healthy.borrow()
    }

    /// Waits (at most `timeout`) until the registration reached Redis once.
    pub async fn wait_registered(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.healthy.wait_for(|h| *h))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops the heartbeat and removes this docnode from the live set, announcing it.
    pub async fn leave(self) {
        self.task.abort();
        let result: redis::RedisResult<()> = async {
            let mut con = self.redis.get_multiplexed_async_connection().await?;
            let _: i64 = con.zrem(self.config.key(), self.member.encode()).await?;
            let _: i64 = con.publish(self.config.channel(), "leave").await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => info!(node = %self.member.id, "left the cluster"),
            Err(error) => warn!(%error, "could not deregister; the entry expires by itself"),
        }
    }
}

async fn heartbeat(
    redis: redis::Client,
    config: MembershipConfig,
    member: Member,
    healthy: watch::Sender<bool>,
    failures: Arc<AtomicU64>,
) {
    let ttl = config.ttl();
    let mut announced = false;
    let mut connection: Option<ConnectionManager> = None;
    let mut failing = false;
    loop {
        if connection.is_none() {
            connection = connect(&redis, &mut failing).await;
        }
        let ok = match connection.as_mut() {
            Some(con) => {
                let expiry = now_ms() + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                let result: redis::RedisResult<()> = async {
                    let _: i64 = con.zadd(config.key(), member.encode(), expiry).await?;
                    // Drop long-dead entries so the set stays small.
                    let _: i64 = con
                        .zrembyscore(config.key(), "-inf", now_ms().saturating_sub(60_000))
                        .await?;
                    if !announced {
                        let _: i64 = con.publish(config.channel(), "join").await?;
                    }
                    Ok(())
                }
                .await;
                if let Err(error) = &result {
                    warn!(%error, "membership heartbeat failed");
                }
                result.is_ok()
            }
            None => false,
        };
        if !ok {
            failures.fetch_add(1, Ordering::Relaxed);
        }
        if ok && !announced {
            info!(node = %member.id, url = %member.url, "joined the cluster");
        }
        announced |= ok;
        healthy.send_if_modified(|h| std::mem::replace(h, ok) != ok);
        tokio::time::sleep(ttl / 4).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_with_and_without_ids() {
        assert_eq!(
            Member::parse("a=http://127.0.0.1:1"),
            Member {
                id: "a".into(),
                url: "http://127.0.0.1:1".into()
            }
        );
        assert_eq!(Member::parse(" http://x:1 ").id, "http://x:1");
    }
}
