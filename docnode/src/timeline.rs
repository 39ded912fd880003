//! A document's past, read from the store: the text at any revision, the edits grouped into
//! sessions, and what changed between two revisions with who wrote each character.
//!
//! Everything here reads only committed rows (checkpoints and the op log), so it needs no
//! actor and loads nothing: the history of a document is as the store has it, which is
//! exactly what clients were sent (durable before visible). A revision N is the text after
//! N ops; the op logged at revision r takes the text from r to r + 1.

use codraft_ot::{Component, Operation};
use ropey::Rope;

use crate::store::{HistoryExtent, Store, StoreError};

/// Edits by one author further apart than this start a new session.
pub const SESSION_GAP_MS: i64 = 5 * 60 * 1000;

/// Most sessions one history page lists.
pub const MAX_PAGE: usize = 200;

/// Ops read per store call while grouping sessions, newest first.
const READ_CHUNK: u64 = 1_000;

/// Most ops one history page reads: a page is computed from the op log, so this is what
/// keeps its cost bounded (a few milliseconds) however long the sessions are. A page ends
/// at `limit` sessions or at this many edits, whichever comes first; `next_before`
/// continues from there (a session longer than the budget then spans pages).
pub const MAX_OPS_PER_PAGE: u64 = 2_000;

/// Why a past revision cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PastError {
    /// The document was never written.
    #[error("document {0} has no history: it was never edited")]
    UnknownDocument(String),
    /// The revision is beyond the newest one.
    #[error("revision {revision} is out of range: this document has revisions 0 to {newest}")]
    OutOfRange {
        /// The revision asked for.
        revision: u64,
        /// The newest revision.
        newest: u64,
        /// What is kept.
        extent: HistoryExtent,
    },
    /// The ops needed were compacted away.
    #[error(
        "revision {revision} was compacted away: revisions {exact_from} to {newest} are kept \
         exactly, older ones only at the checkpoints {checkpoints:?}",
        exact_from = extent.exact_from,
        newest = extent.revision,
        checkpoints = extent.checkpoints.iter().filter(|&&c| c < extent.exact_from).collect::<Vec<_>>()
    )]
    Compacted {
        /// The revision asked for.
        revision: u64,
        /// What is kept.
        extent: HistoryExtent,
    },
    /// The parameters make no sense.
    #[error("{0}")]
    BadRequest(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PastError {
    /// What is kept, if the error is about a revision.
    pub fn extent(&self) -> Option<&HistoryExtent> {
        match self {
            Self::OutOfRange { extent, .. } | Self::Compacted { extent, .. } => Some(extent),
            _ => None,
        }
    }
}

/// Where a document's history starts and ends.
pub async fn extent(store: &dyn Store, document: &str) -> Result<HistoryExtent, PastError> {
    store
        .history_extent(document)
        .await?
        .ok_or_else(|| PastError::UnknownDocument(document.to_owned()))
}

/// Whether `revision` can be rebuilt exactly, or why not.
pub(crate) fn check_revision(extent: &HistoryExtent, revision: u64) -> Result<(), PastError> {
    if revision > extent.revision {
        return Err(PastError::OutOfRange {
            revision,
            newest: extent.revision,
            extent: extent.clone(),
        });
    }
    let kept =
        revision == 0 || revision >= extent.exact_from || extent.checkpoints.contains(&revision);
    if !kept {
        return Err(PastError::Compacted {
            revision,
            extent: extent.clone(),
        });
    }
    Ok(())
}

/// The text at `revision`: the nearest checkpoint at or before it plus the ops after it.
/// (A Yjs document's text is [`crate::yjs::history::text_at`].)
pub async fn text_at(
    store: &dyn Store,
    document: &str,
    extent: &HistoryExtent,
    revision: u64,
) -> Result<String, PastError> {
    check_revision(extent, revision)?;
    let (from, text) = store
        .checkpoint_at_or_before(document, revision)
        .await?
        .unwrap_or((0, String::new()));
    if from == revision {
        return Ok(text);
    }
    let ops = store.read_log(document, from, revision).await?;
    if ops.len() as u64 != revision - from {
        // Compacted between reading the extent and the log.
        return Err(PastError::Compacted {
            revision,
            extent: extent.clone(),
        });
    }
    let mut rope = Rope::from_str(&text);
    for op in &ops {
        op.operation
            .apply(&mut rope)
            .map_err(|e| StoreError::Corrupt(format!("op {} of {document}: {e}", op.revision)))?;
    }
    Ok(rope.to_string())
}

/// The revision the text had at `at_ms` (Unix milliseconds): after the last op committed
/// then or before.
pub async fn revision_at(
    store: &dyn Store,
    document: &str,
    extent: &HistoryExtent,
    at_ms: i64,
) -> Result<u64, PastError> {
    match store.last_revision_at(document, at_ms).await? {
        Some(op) => Ok(op + 1),
        // Before the first kept op: the empty document, unless older ops were compacted.
        None if extent.exact_from == 0 => Ok(0),
        None => Err(PastError::Compacted {
            revision: extent.exact_from,
            extent: extent.clone(),
        }),
    }
}

/// Consecutive edits by one author, as [`sessions`] groups them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The first revision its edits produced.
    pub first_revision: u64,
    /// The last revision its edits produced.
    pub last_revision: u64,
    /// The author's user id.
    pub author: u64,
    /// Commit time of its first edit, Unix milliseconds.
    pub started_ms: i64,
    /// Commit time of its last edit, Unix milliseconds.
    pub ended_ms: i64,
    /// Code points inserted.
    pub inserted: u64,
    /// Code points deleted.
    pub deleted: u64,
    /// Edits.
    pub edits: u64,
}

/// Code points an op inserts and deletes.
pub fn churn(operation: &Operation) -> (u64, u64) {
    operation
        .components()
        .iter()
        .fold((0, 0), |(ins, del), part| match part {
            Component::Insert(s) => (ins + s.chars().count() as u64, del),
            Component::Delete(n) => (ins, del + n),
            Component::Retain(_) => (ins, del),
        })
}

/// One committed edit as the session list sees it, whatever the document's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastEdit {
    /// The edit takes the document from this revision to the next.
    pub revision: u64,
    /// Who made it; `None` if the edit does not say (a Yjs update that only deletes), in
    /// which case it joins the session around it.
    pub author: Option<u64>,
    /// When it was committed, Unix milliseconds.
    pub committed_at_ms: i64,
    /// What it inserted and deleted (code points for OT edits, Yjs items for Yjs updates).
    pub inserted: u64,
    /// See `inserted`.
    pub deleted: u64,
}

/// The committed edits with `start <= revision < end`, in order.
async fn read_edits(
    store: &dyn Store,
    document: &str,
    start: u64,
    end: u64,
) -> Result<Vec<PastEdit>, PastError> {
    if codraft_common::ids::is_yjs(document) {
        return crate::yjs::history::edits(store, document, start, end).await;
    }
    let ops = store.read_past(document, start, end).await?;
    Ok(ops
        .iter()
        .map(|past| {
            let (inserted, deleted) = churn(&past.op.operation);
            PastEdit {
                revision: past.op.revision,
                author: Some(past.op.author),
                committed_at_ms: past.committed_at_ms,
                inserted,
                deleted,
            }
        })
        .collect())
}

/// Up to `limit` sessions whose edits produced revisions up to `before` (default: the
/// newest), newest first, and the `before` of the next page if there is one.
pub async fn sessions(
    store: &dyn Store,
    document: &str,
    extent: &HistoryExtent,
    before: Option<u64>,
    limit: usize,
) -> Result<(Vec<Session>, Option<u64>), PastError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let before = before.unwrap_or(extent.revision);
    if before > extent.revision {
        return Err(PastError::OutOfRange {
            revision: before,
            newest: extent.revision,
            extent: extent.clone(),
        });
    }
    let mut out: Vec<Session> = Vec::new();
    // Edits are read backwards from `before` (exclusive) in chunks; the session being built
    // is the last of `out` until an edit of another author or an older gap closes it.
    let mut end = before;
    let mut read_so_far = 0;
    let floor = extent.exact_from;
    while end > floor && read_so_far < MAX_OPS_PER_PAGE {
        let start = end.saturating_sub(READ_CHUNK).max(floor);
        let edits = read_edits(store, document, start, end).await?;
        read_so_far += end - start;
        for edit in edits.iter().rev() {
            let produced = edit.revision + 1;
            let joins = out.last().is_some_and(|s| {
                edit.author.is_none_or(|a| a == s.author)
                    && s.started_ms - edit.committed_at_ms <= SESSION_GAP_MS
            });
            if joins {
                if let Some(s) = out.last_mut() {
                    s.first_revision = produced;
                    s.started_ms = edit.committed_at_ms;
                    s.inserted += edit.inserted;
                    s.deleted += edit.deleted;
                    s.edits += 1;
                }
                continue;
            }
            if out.len() == limit {
                // The page is full and the newest-but-unlisted session starts above here.
                return Ok((out, Some(produced)));
            }
            out.push(Session {
                first_revision: produced,
                last_revision: produced,
                author: edit.author.unwrap_or(0),
                started_ms: edit.committed_at_ms,
                ended_ms: edit.committed_at_ms,
                inserted: edit.inserted,
                deleted: edit.deleted,
                edits: 1,
            });
        }
        end = start;
    }
    // Stopped by the page's edit budget: the oldest session may go on below.
    let next = (end > floor).then(|| out.last().map_or(end, |s| s.first_revision - 1));
    Ok((out, next))
}

/// A run of characters and who inserted them (`None`: they were there at the start).
pub type AuthorSpans = Vec<(u64, Option<u64>)>;

/// Applies `operation`, written by `author`, to `spans`.
fn apply_to_spans(spans: &AuthorSpans, operation: &Operation, author: u64) -> AuthorSpans {
    let mut out: AuthorSpans = Vec::with_capacity(spans.len() + 2);
    let push = |out: &mut AuthorSpans, len: u64, who: Option<u64>| {
        if len == 0 {
            return;
        }
        match out.last_mut() {
            Some((n, w)) if *w == who => *n += len,
            _ => out.push((len, who)),
        }
    };
    let mut old = spans.iter().copied();
    let mut current: Option<(u64, Option<u64>)> = old.next();
    // Takes `n` characters from the old spans, keeping them or not.
    let mut take = |out: &mut AuthorSpans, mut n: u64, keep: bool| {
        while n > 0 {
            let Some((len, who)) = current else { return };
            let step = n.min(len);
            if keep {
                push(out, step, who);
            }
            n -= step;
            current = if step == len {
                old.next()
            } else {
                Some((len - step, who))
            };
        }
    };
    for part in operation.components() {
        match part {
            Component::Retain(n) => take(&mut out, *n, true),
            Component::Delete(n) => take(&mut out, *n, false),
            Component::Insert(s) => push(&mut out, s.chars().count() as u64, Some(author)),
        }
    }
    out
}

/// What changed from revision `from` to `to`: one op, and the authorship of every character
/// of the text at `to` (characters already there at `from` have no author).
pub async fn diff(
    store: &dyn Store,
    document: &str,
    extent: &HistoryExtent,
    from: u64,
    to: u64,
) -> Result<(Operation, AuthorSpans), PastError> {
    if from > to {
        return Err(PastError::BadRequest(format!(
            "from ({from}) must not be after to ({to})"
        )));
    }
    check_revision(extent, to)?;
    // The ops between must be kept, not only the two ends.
    if from < extent.exact_from && from != to {
        return Err(PastError::Compacted {
            revision: from,
            extent: extent.clone(),
        });
    }
    let start = text_at(store, document, extent, from).await?;
    let length = start.chars().count() as u64;
    let mut composed = Operation::new();
    composed.retain(length);
    let mut spans: AuthorSpans = if length > 0 {
        vec![(length, None)]
    } else {
        Vec::new()
    };
    let ops = store.read_log(document, from, to).await?;
    if ops.len() as u64 != to - from {
        return Err(PastError::Compacted {
            revision: from,
            extent: extent.clone(),
        });
    }
    for op in &ops {
        composed = composed
            .compose(&op.operation)
            .map_err(|e| StoreError::Corrupt(format!("op {} of {document}: {e}", op.revision)))?;
        spans = apply_to_spans(&spans, &op.operation, op.author);
    }
    Ok((composed, spans))
}

/// The op that takes `from` to `to`: the common start and end kept, the middle replaced.
/// Plain, and enough for a restore, which transforms it like any edit.
pub fn replace_op(from: &str, to: &str) -> Operation {
    let a: Vec<char> = from.chars().collect();
    let b: Vec<char> = to.chars().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut op = Operation::new();
    op.retain(prefix as u64);
    op.delete((a.len() - prefix - suffix) as u64);
    op.insert(&b[prefix..b.len() - suffix].iter().collect::<String>());
    op.retain(suffix as u64);
    op
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_op_takes_one_text_to_the_other() {
        for (a, b) in [
            ("", ""),
            ("", "héllo"),
            ("héllo", ""),
            ("abcdef", "abXYef"),
            ("aaa", "aaaa"),
            ("abc", "abc"),
            ("😀x😀", "😀😀"),
        ] {
            let op = replace_op(a, b);
            assert_eq!(op.apply_str(a).expect("applies"), b, "{a:?} -> {b:?}");
        }
    }

    #[test]
    fn spans_follow_inserts_and_deletes_by_author() {
        let mut spans: AuthorSpans = vec![(5, None)];
        // "hello" -> "heXYllo" by 1, then delete "eX" by 2, then append "!" by 2.
        let mut op = Operation::new();
        op.retain(2).insert("XY").retain(3);
        spans = apply_to_spans(&spans, &op, 1);
        assert_eq!(spans, vec![(2, None), (2, Some(1)), (3, None)]);
        let mut op = Operation::new();
        op.retain(1).delete(2).retain(4);
        spans = apply_to_spans(&spans, &op, 2);
        assert_eq!(spans, vec![(1, None), (1, Some(1)), (3, None)]);
        let mut op = Operation::new();
        op.retain(5).insert("!");
        spans = apply_to_spans(&spans, &op, 2);
        assert_eq!(
            spans,
            vec![(1, None), (1, Some(1)), (3, None), (1, Some(2))]
        );
    }

    #[test]
    fn churn_counts_code_points() {
        let mut op = Operation::new();
        op.retain(1).insert("é😀").delete(3);
        assert_eq!(churn(&op), (2, 3));
    }
}
