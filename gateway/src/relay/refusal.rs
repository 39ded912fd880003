//! A socket the gate turned away: it still opens (a browser cannot read an HTTP refusal of
//! the upgrade), says why, and closes.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::StreamExt;

use crate::{gate::Refusal, protocol};

/// Refuses a socket the gate turned away: a browser cannot read an HTTP refusal of the
/// upgrade (it only sees 1006), so the socket opens, says why in a `Refused` message and
/// closes with 4401, 4403 or 4429 and a reason starting with the refusal's kind.
pub async fn refuse(socket: WebSocket, refusal: Refusal, login_url: Option<String>) {
    let code = refusal.close_code();
    let body = refusal.body(login_url.as_deref());
    let text =
        protocol::refused_message(code, body.error, &body.message, body.login_url.as_deref());
    close_refused(socket, refusal, Some(text)).await;
}

/// Refuses a y-websocket socket: only the close code and reason, since a y-websocket
/// client reads every message as binary y-protocols.
pub async fn refuse_yjs(socket: WebSocket, refusal: Refusal) {
    close_refused(socket, refusal, None).await;
}

async fn close_refused(mut socket: WebSocket, refusal: Refusal, text: Option<String>) {
    let code = refusal.close_code();
    let closing = async {
        if let Some(text) = text {
            socket.send(Message::Text(Utf8Bytes::from(text))).await?;
        }
        socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from(refusal.close_reason()),
            })))
            .await?;
        // Wait for the client's close, so the close reaches it before the TCP connection
        // ends.
        while let Some(message) = socket.next().await {
            if matches!(message?, Message::Close(_)) {
                break;
            }
        }
        Ok::<(), axum::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_WAIT, closing).await;
}

/// How long a refused socket waits for the client to acknowledge its close.
const REFUSAL_WAIT: Duration = Duration::from_secs(5);
