//! The wrong-password budget shared by every gateway of a cluster, kept in Redis.
//!
//! Counted per gateway, an attacker spread over N gateways (round-robin behind the load
//! balancer) gets N budgets. In Redis each (client address, document) has one counter that
//! lives a minute from its first wrong password (a fixed window) and, once the budget is
//! spent, a block key that lives a minute. Both expire by themselves, so Redis holds nothing
//! for long. When Redis does not answer, the caller falls back to its own in-memory budget:
//! an outage weakens the limit to per-gateway, it never opens or closes documents.

use std::{
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long a counter and a block live, in seconds.
const WINDOW_SECS: u64 = 60;

/// Least time between two warnings about Redis failing (an attack during an outage must not
/// flood the log).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The shared budget.
pub struct SharedGuesses {
    /// Lazily connected, with short timeouts: a password check must not wait on Redis.
    connection: ConnectionManager,
    /// REDIS_PREFIX.
    prefix: String,
    /// When Redis trouble was last logged.
    warned: Mutex<Option<Instant>>,
}

impl SharedGuesses {
    /// The budget in the Redis of `client`, under `prefix`. Connects lazily, so a Redis that
    /// is down now is not an error.
    pub fn new(client: redis::Client, prefix: &str) -> redis::RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.to_owned(),
            warned: Mutex::new(None),
        })
    }

    fn count_key(&self, addr: IpAddr, document: &str) -> String {
        format!("{}:guesses:{addr}:{document}", self.prefix)
    }

    fn block_key(&self, addr: IpAddr, document: &str) -> String {
        format!("{}:guess-block:{addr}:{document}", self.prefix)
    }

    /// Whether `addr` spent its budget on `document` within the last minute; `None` when
    /// Redis could not say.
    pub async fn is_blocked(&self, addr: IpAddr, document: &str) -> Option<bool> {
        let mut connection = self.connection.clone();
        let result: redis::RedisResult<bool> = redis::cmd("EXISTS")
            .arg(self.block_key(addr, document))
            .query_async(&mut connection)
            .await;
        self.answer(result)
    }

    /// Counts one wrong password from `addr` for `document`; `Some(true)` when that spent
    /// more than `per_minute` (the pair is then blocked for a minute), `None` when Redis
    /// could not count.
    pub async fn spend(&self, addr: IpAddr, document: &str, per_minute: u32) -> Option<bool> {
        let mut connection = self.connection.clone();
        let count_key = self.count_key(addr, document);
        // One transaction: the counter gets its expiry when it is created, never later, so
        // a crash between two commands cannot leave a counter that never expires.
        let counted: redis::RedisResult<(u64,)> = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&count_key)
            .arg(0)
            .arg("EX")
            .arg(WINDOW_SECS)
            .arg("NX")
            .ignore()
            .cmd("INCR")
            .arg(&count_key)
            .query_async(&mut connection)
            .await;
        let (count,) = self.answer(counted)?;
        if count <= u64::from(per_minute.max(1)) {
            return Some(false);
        }
        let blocked: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.block_key(addr, document))
            .arg(1)
            .arg("EX")
            .arg(WINDOW_SECS)
            .query_async(&mut connection)
            .await;
        // Spent is spent even if the block could not be written: refuse this one.
        let _ = self.answer(blocked);
        Some(true)
    }

    /// The value, or `None` with the failure logged (at most once a minute).
    fn answer<T>(&self, result: redis::RedisResult<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    *warned = Some(Instant::now());
                    tracing::warn!(%error, "wrong-password budget: Redis unavailable, counting on this gateway only");
                }
                None
            }
        }
    }
}
