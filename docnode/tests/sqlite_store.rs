//! The embedded file store's housekeeping: compaction keeps what exactly-once needs, and
//! expiry removes old documents with all their rows. Each test uses its own temp directory.

use std::time::Duration;

use codraft_docnode::store::{sqlite::SqliteStore, Snapshot, Store};
use codraft_testkit::store::{batch, typed_text, typing};
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
    // Rows 0..10 are two hours old; 10..20 are recent.
    side.execute(
        "UPDATE oplog SET committed_at = committed_at - 7200 WHERE revision < 10",
        [],
    )
    .expect("age rows");

    let deleted = store
        .compact(Duration::from_secs(3600))
        .await
        .expect("compact");
    assert_eq!(
        deleted, 10,
        "old rows below the snapshot go, recent ones stay"
    );
    assert!(store.read_log("doc", 0, 10).await.expect("log").is_empty());
    assert_eq!(store.read_log("doc", 10, 20).await.expect("log").len(), 10);
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
