//! The embedded file store's housekeeping and history: compaction keeps what exactly-once
//! needs and the history's checkpoints, expiry removes old documents with all their rows, and
//! the timeline reads past revisions and sessions from it. Each test uses its own temp
//! directory.

use std::time::Duration;

use codraft_docnode::{
    store::{sqlite::SqliteStore, Snapshot, Store},
    timeline,
};
use codraft_testkit::store::{
    batch, check_yjs_history, typed_text, typing, yjs_commit, yjs_state, yjs_text, yjs_typing,
};
use rusqlite::Connection;

/// A store in a fresh directory, plus a second connection to the same file for adjusting
/// timestamps (SQLite's WAL mode allows both).
fn open() -> (tempfile::TempDir, SqliteStore, Connection) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open store");
    let side = Connection::open(dir.path().join("codraft.db")).expect("open side connection");
    side.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    (dir, store, side)
}

#[tokio::test]
async fn last_seq_survives_compaction() {
    let (_dir, store, side) = open();
    let epoch = store.load("doc").await.expect("load").epoch;
    store
        .commit(batch([typing("doc", epoch, 0, 20, "typist")]))
        .await
        .expect("commit");
    store
        .write_snapshot(Snapshot {
            document: "doc".into(),
            revision: 15,
            text: typed_text(15),
        })
        .await
        .expect("snapshot");
    // Rows 0..15 (up to the checkpoint the snapshot made) are two hours old; 15..20 are
    // recent.
    side.execute(
        "UPDATE oplog SET committed_at = committed_at - 7200 WHERE revision < 15",
        [],
    )
    .expect("age rows");

    let deleted = store
        .compact(Duration::from_secs(3600))
        .await
        .expect("compact");
    assert_eq!(
        deleted, 15,
        "old rows below the checkpoint go, recent ones stay"
    );
    assert!(store.read_log("doc", 0, 15).await.expect("log").is_empty());
    assert_eq!(store.read_log("doc", 15, 20).await.expect("log").len(), 5);
    assert_eq!(store.last_seq("doc", "typist").await.expect("seq"), 20);
    let loaded = store.load("doc").await.expect("load after compaction");
    assert_eq!((loaded.revision, loaded.text), (20, typed_text(20)));
}

#[tokio::test]
async fn delete_expired_removes_old_documents_and_all_their_rows() {
    let (_dir, store, side) = open();
    for document in ["old", "fresh"] {
        let epoch = store.load(document).await.expect("load").epoch;
        store
            .commit(batch([typing(document, epoch, 0, 3, "c")]))
            .await
            .expect("commit");
        store
            .write_snapshot(Snapshot {
                document: document.into(),
                revision: 3,
                text: typed_text(3),
            })
            .await
            .expect("snapshot");
    }
    side.execute(
        "UPDATE documents SET accessed_at = accessed_at - 3 * 86400 WHERE id = 'old'",
        [],
    )
    .expect("age document");

    let deleted = store
        .delete_expired(Duration::from_secs(2 * 86_400))
        .await
        .expect("delete_expired");
    assert_eq!(deleted, 1);
    assert_eq!(store.document_count().await.expect("count"), 1);
    for table in ["oplog", "snapshots", "client_seqs"] {
        let rows: i64 = side
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE document = 'old'"),
                [],
                |r| r.get(0),
            )
            .expect("count rows");
        assert_eq!(rows, 0, "{table} rows of the old document");
    }
    assert_eq!(store.last_seq("old", "c").await.expect("seq"), 0);
    let gone = store.load("old").await.expect("load old");
    assert_eq!((gone.revision, gone.text.as_str()), (0, ""));
    assert_eq!(store.load("fresh").await.expect("load fresh").revision, 3);
}

#[tokio::test]
async fn checkpoints_outlive_compaction_and_say_which_revisions_are_exact() {
    let (_dir, store, side) = open();
    let epoch = store.load("doc").await.expect("load").epoch;
    store
        .commit(batch([typing("doc", epoch, 0, 30, "typist")]))
        .await
        .expect("commit");
    for revision in [10, 20] {
        store
            .write_snapshot(Snapshot {
                document: "doc".into(),
                revision,
                text: typed_text(revision),
            })
            .await
            .expect("snapshot");
    }
    side.execute(
        "UPDATE oplog SET committed_at = committed_at - 7200 WHERE revision < 20",
        [],
    )
    .expect("age rows");
    let unknown = store.history_extent("nothing").await.expect("extent");
    assert_eq!(unknown, None, "a document never written has no history");

    assert_eq!(
        store
            .compact(Duration::from_secs(3600))
            .await
            .expect("compact"),
        20
    );
    let extent = store
        .history_extent("doc")
        .await
        .expect("extent")
        .expect("written");
    assert_eq!(
        (extent.revision, extent.exact_from, extent.checkpoints),
        (30, 20, vec![10, 20])
    );
    assert_eq!(
        store.checkpoint_at_or_before("doc", 15).await.expect("cp"),
        Some((10, typed_text(10)))
    );
    assert_eq!(
        store.checkpoint_at_or_before("doc", 9).await.expect("cp"),
        None
    );
    let past = store.read_past("doc", 20, 30).await.expect("past");
    assert_eq!(past.len(), 10);
    assert!(past.iter().all(|p| p.committed_at_ms > 0));
    let now_ms = past[9].committed_at_ms + 1000;
    assert_eq!(
        store.last_revision_at("doc", now_ms).await.expect("at"),
        Some(29)
    );
    assert_eq!(store.last_revision_at("doc", 0).await.expect("at"), None);

    let info = codraft_docnode::store::AuthorInfo {
        author: 7,
        name: "Ada".into(),
        hue: 120,
    };
    store
        .record_author("doc", info.clone())
        .await
        .expect("author");
    assert_eq!(store.authors("doc").await.expect("authors"), vec![info]);
}

#[tokio::test]
async fn sessions_group_each_authors_consecutive_edits_newest_first_and_page() {
    let (_dir, store, _side) = open();
    let epoch = store.load("doc").await.expect("load").epoch;
    // Authors by op: A A A B B A A (revisions 1..=7 are the texts after each).
    let mut commit = typing("doc", epoch, 0, 7, "typist");
    for (op, author) in commit.ops.iter_mut().zip([1, 1, 1, 2, 2, 1, 1]) {
        op.author = author;
    }
    store.commit(batch([commit])).await.expect("commit");
    let extent = timeline::extent(&store, "doc").await.expect("extent");
    let spans = |sessions: &[timeline::Session]| -> Vec<(u64, u64, u64, u64)> {
        sessions
            .iter()
            .map(|s| (s.author, s.first_revision, s.last_revision, s.inserted))
            .collect()
    };
    let (all, next) = timeline::sessions(&store, "doc", &extent, None, 50)
        .await
        .expect("sessions");
    assert_eq!(spans(&all), vec![(1, 6, 7, 2), (2, 4, 5, 2), (1, 1, 3, 3)]);
    assert_eq!(next, None);
    let (first, next) = timeline::sessions(&store, "doc", &extent, None, 2)
        .await
        .expect("page");
    assert_eq!(spans(&first), vec![(1, 6, 7, 2), (2, 4, 5, 2)]);
    assert_eq!(next, Some(3));
    let (rest, next) = timeline::sessions(&store, "doc", &extent, Some(3), 2)
        .await
        .expect("next page");
    assert_eq!(spans(&rest), vec![(1, 1, 3, 3)]);
    assert_eq!(next, None);
    assert_eq!(
        timeline::text_at(&store, "doc", &extent, 4)
            .await
            .expect("text"),
        typed_text(4)
    );
    assert!(matches!(
        timeline::text_at(&store, "doc", &extent, 8).await,
        Err(timeline::PastError::OutOfRange { newest: 7, .. })
    ));
}

#[tokio::test]
async fn yjs_updates_commit_beside_ot_edits_and_compact_into_snapshots() {
    let (_dir, store, _side) = open();
    let updates = yjs_typing(5);
    store
        .commit(batch([
            typing("doc", 0, 0, 2, "c"),
            yjs_commit("y:room", 0, 0, &updates[..3]),
        ]))
        .await
        .expect("a mixed batch commits");
    let loaded = store.load("y:room").await.expect("load");
    assert_eq!((loaded.revision, loaded.yjs.len()), (3, 3));
    assert_eq!(yjs_text(&loaded.yjs), "0,1,2,");
    assert_eq!(store.load("doc").await.expect("ot").text, typed_text(2));
    // A commit from a stale revision is refused and changes nothing.
    let stale = store
        .commit(batch([yjs_commit("y:room", 0, 1, &updates[3..])]))
        .await;
    assert!(stale.is_err(), "a wrong base revision must conflict");

    store
        .write_yjs_snapshot("y:room", 3, yjs_state(&updates[..3]))
        .await
        .expect("snapshot");
    store
        .commit(batch([yjs_commit("y:room", 0, 3, &updates[3..])]))
        .await
        .expect("more updates");
    store
        .write_yjs_snapshot("y:room", 1, yjs_state(&updates[..1]))
        .await
        .expect("old snapshot is ignored");
    let compacted = store.load("y:room").await.expect("reload");
    assert_eq!(compacted.revision, 5);
    assert_eq!(
        compacted.yjs.len(),
        3,
        "the snapshot and the two updates after it"
    );
    assert_eq!(yjs_text(&compacted.yjs), "0,1,2,3,4,");
}

#[tokio::test]
async fn yjs_history_keeps_checkpoints_and_compacts_by_retention() {
    let (_dir, store, side) = open();
    check_yjs_history(&store, "y:notes", async || {
        side.execute(
            "UPDATE yjs_updates SET committed_at = committed_at - 2 * 86400",
            [],
        )
        .expect("age updates");
    })
    .await;
}
