//! Reads a join needs from the store, done off the actor so nothing waits: the entries a
//! client resuming from before the history window missed (put in front of the window), and
//! the exactly-once mark of a client this actor has not seen yet. Both are read after the
//! actor's own load under its lease, so they cannot miss a previous owner's commit.

use std::sync::Arc;

use tracing::{debug, warn};

use super::{close, Command, Document, Entry, Join, JoinRefused, Outbox, QueueLimits};
use crate::store::{LoggedOp, StoreError};

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
                let _ = actor
                    .send(Box::new(Command::Backfill { from, ops, join }))
                    .await;
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
                    let bytes = Entry::bytes_of(&op.operation, op.client_id.as_deref());
                    self.count_entry_bytes(bytes, false);
                    self.history.push_front(Entry {
                        author: op.author,
                        operation: op.operation,
                        client_id: op.client_id.map(Into::into),
                        seq: op.seq,
                        span: None,
                        bytes,
                    });
                }
                self.history_start = from;
            } else {
                // The log no longer has it (compacted): a fresh join.
                join.resume = None;
            }
        }
        self.join(join);
        // The joiner got what it missed; its edits are based on what it has now, so the
        // window goes back to its bounds (several resumers cannot stretch it further and
        // further back).
        self.trim_history();
        self.shrink_history();
    }

    /// Reads a client's committed sequence number, then lets its join go on.
    pub(super) fn request_marks(&mut self, join: Join) {
        let (store, id) = (Arc::clone(&self.deps.store), Arc::clone(&self.id));
        let own = self.own.clone();
        let Some(client) = join.client_id.clone() else {
            return;
        };
        tokio::spawn(async move {
            let seq = store.last_seq(&id, &client).await;
            if let Some(actor) = own.upgrade() {
                let _ = actor.send(Box::new(Command::Marks { seq, join })).await;
            }
        });
    }

    /// The store answered a mark lookup: the join goes on, or is refused if it failed.
    pub(super) fn marks_read(&mut self, seq: Result<u64, StoreError>, mut join: Join) {
        match seq {
            Ok(seq) => {
                // If another connection of the same client made it known meanwhile, this
                // actor's marks are the truth (see `join`); else the store's answer is.
                let known = self
                    .committed_seqs
                    .get(join.client_id.as_deref().unwrap_or(""));
                join.last_seq = Some(known.copied().unwrap_or(seq));
                self.join(join);
            }
            Err(error) => {
                warn!(document = %self.id, %error, "could not read a client's exactly-once mark");
                if self.stopping {
                    let _ = join.reply.send(Err(JoinRefused::Retry));
                    return;
                }
                let (outbox, inbox) = Outbox::new(QueueLimits::frames(2));
                outbox.close(
                    close::UNAVAILABLE,
                    "storage is unavailable; reconnect shortly",
                );
                let _ = join.reply.send(Ok(inbox));
            }
        }
    }
}
