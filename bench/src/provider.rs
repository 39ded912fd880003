//! A y-websocket provider for the load generator: one WebSocket to a Yjs room, the sync
//! handshake, one-character inserts into the `Y.Text` the web editor edits, and just enough
//! decoding of what comes back to recognise its own updates.
//!
//! It speaks y-protocols as y-websocket's client does (sync step 1 on open, step 2 in answer
//! to the server's step 1, updates as sync message type 0, sub-type 2), with two savings that
//! keep it cheap on a machine it shares with the server:
//!
//! - it never applies what other providers send: its own `yrs::Doc` holds only its own
//!   inserts, always appended after its previous one, so each update names a left origin
//!   the server already has (a valid concurrent edit, like a client typing at its own end
//!   of a shared line);
//! - of an incoming update it reads only the message tags and the first struct group's
//!   client id and clock (a few varints), which is what tells its own echo from the rest.
//!
//! Errors reuse the test kit's [`ClientError`], so the scenarios' connection helpers
//! (`connect_many_with`) serve both protocols.

use std::time::Duration;

use codraft_testkit::client::ClientError;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{protocol::WebSocketConfig, Message},
    MaybeTlsStream, WebSocketStream,
};
use yrs::{
    sync::{Message as YMessage, SyncMessage},
    updates::{decoder::Decode, encoder::Encode},
    GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The `Y.Text` every provider types into: the one codraft's web editor binds and
/// `GET /api/text/y:<room>` reads.
pub const TEXT_ROOT: &str = "codemirror";

/// y-protocols' tags.
const MSG_SYNC: u64 = 0;
const SYNC_STEP_1: u64 = 0;
const SYNC_STEP_2: u64 = 1;
const SYNC_UPDATE: u64 = 2;

/// What the provider typed: the keys cycle through the alphabet.
const KEYS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// Yjs client ids for a run's providers: distinct within the run, random across runs (two
/// runs against one server never share one), in the 32-bit range Yjs' own clients use.
#[derive(Debug, Clone, Copy)]
pub struct ClientIds {
    base: u32,
}

impl ClientIds {
    /// A random range of ids.
    pub fn random() -> Self {
        Self {
            base: rand::random(),
        }
    }

    /// The id of provider `index` (never 0).
    pub fn get(self, index: usize) -> u64 {
        let id = self.base.wrapping_add(index as u32);
        u64::from(if id == 0 { u32::MAX } else { id })
    }
}

/// A server message, as far as the provider reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A sync update or step 2 whose first struct group is `client`'s, from `clock` on
    /// (`None` for an update without structs, e.g. an empty step 2 or a delete set alone).
    Update {
        /// Whether it was a step 2 (the answer to a step 1) rather than an update.
        step2: bool,
        /// The first struct group's client and start clock.
        first: Option<(u64, u64)>,
    },
    /// The server's sync step 1.
    Step1,
    /// Anything else (awareness, auth, pings, other tags).
    Other,
}

/// Reads a lib0 variable-length unsigned integer at `*at`, moving past it.
fn read_var(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Reads the tags of a binary y-websocket message and, for an update or step 2, the first
/// struct group's client and clock; `None` if the message is cut short.
pub fn peek(message: &[u8]) -> Option<Incoming> {
    let mut at = 0;
    if read_var(message, &mut at)? != MSG_SYNC {
        return Some(Incoming::Other);
    }
    let step2 = match read_var(message, &mut at)? {
        SYNC_STEP_1 => return Some(Incoming::Step1),
        SYNC_STEP_2 => true,
        SYNC_UPDATE => false,
        _ => return Some(Incoming::Other),
    };
    let _length = read_var(message, &mut at)?;
    // Update v1: number of struct groups, then per group: number of structs, client, clock.
    let groups = read_var(message, &mut at)?;
    let first = if groups == 0 {
        None
    } else {
        let _structs = read_var(message, &mut at)?;
        let client = read_var(message, &mut at)?;
        let clock = read_var(message, &mut at)?;
        Some((client, clock))
    };
    Some(Incoming::Update { step2, first })
}

/// `update` as a y-websocket sync message (type 0, sub-type 2).
fn update_message(update: Vec<u8>) -> Vec<u8> {
    YMessage::Sync(SyncMessage::Update(update)).encode_v1()
}

/// One y-websocket connection to a room, synced.
pub struct Provider {
    socket: Socket,
    /// The provider's own inserts (see the module comment).
    doc: yrs::Doc,
    text: TextRef,
    /// Its Yjs client id.
    client: u64,
    /// Characters inserted so far (the next insert's clock: one clock per character).
    typed: u64,
    /// The server's step 2 (the room's state when the provider joined), kept only when asked
    /// for (see [`Provider::connect`]).
    pub initial_state: Option<Vec<u8>>,
}

/// WebSocket settings: small read buffers, as the test kit's client uses (tungstenite
/// zero-fills its whole read buffer before each read).
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4 * 1024)
}

impl Provider {
    /// Connects to `{prefix}/{room}` (codraft: `ws://host:port/yjs`; y-websocket's server:
    /// `ws://host:port`) as Yjs client `client`, and syncs: sends step 1, answers the
    /// server's step 1 with step 2, and returns once the server's step 2 arrived. With
    /// `keep_state` the server's step 2 is kept in [`Provider::initial_state`].
    pub async fn connect(
        prefix: &str,
        room: &str,
        client: u64,
        keep_state: bool,
    ) -> Result<Self, ClientError> {
        let url = format!("{prefix}/{room}");
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(socket_config()), false).await?;
        // Nagle's algorithm off, as a browser has it. (Only plain sockets here: the TLS
        // variants exist only when a crate enables tokio-tungstenite's TLS features.)
        if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
            tcp.set_nodelay(true)
                .map_err(|e| ClientError::Socket(e.into()))?;
        }
        let doc = yrs::Doc::with_client_id(client);
        let text = doc.get_or_insert_text(TEXT_ROOT);
        let mut provider = Self {
            socket,
            doc,
            text,
            client,
            typed: 0,
            initial_state: None,
        };
        let step1 = YMessage::Sync(SyncMessage::SyncStep1(StateVector::default())).encode_v1();
        provider.socket.send(Message::binary(step1)).await?;
        loop {
            let message = provider.next_binary().await?;
            match peek(&message) {
                Some(Incoming::Step1) => provider.answer_step1(&message).await?,
                Some(Incoming::Update { step2: true, .. }) => {
                    if keep_state {
                        provider.initial_state = Some(step2_update(&message)?);
                    }
                    return Ok(provider);
                }
                Some(_) => {}
                None => return Err(ClientError::Protocol("a message cut short".into())),
            }
        }
    }

    /// The provider's Yjs client id.
    pub fn client(&self) -> u64 {
        self.client
    }

    /// Characters this provider inserted.
    pub fn typed(&self) -> u64 {
        self.typed
    }

    /// Answers the server's step 1 with what it lacks of the provider's own inserts.
    async fn answer_step1(&mut self, message: &[u8]) -> Result<(), ClientError> {
        let decoded = YMessage::decode_v1(message)
            .map_err(|e| ClientError::Protocol(format!("bad sync step 1: {e}")))?;
        let YMessage::Sync(SyncMessage::SyncStep1(state_vector)) = decoded else {
            return Err(ClientError::Protocol("expected a sync step 1".into()));
        };
        let diff = self.doc.transact().encode_state_as_update_v1(&state_vector);
        let step2 = YMessage::Sync(SyncMessage::SyncStep2(diff)).encode_v1();
        self.socket.send(Message::binary(step2)).await?;
        Ok(())
    }

    /// Inserts `count` characters after the provider's previous insert and sends them as
    /// one update; returns the update's first clock (what its echo carries).
    pub async fn type_chars(&mut self, count: u32) -> Result<u64, ClientError> {
        let clock = self.typed;
        let update = {
            let mut txn = self.doc.transact_mut();
            let mut chars = String::with_capacity(count as usize);
            for i in 0..u64::from(count) {
                chars.push(char::from(KEYS[((clock + i) % KEYS.len() as u64) as usize]));
            }
            // ASCII only, so the text's length in bytes is its length in characters.
            self.text.insert(&mut txn, clock as u32, &chars);
            txn.encode_update_v1()
        };
        self.typed += u64::from(count);
        self.socket
            .send(Message::binary(update_message(update)))
            .await?;
        Ok(clock)
    }

    /// The next binary message; answers the server's step 1 by itself (a server that moved
    /// the document may ask again) and reports it as [`Incoming::Step1`].
    pub async fn recv(&mut self) -> Result<(Incoming, usize), ClientError> {
        let message = self.next_binary().await?;
        let incoming =
            peek(&message).ok_or_else(|| ClientError::Protocol("a message cut short".into()))?;
        if incoming == Incoming::Step1 {
            self.answer_step1(&message).await?;
        }
        Ok((incoming, message.len()))
    }

    /// The next binary message (pings are answered by tungstenite as it reads).
    async fn next_binary(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Binary(bytes))) => return Ok(bytes.into()),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                    return Err(ClientError::Closed { code, reason });
                }
                Some(Ok(Message::Text(text))) => {
                    return Err(ClientError::Protocol(format!(
                        "a text message on a Yjs socket: {}",
                        text.chars().take(80).collect::<String>()
                    )))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(ClientError::Closed {
                        code: 1006,
                        reason: "connection ended".into(),
                    })
                }
            }
        }
    }

    /// Closes the socket politely, waiting at most `timeout`.
    pub async fn close(mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.socket.close(None)).await;
    }
}

/// The update a step 2 message carries.
fn step2_update(message: &[u8]) -> Result<Vec<u8>, ClientError> {
    match YMessage::decode_v1(message) {
        Ok(YMessage::Sync(SyncMessage::SyncStep2(update))) => Ok(update),
        Ok(_) => Err(ClientError::Protocol("expected a sync step 2".into())),
        Err(e) => Err(ClientError::Protocol(format!("bad sync step 2: {e}"))),
    }
}

/// The text of [`TEXT_ROOT`] in a document state (a step 2's update).
pub fn text_of(state: &[u8]) -> Result<String, ClientError> {
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text(TEXT_ROOT);
    let mut txn = doc.transact_mut();
    let update = Update::decode_v1(state)
        .map_err(|e| ClientError::Protocol(format!("a state that does not decode: {e}")))?;
    txn.apply_update(update)
        .map_err(|e| ClientError::Protocol(format!("a state that does not apply: {e}")))?;
    Ok(text.get_string(&txn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lib0_varints() {
        let mut at = 0;
        assert_eq!(read_var(&[0x05], &mut at), Some(5));
        let mut at = 0;
        assert_eq!(read_var(&[0xac, 0x02], &mut at), Some(300));
        assert_eq!(at, 2);
        let mut at = 0;
        assert_eq!(read_var(&[0x80], &mut at), None, "cut short");
    }

    #[test]
    fn finds_the_client_and_clock_of_an_update() {
        let doc = yrs::Doc::with_client_id(123_456_789);
        let text = doc.get_or_insert_text(TEXT_ROOT);
        let mut updates = Vec::new();
        for i in 0..3u32 {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, i, "x");
            updates.push(txn.encode_update_v1());
        }
        let message = update_message(updates[2].clone());
        assert_eq!(
            peek(&message),
            Some(Incoming::Update {
                step2: false,
                first: Some((123_456_789, 2))
            })
        );
        let step2 = YMessage::Sync(SyncMessage::SyncStep2(updates[0].clone())).encode_v1();
        assert_eq!(
            peek(&step2),
            Some(Incoming::Update {
                step2: true,
                first: Some((123_456_789, 0))
            })
        );
        let empty = YMessage::Sync(SyncMessage::SyncStep2(
            yrs::Doc::new()
                .transact()
                .encode_state_as_update_v1(&StateVector::default()),
        ))
        .encode_v1();
        assert_eq!(
            peek(&empty),
            Some(Incoming::Update {
                step2: true,
                first: None
            })
        );
        let step1 = YMessage::Sync(SyncMessage::SyncStep1(StateVector::default())).encode_v1();
        assert_eq!(peek(&step1), Some(Incoming::Step1));
        assert_eq!(peek(&[1, 2, 3]), Some(Incoming::Other), "awareness");
        assert_eq!(peek(&message[..4]), None, "cut short");
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(text_of(&state).expect("decodes"), "xxx");
    }
}
