//! The document's one-time password: checking it, and changing it through the store (a
//! change takes effect, and clients hear of it, only once stored).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Command, ConnId, Deps, Document, Mail};

impl Document {
    /// Writes a password change to the store off the actor; it takes effect (and clients
    /// hear of it) only once stored.
    pub(super) fn set_otp(&mut self, conn: ConnId, otp: Option<String>) {
        if self.stopping || !self.connections.contains_key(&conn) {
            return;
        }
        store_password(&self.deps, &self.id, self.epoch, self.own.clone(), otp);
    }
}

/// Writes a document's password (`None` removes it) as the owner holding `epoch`, off the
/// actor; the actor (`own`) hears the result as [`Command::OtpStored`].
pub(crate) fn store_password(
    deps: &Deps,
    id: &Arc<str>,
    epoch: u64,
    own: mpsc::WeakSender<Mail>,
    otp: Option<String>,
) {
    let (store, id) = (Arc::clone(&deps.store), Arc::clone(id));
    tokio::spawn(async move {
        let result = store.set_otp(&id, epoch, otp.clone()).await;
        if let Some(actor) = own.upgrade() {
            let _ = actor
                .send(Box::new(Command::OtpStored { otp, result }))
                .await;
        }
    });
}

/// Whether a client's password opens a document, compared in constant time.
pub fn otp_matches(required: Option<&str>, given: Option<&str>) -> bool {
    let Some(required) = required else {
        return true;
    };
    let given = given.unwrap_or_default();
    let (a, b) = (required.as_bytes(), given.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}
