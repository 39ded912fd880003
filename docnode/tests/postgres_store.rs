//! The Postgres store against a real Postgres: loading, group commit, fencing by epoch,
//! migrations, compaction, expiry and failure when the server is gone.
//!
//! Every test works in a database of its own (see `codraft_testkit::database`), so they run
//! in parallel.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use codraft_docnode::{
    store::{
        postgres::{PgStore, CHECK_AFTER_IDLE},
        Snapshot, Store, StoreError,
    },
    sweeper::{self, SweepPolicy, SweepReport},
};
use codraft_testkit::{
    database::TestDatabase,
    proxy::Proxy,
    store::{
        batch, check_yjs_history, typed_text, typing, yjs_commit, yjs_state, yjs_text, yjs_typing,
    },
};

/// Pool size for tests: small, since many tests (and their databases) run at once.
const POOL: usize = 2;

async fn store(db: &TestDatabase, node: &str) -> PgStore {
    PgStore::connect(&db.url, node, POOL)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", db.url))
}

/// A store on `db` that loaded "doc" and committed two ops to it; and its epoch.
async fn doc_at_revision_two(db: &TestDatabase) -> (PgStore, u64) {
    let store = store(db, "node-a").await;
    let epoch = store.load("doc").await.expect("load").epoch;
    store
        .commit(batch([typing("doc", epoch, 0, 2, "c")]))
        .await
        .expect("commit");
    (store, epoch)
}

fn is_conflict_on(result: Result<(), StoreError>, document: &str) -> bool {
    matches!(result, Err(StoreError::Conflict { document: d, .. }) if d == document)
}

#[tokio::test]
async fn commit_then_load_returns_text_revision_and_language() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store(&db, "node-a").await;

    let fresh = store.load("doc").await.expect("load new document");
    assert_eq!((fresh.text.as_str(), fresh.revision), ("", 0));
    assert!(
        fresh.epoch > 0,
        "a load takes a lease even for a new document"
    );

    let mut first = typing("doc", fresh.epoch, 0, 5, "client-1");
    first.language = Some("rust".into());
    store.commit(batch([first])).await.expect("first commit");
    let second = typing("doc", fresh.epoch, 5, 3, "client-1");
    store.commit(batch([second])).await.expect("second commit");

    let loaded = store.load("doc").await.expect("load");
    assert_eq!(loaded.text, typed_text(8));
    assert_eq!(loaded.revision, 8);
    assert_eq!(loaded.language.as_deref(), Some("rust"));
    assert!(loaded.epoch > fresh.epoch, "every load takes a newer epoch");
    assert_eq!(
        store.last_seq("doc", "client-1").await.expect("last_seq"),
        8
    );
    assert_eq!(store.document_count().await.expect("count"), 1);
    let log = store.read_log("doc", 2, 4).await.expect("read_log");
    assert_eq!(
        log.iter().map(|op| op.revision).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(log[0].client_id.as_deref(), Some("client-1"));
    assert_eq!(log[0].seq, Some(3));
    let counters = store.counters();
    assert_eq!(counters.commits.load(Ordering::Relaxed), 2);
    assert_eq!(counters.ops_committed.load(Ordering::Relaxed), 8);
}

#[tokio::test]
async fn load_reads_only_the_log_tail_after_the_snapshot() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store(&db, "node-a").await;
    let epoch = store.load("long").await.expect("load").epoch;
    for base in (0..1000).step_by(100) {
        store
            .commit(batch([typing("long", epoch, base, 100, "c")]))
            .await
            .expect("commit");
    }
    store
        .write_snapshot(Snapshot {
            document: "long".into(),
            revision: 990,
            text: typed_text(990),
        })
        .await
        .expect("snapshot");
    // An older snapshot arriving late must not replace the newer one.
    store
        .write_snapshot(Snapshot {
            document: "long".into(),
            revision: 500,
            text: typed_text(500),
        })
        .await
        .expect("older snapshot");

    let before = store.counters().log_rows_read.load(Ordering::Relaxed);
    let loaded = store.load("long").await.expect("load");
    let read = store.counters().log_rows_read.load(Ordering::Relaxed) - before;
    assert_eq!(loaded.revision, 1000);
    assert_eq!(loaded.text, typed_text(1000));
    assert_eq!(read, 10, "only the ops after the snapshot at 990 are read");
}

#[tokio::test]
async fn a_stale_epoch_is_refused_and_changes_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = store(&db, "node-a").await;
    let b = store(&db, "node-b").await;

    let old = a.load("doc").await.expect("a loads").epoch;
    a.commit(batch([typing("doc", old, 0, 2, "ca")]))
        .await
        .expect("a commits while it owns the document");

    // Another docnode takes the document over.
    let taken = b.load("doc").await.expect("b loads");
    assert!(taken.epoch > old);
    assert_eq!(taken.revision, 2);

    let stale = a
        .commit(batch([typing("doc", old, 2, 3, "stale-client")]))
        .await;
    assert!(
        matches!(&stale, Err(StoreError::Conflict { document, expected: 2 }) if document == "doc"),
        "stale owner must be fenced, got {stale:?}"
    );
    assert_eq!(b.read_log("doc", 0, 100).await.expect("log").len(), 2);
    assert_eq!(b.last_seq("doc", "stale-client").await.expect("seq"), 0);
    let reloaded = b.load("doc").await.expect("reload");
    assert_eq!((reloaded.revision, reloaded.text.as_str()), (2, "01"));

    // The new owner (with its newest epoch) commits fine.
    b.commit(batch([typing("doc", reloaded.epoch, 2, 1, "cb")]))
        .await
        .expect("the current owner commits");
}

#[tokio::test]
async fn a_wrong_base_revision_is_a_conflict() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (store, epoch) = doc_at_revision_two(&db).await;
    // Behind: the same revisions again (a duplicate (document, revision) key).
    let behind = store.commit(batch([typing("doc", epoch, 0, 2, "c")])).await;
    assert!(is_conflict_on(behind, "doc"));
    // Ahead: a gap in the log.
    let ahead = store.commit(batch([typing("doc", epoch, 5, 1, "c")])).await;
    assert!(is_conflict_on(ahead, "doc"));
    // A new document must start at revision 0.
    let new_epoch = store.load("new").await.expect("load").epoch;
    let gap = store
        .commit(batch([typing("new", new_epoch, 3, 1, "c")]))
        .await;
    assert!(is_conflict_on(gap, "new"));
    assert_eq!(store.load("doc").await.expect("load").revision, 2);
    assert_eq!(store.document_count().await.expect("count"), 1);
}

#[tokio::test]
async fn a_batch_conflict_names_the_stale_document_and_commits_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = store(&db, "node-a").await;
    let b = store(&db, "node-b").await;
    let x = a.load("x").await.expect("load x").epoch;
    let y = a.load("y").await.expect("load y").epoch;
    let z = a.load("z").await.expect("load z").epoch;
    b.load("y").await.expect("b takes y");

    let result = a
        .commit(batch([
            typing("x", x, 0, 2, "c"),
            typing("y", y, 0, 2, "c"),
            typing("z", z, 0, 2, "c"),
        ]))
        .await;
    assert!(is_conflict_on(result, "y"), "the conflict must name y");
    assert_eq!(
        a.read_log("x", 0, 10).await.expect("log").len(),
        0,
        "all or nothing"
    );
    // What the committer does next: commit the rest without the stale document.
    a.commit(batch([
        typing("x", x, 0, 2, "c"),
        typing("z", z, 0, 2, "c"),
    ]))
    .await
    .expect("the rest commits");
    assert_eq!(a.document_count().await.expect("count"), 2);
}

#[tokio::test]
async fn a_commit_whose_rows_are_already_there_is_refused_and_changes_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (store, epoch) = doc_at_revision_two(&db).await;
    // A row at revision 3 that the document's revision (2) does not account for: whatever
    // wrote it, the next commit (revisions 2 and 3) must not be counted as written.
    db.client()
        .await
        .execute(
            "INSERT INTO oplog (document, revision, operation, author, committed_at) \
             VALUES ('doc', 3, '[1]', 0, now())",
            &[],
        )
        .await
        .expect("a stray row");
    let result = store.commit(batch([typing("doc", epoch, 2, 2, "d")])).await;
    let said = format!("{result:?}");
    assert!(is_conflict_on(result, "doc"), "refused: {said}");
    // (A load would refuse the log as it stands: it jumps from revision 2 to 3.)
    let row = db
        .client()
        .await
        .query_one(
            "SELECT (SELECT revision FROM documents WHERE id = 'doc'), \
                    (SELECT count(*) FROM oplog WHERE document = 'doc')",
            &[],
        )
        .await
        .expect("query");
    let (revision, rows): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (revision, rows),
        (2, 3),
        "the revision did not move, no row was added"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_racing_a_commit_never_deadlocks() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = store(&db, "node-a").await;
    let b = store(&db, "node-b").await;
    // Each round: the owner commits while another docnode takes the document over. Both
    // lock the lease row and the document's row; taken in opposite orders they deadlock, and
    // Postgres aborts one of them (after deadlock_timeout) with an error that is neither a
    // load nor a refusal.
    for round in 0..40 {
        let document = format!("race{round}");
        let epoch = a.load(&document).await.expect("owner loads").epoch;
        a.commit(batch([typing(&document, epoch, 0, 1, "c")]))
            .await
            .expect("first commit");
        let commit = a.commit(batch([typing(&document, epoch, 1, 200, "c")]));
        let (committed, loaded) = tokio::join!(commit, b.load(&document));
        assert!(
            matches!(committed, Ok(()) | Err(StoreError::Conflict { .. })),
            "round {round}: the owner's commit either lands or is refused: {committed:?}"
        );
        let loaded = loaded.unwrap_or_else(|e| panic!("round {round}: the takeover fails: {e}"));
        assert!(
            loaded.revision == 1 || loaded.revision == 201,
            "round {round}"
        );
    }
}

#[tokio::test]
async fn migrations_run_twice_and_concurrently_without_error() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (first, second, third) = tokio::join!(
        PgStore::connect(&db.url, "node-a", POOL),
        PgStore::connect(&db.url, "node-b", POOL),
        PgStore::connect(&db.url, "node-c", POOL),
    );
    let first = first.expect("first concurrent start-up");
    second.expect("second concurrent start-up");
    third.expect("third concurrent start-up");
    assert_eq!(first.migrate().await.expect("migrate again"), 0);
    let again = store(&db, "node-d").await;
    assert_eq!(again.migrate().await.expect("migrate again"), 0);

    let client = db.client().await;
    let rows = client
        .query(
            "SELECT version, count(*) FROM schema_migrations GROUP BY version",
            &[],
        )
        .await
        .expect("schema_migrations");
    assert!(!rows.is_empty());
    for row in rows {
        let count: i64 = row.get(1);
        assert_eq!(count, 1, "each migration is recorded once");
    }
}

#[tokio::test]
async fn last_seq_survives_compaction() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store(&db, "node-a").await;
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
    // Rows 0..15 (up to the checkpoint the snapshot made) are old; 15..20 are recent.
    db.client()
        .await
        .execute(
            "UPDATE oplog SET committed_at = now() - interval '2 hours' WHERE revision < 15",
            &[],
        )
        .await
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
    assert_eq!(
        store.compact(Duration::ZERO).await.expect("compact"),
        0,
        "ops above the newest checkpoint stay, however old"
    );
}

#[tokio::test]
async fn delete_expired_removes_old_documents_and_all_their_rows() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store(&db, "node-a").await;
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
    let client = db.client().await;
    client
        .execute(
            "UPDATE documents SET accessed_at = now() - interval '3 days' WHERE id = 'old'",
            &[],
        )
        .await
        .expect("age document");

    let deleted = store
        .delete_expired(Duration::from_secs(2 * 86_400))
        .await
        .expect("delete_expired");
    assert_eq!(deleted, 1);
    assert_eq!(store.document_count().await.expect("count"), 1);
    for table in ["oplog", "snapshots", "client_seqs", "leases"] {
        let row = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE document = 'old'"),
                &[],
            )
            .await
            .expect("count rows");
        assert_eq!(row.get::<_, i64>(0), 0, "{table} rows of the old document");
    }
    assert_eq!(store.last_seq("old", "c").await.expect("seq"), 0);
    let gone = store.load("old").await.expect("load old");
    assert_eq!((gone.revision, gone.text.as_str()), (0, ""));
    let kept = store.load("fresh").await.expect("load fresh");
    assert_eq!(kept.revision, 3);
}

#[tokio::test]
async fn a_sweep_compacts_the_log_and_deletes_expired_documents() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store(&db, "node-a").await;
    for (document, ops) in [("kept", 10), ("old", 3)] {
        let epoch = store.load(document).await.expect("load").epoch;
        store
            .commit(batch([typing(document, epoch, 0, ops, "c")]))
            .await
            .expect("commit");
    }
    store
        .write_snapshot(Snapshot {
            document: "kept".into(),
            revision: 10,
            text: typed_text(10),
        })
        .await
        .expect("snapshot");
    let client = db.client().await;
    client
        .batch_execute(
            "UPDATE oplog SET committed_at = now() - interval '2 hours'; \
             UPDATE documents SET accessed_at = now() - interval '3 days' WHERE id = 'old'",
        )
        .await
        .expect("age rows");

    let policy = SweepPolicy {
        interval: Duration::from_secs(3600),
        compact_retention: Duration::from_secs(3600),
        expiry: Some(Duration::from_secs(86_400)),
    };
    let report = sweeper::sweep(&store, &policy).await.expect("sweep");
    assert_eq!(
        report,
        SweepReport {
            compacted: 10,
            expired: 1
        }
    );
    let kept = store.load("kept").await.expect("load");
    assert_eq!((kept.revision, kept.text), (10, typed_text(10)));
    assert_eq!(store.document_count().await.expect("count"), 1);
}

#[tokio::test]
async fn an_expired_lease_fences_its_old_owner_for_good() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let a = store(&db, "node-a").await;
    let b = store(&db, "node-b").await;
    let old = a.load("doc").await.expect("load").epoch;
    a.commit(batch([typing("doc", old, 0, 1, "c")]))
        .await
        .expect("commit");
    db.client()
        .await
        .execute(
            "UPDATE documents SET accessed_at = now() - interval '3 days'",
            &[],
        )
        .await
        .expect("age");
    assert_eq!(
        a.delete_expired(Duration::from_secs(86_400))
            .await
            .expect("expire"),
        1
    );
    // The lease row is gone; new owners' epochs must still never repeat the old one.
    for _ in 0..3 {
        assert_ne!(b.load("doc").await.expect("load").epoch, old);
    }
    let stale = a.commit(batch([typing("doc", old, 0, 1, "c")])).await;
    assert!(is_conflict_on(stale, "doc"));
}

#[tokio::test]
async fn pooled_connections_recover_when_their_backends_die() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store(&db, "node-a").await;
    store.load("doc").await.expect("first load");
    // What a Postgres restart does to a pool: every open connection is cut.
    db.client()
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
              WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate backends");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let loaded = store.load("doc").await.expect("load after the cut");
    assert_eq!(loaded.revision, 0);
}

/// A connection whose peer went silent while it sat in the pool (no FIN, no RST: a host
/// that vanished, a dropped NAT entry) is found out by the pool's check of idle connections,
/// and the call goes out on a new connection, instead of waiting out the call's timeout on
/// the dead one. Connections in steady use are not checked (`checked_before_use`); this is
/// the case the check is kept for.
#[tokio::test]
async fn an_idle_connection_to_a_silent_peer_is_replaced_before_a_call_uses_it() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let config: tokio_postgres::Config = db.url.parse().expect("the test database's URL");
    let (Some(tokio_postgres::config::Host::Tcp(host)), Some(&port)) =
        (config.get_hosts().first(), config.get_ports().first())
    else {
        panic!("the test database must be reached over TCP: {}", db.url);
    };
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("resolve the database host")
        .next()
        .expect("an address for the database host");
    let proxy = Proxy::start(upstream).await;
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let url = format!(
        "postgres://{}{password}@{}/{}",
        config.get_user().unwrap_or("postgres"),
        proxy.addr,
        config.get_dbname().expect("the test database's name"),
    );
    // One connection, so the call has no other to fall back on.
    let store = PgStore::connect(&url, "node-a", 1)
        .await
        .unwrap_or_else(|e| panic!("connect through the proxy: {e}"));
    store.load("doc").await.expect("first load");
    proxy.freeze();
    // The pooled connection idles past the point where it is checked before use.
    tokio::time::sleep(CHECK_AFTER_IDLE + Duration::from_millis(200)).await;
    let loaded = tokio::time::timeout(Duration::from_secs(20), store.load("doc"))
        .await
        .expect("the load waited on the silent connection")
        .expect("load after the peer went silent");
    assert_eq!(loaded.revision, 0);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_quickly() {
    let started = Instant::now();
    let result = PgStore::connect("postgres://postgres@127.0.0.1:1/test", "node-a", POOL).await;
    assert!(
        matches!(&result, Err(StoreError::Unavailable(_))),
        "expected Unavailable, got {:?}",
        result.err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let bad_url = PgStore::connect("not a url", "node-a", POOL).await;
    assert!(matches!(bad_url, Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn checkpoints_outlive_compaction_and_say_which_revisions_are_exact() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store(&db, "node-a").await;
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
    db.client()
        .await
        .execute(
            "UPDATE oplog SET committed_at = now() - interval '2 hours' WHERE revision < 20",
            &[],
        )
        .await
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
    let last_ms = past[9].committed_at_ms;
    assert!(last_ms > 0);
    assert_eq!(
        store
            .last_revision_at("doc", last_ms + 1000)
            .await
            .expect("at"),
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
async fn yjs_updates_commit_beside_ot_edits_and_compact_into_snapshots() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store(&db, "node-a").await;
    let updates = yjs_typing(5);
    let ot = store.load("doc").await.expect("load ot");
    let fresh = store.load("y:room").await.expect("load yjs");
    assert_eq!((fresh.revision, fresh.yjs.len()), (0, 0));
    // One group commit carries both kinds.
    store
        .commit(batch([
            typing("doc", ot.epoch, 0, 2, "c"),
            yjs_commit("y:room", fresh.epoch, 0, &updates[..3]),
        ]))
        .await
        .expect("a mixed batch commits");
    let loaded = store.load("y:room").await.expect("reload");
    assert_eq!((loaded.revision, loaded.yjs.len()), (3, 3));
    assert_eq!(yjs_text(&loaded.yjs), "0,1,2,");
    assert_eq!(store.load("doc").await.expect("ot").text, typed_text(2));

    // A snapshot holds what is below it: a load starts from it (the updates below stay for
    // the history until compaction).
    store
        .write_yjs_snapshot("y:room", 3, yjs_state(&updates[..3]))
        .await
        .expect("snapshot");
    store
        .commit(batch([yjs_commit(
            "y:room",
            loaded.epoch,
            3,
            &updates[3..],
        )]))
        .await
        .expect("more updates");
    // An older snapshot neither replaces the newer one nor deletes anything.
    store
        .write_yjs_snapshot("y:room", 1, yjs_state(&updates[..1]))
        .await
        .expect("old snapshot is ignored");
    let compacted = store.load("y:room").await.expect("reload compacted");
    assert_eq!(compacted.revision, 5);
    assert_eq!(
        compacted.yjs.len(),
        3,
        "the snapshot and the two updates after it"
    );
    assert_eq!(yjs_text(&compacted.yjs), "0,1,2,3,4,");

    // The previous owner's epoch is fenced for Yjs updates too.
    let stale = store
        .commit(batch([yjs_commit(
            "y:room",
            loaded.epoch,
            5,
            &updates[..1],
        )]))
        .await;
    assert!(is_conflict_on(stale, "y:room"));
    assert_eq!(store.load("y:room").await.expect("after").revision, 5);
}

#[tokio::test]
async fn yjs_history_keeps_checkpoints_and_compacts_by_retention() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = store(&db, "node-a").await;
    check_yjs_history(&store, "y:notes", async || {
        db.client()
            .await
            .execute(
                "UPDATE yjs_updates SET committed_at = now() - interval '2 days'",
                &[],
            )
            .await
            .expect("age updates");
    })
    .await;
}
