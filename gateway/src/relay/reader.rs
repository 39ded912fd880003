//! The client's messages, one at a time, turned into what the relay does with them: a typed
//! frame for the docnode, a notice back to the client (bad JSON, a write on a read-only
//! connection), or the end of the connection (closed, too large, too fast). Rate limits and
//! the connection's grant are applied here.

use std::num::NonZeroU32;

use axum::extract::ws::Message;
use codraft_proto as pb;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use pb::client_frame::Kind as In;

use crate::{
    auth::{Access, Grant},
    config::GatewayConfig,
    metrics::{GatewayMetrics, LIMIT_EDITS, LIMIT_MESSAGES},
    protocol::{self, INVALID_MESSAGE},
};

use super::READ_ONLY;

/// What one client message comes to.
pub enum Read {
    /// A frame for the docnode.
    Frame(pb::ClientFrame),
    /// A message for the client; the connection goes on.
    Notice(String),
    /// Nothing to do (pongs, pings).
    Nothing,
    /// The connection ends.
    End(Ending),
}

/// How the client's side of a connection ended.
pub enum Ending {
    /// The client closed it, or it broke.
    Closed,
    /// A message larger than MAX_MESSAGE_KB (the limit in bytes).
    TooLarge(usize),
    /// A rate limit; the reason says which.
    Limited(&'static str),
}

/// Reads one connection's messages.
pub struct Reader {
    grant: Grant,
    max_message: usize,
    messages: DefaultDirectRateLimiter,
    edits: DefaultDirectRateLimiter,
}

/// A quota of `per_second`, at least one.
pub(super) fn per_second(per_second: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN))
}

/// Whether a socket error is tungstenite refusing a message over MAX_MESSAGE_SIZE_KB.
pub(super) fn too_large(error: &axum::Error) -> bool {
    let text = error.to_string();
    text.contains("too long") || text.contains("too big")
}

impl Reader {
    /// A reader for a connection with `grant`, under `config`'s limits.
    pub fn new(grant: Grant, config: &GatewayConfig) -> Self {
        let burst = NonZeroU32::new(config.edit_burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            grant,
            max_message: config.max_message_bytes(),
            messages: RateLimiter::direct(per_second(config.messages_per_second)),
            edits: RateLimiter::direct(per_second(config.edits_per_second).allow_burst(burst)),
        }
    }

    /// What `message` (the socket's next item; `None` when it ended) comes to.
    pub fn read(
        &self,
        message: Option<Result<Message, axum::Error>>,
        metrics: &GatewayMetrics,
    ) -> Read {
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                return Read::Notice(protocol::error_message(
                    INVALID_MESSAGE,
                    "binary messages are not part of the protocol",
                ))
            }
            Some(Ok(Message::Close(_))) | None => return Read::End(Ending::Closed),
            Some(Ok(_)) => return Read::Nothing,
            Some(Err(error)) if too_large(&error) => {
                return Read::End(Ending::TooLarge(self.max_message))
            }
            Some(Err(_)) => return Read::End(Ending::Closed),
        };
        if self.messages.check().is_err() {
            metrics
                .rate_limited
                .with_label_values(&[LIMIT_MESSAGES])
                .inc();
            return Read::End(Ending::Limited("too many messages per second"));
        }
        let mut frame = match protocol::parse_client(text.as_str()) {
            Ok(frame) => frame,
            Err(error) => {
                return Read::Notice(protocol::error_message(INVALID_MESSAGE, &error.to_string()))
            }
        };
        match &mut frame.kind {
            Some(In::Edit(_) | In::SetLanguage(_) | In::SetOtp(_))
                if self.grant.access == Access::Read =>
            {
                return Read::Notice(protocol::error_message(
                    READ_ONLY,
                    "this connection is read-only: your token does not grant write access",
                ));
            }
            Some(In::Edit(_)) if self.edits.check().is_err() => {
                metrics.rate_limited.with_label_values(&[LIMIT_EDITS]).inc();
                return Read::End(Ending::Limited("too many edits per second"));
            }
            Some(In::ClientInfo(info)) => {
                if let Some(name) = &self.grant.name {
                    name.clone_into(&mut info.name);
                }
            }
            _ => {}
        }
        Read::Frame(frame)
    }
}
