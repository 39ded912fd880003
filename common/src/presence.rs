//! Presence in Redis: the key layout, the stored entry, and the reads and writes both sides
//! need (the docnode writes and restores, any gateway reads for `GET .../presence`).
//!
//! Per document, under REDIS_PREFIX:
//!
//! - hash `{prefix}:presence:{document}`: one field per user, named `c:{client id}` when the
//!   client sent an exactly-once id (so a reconnect can take its entry over) or `u:{user id}`;
//!   the value is JSON with the user id, name, hue, cursors and an expiry time. Redis 7.0 has
//!   no per-field TTL, so readers drop fields whose expiry passed, and the key as a whole has
//!   a TTL that every write refreshes: a document nobody writes for a TTL disappears.
//! - channel `{prefix}:presence-events:{document}`: every change, as JSON, for observers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{json, Value};

/// One user present in a document, as stored in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The hash field: `c:{client id}` or `u:{user id}`.
    pub key: String,
    /// The user id other clients know the user by.
    pub user_id: u64,
    /// Name and hue, once the client sent them.
    pub info: Option<(String, u32)>,
    /// Cursor positions and selections (code points), once the client sent them.
    pub cursor: Option<PresenceCursor>,
    /// The docnode that wrote the entry.
    pub node: String,
    /// Unix milliseconds after which the entry no longer counts.
    pub expires_ms: u64,
}

/// Cursor positions and selections of one user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceCursor {
    /// Caret positions.
    pub cursors: Vec<u64>,
    /// Selections as (start, end).
    pub selections: Vec<(u64, u64)>,
}

/// The hash field of a user: by exactly-once client id when there is one.
pub fn entry_key(client_id: Option<&str>, user_id: u64) -> String {
    match client_id {
        Some(client) => format!("c:{client}"),
        None => format!("u:{user_id}"),
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl PresenceEntry {
    /// The JSON value stored in the hash (the key is the field, so it is not repeated).
    pub fn to_json(&self) -> Value {
        json!({
            "user_id": self.user_id,
            "info": self.info.as_ref().map(|(name, hue)| json!({"name": name, "hue": hue})),
            "cursor": self.cursor.as_ref().map(|c| json!({
                "cursors": c.cursors,
                "selections": c.selections.iter().map(|(s, e)| [s, e]).collect::<Vec<_>>(),
            })),
            "node": self.node,
            "expires_ms": self.expires_ms,
        })
    }

    /// Parses a stored value; `None` for anything malformed (Redis is shared, so be wary).
    pub fn from_json(key: &str, text: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(text).ok()?;
        let info = match value.get("info") {
            Some(Value::Object(info)) => Some((
                info.get("name")?.as_str()?.to_owned(),
                u32::try_from(info.get("hue")?.as_u64()?).ok()?,
            )),
            _ => None,
        };
        let cursor = match value.get("cursor") {
            Some(Value::Object(c)) => Some(PresenceCursor {
                cursors: c
                    .get("cursors")?
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_u64)
                    .collect(),
                selections: c
                    .get("selections")?
                    .as_array()?
                    .iter()
                    .filter_map(|s| Some((s.get(0)?.as_u64()?, s.get(1)?.as_u64()?)))
                    .collect(),
            }),
            _ => None,
        };
        Some(Self {
            key: key.to_owned(),
            user_id: value.get("user_id")?.as_u64()?,
            info,
            cursor,
            node: value
                .get("node")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            expires_ms: value.get("expires_ms")?.as_u64()?,
        })
    }

    /// The entry as the presence API shows it (no client id: that one is the client's own).
    pub fn to_api_json(&self) -> Value {
        json!({
            "user_id": self.user_id,
            "name": self.info.as_ref().map(|(name, _)| name),
            "hue": self.info.as_ref().map(|(_, hue)| hue),
            "cursors": self.cursor.as_ref().map(|c| c.cursors.clone()).unwrap_or_default(),
            "selections": self.cursor.as_ref()
                .map(|c| c.selections.iter().map(|(s, e)| [*s, *e]).collect::<Vec<_>>())
                .unwrap_or_default(),
            "node": self.node,
        })
    }
}

/// A change to a document's presence, for [`PresenceRedis::write`].
#[derive(Debug, Clone)]
pub enum PresenceWrite {
    /// A user appeared or changed.
    Put {
        /// The document.
        document: String,
        /// The user's entry.
        entry: PresenceEntry,
    },
    /// A user left.
    Remove {
        /// The document.
        document: String,
        /// The hash field.
        key: String,
        /// The user id, for the event.
        user_id: u64,
    },
    /// The heartbeat: every local user of a document again, with a fresh expiry.
    Refresh {
        /// The document.
        document: String,
        /// Every entry.
        entries: Vec<PresenceEntry>,
    },
}

/// Why a presence read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// REDIS_URL is not a valid Redis URL.
    #[error("invalid REDIS_URL: {0}")]
    BadUrl(String),
    /// Redis did not answer (or answered an error).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Presence in one Redis under one prefix. Cheap to clone; reconnects by itself.
#[derive(Clone)]
pub struct PresenceRedis {
    prefix: String,
    connection: ConnectionManager,
    ttl: Duration,
}

impl PresenceRedis {
    /// Presence at `url` under `prefix`; `ttl` is the whole key's TTL each write refreshes.
    /// `ca_file` verifies a `rediss://` server (REDIS_CA_FILE). Connects lazily, so a Redis
    /// that is down now is not an error.
    pub fn new(
        url: &str,
        ca_file: Option<&std::path::Path>,
        prefix: &str,
        ttl: Duration,
    ) -> Result<Self, PresenceError> {
        let client = crate::tls::redis_client(url, ca_file)
            .map_err(|e| PresenceError::BadUrl(e.to_string()))?;
        // Short timeouts: presence is soft state, and a Redis outage must not queue work.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(1000)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            prefix: prefix.to_owned(),
            connection,
            ttl,
        })
    }

    /// The hash of a document's presence.
    pub fn key(&self, document: &str) -> String {
        format!("{}:presence:{document}", self.prefix)
    }

    /// The channel of a document's presence changes.
    pub fn channel(&self, document: &str) -> String {
        format!("{}:presence-events:{document}", self.prefix)
    }

    /// Applies a batch of changes in one round trip.
    pub async fn write(&self, writes: &[PresenceWrite]) -> Result<(), PresenceError> {
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for write in writes {
            match write {
                PresenceWrite::Put { document, entry } => {
                    let key = self.key(document);
                    let value = entry.to_json();
                    pipe.hset(&key, &entry.key, value.to_string())
                        .ignore()
                        .pexpire(&key, ttl_ms)
                        .ignore()
                        .publish(
                            self.channel(document),
                            json!({"put": entry.to_api_json()}).to_string(),
                        )
                        .ignore();
                }
                PresenceWrite::Remove {
                    document,
                    key,
                    user_id,
                } => {
                    pipe.hdel(self.key(document), key)
                        .ignore()
                        .publish(self.channel(document), json!({"left": user_id}).to_string())
                        .ignore();
                }
                PresenceWrite::Refresh { document, entries } => {
                    if entries.is_empty() {
                        continue;
                    }
                    let key = self.key(document);
                    let items: Vec<(String, String)> = entries
                        .iter()
                        .map(|e| (e.key.clone(), e.to_json().to_string()))
                        .collect();
                    pipe.hset_multiple(&key, &items)
                        .ignore()
                        .pexpire(&key, ttl_ms)
                        .ignore();
                }
            }
        }
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection).await?;
        Ok(())
    }

    /// The live entries of a document (expired ones are left out, and pruned when `prune`).
    pub async fn read(
        &self,
        document: &str,
        prune: bool,
    ) -> Result<Vec<PresenceEntry>, PresenceError> {
        let mut connection = self.connection.clone();
        let key = self.key(document);
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut connection)
            .await?;
        let now = now_ms();
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (field, value) in fields {
            match PresenceEntry::from_json(&field, &value) {
                Some(entry) if entry.expires_ms > now => live.push(entry),
                _ => dead.push(field),
            }
        }
        if prune && !dead.is_empty() {
            let _: Result<i64, _> = redis::cmd("HDEL")
                .arg(&key)
                .arg(&dead)
                .query_async(&mut connection)
                .await;
        }
        live.sort_by_key(|e| e.user_id);
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_json() {
        let entry = PresenceEntry {
            key: "c:abc".into(),
            user_id: 42,
            info: Some(("Ada".into(), 120)),
            cursor: Some(PresenceCursor {
                cursors: vec![3, 9],
                selections: vec![(1, 4)],
            }),
            node: "dn0".into(),
            expires_ms: 1_000,
        };
        let text = entry.to_json().to_string();
        assert_eq!(PresenceEntry::from_json("c:abc", &text), Some(entry));
        assert_eq!(PresenceEntry::from_json("x", "not json"), None);
        assert_eq!(entry_key(None, 7), "u:7");
        assert_eq!(entry_key(Some("k"), 7), "c:k");
    }
}
