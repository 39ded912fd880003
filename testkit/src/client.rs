//! A codraft client: WebSocket, Rustpad's JSON protocol with codraft's exactly-once extension,
//! and the OT client state machine. The tests drive servers through it, and the load
//! generator's clients are made of it.
//!
//! The state machine is ot.js's: at most one edit is outstanding (sent, not yet acknowledged)
//! and newer local changes wait composed in a buffer. Incoming operations are transformed
//! against both, the outstanding edit winning ties on insert position exactly as the server
//! decides (the server received it later).

use std::{collections::HashMap, time::Duration};

use codraft_ot::{Operation, OtError};
use futures::{SinkExt, StreamExt};
use ropey::Rope;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{
        protocol::{frame::coding::CloseCode, WebSocketConfig},
        Message, Utf8Bytes,
    },
    MaybeTlsStream, WebSocketStream,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket failed or could not be opened.
    #[error("websocket: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server closed the connection.
    #[error("closed by server: {code} {reason}")]
    Closed {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The server sent something this client cannot follow.
    #[error("protocol: {0}")]
    Protocol(String),
    /// An operation did not apply.
    #[error("ot: {0}")]
    Ot(#[from] OtError),
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
}

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Use the exactly-once extension with this client id.
    pub client_id: Option<String>,
}

/// When a join counts as complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Join {
    /// At the first History, which codraft sends on every join.
    #[default]
    History,
    /// At Identity: Rustpad's server sends no History for a document without operations, so
    /// waiting for one would wait forever. A History that does come is applied as it arrives.
    Identity,
}

/// Something the server told the client, for tests to look at.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Operations were applied (own acknowledgements included).
    History,
    /// An own edit was acknowledged; its sequence number, if any.
    Acked(Option<u64>),
    /// The document's language.
    Language(String),
    /// A user's info; `None` when they left.
    UserInfo(u64, Option<Value>),
    /// A user's cursor data.
    UserCursor(u64, Value),
    /// An error message (the connection may stay open).
    Error(u64, String),
    /// Any other message.
    Other(Value),
}

/// A server message as far as the client parses it: History, most of the traffic, straight
/// into its entries; anything else as a JSON tree.
enum Incoming {
    /// A History message.
    History(HistoryBody),
    /// Any other message (or a History written in an unexpected layout).
    Other(Value),
}

impl Incoming {
    /// Parses one text frame. Both codraft and Rustpad write compact JSON, so a History
    /// starts with `{"History":`; that prefix decides, and anything else takes the general
    /// path, which also understands History.
    fn parse(text: &str) -> Result<Self, ClientError> {
        if text.starts_with(r#"{"History":"#) {
            let message: HistoryMessage = serde_json::from_str(text)
                .map_err(|e| ClientError::Protocol(format!("bad History: {e}")))?;
            return Ok(Incoming::History(message.history));
        }
        serde_json::from_str(text)
            .map(Incoming::Other)
            .map_err(|e| ClientError::Protocol(format!("bad JSON from server: {e}")))
    }

    /// Whether this is a History message.
    fn is_history(&self) -> bool {
        match self {
            Incoming::History(_) => true,
            Incoming::Other(message) => message.get("History").is_some(),
        }
    }
}

/// `{"History": {...}}`.
#[derive(Deserialize)]
struct HistoryMessage {
    #[serde(rename = "History")]
    history: HistoryBody,
}

/// The body of a History message (codraft's extra fields are ignored).
#[derive(Deserialize)]
struct HistoryBody {
    start: u64,
    operations: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    id: u64,
    operation: Operation,
    #[serde(default)]
    seq: Option<u64>,
}

/// One client connection to one document.
pub struct Client {
    base: String,
    document: String,
    options: Options,
    socket: Socket,
    /// This connection's user id.
    pub user_id: u64,
    /// Whether `user_id` came from the server's Identity (Rustpad numbers users from 0, so
    /// 0 cannot stand for "not yet known").
    identified: bool,
    /// The client's text: the server's text plus its own unacknowledged edits. A rope, as
    /// the server's: every client applies every edit, and a `String` made that O(text) each
    /// (the load generator's biggest cost on long documents).
    pub text: Rope,
    /// History entries applied on this connection.
    pub revision: u64,
    /// Log revision of this connection's revision 0 state, and whether that counts the join
    /// snapshot (see docs/protocol.md, `Joined`).
    log_base: Option<(u64, bool)>,
    outstanding: Option<(Operation, Option<u64>)>,
    buffer: Option<Operation>,
    next_seq: u64,
    /// Sequence numbers of own edits the server acknowledged, in order.
    pub acked: Vec<u64>,
    /// Acknowledged edits without a sequence number (plain Rustpad mode).
    pub acked_plain: u64,
    /// Users known to this client, with their info.
    pub users: HashMap<u64, Value>,
    /// Cursor data of other users.
    pub cursors: HashMap<u64, Value>,
    /// The document's language as last announced.
    pub language: Option<String>,
    /// Edits that could not be resumed after a reconnect (the server no longer had their base).
    pub lost: u64,
    /// The buffer became the outstanding edit and still has to be sent.
    pending_send: bool,
}

impl Client {
    /// Connects to `base` (e.g. `ws://127.0.0.1:3030`) and waits for the join to complete.
    pub async fn connect(
        base: &str,
        document: &str,
        options: Options,
    ) -> Result<Self, ClientError> {
        Self::connect_until(base, document, options, Join::History).await
    }

    /// Connects and waits until the join is complete as `join` says.
    pub async fn connect_until(
        base: &str,
        document: &str,
        options: Options,
        join: Join,
    ) -> Result<Self, ClientError> {
        let socket = open(base, document, &options, None).await?;
        let mut client = Self {
            base: base.to_owned(),
            document: document.to_owned(),
            options,
            socket,
            user_id: 0,
            identified: false,
            text: Rope::new(),
            revision: 0,
            log_base: None,
            outstanding: None,
            buffer: None,
            next_seq: 1,
            acked: Vec::new(),
            acked_plain: 0,
            users: HashMap::new(),
            cursors: HashMap::new(),
            language: None,
            lost: 0,
            pending_send: false,
        };
        match join {
            Join::History => client.await_join().await?,
            Join::Identity => client.await_identity().await?,
        }
        Ok(client)
    }

    /// Reads until Identity and the first History have arrived.
    async fn await_join(&mut self) -> Result<(), ClientError> {
        let mut identified = false;
        loop {
            let message = self.read_incoming(Duration::from_secs(20)).await?;
            if let Incoming::Other(other) = &message {
                if let Some(id) = other.get("Identity") {
                    self.user_id = id
                        .as_u64()
                        .ok_or_else(|| ClientError::Protocol("Identity is not a number".into()))?;
                    self.identified = true;
                    identified = true;
                    continue;
                }
            }
            let is_history = message.is_history();
            self.handle_incoming(message)?;
            if identified && is_history {
                return self.send_pending().await;
            }
        }
    }

    /// Reads until Identity has arrived (Rustpad's join of an empty document).
    async fn await_identity(&mut self) -> Result<(), ClientError> {
        while !self.identified {
            let message = self.read_incoming(Duration::from_secs(20)).await?;
            self.handle_incoming(message)?;
        }
        Ok(())
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }

    /// How many edits this client sent with a sequence number (each acknowledged once).
    pub fn edits_sent(&self) -> u64 {
        self.next_seq - 1
    }

    /// Whether every local edit has been acknowledged.
    pub fn is_synced(&self) -> bool {
        self.outstanding.is_none() && self.buffer.is_none()
    }

    /// Applies a local edit and sends it (or buffers it behind the outstanding one).
    pub async fn edit(&mut self, operation: Operation) -> Result<(), ClientError> {
        operation.apply(&mut self.text)?;
        match (&self.outstanding, self.buffer.take()) {
            (None, _) => self.send_edit(operation).await?,
            (Some(_), None) => self.buffer = Some(operation),
            (Some(_), Some(buffer)) => self.buffer = Some(buffer.compose(&operation)?),
        }
        Ok(())
    }

    /// Inserts `text` at code point `position` (clamped to the text).
    pub async fn insert(&mut self, position: u64, text: &str) -> Result<(), ClientError> {
        let len = self.len();
        let position = position.min(len);
        let mut op = Operation::new();
        op.retain(position).insert(text).retain(len - position);
        self.edit(op).await
    }

    /// Deletes `count` code points from `position` (clamped to the text).
    pub async fn delete(&mut self, position: u64, count: u64) -> Result<(), ClientError> {
        let len = self.len();
        let position = position.min(len);
        let count = count.min(len - position);
        let mut op = Operation::new();
        op.retain(position)
            .delete(count)
            .retain(len - position - count);
        self.edit(op).await
    }

    /// The text's length in code points.
    pub fn len(&self) -> u64 {
        self.text.len_chars() as u64
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.text.len_bytes() == 0
    }

    /// Sends a raw JSON text message (for tests of bad input).
    pub async fn send_raw(&mut self, text: &str) -> Result<(), ClientError> {
        self.socket.send(Message::text(text)).await?;
        Ok(())
    }

    /// Sends a JSON message.
    pub async fn send_json(&mut self, value: &Value) -> Result<(), ClientError> {
        self.send_raw(&value.to_string()).await
    }

    /// Sets this user's name and hue.
    pub async fn set_info(&mut self, name: &str, hue: u32) -> Result<(), ClientError> {
        self.send_json(&json!({"ClientInfo": {"name": name, "hue": hue}}))
            .await
    }

    /// Sets the document's language.
    pub async fn set_language(&mut self, language: &str) -> Result<(), ClientError> {
        self.send_json(&json!({ "SetLanguage": language })).await
    }

    /// Sends this user's cursors.
    pub async fn set_cursor(
        &mut self,
        cursors: &[u64],
        selections: &[(u64, u64)],
    ) -> Result<(), ClientError> {
        self.send_json(&json!({"CursorData": {"cursors": cursors, "selections": selections}}))
            .await
    }

    async fn send_edit(&mut self, operation: Operation) -> Result<(), ClientError> {
        let seq = self.options.client_id.as_ref().map(|_| {
            let seq = self.next_seq;
            self.next_seq += 1;
            seq
        });
        self.send_outstanding(&operation, seq).await?;
        self.outstanding = Some((operation, seq));
        Ok(())
    }

    async fn send_outstanding(
        &mut self,
        operation: &Operation,
        seq: Option<u64>,
    ) -> Result<(), ClientError> {
        // Written directly rather than through a JSON tree: the load generator sends many.
        let seq = seq.map_or(String::new(), |seq| format!(r#","seq":{seq}"#));
        let edit = format!(
            r#"{{"Edit":{{"revision":{},"operation":{}{seq}}}}}"#,
            self.revision,
            operation.to_json()
        );
        self.send_raw(&edit).await
    }

    /// Waits for the next message and applies it.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Event, ClientError> {
        let message = self.read_incoming(timeout).await?;
        let event = self.handle_incoming(message)?;
        self.send_pending().await?;
        Ok(event)
    }

    async fn send_pending(&mut self) -> Result<(), ClientError> {
        if std::mem::take(&mut self.pending_send) {
            if let Some((operation, seq)) = self.outstanding.clone() {
                self.send_outstanding(&operation, seq).await?;
            }
        }
        Ok(())
    }

    /// Waits, with no time limit, for the next message and applies it, but sends nothing.
    ///
    /// Unlike [`Client::next_event`] this is cancel-safe, so a load generator can race it
    /// against a timer in `tokio::select!`; the caller must then call
    /// [`Client::flush_pending`], which sends the buffered edit an acknowledgement released.
    pub async fn recv_event(&mut self) -> Result<Event, ClientError> {
        let message = self.read_incoming(Duration::MAX).await?;
        self.handle_incoming(message)
    }

    /// Sends the buffered edit that an acknowledgement made due (see [`Client::recv_event`]).
    pub async fn flush_pending(&mut self) -> Result<(), ClientError> {
        self.send_pending().await
    }

    /// Turns Nagle's algorithm off (`true`) or on for this connection's TCP socket, as
    /// browsers do for WebSockets; a no-op for TLS connections. Without it a small Edit
    /// sent while an earlier segment is unacknowledged can wait for the peer's delayed ACK
    /// (about 40 ms on Linux).
    pub fn set_nodelay(&self, nodelay: bool) -> std::io::Result<()> {
        // The TLS variants exist only when a crate enables tokio-tungstenite's TLS features.
        #[allow(unreachable_patterns)]
        match self.socket.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.set_nodelay(nodelay),
            _ => Ok(()),
        }
    }

    /// Reads the next JSON message as it came, without applying it to this client's state
    /// (for load generators that drive the protocol themselves after joining).
    pub async fn next_message(&mut self, timeout: Duration) -> Result<Value, ClientError> {
        self.read_json(timeout).await
    }

    /// Reads messages until every local edit is acknowledged.
    pub async fn settle(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_synced() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            self.next_event(left).await?;
        }
        Ok(())
    }

    /// Reads whatever arrives within `quiet` of the previous message (drains the socket).
    pub async fn drain(&mut self, quiet: Duration) -> Result<(), ClientError> {
        loop {
            match self.next_event(quiet).await {
                Ok(_) => {}
                Err(ClientError::Timeout) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until `predicate` holds for this client, or the timeout passes.
    pub async fn wait_until(
        &mut self,
        timeout: Duration,
        mut predicate: impl FnMut(&Client) -> bool,
    ) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !predicate(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            self.next_event(left).await?;
        }
        Ok(())
    }

    /// Points later reconnects at another server (e.g. another gateway).
    pub fn set_base(&mut self, base: &str) {
        base.clone_into(&mut self.base);
    }

    /// The server this client connects to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Reconnects (after the server closed or the socket died) and resumes: edits the server
    /// already committed are recognised, the rest are re-sent. Requires a client id.
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        let resume = self.log_revision();
        self.socket = open(&self.base, &self.document, &self.options, resume).await?;
        // The resume point (log base and revision) stays as it is until the new connection's
        // Joined replaces it: a reconnect that dies half-way must not lose it.
        self.users.clear();
        self.cursors.clear();
        self.pending_send = false;
        if self.options.client_id.is_none() {
            // Plain Rustpad mode cannot resume: start over from the server's text.
            self.revision = 0;
            self.log_base = None;
            self.text = Rope::new();
            self.lost += u64::from(self.outstanding.take().is_some());
            self.lost += u64::from(self.buffer.take().is_some());
            return self.await_join().await;
        }
        let resend = self.outstanding.take();
        // Until the first History arrives, nothing may be sent: it can acknowledge `resend`.
        self.outstanding = resend.clone();
        let mut identified = false;
        let mut resumed = None;
        loop {
            let message = self.read_json(Duration::from_secs(20)).await?;
            if let Some(id) = message.get("Identity").and_then(Value::as_u64) {
                self.user_id = id;
                self.identified = true;
                identified = true;
                continue;
            }
            if let Some(joined) = message.get("Joined") {
                let revision = joined["revision"].as_u64().unwrap_or(0);
                let was_resumed = joined["resumed"].as_bool().unwrap_or(false);
                let last_seq = joined["last_seq"].as_u64().unwrap_or(0);
                self.log_base = Some((revision, !was_resumed));
                self.revision = 0;
                resumed = Some((was_resumed, last_seq));
                continue;
            }
            if identified && message.get("History").is_some() {
                if let Some((false, last_seq)) = resumed {
                    // The server could not resume us: take its text; our edits up to last_seq
                    // are in it, later ones cannot be placed.
                    let history = message["History"].clone();
                    let entries: Vec<Entry> = serde_json::from_value(history["operations"].clone())
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    let mut text = Rope::new();
                    for entry in &entries {
                        entry.operation.apply(&mut text)?;
                    }
                    self.text = text;
                    self.revision = entries.len() as u64;
                    if let Some((_, seq)) = self.outstanding.take() {
                        match seq {
                            Some(seq) if seq <= last_seq => self.acked.push(seq),
                            _ => self.lost += 1,
                        }
                    }
                    if self.buffer.take().is_some() {
                        self.lost += 1;
                    }
                    return Ok(());
                }
                self.handle(message)?;
                break;
            }
            self.handle(message)?;
        }
        // Whatever is still outstanding was not acknowledged by the catch-up: send it again
        // with the same sequence number, based on where this connection now stands.
        self.pending_send = false;
        if let Some((operation, seq)) = self.outstanding.clone() {
            self.send_outstanding(&operation, seq).await?;
        } else if let Some(buffer) = self.buffer.take() {
            self.send_edit(buffer).await?;
        }
        Ok(())
    }

    /// The log revision of the text this client holds from the server, if known.
    pub fn log_revision(&self) -> Option<u64> {
        let (base, snapshot) = self.log_base?;
        if snapshot {
            (self.revision >= 1).then(|| base + self.revision - 1)
        } else {
            Some(base + self.revision)
        }
    }

    async fn read_json(&mut self, timeout: Duration) -> Result<Value, ClientError> {
        let text = self.read_text(timeout).await?;
        serde_json::from_str(text.as_str())
            .map_err(|e| ClientError::Protocol(format!("bad JSON from server: {e}")))
    }

    async fn read_incoming(&mut self, timeout: Duration) -> Result<Incoming, ClientError> {
        let text = self.read_text(timeout).await?;
        Incoming::parse(text.as_str())
    }

    /// The next text frame.
    async fn read_text(&mut self, timeout: Duration) -> Result<Utf8Bytes, ClientError> {
        loop {
            let message = tokio::time::timeout(timeout, self.socket.next())
                .await
                .map_err(|_| ClientError::Timeout)?;
            match message {
                None => {
                    return Err(ClientError::Closed {
                        code: 1006,
                        reason: "connection ended".into(),
                    })
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(text))) => return Ok(text),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((u16::from(CloseCode::Status), String::new()));
                    return Err(ClientError::Closed { code, reason });
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    fn handle_incoming(&mut self, message: Incoming) -> Result<Event, ClientError> {
        match message {
            Incoming::History(history) => self.apply_history(history),
            Incoming::Other(message) => self.handle(message),
        }
    }

    fn handle(&mut self, message: Value) -> Result<Event, ClientError> {
        if let Some(history) = message.get("History") {
            let history = HistoryBody::deserialize(history)
                .map_err(|e| ClientError::Protocol(format!("bad History: {e}")))?;
            return self.apply_history(history);
        }
        if let Some(id) = message.get("Identity").and_then(Value::as_u64) {
            self.user_id = id;
            self.identified = true;
            return Ok(Event::Other(message));
        }
        if let Some(joined) = message.get("Joined") {
            let revision = joined["revision"].as_u64().unwrap_or(0);
            let resumed = joined["resumed"].as_bool().unwrap_or(false);
            self.log_base = Some((revision, !resumed));
            // A client id's numbering continues across connections (and client restarts).
            let last_seq = joined["last_seq"].as_u64().unwrap_or(0);
            self.next_seq = self.next_seq.max(last_seq + 1);
            return Ok(Event::Other(message));
        }
        if let Some(language) = message.get("Language").and_then(Value::as_str) {
            self.language = Some(language.to_owned());
            return Ok(Event::Language(language.to_owned()));
        }
        if let Some(info) = message.get("UserInfo") {
            let id = info["id"].as_u64().unwrap_or(0);
            let value = info.get("info").filter(|v| !v.is_null()).cloned();
            match &value {
                Some(v) => {
                    self.users.insert(id, v.clone());
                }
                None => {
                    self.users.remove(&id);
                    self.cursors.remove(&id);
                }
            }
            return Ok(Event::UserInfo(id, value));
        }
        if let Some(cursor) = message.get("UserCursor") {
            let id = cursor["id"].as_u64().unwrap_or(0);
            self.cursors.insert(id, cursor["data"].clone());
            return Ok(Event::UserCursor(id, cursor["data"].clone()));
        }
        if let Some(error) = message.get("Error") {
            return Ok(Event::Error(
                error["code"].as_u64().unwrap_or(0),
                error["message"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        Ok(Event::Other(message))
    }

    fn apply_history(&mut self, history: HistoryBody) -> Result<Event, ClientError> {
        let HistoryBody {
            start,
            operations: entries,
        } = history;
        if start > self.revision {
            return Err(ClientError::Protocol(format!(
                "History starts at {start} but the client is at {}",
                self.revision
            )));
        }
        let mut event = Event::History;
        let skip = (self.revision - start) as usize;
        for entry in entries.into_iter().skip(skip) {
            self.revision += 1;
            // Rustpad numbers a document's users from 0, so user 0 can be this client.
            // (codraft's join snapshot carries user id 0, but codraft's user ids are random.)
            let own = entry.seq.is_some() || (entry.id == self.user_id && self.identified);
            if own && self.outstanding.is_some() {
                let (_, seq) = self.outstanding.take().unwrap_or((Operation::new(), None));
                match seq {
                    Some(seq) => self.acked.push(seq),
                    None => self.acked_plain += 1,
                }
                event = Event::Acked(seq);
                continue;
            }
            if own {
                // Acknowledges an edit this client already counted (e.g. re-sent twice).
                continue;
            }
            let mut incoming = entry.operation;
            if let Some((outstanding, seq)) = self.outstanding.take() {
                let (outstanding, transformed) = outstanding.transform(&incoming)?;
                self.outstanding = Some((outstanding, seq));
                incoming = transformed;
            }
            if let Some(buffer) = self.buffer.take() {
                let (buffer, transformed) = buffer.transform(&incoming)?;
                self.buffer = Some(buffer);
                incoming = transformed;
            }
            incoming.apply(&mut self.text)?;
        }
        // Send the buffer once the outstanding edit is acknowledged.
        if self.outstanding.is_none() {
            if let Some(buffer) = self.buffer.take() {
                let seq = self.options.client_id.as_ref().map(|_| {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    seq
                });
                self.outstanding = Some((buffer, seq));
                self.pending_send = true;
            }
        }
        Ok(event)
    }
}

async fn open(
    base: &str,
    document: &str,
    options: &Options,
    resume: Option<u64>,
) -> Result<Socket, ClientError> {
    let mut url = format!("{base}/api/socket/{document}");
    let mut query = Vec::new();
    if let Some(client) = &options.client_id {
        query.push(format!("client={client}"));
        if let Some(resume) = resume {
            query.push(format!("resume={resume}"));
        }
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(socket_config()), false).await?;
    Ok(socket)
}

/// The client's WebSocket settings: tungstenite zero-fills its whole read buffer before
/// every socket read, so its 128 KiB default costs a 128 KiB memset per small frame; the
/// load generator's many clients read one small frame at a time (the gateway reads with
/// 4 KiB for the same reason). Larger frames are simply read in several pieces.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_history_straight_and_everything_else_as_json() {
        let compact = r#"{"History":{"start":3,"operations":[{"id":0,"operation":[1,"é",-1]}]}}"#;
        let Ok(Incoming::History(history)) = Incoming::parse(compact) else {
            panic!("compact History not parsed straight");
        };
        assert_eq!((history.start, history.operations.len()), (3, 1));
        assert_eq!(history.operations[0].operation.to_json(), r#"[1,"é",-1]"#);
        // codraft's extra fields are ignored.
        let extended = r#"{"History":{"start":0,"operations":[],"compacted":false}}"#;
        assert!(matches!(
            Incoming::parse(extended),
            Ok(Incoming::History(_))
        ));
        // Another layout takes the general path, which still knows it is a History.
        let spaced =
            Incoming::parse(r#"{ "History": {"start": 0, "operations": []}}"#).expect("valid JSON");
        assert!(matches!(spaced, Incoming::Other(_)) && spaced.is_history());
        let identity = Incoming::parse(r#"{"Identity":0}"#).expect("valid JSON");
        assert!(!identity.is_history());
        assert!(Incoming::parse(r#"{"History":{"start":"x"}}"#).is_err());
        assert!(Incoming::parse("not json").is_err());
    }
}
