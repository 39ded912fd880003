//! The awareness states of a Yjs document's clients (y-protocols' awareness, kept by the
//! server): each Yjs client id's newest state and clock, which connection sent it, and when
//! it was last renewed. Every change comes back as a [`Change`]: the message to relay, and
//! which clients appeared, changed or left (for presence in Redis).

use std::collections::HashMap;

use bytes::Bytes;
use tokio::time::{Duration, Instant};
use yrs::{
    sync::{awareness::AwarenessUpdateEntry, AwarenessUpdate, Message},
    updates::encoder::Encode,
    ClientID,
};

use crate::connection::ConnId;

/// What y-protocols sends as the state of a client that left.
const GONE: &str = "null";

/// One Yjs client's newest awareness state.
struct State {
    clock: u32,
    json: std::sync::Arc<str>,
    conn: ConnId,
    renewed: Instant,
}

/// Every client's newest state.
#[derive(Default)]
pub struct Awareness {
    states: HashMap<ClientID, State>,
}

/// What one awareness change did.
pub struct Change {
    /// The awareness message that tells every client.
    pub message: Bytes,
    /// Each client that changed: its id and new state, `None` when it left.
    pub clients: Vec<(u64, Option<std::sync::Arc<str>>)>,
}

impl Awareness {
    /// Takes a client's awareness update (newer clocks win, as in y-protocols); returns the
    /// message to relay to everyone, if anything changed.
    pub fn apply(&mut self, conn: ConnId, update: AwarenessUpdate, now: Instant) -> Option<Change> {
        let mut changed = HashMap::new();
        for (client, entry) in update.clients {
            let newer = match self.states.get(&client) {
                None => true,
                Some(known) => {
                    entry.clock > known.clock
                        || (entry.clock == known.clock && &*entry.json == GONE)
                }
            };
            if !newer {
                continue;
            }
            if &*entry.json == GONE {
                self.states.remove(&client);
            } else {
                self.states.insert(
                    client,
                    State {
                        clock: entry.clock,
                        json: entry.json.clone(),
                        conn,
                        renewed: now,
                    },
                );
            }
            changed.insert(client, entry);
        }
        (!changed.is_empty()).then(|| change(changed))
    }

    /// Every known state as one message, for a joiner (`None` when there is none).
    pub fn everyone(&self) -> Option<Bytes> {
        let clients: HashMap<ClientID, AwarenessUpdateEntry> = self
            .states
            .iter()
            .map(|(&client, state)| {
                (
                    client,
                    AwarenessUpdateEntry {
                        clock: state.clock,
                        json: state.json.clone(),
                    },
                )
            })
            .collect();
        (!clients.is_empty()).then(|| encode(clients))
    }

    /// Removes the states a connection sent; returns the message telling everyone.
    pub fn remove_connection(&mut self, conn: ConnId) -> Option<Change> {
        self.remove_where(|state| state.conn == conn)
    }

    /// Removes the states not renewed for `timeout`; returns the message telling everyone.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Option<Change> {
        self.remove_where(|state| now.duration_since(state.renewed) >= timeout)
    }

    /// When the oldest state expires, if there is one.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.states
            .values()
            .map(|s| s.renewed + super::AWARENESS_TIMEOUT)
            .min()
    }

    /// Every client's id and state.
    pub fn states(&self) -> impl Iterator<Item = (u64, &std::sync::Arc<str>)> {
        self.states
            .iter()
            .map(|(client, state)| (client.get(), &state.json))
    }

    fn remove_where(&mut self, gone: impl Fn(&State) -> bool) -> Option<Change> {
        let mut removed = HashMap::new();
        self.states.retain(|&client, state| {
            if gone(state) {
                removed.insert(
                    client,
                    AwarenessUpdateEntry {
                        clock: state.clock.wrapping_add(1),
                        json: GONE.into(),
                    },
                );
                false
            } else {
                true
            }
        });
        (!removed.is_empty()).then(|| change(removed))
    }
}

fn change(clients: HashMap<ClientID, AwarenessUpdateEntry>) -> Change {
    let changed = clients
        .iter()
        .map(|(client, entry)| {
            let state = (&*entry.json != GONE).then(|| entry.json.clone());
            (client.get(), state)
        })
        .collect();
    Change {
        message: encode(clients),
        clients: changed,
    }
}

fn encode(clients: HashMap<ClientID, AwarenessUpdateEntry>) -> Bytes {
    Bytes::from(Message::Awareness(AwarenessUpdate { clients }).encode_v1())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;

    fn update(client: u64, clock: u32, json: &str) -> AwarenessUpdate {
        let mut clients = HashMap::new();
        clients.insert(
            ClientID::new(client),
            AwarenessUpdateEntry {
                clock,
                json: json.into(),
            },
        );
        AwarenessUpdate { clients }
    }

    fn decoded(message: &Bytes) -> AwarenessUpdate {
        match Message::decode_v1(message) {
            Ok(Message::Awareness(update)) => update,
            other => panic!("not an awareness message: {other:?}"),
        }
    }

    #[test]
    fn newer_clocks_win_and_a_leaving_connection_is_announced() {
        let now = Instant::now();
        let mut awareness = Awareness::default();
        assert!(awareness.apply(1, update(7, 1, "{\"a\":1}"), now).is_some());
        // An older or equal clock changes nothing.
        assert!(awareness.apply(1, update(7, 1, "{\"a\":2}"), now).is_none());
        assert!(awareness.apply(1, update(7, 0, "{\"a\":3}"), now).is_none());
        assert!(awareness.apply(2, update(8, 5, "{\"b\":1}"), now).is_some());
        let all = decoded(&awareness.everyone().expect("two states"));
        assert_eq!(all.clients.len(), 2);
        let change = awareness.remove_connection(1).expect("one removed");
        assert_eq!(change.clients, vec![(7, None)]);
        let removed = decoded(&change.message);
        let entry = &removed.clients[&ClientID::new(7)];
        assert_eq!((entry.clock, &*entry.json), (2, GONE));
        assert_eq!(
            decoded(&awareness.everyone().expect("one left"))
                .clients
                .len(),
            1
        );
    }

    #[test]
    fn states_not_renewed_expire() {
        let start = Instant::now();
        let mut awareness = Awareness::default();
        awareness.apply(1, update(7, 1, "{}"), start);
        awareness.apply(2, update(8, 1, "{}"), start + Duration::from_secs(20));
        assert_eq!(
            awareness.next_expiry(),
            Some(start + super::super::AWARENESS_TIMEOUT)
        );
        let removed = awareness
            .expire(start + Duration::from_secs(31), Duration::from_secs(30))
            .expect("the first expired");
        assert_eq!(decoded(&removed.message).clients.len(), 1);
        assert!(awareness.everyone().is_some());
    }
}
