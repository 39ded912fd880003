//! Backfill: a client resuming from before the history window gets the entries it missed
//! read back from the op log (off the actor, so nothing waits), put in front of the window.

use std::sync::Arc;

use tracing::{debug, warn};

use super::{Command, Document, Entry, Join};
use crate::store::LoggedOp;

impl Document {
    pub(super) fn request_backfill(&mut self, from: u64, join: Join) {
        let (store, id, to) = (
            Arc::clone(&self.deps.store),
            Arc::clone(&self.id),
            self.history_start,
        );
        let own = self.own.clone();
        tokio::spawn(async move {
            let ops = match store.read_log(&id, from, to).await {
                Ok(ops) => ops,
                Err(error) => {
                    warn!(document = %id, %error, "could not read the op log for a resuming client");
                    Vec::new()
                }
            };
            if let Some(actor) = own.upgrade() {
                let _ = actor.send(Command::Backfill { from, ops, join }).await;
            }
        });
    }

    /// Puts ops read from the log in front of the history window, if they still join up with
    /// it, and lets the waiting client join.
    pub(super) fn backfill(&mut self, from: u64, mut ops: Vec<LoggedOp>, mut join: Join) {
        if from < self.history_start {
            // Another resuming client's backfill may have extended the window meanwhile:
            // only the part below the current start is needed.
            let needed = (self.history_start - from) as usize;
            let usable = ops.len() >= needed
                && ops[..needed]
                    .iter()
                    .zip(from..)
                    .all(|(op, rev)| op.revision == rev);
            debug!(document = %self.id, from, read = ops.len(), needed, usable, "backfill for a resuming client");
            if usable {
                ops.truncate(needed);
                for op in ops.into_iter().rev() {
                    self.history.push_front(Entry {
                        author: op.author,
                        operation: op.operation,
                        client_id: op.client_id,
                        seq: op.seq,
                        span: None,
                    });
                }
                self.history_start = from;
            } else {
                // The log no longer has it (compacted): a fresh join.
                join.resume = None;
            }
        }
        self.join(join);
    }
}
