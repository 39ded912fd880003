//! Commits that type a known text, for the docnode's store tests and the commit benchmark:
//! op `r` appends the digit `r % 10`, so the text after `n` ops is known without keeping it,
//! and every op carries an exactly-once id whose sequence number is its revision plus one.

use std::sync::Arc;

use codraft_docnode::store::{DocumentCommit, LoggedOp};
use codraft_ot::Operation;

/// The character op `revision` types in [`typing`]: documents read 0123456789012...
pub fn char_at(revision: u64) -> char {
    char::from_digit((revision % 10) as u32, 10).unwrap_or('?')
}

/// The text after `revision` ops of [`typing`].
pub fn typed_text(revision: u64) -> String {
    (0..revision).map(char_at).collect()
}

/// A commit of `n` ops to `document`, each appending one character, continuing from `base`.
/// Ops carry client id `client` with sequence numbers equal to their revision plus one.
pub fn typing(document: &str, epoch: u64, base: u64, n: u64, client: &str) -> DocumentCommit {
    let ops = (base..base + n)
        .map(|revision| {
            let mut operation = Operation::new();
            operation
                .retain(revision)
                .insert(&char_at(revision).to_string());
            LoggedOp {
                revision,
                operation,
                author: 7,
                client_id: Some(client.to_owned()),
                seq: Some(revision + 1),
            }
        })
        .collect();
    DocumentCommit {
        document: Arc::from(document),
        base_revision: base,
        epoch,
        ops,
        language: None,
        updates: Vec::new(),
    }
}

/// Commits as the batch the committer would send.
pub fn batch(commits: impl IntoIterator<Item = DocumentCommit>) -> Arc<[DocumentCommit]> {
    commits.into_iter().collect()
}
