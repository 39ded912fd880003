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

/// `n` Yjs updates (v1) typing into the `Y.Text` named `codemirror`: update `i` appends
/// `"<i>,"`, so their document's text is `"0,1,...,"`.
pub fn yjs_typing(n: usize) -> Vec<bytes::Bytes> {
    use yrs::{ReadTxn, Text, Transact};
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("codemirror");
    (0..n)
        .map(|i| {
            let before = doc.transact().state_vector();
            let mut txn = doc.transact_mut();
            let end = text.len(&txn);
            text.insert(&mut txn, end, &format!("{i},"));
            drop(txn);
            bytes::Bytes::from(doc.transact().encode_state_as_update_v1(&before))
        })
        .collect()
}

/// The text of the `codemirror` root after applying `parts` (a stored Yjs document).
pub fn yjs_text(parts: &[Vec<u8>]) -> String {
    use yrs::{updates::decoder::Decode, GetString, Transact};
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("codemirror");
    let mut txn = doc.transact_mut();
    for part in parts {
        let update = yrs::Update::decode_v1(part).expect("a stored update decodes");
        txn.apply_update(update).expect("a stored update applies");
    }
    text.get_string(&txn)
}

/// The compacted state of a Yjs document made of `updates`.
pub fn yjs_state(updates: &[bytes::Bytes]) -> Vec<u8> {
    use yrs::{updates::decoder::Decode, ReadTxn, StateVector, Transact};
    let doc = yrs::Doc::new();
    {
        let mut txn = doc.transact_mut();
        for update in updates {
            let update = yrs::Update::decode_v1(update).expect("an update decodes");
            txn.apply_update(update).expect("an update applies");
        }
    }
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    state
}

/// A commit of Yjs `updates` to `document`, continuing from `base`.
pub fn yjs_commit(
    document: &str,
    epoch: u64,
    base: u64,
    updates: &[bytes::Bytes],
) -> DocumentCommit {
    DocumentCommit {
        document: Arc::from(document),
        base_revision: base,
        epoch,
        ops: Vec::new(),
        language: None,
        updates: updates.to_vec(),
    }
}

/// The version history of a Yjs document, checked against `store` (each store's test runs
/// it): six updates of [`yjs_typing`] committed around a snapshot at revision 4, then aged by
/// `age` (which must make every committed update of `document` older than a day) and
/// compacted with a one-day retention. The text of every kept revision is checked against
/// what the updates type, before and after the compaction, and the ones compaction removed
/// must say so.
pub async fn check_yjs_history(
    store: &dyn codraft_docnode::store::Store,
    document: &str,
    age: impl AsyncFnOnce(),
) {
    use codraft_docnode::{
        timeline::{self, PastError},
        yjs::history::text_at,
    };
    let typed = |r: usize| -> String { (0..r).map(|i| format!("{i},")).collect() };
    let epoch = store.load(document).await.expect("load").epoch;
    let updates = yjs_typing(6);
    store
        .commit(Arc::from([yjs_commit(document, epoch, 0, &updates[..4])]))
        .await
        .expect("first commit");
    store
        .write_yjs_snapshot(document, 4, yjs_state(&updates[..4]))
        .await
        .expect("snapshot");
    store
        .commit(Arc::from([yjs_commit(document, epoch, 4, &updates[4..])]))
        .await
        .expect("second commit");

    let extent = timeline::extent(store, document).await.expect("extent");
    assert_eq!(
        (
            extent.revision,
            extent.exact_from,
            extent.checkpoints.clone()
        ),
        (6, 0, vec![4]),
        "a snapshot is a checkpoint and deletes no update"
    );
    for r in 0..=6 {
        let text = text_at(store, document, &extent, r as u64, "codemirror")
            .await
            .expect("text at a kept revision");
        assert_eq!(text, typed(r), "text at revision {r}");
    }
    let other = text_at(store, document, &extent, 6, "another-root").await;
    assert_eq!(other.expect("another root"), "", "a root nothing wrote");
    assert!(matches!(
        text_at(store, document, &extent, 7, "codemirror").await,
        Err(PastError::OutOfRange { newest: 6, .. })
    ));
    let (sessions, next) = timeline::sessions(store, document, &extent, None, 50)
        .await
        .expect("sessions");
    assert_eq!(next, None);
    assert_eq!(sessions.len(), 1, "one Yjs client typed: {sessions:?}");
    let session = &sessions[0];
    assert_eq!(
        (session.first_revision, session.last_revision, session.edits),
        (1, 6, 6)
    );
    assert_eq!(session.inserted, typed(6).len() as u64);
    assert_ne!(session.author, 0, "the author is the Yjs client id");

    age().await;
    let deleted = store
        .compact(std::time::Duration::from_secs(86_400))
        .await
        .expect("compact");
    assert_eq!(deleted, 4, "the updates below the checkpoint go");
    let extent = timeline::extent(store, document).await.expect("extent");
    assert_eq!(
        (extent.exact_from, extent.checkpoints.clone()),
        (4, vec![4])
    );
    for r in [0, 4, 5, 6] {
        let text = text_at(store, document, &extent, r as u64, "codemirror")
            .await
            .expect("a kept revision after compaction");
        assert_eq!(text, typed(r), "text at revision {r} after compaction");
    }
    assert!(matches!(
        text_at(store, document, &extent, 2, "codemirror").await,
        Err(PastError::Compacted { revision: 2, .. })
    ));
    let loaded = store.load(document).await.expect("reload");
    assert_eq!(loaded.revision, 6);
    assert_eq!(yjs_text(&loaded.yjs), typed(6));
}
