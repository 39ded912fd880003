//! Commit and fan-out: pending entries go to the group committer; when their transaction
//! commits they are applied to the text, cursors move through them, and every client is sent
//! them. Nothing reaches a client before it is durable.

use std::sync::Arc;

use codraft_common::telemetry;
use prost::Message;
use tracing::{info_span, warn, Span};

use super::{
    cursor::transform_cursor, lifecycle::Inflight, pb, Connection, Document, Kind, SendFailure,
};
use crate::store::{DocumentCommit, LoggedOp};
use pb::in_process::Fanout;

impl Document {
    /// Submits pending entries (and a pending language) for commit, if there are any.
    pub(super) async fn start_commit(&mut self) -> Option<Inflight> {
        if self.head == self.committed && self.pending_language.is_none() {
            return None;
        }
        let pending = (self.committed - self.history_start) as usize;
        // A backlog (after a store outage) goes in batches of COMMIT_MAX_BATCH, so no one
        // transaction outgrows the store's call timeout.
        let batch = self.deps.config.commit_max_batch.max(1);
        let ops: Vec<LoggedOp> = self
            .history
            .iter()
            .skip(pending)
            .take(batch)
            .zip(self.committed..)
            .map(|(entry, revision)| LoggedOp {
                revision,
                operation: entry.operation.clone(),
                author: entry.author,
                client_id: entry.client_id.as_deref().map(str::to_owned),
                seq: entry.seq,
            })
            .collect();
        let upto = self.committed + ops.len() as u64;
        let links = self
            .history
            .iter()
            .skip(pending)
            .take(batch)
            .filter_map(|entry| entry.span.as_deref().and_then(telemetry::link_to))
            .collect();
        let language = self.pending_language.take();
        let result = self
            .deps
            .committer
            .submit(
                DocumentCommit {
                    document: Arc::clone(&self.id),
                    base_revision: self.committed,
                    epoch: self.epoch,
                    ops,
                    language: language.clone(),
                    updates: Vec::new(),
                },
                links,
            )
            .await;
        Some(Inflight {
            result,
            upto,
            language,
        })
    }

    /// A commit returned: apply what it made durable, tell every client, then the
    /// language, catch-ups, trimming and snapshots that follow a commit.
    pub(super) fn committed_through(&mut self, upto: u64, language: Option<String>) {
        // Where a connection that cannot take this fan-out starts lagging.
        let (from, from_len) = (self.committed, self.text.len_chars() as u64);
        let (entries, spans) = self.apply_committed(upto);
        // Every edit of the commit gets its own `fanout` child, so each edit's trace ends
        // with the moment it reached the clients' queues.
        let connections = self.connections.len();
        let fanouts: Vec<Span> = spans
            .iter()
            .map(|span| info_span!(parent: span, "fanout", connections))
            .collect();
        self.fan_out(entries, from, from_len);
        self.restores_committed();
        drop(fanouts);
        drop(spans);
        if let Some(language) = language {
            self.language = Some(language.clone());
            self.broadcast(|_| {
                Kind::Language(pb::Language {
                    language: language.clone(),
                })
            });
        }
        if self.catch_up_at.is_some() {
            self.catch_up_lagging();
        }
        self.trim_history();
        if self.committed - self.last_snapshot >= self.deps.config.snapshot_every {
            self.snapshot_in_background();
        }
    }

    /// Applies the entries `committed..upto` to the text, moves every cursor through them
    /// and raises the exactly-once marks; returns them as sent to clients, and their spans.
    fn apply_committed(&mut self, upto: u64) -> (Vec<pb::HistoryEntry>, Vec<Span>) {
        let first = (self.committed - self.history_start) as usize;
        let count = (upto - self.committed) as usize;
        let mut entries = Vec::with_capacity(count);
        let mut spans = Vec::new();
        let mut committed_bytes = 0;
        for entry in self.history.iter_mut().skip(first).take(count) {
            spans.extend(entry.span.take().map(|span| *span));
            committed_bytes += entry.bytes;
            if let Err(error) = entry.operation.apply(&mut self.text) {
                // Transform checked every base length, so this is a bug; say so loudly rather
                // than serve a text that differs from the log.
                warn!(document = %self.id, %error, "committed op does not apply");
            }
            for c in self.connections.values_mut() {
                if let Some(cursor) = &mut c.cursor {
                    transform_cursor(cursor, &entry.operation);
                }
            }
            for r in self.presence.restored.values_mut() {
                if let Some(cursor) = &mut r.cursor {
                    transform_cursor(cursor, &entry.operation);
                }
            }
            if let (Some(client), Some(seq)) = (&entry.client_id, entry.seq) {
                let mark = self.committed_seqs.entry(Arc::clone(client)).or_default();
                *mark = (*mark).max(seq);
            }
            entries.push(entry.to_proto());
        }
        self.committed = upto;
        self.pending_bytes = self.pending_bytes.saturating_sub(committed_bytes);
        if count > 0 {
            self.cursors_moved_by_edits();
        }
        self.deps.metrics.edits_committed.inc_by(count as u64);
        (entries, spans)
    }

    /// Queues newly committed entries for every connection that is not lagging; one whose
    /// queue is full starts lagging at `from` (where the text had `from_len` code points).
    fn fan_out(&mut self, entries: Vec<pb::HistoryEntry>, from: u64, from_len: u64) {
        if entries.is_empty() {
            return;
        }
        // One copy of the entries for every connection, and their size counted once.
        let count = entries.len() as u64;
        let bytes = entries.iter().map(|e| e.encoded_len()).sum::<usize>() + 16;
        let entries = Arc::new(Fanout::new(entries));
        let mut slow = Vec::new();
        for (&id, c) in self.connections.iter_mut() {
            if c.lagging.is_some() {
                // Its catch-up will carry these entries.
                continue;
            }
            match c.outbox.send_shared(c.sent, &entries, bytes) {
                Ok(()) => c.sent += count,
                Err(failure) => slow.push((id, failure)),
            }
        }
        for (id, failure) in slow {
            match failure {
                SendFailure::Full => self.start_lagging(id, from, from_len),
                // Its stream ended before its Leave arrived: not a slow client.
                SendFailure::Gone => self.leave(id),
            }
        }
    }

    /// Sends a frame to every connection; one that cannot take it starts lagging, and a
    /// lagging one is skipped (its catch-up sends the current state).
    pub(super) fn broadcast(&mut self, make: impl Fn(&Connection) -> Kind) {
        let mut failed = Vec::new();
        for (&id, c) in self.connections.iter_mut() {
            if c.lagging.is_some() {
                let frame = make(c);
                c.missed(&frame);
                continue;
            }
            match c.outbox.send(make(c)) {
                Ok(()) => {}
                Err(SendFailure::Full) => failed.push((id, true)),
                Err(SendFailure::Gone) => failed.push((id, false)),
            }
        }
        let (at, len) = (self.committed, self.text.len_chars() as u64);
        for (id, slow) in failed {
            if slow {
                self.start_lagging(id, at, len);
            } else {
                self.leave(id);
            }
        }
    }
}
