//! Restore: making the text what it was at a past revision, by one new edit.
//!
//! The edit is computed here, from the committed text to the old one, and then transformed
//! through the pending entries like any client's edit, so it lands on `head`, commits in
//! the next group commit and fans out to every client: they converge on it as on any edit,
//! and restoring an older revision undoes it. Exactly once: the edit carries the client id
//! `restore-<idempotency key>` with seq 1, so a retried restore (same key) is recognised by
//! the same marks that recognise a re-sent edit, even after a restart or a move.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Document, Entry, JoinRefused};
use crate::timeline::replace_op;

/// The author id restore edits carry: no connection has it (user ids start at 1).
pub const RESTORE_AUTHOR: u64 = 0;

/// How a restore ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Committed; the edit produced this revision.
    Applied {
        /// The revision after the restore edit.
        revision: u64,
    },
    /// This idempotency key's restore was committed before; nothing was done.
    AlreadyApplied,
    /// The document's limits refuse it.
    Refused(String),
}

/// Where the actor answers a restore once it committed.
pub type RestoreReply = oneshot::Sender<Result<Restored, JoinRefused>>;

impl Document {
    /// Queues the edit that makes the text `target`; answers once it is committed.
    pub(super) fn restore(
        &mut self,
        target: String,
        client_id: String,
        stored_seq: u64,
        reply: RestoreReply,
    ) {
        if self.stopping {
            let _ = reply.send(Err(JoinRefused::Retry));
            return;
        }
        let seen = stored_seq
            .max(
                self.assigned_seqs
                    .get(client_id.as_str())
                    .copied()
                    .unwrap_or(0),
            )
            .max(
                self.committed_seqs
                    .get(client_id.as_str())
                    .copied()
                    .unwrap_or(0),
            );
        if seen >= 1 {
            self.deps.metrics.edits_duplicate.inc();
            let _ = reply.send(Ok(Restored::AlreadyApplied));
            return;
        }
        let max = self.deps.config.max_document_chars();
        if target.chars().count() as u64 > max {
            let _ = reply.send(Ok(Restored::Refused(format!(
                "the restored text would exceed the document's limit of {max} characters"
            ))));
            return;
        }
        let mut operation = replace_op(&self.text.to_string(), &target);
        let pending = (self.committed - self.history_start) as usize;
        for entry in self.history.iter().skip(pending) {
            match operation.transform(&entry.operation) {
                Ok((transformed, _)) => operation = transformed,
                Err(error) => {
                    // Every pending entry applies to the committed text, so this is a bug.
                    let _ = reply.send(Err(JoinRefused::Unavailable(format!(
                        "restore could not be transformed: {error}"
                    ))));
                    return;
                }
            }
        }
        let revision = self.head;
        let client_id: Arc<str> = client_id.into();
        self.assigned_seqs.insert(Arc::clone(&client_id), 1);
        self.head_len = operation.target_len();
        self.head += 1;
        let bytes = Entry::bytes_of(&operation, Some(&client_id));
        self.push_pending(Entry {
            author: RESTORE_AUTHOR,
            operation,
            client_id: Some(client_id),
            seq: Some(1),
            span: None,
            bytes,
        });
        self.restores.push((revision, reply));
    }

    /// Answers the restores that the last commit made durable.
    pub(super) fn restores_committed(&mut self) {
        let committed = self.committed;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.restores)
            .into_iter()
            .partition(|(revision, _)| *revision < committed);
        self.restores = waiting;
        for (revision, reply) in done {
            let _ = reply.send(Ok(Restored::Applied {
                revision: revision + 1,
            }));
        }
    }
}
