//! The past of a Yjs document, read from the store like an OT document's ([`crate::timeline`]):
//! the text of a `Y.Text` root at any revision, and each update as an edit of the session
//! list.
//!
//! Revision N is the document after its first N committed updates. Every compacted state the
//! actor writes is kept as a checkpoint, so the document at N is the nearest checkpoint at or
//! before N plus the updates after it, applied in commit order to a fresh `yrs::Doc`. That
//! order is one every client could have seen (an update is committed only when it continues
//! the document, see `continues`), so no update waits pending and the rebuilt document is
//! exactly the one the owner held at N.

use yrs::{updates::decoder::Decode, Doc, GetString, ReadTxn, Transact, Update};

use crate::{
    store::{HistoryExtent, Store, StoreError},
    timeline::{check_revision, PastEdit, PastError},
};

/// The root read when the caller names none: the shared text y-codemirror.next (and the web
/// editor) bind to.
pub const DEFAULT_ROOT: &str = "codemirror";

/// Longest root name a caller may ask for.
pub const MAX_ROOT_NAME: usize = 256;

fn corrupt(document: &str, revision: u64, error: impl std::fmt::Display) -> PastError {
    StoreError::Corrupt(format!("yjs update {revision} of {document}: {error}")).into()
}

/// The text of the root `root` (read as a `Y.Text`: a root of another type reads as the
/// strings it holds directly, usually none) at `revision`.
pub async fn text_at(
    store: &dyn Store,
    document: &str,
    extent: &HistoryExtent,
    revision: u64,
    root: &str,
) -> Result<String, PastError> {
    if root.is_empty() || root.len() > MAX_ROOT_NAME {
        return Err(PastError::BadRequest(format!(
            "root must be 1-{MAX_ROOT_NAME} bytes"
        )));
    }
    check_revision(extent, revision)?;
    let (from, state) = store
        .yjs_checkpoint_at_or_before(document, revision)
        .await?
        .unwrap_or_default();
    let updates = if from == revision {
        Vec::new()
    } else {
        store.read_yjs_updates(document, from, revision).await?
    };
    if updates.len() as u64 != revision - from {
        // Compacted between reading the extent and the updates.
        return Err(PastError::Compacted {
            revision,
            extent: extent.clone(),
        });
    }
    let doc = Doc::new();
    // The root's type is fixed before any update names it (updates carry no root types).
    let text = doc.get_or_insert_text(root);
    let mut txn = doc.transact_mut();
    let parts = (!state.is_empty()).then_some((from, &state)).into_iter();
    let parts = parts.chain((from..).zip(&updates));
    for (at, bytes) in parts {
        let update = Update::decode_v1(bytes).map_err(|e| corrupt(document, at, e))?;
        txn.apply_update(update)
            .map_err(|e| corrupt(document, at, e))?;
    }
    if txn.store().pending_update().is_some() || txn.store().pending_ds().is_some() {
        return Err(corrupt(
            document,
            revision,
            "an update misses what it builds on",
        ));
    }
    Ok(text.get_string(&txn))
}

/// The committed updates with `start <= revision < end` as edits: the author is the Yjs
/// client whose items the update inserts (the one with most, if several), or none for an
/// update that only deletes; inserted and deleted count Yjs items (UTF-16 code units of
/// text).
pub async fn edits(
    store: &dyn Store,
    document: &str,
    start: u64,
    end: u64,
) -> Result<Vec<PastEdit>, PastError> {
    let past = store.read_yjs_past(document, start, end).await?;
    past.into_iter()
        .map(|past| {
            let update =
                Update::decode_v1(&past.update).map_err(|e| corrupt(document, past.revision, e))?;
            let mut author: Option<(u64, u64)> = None;
            let mut inserted = 0;
            for (client, ranges) in update.insertions(true).iter() {
                let n: u64 = ranges.iter().map(|r| u64::from(r.end - r.start)).sum();
                inserted += n;
                if author.is_none_or(|(_, most)| n > most) {
                    author = Some((client.get(), n));
                }
            }
            let deleted = update
                .delete_set()
                .iter()
                .flat_map(|(_, ranges)| ranges.iter())
                .map(|r| u64::from(r.end - r.start))
                .sum();
            Ok(PastEdit {
                revision: past.revision,
                author: author.map(|(client, _)| client),
                committed_at_ms: past.committed_at_ms,
                inserted,
                deleted,
            })
        })
        .collect()
}

/// A model check of the history: several Yjs clients edit one document concurrently (text
/// inserts and deletes, and a map root beside the text), each sending its updates through
/// the "owner", which commits them in the order they arrive to a real embedded store and
/// now and then writes a snapshot, as the actor does. The model is the owner's text after
/// every commit; [`text_at`] must give it back for every revision, before and after a
/// compaction (which must refuse exactly the revisions it removed). Seeded:
/// `YJS_HISTORY_SEED` replays one, `YJS_HISTORY_SCHEDULES` (default 40) says how many.
#[cfg(test)]
mod model_tests {
    use std::sync::Arc;

    use rand::{rngs::StdRng, Rng, SeedableRng};
    use yrs::{Map, StateVector, Text};

    use super::*;
    use crate::{
        store::{sqlite::SqliteStore, DocumentCommit},
        timeline,
    };

    const DOCUMENT: &str = "y:model";

    struct Client {
        doc: Doc,
        /// Updates made and not yet sent to the owner, in order.
        outbox: Vec<Vec<u8>>,
    }

    impl Client {
        fn edit(&mut self, rng: &mut StdRng) {
            let text = self.doc.get_or_insert_text(DEFAULT_ROOT);
            let meta = self.doc.get_or_insert_map("meta");
            let before = self.doc.transact().state_vector();
            {
                let mut txn = self.doc.transact_mut();
                // Positions at character boundaries (the default offsets count UTF-8 bytes).
                let current = text.get_string(&txn);
                let mut bounds: Vec<u32> = current.char_indices().map(|(i, _)| i as u32).collect();
                bounds.push(current.len() as u32);
                match rng.random_range(0..10) {
                    0..6 => {
                        let at = bounds[rng.random_range(0..bounds.len())];
                        let words = ["a", "bc", "dé", "😀", "xyz ", "\n"];
                        text.insert(&mut txn, at, words[rng.random_range(0..words.len())]);
                    }
                    6..9 if bounds.len() > 1 => {
                        let a = rng.random_range(0..bounds.len() - 1);
                        let b = rng.random_range(a + 1..bounds.len().min(a + 5));
                        text.remove_range(&mut txn, bounds[a], bounds[b] - bounds[a]);
                    }
                    _ => {
                        meta.insert(&mut txn, "n", rng.random_range(0..100_i64));
                    }
                }
            }
            let update = self.doc.transact().encode_state_as_update_v1(&before);
            self.outbox.push(update);
        }
    }

    /// Runs one schedule; the error says what differed.
    async fn schedule(seed: u64) -> Result<(), String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let store = SqliteStore::open(dir.path()).map_err(|e| e.to_string())?;
        let epoch = store.load(DOCUMENT).await.map_err(|e| e.to_string())?.epoch;
        let owner = Doc::new();
        let owner_text = owner.get_or_insert_text(DEFAULT_ROOT);
        let mut clients: Vec<Client> = (0..rng.random_range(2..5))
            .map(|i| Client {
                doc: Doc::with_client_id(i + 1),
                outbox: Vec::new(),
            })
            .collect();
        // The owner's text after each revision.
        let mut model = vec![String::new()];
        for _ in 0..rng.random_range(10..80) {
            let i = rng.random_range(0..clients.len());
            if rng.random_bool(0.6) {
                clients[i].edit(&mut rng);
                continue;
            }
            // Client i sends what it made (one commit), then syncs from the owner.
            let sent = std::mem::take(&mut clients[i].outbox);
            if !sent.is_empty() {
                let commit = DocumentCommit {
                    document: Arc::from(DOCUMENT),
                    base_revision: model.len() as u64 - 1,
                    epoch,
                    ops: Vec::new(),
                    language: None,
                    updates: sent.iter().map(|u| bytes::Bytes::from(u.clone())).collect(),
                };
                store
                    .commit(Arc::from([commit]))
                    .await
                    .map_err(|e| e.to_string())?;
                for update in &sent {
                    let update = Update::decode_v1(update).map_err(|e| e.to_string())?;
                    let mut txn = owner.transact_mut();
                    txn.apply_update(update).map_err(|e| e.to_string())?;
                    model.push(owner_text.get_string(&txn));
                }
            }
            let missing = owner
                .transact()
                .encode_state_as_update_v1(&clients[i].doc.transact().state_vector());
            let missing = Update::decode_v1(&missing).map_err(|e| e.to_string())?;
            clients[i]
                .doc
                .transact_mut()
                .apply_update(missing)
                .map_err(|e| e.to_string())?;
            if rng.random_bool(0.2) {
                let state = owner
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                store
                    .write_yjs_snapshot(DOCUMENT, model.len() as u64 - 1, state)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let check = async |what: &str| -> Result<(), String> {
            let extent = match timeline::extent(&store, DOCUMENT).await {
                // Nobody sent anything: the document was never written.
                Err(PastError::UnknownDocument(_)) if model.len() == 1 => return Ok(()),
                extent => extent.map_err(|e| e.to_string())?,
            };
            if extent.revision != model.len() as u64 - 1 {
                return Err(format!(
                    "{what}: extent {extent:?}, {} commits",
                    model.len()
                ));
            }
            for (revision, expected) in model.iter().enumerate() {
                let revision = revision as u64;
                let kept = revision == 0
                    || revision >= extent.exact_from
                    || extent.checkpoints.contains(&revision);
                match text_at(&store, DOCUMENT, &extent, revision, DEFAULT_ROOT).await {
                    Ok(text) if kept && text == *expected => {}
                    Err(PastError::Compacted { .. }) if !kept => {}
                    other => {
                        return Err(format!(
                            "{what}: revision {revision} (kept: {kept}, extent {extent:?}) \
                             gave {other:?}, the owner had {expected:?}"
                        ))
                    }
                }
            }
            Ok(())
        };
        check("before compaction").await?;
        let conn =
            rusqlite::Connection::open(dir.path().join("codraft.db")).map_err(|e| e.to_string())?;
        let aged = rng.random_range(0..model.len() as i64);
        conn.execute(
            "UPDATE yjs_updates SET committed_at = committed_at - 86400 WHERE revision < ?1",
            [aged],
        )
        .map_err(|e| e.to_string())?;
        store
            .compact(std::time::Duration::from_secs(3600))
            .await
            .map_err(|e| e.to_string())?;
        check("after compaction").await
    }

    #[tokio::test]
    async fn text_at_every_revision_is_what_the_owner_had() {
        let first = std::env::var("YJS_HISTORY_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        let schedules: u64 = std::env::var("YJS_HISTORY_SCHEDULES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40);
        for k in 0..schedules {
            let seed = first.wrapping_add(k);
            if let Err(error) = schedule(seed).await {
                panic!(
                    "{error}\nreplay: YJS_HISTORY_SEED={seed} YJS_HISTORY_SCHEDULES=1 \
                     cargo test -p codraft-docnode text_at_every_revision"
                );
            }
        }
    }
}
