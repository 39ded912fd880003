//! The history window: entries of the newest revisions kept in memory (pending ones
//! included), trimmed to HISTORY_WINDOW once committed, and snapshots of the committed text.

use std::sync::Arc;

use codraft_ot::Operation;
use tracing::{warn, Span};

use super::{pb, wire, Document};
use crate::store::Snapshot;

/// One history entry: an op that takes the document from one revision to the next.
pub(super) struct Entry {
    /// User id of the connection that sent it.
    pub(super) author: u64,
    /// The op, transformed to its revision.
    pub(super) operation: Operation,
    /// The author's exactly-once id, if it sent one.
    pub(super) client_id: Option<String>,
    /// The author's sequence number of this edit, if it sent one.
    pub(super) seq: Option<u64>,
    /// The edit's span while it is pending; ended once the edit is fanned out.
    pub(super) span: Option<Span>,
}

impl Entry {
    pub(super) fn to_proto(&self) -> pb::HistoryEntry {
        pb::HistoryEntry {
            user_id: self.author,
            operation: Some(wire::operation_to_proto(&self.operation)),
            client_id: self.client_id.clone(),
            seq: self.seq,
        }
    }
}

impl Document {
    pub(super) fn trim_history(&mut self) {
        let keep = self.deps.config.history_window as u64;
        while self.committed - self.history_start > keep {
            self.history.pop_front();
            self.history_start += 1;
        }
    }

    pub(super) fn snapshot(&mut self) -> Snapshot {
        self.last_snapshot = self.committed;
        Snapshot {
            document: Arc::clone(&self.id),
            revision: self.committed,
            text: self.text.to_string(),
        }
    }

    pub(super) fn snapshot_in_background(&mut self) {
        let snapshot = self.snapshot();
        let store = Arc::clone(&self.deps.store);
        tokio::spawn(async move {
            if let Err(error) = store.write_snapshot(snapshot).await {
                warn!(%error, "snapshot failed; the op log still has everything");
            }
        });
    }
}
