//! The embedded file store's housekeeping and history: compaction keeps what exactly-once
//! needs and the history's checkpoints, expiry removes old documents with all their rows, and
//! the timeline reads past revisions and sessions from it. Each test uses its own temp
//! directory.

use std::{collections::HashMap, time::Duration};

use codraft_common::ids::is_yjs;
use codraft_docnode::{
    store::{sqlite::SqliteStore, LoggedOp, Snapshot, Store, StoreError},
    timeline,
};
use codraft_testkit::store::{
    batch, check_yjs_history, typed_text, typing, yjs_commit, yjs_state, yjs_text, yjs_typing,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
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

/// Folds what the journal holds into the tables, as any call about every document does, so
/// that `side` can age the rows the commits made.
async fn fold(store: &SqliteStore) {
    store
        .document_count()
        .await
        .expect("count documents, folding the journal");
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
    fold(&store).await;
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
    fold(&store).await;
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
    fold(&store).await;
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

/// Commits three edits of `a` and two of `b` by client `c`: five journal rows.
async fn commit_five_rows(store: &SqliteStore) {
    store
        .commit(batch([
            typing("a", 0, 0, 3, "c"),
            typing("b", 0, 0, 2, "c"),
        ]))
        .await
        .expect("commit");
}

/// The number of the last journal row folded into the tables.
fn folded_mark(tables: &Connection) -> i64 {
    tables
        .query_row("SELECT seq FROM journal_folded", [], |r| r.get(0))
        .expect("read the fold mark")
}

/// The tables' background writers of this process, each with its nice value
/// (`/proc/self/task/*/stat`).
#[cfg(target_os = "linux")]
fn background_writers() -> Vec<(String, i32)> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("list this process's threads");
    tasks
        .filter_map(|task| {
            let dir = task.ok()?.path();
            // A thread that ended since the listing has no files left: skipped.
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // "tid (name) state ...": the name may hold spaces, so fields count from its ')'.
            let (head, fields) = stat.rsplit_once(')')?;
            let (tid, name) = head.split_once(" (")?;
            let nice = fields.split_whitespace().nth(16)?.parse().ok()?;
            (name == "codraft-tables").then(|| (tid.to_owned(), nice))
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn folds_run_on_a_thread_of_their_own_below_the_commits_priority() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path())
        .expect("open store")
        .with_fold_rows(1);
    // Tests run side by side in this process: every store's writer is below normal. A store
    // another test is opening may have a writer that has its name and not yet its priority
    // (it lowers its own as it starts, before that store's `open` returns): such a writer
    // must get there, this one already has.
    assert!(
        !background_writers().is_empty(),
        "no background writer once a store is open"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let normal: Vec<_> = background_writers()
            .into_iter()
            .filter(|&(_, nice)| nice != codraft_docnode::store::sqlite::BACKGROUND_NICE)
            .collect();
        if normal.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "background writers at another priority for 10 s: {normal:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // And it folds: a commit past the threshold reaches the tables with no read asking.
    store
        .commit(batch([typing("a", 0, 0, 3, "c")]))
        .await
        .expect("commit");
    let tables = Connection::open(dir.path().join("codraft.db")).expect("tables connection");
    let folded = || folded_mark(&tables);
    // The fold tells nobody it ran; its mark in the file is what can be watched.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while folded() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the journal was not folded within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn snapshots_are_written_without_folding_the_journal_and_loads_still_see_everything() {
    let (dir, store, side) = open();
    commit_five_rows(&store).await;
    let folded = || folded_mark(&side);
    // Written together, as documents typed at one pace reach their snapshots together.
    let writes = (0..4).map(|revision| {
        store.write_snapshot(Snapshot {
            document: "a".into(),
            revision,
            text: typed_text(revision),
        })
    });
    for written in futures::future::join_all(writes).await {
        written.expect("snapshot");
    }
    store
        .write_yjs_snapshot("y:a", 1, yjs_state(&[]))
        .await
        .expect("Yjs snapshot");
    assert_eq!(folded(), 0, "a snapshot does not wait for a fold");
    let newest: (i64, String) = side
        .query_row(
            "SELECT revision, text FROM snapshots WHERE document = 'a'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("a's snapshot");
    assert_eq!(newest, (3, typed_text(3)), "the newest of the four wins");
    let checkpoints: i64 = side
        .query_row(
            "SELECT count(*) FROM checkpoints WHERE document = 'a'",
            [],
            |r| r.get(0),
        )
        .expect("count checkpoints");
    assert_eq!(checkpoints, 4, "every snapshot is a checkpoint");
    // Snapshots of rows still in the journal: the load folds first, then reads the newest.
    let a = store.load("a").await.expect("load a");
    assert_eq!((a.revision, a.text), (3, typed_text(3)));
    assert_eq!(folded(), 5, "the load folded what waited");
    drop(dir);
}

#[tokio::test]
async fn commits_go_to_the_journal_and_a_reopened_store_folds_what_a_crash_left_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open store");
    let tables = Connection::open(dir.path().join("codraft.db")).expect("tables connection");
    let journal = Connection::open(dir.path().join("journal.db")).expect("journal connection");
    commit_five_rows(&store).await;
    let count = |conn: &Connection, sql: &str| -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).expect("count rows")
    };
    let oplog = || count(&tables, "SELECT count(*) FROM oplog");
    let folded = || folded_mark(&tables);
    assert_eq!(count(&journal, "SELECT count(*) FROM journal"), 5);
    assert_eq!((oplog(), folded()), (0, 0), "appended, not folded");
    // Reading a document with nothing waiting leaves the others' rows where they are.
    assert_eq!(store.load("c").await.expect("load c").revision, 0);
    assert_eq!(store.read_log("c", 0, 1).await.expect("log of c"), vec![]);
    assert_eq!(
        (oplog(), folded()),
        (0, 0),
        "nothing of c waited, nothing was folded"
    );
    // A stale base revision is refused while the document's rows are still in the journal.
    let stale = store.commit(batch([typing("a", 0, 2, 1, "c")])).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { expected: 2, .. })),
        "{stale:?}"
    );
    // The store goes away without folding (as a killed process would) and opens again.
    drop(store);
    let store = SqliteStore::open(dir.path()).expect("reopen store");
    assert_eq!((oplog(), folded()), (5, 5), "folded on open");
    let a = store.load("a").await.expect("load a");
    assert_eq!((a.revision, a.text), (3, typed_text(3)));
    assert_eq!(store.last_seq("b", "c").await.expect("seq"), 2);
    // A load counts as an access: the next call about every document writes its time, even
    // with no journal rows waiting.
    tables
        .execute(
            "UPDATE documents SET accessed_at = accessed_at - 3 * 86400 WHERE id = 'b'",
            [],
        )
        .expect("age b");
    store.load("b").await.expect("load b");
    let expired = store.delete_expired(Duration::from_secs(2 * 86_400)).await;
    assert_eq!(expired.expect("delete_expired"), 0, "b was loaded just now");
    // The next commit continues from the folded revision, and deletes the folded rows.
    store
        .commit(batch([typing("a", 0, 3, 1, "c")]))
        .await
        .expect("commit after the fold");
    assert_eq!(
        (
            count(&journal, "SELECT count(*) FROM journal"),
            count(&journal, "SELECT MIN(seq) FROM journal")
        ),
        (1, 6),
        "folded rows deleted, the new one numbered after them"
    );
    // A lost journal file does not make new rows reuse numbers already folded.
    drop(store);
    std::fs::remove_file(dir.path().join("journal.db")).expect("remove journal");
    for stale in ["journal.db-wal", "journal.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(stale));
    }
    let store = SqliteStore::open(dir.path()).expect("open without a journal");
    store
        .commit(batch([typing("b", 0, 2, 1, "c")]))
        .await
        .expect("commit to a new journal");
    let b = store.load("b").await.expect("load b");
    assert_eq!(
        (b.revision, b.text),
        (3, typed_text(3)),
        "the new row was folded"
    );
}

/// A document as the model keeps it: every op, update, language and client mark committed.
#[derive(Debug, Default, Clone)]
struct ModelDocument {
    ops: Vec<LoggedOp>,
    updates: Vec<Vec<u8>>,
    language: Option<String>,
    seqs: HashMap<String, u64>,
}

impl ModelDocument {
    fn revision(&self) -> u64 {
        (self.ops.len() + self.updates.len()) as u64
    }
}

const MODEL_DOCUMENTS: [&str; 4] = ["a", "b", "c", "y:d"];
const MODEL_CLIENTS: [&str; 2] = ["p", "q"];

/// Seeded random schedules of commits (some with a stale base revision, which must refuse
/// the whole batch), loads, log reads, sequence marks, snapshots and crashes (the store
/// dropped without folding and opened again), checked against a model after every step, at
/// fold thresholds from one row to never. `STORE_MODEL_SEED=<n>` replays one schedule.
#[tokio::test]
async fn random_schedules_read_what_a_model_holds_through_folds_and_crashes() {
    let seeds: Vec<u64> = match std::env::var("STORE_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("STORE_MODEL_SEED is a number")],
        Err(_) => (0..24).collect(),
    };
    for seed in seeds {
        if let Err(e) = run_store_schedule(seed, 200).await {
            panic!("schedule {seed} (replay with STORE_MODEL_SEED={seed}): {e}");
        }
    }
}

async fn run_store_schedule(seed: u64, steps: usize) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let fold_rows = [1, 3, 16, usize::MAX][rng.random_range(0..4)];
    // A commit folds the journal itself past this many rows (the background fold starved).
    let backlog_rows = [2, 8, usize::MAX][rng.random_range(0..3)];
    let open = || {
        SqliteStore::open(dir.path())
            .map(|store| {
                store
                    .with_fold_rows(fold_rows)
                    .with_backlog_rows(backlog_rows)
            })
            .map_err(|e| e.to_string())
    };
    let mut store = open()?;
    let mut model: HashMap<&str, ModelDocument> = HashMap::new();
    for step in 0..steps {
        let document = MODEL_DOCUMENTS[rng.random_range(0..MODEL_DOCUMENTS.len())];
        let known = model.get(document).cloned().unwrap_or_default();
        let at = |what: &str| format!("step {step}, {what} of {document}");
        match rng.random_range(0..100) {
            0..50 => {
                // A batch of one to three commits; a document may come twice, continuing.
                let mut next = model.clone();
                let mut commits = Vec::new();
                let stale = rng.random_bool(0.15);
                for i in 0..rng.random_range(1..=3) {
                    let name = MODEL_DOCUMENTS[rng.random_range(0..MODEL_DOCUMENTS.len())];
                    let doc = next.entry(name).or_default();
                    let base = doc.revision();
                    let base = if stale && i == 0 { base + 1 } else { base };
                    let n = rng.random_range(0..4);
                    let mut commit = if is_yjs(name) {
                        let updates: Vec<bytes::Bytes> = (0..n)
                            .map(|k| bytes::Bytes::from(vec![step as u8, k as u8, 7]))
                            .collect();
                        doc.updates.extend(updates.iter().map(|u| u.to_vec()));
                        yjs_commit(name, 0, base, &updates)
                    } else {
                        let client = MODEL_CLIENTS[rng.random_range(0..MODEL_CLIENTS.len())];
                        let commit = typing(name, 0, base, n, client);
                        if n > 0 {
                            doc.seqs.insert(client.to_owned(), base + n);
                        }
                        doc.ops.extend(commit.ops.iter().cloned());
                        commit
                    };
                    if rng.random_bool(0.2) {
                        let language = ["rust", "go"][rng.random_range(0..2)].to_owned();
                        doc.language = Some(language.clone());
                        commit.language = Some(language);
                    }
                    commits.push(commit);
                }
                let result = store.commit(batch(commits)).await;
                match (stale, result) {
                    (false, Ok(())) => model = next,
                    (true, Err(StoreError::Conflict { .. })) => {}
                    (stale, other) => {
                        return Err(format!("step {step}: stale {stale}, commit gave {other:?}"))
                    }
                }
            }
            50..65 => {
                let loaded = store.load(document).await.map_err(|e| at(&e.to_string()))?;
                let want = (known.revision(), known.language.clone());
                if (loaded.revision, loaded.language.clone()) != want {
                    return Err(at(&format!("load {loaded:?}, model {known:?}")));
                }
                let content_ok = if is_yjs(document) {
                    loaded.yjs == known.updates
                } else {
                    loaded.text == typed_text(known.revision())
                };
                if !content_ok {
                    return Err(at(&format!("loaded content {loaded:?}")));
                }
            }
            65..75 => {
                let to = rng.random_range(0..=known.revision());
                let from = rng.random_range(0..=to);
                let (got, want) = if is_yjs(document) {
                    let got = store.read_yjs_updates(document, from, to).await;
                    let got = got.map_err(|e| at(&e.to_string()))?;
                    (
                        got.len(),
                        known.updates[from as usize..to as usize] == got[..],
                    )
                } else {
                    let got = store.read_log(document, from, to).await;
                    let got = got.map_err(|e| at(&e.to_string()))?;
                    (got.len(), known.ops[from as usize..to as usize] == got[..])
                };
                if got != (to - from) as usize || !want {
                    return Err(at(&format!(
                        "log {from}..{to} read {got} entries, or others"
                    )));
                }
            }
            75..83 => {
                let client = MODEL_CLIENTS[rng.random_range(0..MODEL_CLIENTS.len())];
                let seq = store.last_seq(document, client).await;
                let want = known.seqs.get(client).copied().unwrap_or(0);
                if seq.as_ref().ok() != Some(&want) {
                    return Err(at(&format!("last_seq of {client}: {seq:?}, model {want}")));
                }
            }
            83..88 if !is_yjs(document) => {
                let revision = rng.random_range(0..=known.revision());
                let snapshot = Snapshot {
                    document: document.into(),
                    revision,
                    text: typed_text(revision),
                };
                store
                    .write_snapshot(snapshot)
                    .await
                    .map_err(|e| at(&e.to_string()))?;
            }
            88..93 => {
                let count = store.document_count().await.map_err(|e| e.to_string())?;
                if count != model.len() as u64 {
                    return Err(format!(
                        "step {step}: {count} documents, model {}",
                        model.len()
                    ));
                }
            }
            _ => {
                drop(store);
                store = open()?;
            }
        }
    }
    Ok(())
}

/// The journal as builds before 2026-11-30 made it: rows numbered by `AUTOINCREMENT`.
const AUTOINCREMENT_JOURNAL: &str = "
    CREATE TABLE numbered (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, document TEXT NOT NULL, revision INTEGER NOT NULL,
        operation TEXT, author INTEGER, client_id TEXT, client_seq INTEGER, update_v1 BLOB,
        language TEXT, committed_at INTEGER NOT NULL);
    INSERT INTO numbered SELECT * FROM journal;
    UPDATE sqlite_sequence SET seq = 9 WHERE name = 'numbered';
    DROP TABLE journal;
    ALTER TABLE numbered RENAME TO journal;";

#[tokio::test]
async fn a_journal_numbered_by_autoincrement_is_folded_and_replaced_and_numbering_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open store");
    commit_five_rows(&store).await;
    // Killed before a fold, by an older build whose journal numbered its rows itself: five rows
    // waiting, and the numbering at 9 (four more rows were deleted after an earlier fold).
    drop(store);
    let journal = Connection::open(dir.path().join("journal.db")).expect("journal connection");
    journal
        .execute_batch(AUTOINCREMENT_JOURNAL)
        .expect("make the journal an older build's");
    let shape = |journal: &Connection| -> String {
        journal
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'journal'",
                [],
                |r| r.get(0),
            )
            .expect("journal's schema")
    };
    assert!(shape(&journal).contains("AUTOINCREMENT"));
    drop(journal);

    let store = SqliteStore::open(dir.path()).expect("reopen store");
    let tables = Connection::open(dir.path().join("codraft.db")).expect("tables connection");
    let journal = Connection::open(dir.path().join("journal.db")).expect("journal connection");
    assert_eq!(
        folded_mark(&tables),
        5,
        "the old journal's rows were folded"
    );
    assert!(
        !shape(&journal).contains("AUTOINCREMENT"),
        "{}",
        shape(&journal)
    );
    store
        .commit(batch([typing("a", 0, 3, 2, "c")]))
        .await
        .expect("commit after the upgrade");
    let numbers: Vec<i64> = journal
        .prepare("SELECT seq FROM journal ORDER BY seq")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
        .expect("journal rows");
    assert_eq!(
        numbers,
        vec![10, 11],
        "numbered after the old journal's highest"
    );
    let a = store.load("a").await.expect("load a");
    assert_eq!((a.revision, a.text), (5, typed_text(5)));
    assert_eq!(store.last_seq("b", "c").await.expect("seq"), 2);
}
