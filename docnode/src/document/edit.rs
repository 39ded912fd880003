//! Edits: a client's op is checked, transformed against every entry since the revision it was
//! based on, and given the next revision at once (`head`); it then waits in the history as
//! pending until its group commit (see `fanout.rs`).

use std::sync::Arc;

use codraft_common::telemetry;
use codraft_ot::Operation;
use tracing::{debug, info_span, Span};

use super::{close, pb, wire, ConnId, Connection, Document, Entry, Kind, Origin};

impl Document {
    pub(super) fn edit(&mut self, conn: ConnId, edit: pb::Edit) {
        self.deps.metrics.edits_received.inc();
        // A child of the gateway's span for this edit, whose context the frame carries. Only
        // built when traces are exported: per edit, a span costs more than the transform.
        let span = if telemetry::traces_enabled() {
            info_span!(
                parent: None,
                "docnode.edit",
                otel.kind = "server",
                document = %self.id,
                conn,
                seq = edit.seq,
                revision = tracing::field::Empty,
            )
        } else {
            Span::none()
        };
        telemetry::set_remote_parent(&span, &edit.trace_context);
        let _entered = span.enter();
        if self.stopping {
            // Not assigned, so not acknowledged: the client re-sends it after reconnecting.
            return;
        }
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        if let (Some(client), Some(seq)) = (&c.client_id, edit.seq) {
            if seq <= self.assigned_seqs.get(client).copied().unwrap_or(0) {
                self.deps.metrics.edits_duplicate.inc();
                debug!(document = %self.id, client = &**client, seq, "duplicate edit ignored");
                // Answered, so a client (or a gateway keeping edits for a move) is not left
                // holding it; a full queue skips the answer, which changes nothing.
                let _ = c.outbox.send(Kind::Error(pb::Error {
                    code: close::ALREADY_APPLIED.into(),
                    message: format!("edit {seq} was already applied; it is not applied again"),
                    close: false,
                    reroute: false,
                }));
                return;
            }
        }
        let transformed = if span.is_none() {
            self.transform_edit(c, &edit)
        } else {
            info_span!("transform").in_scope(|| self.transform_edit(c, &edit))
        };
        match transformed {
            Ok(operation) => {
                let (author, client_id) = (c.user_id, c.client_id.clone());
                if let (Some(client), Some(seq)) = (&client_id, edit.seq) {
                    self.assigned_seqs.insert(Arc::clone(client), seq);
                }
                span.record("revision", self.head);
                self.head_len = operation.target_len();
                self.head += 1;
                let bytes = Entry::bytes_of(&operation, client_id.as_deref());
                let span = (!span.is_none()).then(|| Box::new(span.clone()));
                self.push_pending(Entry {
                    author,
                    operation,
                    client_id,
                    seq: edit.seq,
                    span,
                    bytes,
                });
                if let Some(c) = self.connections.get_mut(&conn) {
                    c.edited();
                }
            }
            Err((code, message)) => {
                self.deps
                    .metrics
                    .edits_rejected
                    .with_label_values(&[code.to_string().as_str()])
                    .inc();
                debug!(document = %self.id, code, %message, "edit refused");
                self.close(conn, code, message);
            }
        }
    }

    /// Brings a client's edit up to `head`, or says why it cannot be.
    pub(super) fn transform_edit(
        &self,
        c: &Connection,
        edit: &pb::Edit,
    ) -> Result<Operation, (u16, String)> {
        let bad =
            |e: codraft_ot::OtError| (close::BAD_OPERATION, format!("invalid operation: {e}"));
        let raw = edit.operation.clone().unwrap_or_default();
        let mut operation = wire::operation_from_proto(&raw).map_err(bad)?;
        if edit.revision > c.sent {
            return Err((
                close::REVISION_FROM_FUTURE,
                format!(
                    "revision {} is ahead of this connection's latest revision {}",
                    edit.revision, c.sent
                ),
            ));
        }
        let base = match (c.numbering.log_revision(edit.revision), c.numbering.origin) {
            (Some(base), _) => base,
            (None, Origin::Snapshot { joined_at, length }) => {
                // Based on the empty document before the join snapshot: it can only insert,
                // and the snapshot (which reached the server first) ends up after it.
                if operation.base_len() != 0 {
                    return Err(bad(codraft_ot::OtError::BaseLengthMismatch {
                        expected: operation.base_len(),
                        actual: 0,
                    }));
                }
                let mut rebased = Operation::new();
                for part in operation.components() {
                    if let codraft_ot::Component::Insert(s) = part {
                        rebased.insert(s);
                    }
                }
                rebased.retain(length);
                operation = rebased;
                joined_at
            }
            (None, Origin::Resumed { from }) => from,
        };
        let mut at = base;
        let composed_from = |at: u64| c.composed.iter().find(|span| span.from == at);
        if at < self.history_start && composed_from(at).is_none() {
            return Err((
                close::REVISION_TOO_OLD,
                format!(
                    "revision {} is older than the history this server keeps; reconnect",
                    edit.revision
                ),
            ));
        }
        // Through what the client was sent: composed entries where it got them, else the
        // log's entries one by one.
        while at < self.head {
            let next = match composed_from(at) {
                Some(span) => {
                    operation = operation.transform(&span.operation).map_err(bad)?.0;
                    span.to
                }
                None => {
                    let Some(entry) = self.history.get((at - self.history_start) as usize) else {
                        return Err((
                            close::REVISION_TOO_OLD,
                            format!(
                                "revision {} is older than the history this server keeps; \
                                 reconnect",
                                edit.revision
                            ),
                        ));
                    };
                    operation = operation.transform(&entry.operation).map_err(bad)?.0;
                    at + 1
                }
            };
            at = next;
        }
        if operation.base_len() != self.head_len {
            return Err(bad(codraft_ot::OtError::BaseLengthMismatch {
                expected: operation.base_len(),
                actual: self.head_len,
            }));
        }
        let max = self.deps.config.max_document_chars();
        if operation.target_len() > max {
            return Err((
                close::TOO_LARGE,
                format!("the document would exceed its limit of {max} characters"),
            ));
        }
        Ok(operation)
    }
}
