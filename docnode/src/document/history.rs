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
    /// The author's exactly-once id, if it sent one (shared with its connection, so an edit
    /// does not copy it).
    pub(super) client_id: Option<Arc<str>>,
    /// The author's sequence number of this edit, if it sent one.
    pub(super) seq: Option<u64>,
    /// The edit's span while it is pending; ended once the edit is fanned out. Boxed: most
    /// entries have none, and a window holds thousands of entries.
    pub(super) span: Option<Box<Span>>,
    /// Roughly the memory it holds, counted against HISTORY_WINDOW_KB and MAX_PENDING_KB.
    pub(super) bytes: usize,
}

impl Entry {
    /// The memory an entry of `operation` by `client_id` holds, roughly.
    pub(super) fn bytes_of(operation: &Operation, client_id: Option<&str>) -> usize {
        std::mem::size_of::<Self>() + operation.memory_bytes() + client_id.map_or(0, str::len)
    }

    pub(super) fn to_proto(&self) -> pb::HistoryEntry {
        pb::HistoryEntry {
            user_id: self.author,
            operation: Some(wire::operation_to_proto(&self.operation)),
            client_id: self.client_id.as_deref().map(str::to_owned),
            seq: self.seq,
        }
    }
}

impl Document {
    /// Adds a new, not yet committed entry at the head of the window and counts its bytes.
    pub(super) fn push_pending(&mut self, entry: Entry) {
        self.count_entry_bytes(entry.bytes, true);
        self.reserve_entry();
        self.history.push_back(entry);
    }

    /// The most entries the window holds between commits: HISTORY_WINDOW committed ones and
    /// MAX_PENDING_EDITS pending ones.
    fn window_entries(&self) -> usize {
        let config = &self.deps.config;
        config
            .history_window
            .saturating_add(config.max_pending_edits)
    }

    /// Makes room for one more entry. A full buffer doubles, as a VecDeque would, but never
    /// past what the window holds: doubling from 4,096 entries to 8,192 would leave a busy
    /// document's buffer (96 bytes an entry) more than a third empty for as long as it stays
    /// loaded.
    fn reserve_entry(&mut self) {
        let len = self.history.len();
        if len < self.history.capacity() {
            return;
        }
        let grown = (len * 2).max(8).min(self.window_entries().max(len + 1));
        self.history.reserve_exact(grown - len);
    }

    /// Gives back the room a backfill stretched the window's buffer to.
    pub(super) fn shrink_history(&mut self) {
        self.history.shrink_to(self.window_entries());
    }

    /// Drops committed entries beyond HISTORY_WINDOW, or beyond HISTORY_WINDOW_KB.
    pub(super) fn trim_history(&mut self) {
        let keep = self.deps.config.history_window as u64;
        let budget = self.deps.config.history_window_bytes();
        while self.committed > self.history_start
            && (self.committed - self.history_start > keep
                || self.history_bytes - self.pending_bytes > budget)
        {
            if let Some(entry) = self.history.pop_front() {
                self.forget_entry_bytes(entry.bytes);
            }
            self.history_start += 1;
        }
    }

    /// Counts an entry added to the window (`pending`: not committed yet).
    pub(super) fn count_entry_bytes(&mut self, bytes: usize, pending: bool) {
        self.history_bytes += bytes;
        if pending {
            self.pending_bytes += bytes;
        }
        self.deps.metrics.history_bytes.add(bytes as i64);
    }

    /// Uncounts an entry that left the window.
    pub(super) fn forget_entry_bytes(&mut self, bytes: usize) {
        self.history_bytes = self.history_bytes.saturating_sub(bytes);
        self.deps.metrics.history_bytes.sub(bytes as i64);
    }

    /// Whether uncommitted edits reached MAX_PENDING_EDITS or MAX_PENDING_KB: the actor
    /// then takes no more commands until commits catch up.
    pub(super) fn pending_full(&self) -> bool {
        self.head - self.committed >= self.deps.config.max_pending_edits as u64
            || self.pending_bytes >= self.deps.config.max_pending_bytes()
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
