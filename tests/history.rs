//! Version history (issue 16) through the real processes: every endpoint and every error of
//! `/api/documents/{id}/{history,text,diff,restore}`, against the standalone binary's
//! embedded store and a cluster on Postgres, across a restart and a move; restore is one
//! edit that open clients converge on and that counts once per idempotency key; compaction
//! keeps the checkpoints and the API says what is still exact.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use codraft_testkit::{
    client::{Client, Event, Options},
    cluster::{Cluster, Setup},
    editing::unique_document,
    http::http_get,
    jwt::{in_an_hour, token},
    standalone::Standalone,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

/// A minimal HTTP/1.0 POST of a JSON body against loopback; returns status and body.
async fn http_post(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("header end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

/// GET a path expecting JSON; returns status and the parsed body.
async fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = http_get(port, path).await;
    let value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {path}: {status} {body:?} is not JSON: {e}"));
    (status, value)
}

async fn restore(port: u16, document: &str, revision: u64, key: &str) -> (u16, Value) {
    let (status, body) = http_post(
        port,
        &format!("/api/documents/{document}/restore"),
        &format!("{{\"revision\": {revision}, \"key\": \"{key}\"}}"),
    )
    .await;
    let value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("restore: {status} {body:?} is not JSON: {e}"));
    (status, value)
}

async fn text_at(port: u16, document: &str, revision: u64) -> (u16, Value) {
    get_json(
        port,
        &format!("/api/documents/{document}/text?revision={revision}"),
    )
    .await
}

/// Now as RFC 3339 (UTC, whole seconds), for `?at=`.
fn rfc3339_now_plus(seconds: u64) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + seconds;
    let days = i64::try_from(secs / 86_400).expect("days");
    let rest = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, written out).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Alice types five edits, each acknowledged before the next, so revision k is her text
/// after edit k. Returns the texts by revision (index 0 is the empty document) and her user
/// id, with her client still connected.
async fn type_five(ws: &str, document: &str) -> (Vec<String>, Client) {
    let mut alice = Client::connect(
        ws,
        document,
        Options {
            client_id: Some(format!("alice-{}", rand::random::<u32>())),
        },
    )
    .await
    .expect("alice joins");
    alice.set_info("Alice", 42).await.expect("info");
    let mut texts = vec![String::new()];
    for (i, piece) in ["hello", " wörld", "\nline 🎉", " more", "!"]
        .iter()
        .enumerate()
    {
        let at = if i == 3 { 5 } else { alice.len() };
        alice.insert(at, piece).await.expect("edit");
        alice.settle(WAIT).await.expect("ack");
        texts.push(alice.text.to_string());
    }
    (texts, alice)
}

/// Every endpoint and error on one document typed by [`type_five`], through HTTP port
/// `port`. Leaves the document restored to revision 2 by key `first`, at revision 6.
async fn check_every_endpoint(port: u16, ws: &str, document: &str) -> Vec<String> {
    let (texts, mut alice) = type_five(ws, document).await;
    let alice_id = alice.user_id;

    // The history: one session by Alice, with her name and colour.
    let (status, history) = get_json(port, &format!("/api/documents/{document}/history")).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["revision"], 5);
    assert_eq!(history["exact_from"], 0);
    let sessions = history["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "{history}");
    let session = &sessions[0];
    assert_eq!(
        (&session["first_revision"], &session["last_revision"]),
        (&Value::from(1), &Value::from(5))
    );
    assert_eq!(session["author"]["id"], alice_id);
    assert_eq!(session["author"]["name"], "Alice");
    assert_eq!(session["author"]["hue"], 42);
    assert_eq!(session["edits"], 5);
    assert_eq!(session["inserted"], texts[5].chars().count() as u64);
    assert_eq!(session["deleted"], 0);
    assert!(session["started"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    let (status, paged) = get_json(
        port,
        &format!("/api/documents/{document}/history?before=3&limit=1"),
    )
    .await;
    assert_eq!(status, 200, "{paged}");
    assert_eq!(paged["sessions"][0]["last_revision"], 3, "{paged}");

    // The text at every revision, and at points in time.
    for (revision, expected) in texts.iter().enumerate() {
        let (status, body) = text_at(port, document, revision as u64).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["text"], expected.as_str(), "revision {revision}");
    }
    let (status, now) = get_json(
        port,
        &format!("/api/documents/{document}/text?at={}", rfc3339_now_plus(2)),
    )
    .await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(
        (&now["revision"], &now["text"]),
        (&Value::from(5), &Value::from(texts[5].as_str()))
    );
    let (status, before) = get_json(
        port,
        &format!("/api/documents/{document}/text?at=2001-01-01T00:00:00%2B01:00"),
    )
    .await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        (&before["revision"], &before["text"]),
        (&Value::from(0), &Value::from(""))
    );

    // The diff: as an op, and who wrote each character.
    let (status, diff) = get_json(port, &format!("/api/documents/{document}/diff?from=2")).await;
    assert_eq!(status, 200, "{diff}");
    let kept = texts[2].chars().count() as u64;
    let spans = diff["spans"].as_array().expect("spans");
    let total: u64 = spans.iter().map(|s| s["length"].as_u64().expect("n")).sum();
    assert_eq!(total, texts[5].chars().count() as u64, "{diff}");
    let old: u64 = spans
        .iter()
        .filter(|s| s["author"].is_null())
        .map(|s| s["length"].as_u64().expect("n"))
        .sum();
    assert_eq!(
        old, kept,
        "characters there at `from` have no author: {diff}"
    );
    assert!(spans
        .iter()
        .filter(|s| !s["author"].is_null())
        .all(|s| s["author"] == alice_id));
    assert_eq!(diff["authors"][0]["name"], "Alice", "{diff}");
    assert!(diff["operation"].is_array(), "{diff}");
    let (status, blame) =
        get_json(port, &format!("/api/documents/{document}/diff?from=0&to=5")).await;
    assert_eq!(status, 200, "{blame}");
    assert_eq!(
        blame["spans"],
        serde_json::json!([{ "length": texts[5].chars().count(), "author": alice_id }])
    );

    // Clear errors.
    let (status, body) = get_json(port, "/api/documents/never-written-doc/history").await;
    assert_eq!(
        (status, &body["error"]),
        (404, &Value::from("unknown_document"))
    );
    let (status, body) = text_at(port, "never-written-doc", 0).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = text_at(port, document, 99).await;
    assert_eq!(status, 416, "{body}");
    assert_eq!(body["valid_range"]["last"], 5, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("0 to 5")),
        "{body}"
    );
    for bad in [
        "text?revision=abc",
        "text",
        "text?revision=1&at=2026-01-01T00:00:00Z",
        "text?at=yesterday",
        "diff?from=4&to=2",
        "history?limit=0",
        "history?before=-1",
    ] {
        let (status, body) = get_json(port, &format!("/api/documents/{document}/{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}"
        );
    }
    let (status, body) = get_json(port, &format!("/api/documents/{document}/diff?to=9")).await;
    assert_eq!(status, 416, "{body}");
    let (status, _) = http_post(port, &format!("/api/documents/{document}/restore"), "{}").await;
    assert_eq!(status, 400);
    let (status, body) = restore(port, document, 9, "too-far").await;
    assert_eq!(status, 416, "{body}");
    let (status, body) = restore(port, document, 1, "bad key!").await;
    assert_eq!(status, 400, "{body}");

    // Restore: one new edit, seen by the open client, counted once per key.
    let (status, restored) = restore(port, document, 2, "first").await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["applied"], true);
    assert_eq!(restored["revision"], 6);
    alice
        .wait_until(WAIT, |c| c.text == texts[2])
        .await
        .expect("the open client converges on the restored text");
    let (status, again) = restore(port, document, 2, "first").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["applied"], false,
        "a retried restore is not applied twice"
    );
    let (_, history) = get_json(port, &format!("/api/documents/{document}/history")).await;
    assert_eq!(history["revision"], 6, "{history}");
    assert_eq!(
        history["sessions"][0]["author"]["name"], "Restore",
        "{history}"
    );
    let (_, at6) = text_at(port, document, 6).await;
    assert_eq!(at6["text"], texts[2].as_str());
    alice.close().await;
    texts
}

/// After a restart or a move: the history is all there, a retried restore still counts
/// once, and a new restore (undoing the first) works.
async fn check_after_restart(port: u16, ws: &str, document: &str, texts: &[String]) {
    for (revision, expected) in texts.iter().enumerate() {
        let (status, body) = text_at(port, document, revision as u64).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["text"], expected.as_str(), "revision {revision}");
    }
    let (status, again) = restore(port, document, 2, "first").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["applied"], false,
        "exactly once across a restart: {again}"
    );
    let mut watcher = Client::connect(ws, document, Options::default())
        .await
        .expect("watcher joins");
    assert_eq!(watcher.text, texts[2]);
    let (status, undo) = restore(port, document, 5, "undo-first").await;
    assert_eq!(status, 200, "{undo}");
    assert_eq!(
        (&undo["applied"], &undo["revision"]),
        (&Value::from(true), &Value::from(7))
    );
    watcher
        .wait_until(WAIT, |c| c.text == texts[5])
        .await
        .expect("the watcher sees the undo");
    watcher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_and_error_on_the_embedded_store_across_a_restart() {
    let mut server = Standalone::start().await;
    let document = unique_document("history");
    let texts = check_every_endpoint(server.port, &server.ws(), &document).await;
    server.terminate().await;
    server.restart().await;
    check_after_restart(server.port, &server.ws(), &document, &texts).await;
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_and_error_on_postgres_across_a_restart_and_a_move() {
    let mut cluster = Cluster::start(2, 1).await;
    cluster.wait_gateway_sees(0, 2).await;
    let port = cluster.gateways[0].ready_port;
    let document = unique_document("history-pg");
    let texts = check_every_endpoint(port, &cluster.ws(0), &document).await;
    // Each docnode in turn stops and comes back, so the document moves at least once
    // (from whichever owned it) and its owner restarts.
    for i in 0..2 {
        cluster.docnodes[i].terminate().await;
        cluster.wait_gateway_sees(0, 1).await;
        let (status, body) = text_at(port, &document, 3).await;
        assert_eq!(
            (status, &body["text"]),
            (200, &Value::from(texts[3].as_str()))
        );
        cluster.docnodes[i].restart().await;
        cluster.wait_gateway_sees(0, 2).await;
    }
    check_after_restart(port, &cluster.ws(0), &document, &texts).await;
    cluster.assert_no_panic();
}

/// Waits until the history says ops below `exact_from` were compacted.
async fn wait_compacted(port: u16, document: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, history) = get_json(port, &format!("/api/documents/{document}/history")).await;
        assert_eq!(status, 200, "{history}");
        if history["exact_from"].as_u64().is_some_and(|e| e > 0) {
            return history;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweeper never compacted: {history}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Compaction past the retention keeps the checkpoints: a revision between them is gone
/// (410, naming what is kept), a checkpoint's revision is still served.
async fn check_compaction(port: u16, ws: &str, document: &str) {
    let (texts, alice) = type_five(ws, document).await;
    alice.close().await;
    let history = wait_compacted(port, document).await;
    let exact_from = history["exact_from"].as_u64().expect("exact_from");
    let checkpoints: Vec<u64> = history["checkpoints"]
        .as_array()
        .expect("checkpoints")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(checkpoints.contains(&exact_from), "{history}");
    assert!(
        checkpoints.contains(&2),
        "a checkpoint every 2 revisions: {history}"
    );
    let (status, body) = text_at(port, document, 1).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"], "revision_compacted");
    assert!(body["kept"]["checkpoints"].is_array(), "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("checkpoints")),
        "{body}"
    );
    for revision in [2, exact_from, 5] {
        let (status, body) = text_at(port, document, revision).await;
        assert_eq!(status, 200, "revision {revision}: {body}");
        assert_eq!(body["text"], texts[revision as usize].as_str());
    }
    let (status, body) = restore(port, document, 1, "gone").await;
    assert_eq!(status, 410, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_keeps_checkpoints_on_the_embedded_store() {
    let server = Standalone::start_with(&[
        ("SNAPSHOT_EVERY", "2"),
        ("COMPACT_RETENTION_SECS", "1"),
        ("SWEEP_INTERVAL_SECS", "1"),
    ])
    .await;
    let document = unique_document("history-compact");
    check_compaction(server.port, &server.ws(), &document).await;
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_keeps_checkpoints_on_postgres() {
    let env = |_: usize, _: &Setup| {
        [
            ("SNAPSHOT_EVERY", "2"),
            ("COMPACT_RETENTION_SECS", "1"),
            ("SWEEP_INTERVAL_SECS", "1"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    };
    let cluster = Cluster::start_with(1, 1, env, |_, _| Vec::new()).await;
    let port = cluster.gateways[0].ready_port;
    let document = unique_document("history-compact-pg");
    check_compaction(port, &cluster.ws(0), &document).await;
    cluster.assert_no_panic();
}

/// The text with every whole token of `tokens` removed.
fn without(text: &str, tokens: &[String]) -> String {
    tokens.iter().fold(text.to_owned(), |text, token| {
        text.replace(token.as_str(), "")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_while_another_client_types_converges_with_its_edits() {
    let server = Standalone::start().await;
    let document = unique_document("history-typing");
    let (texts, mut alice) = type_five(&server.ws(), &document).await;
    let mut bob = Client::connect(
        &server.ws(),
        &document,
        Options {
            client_id: Some(format!("bob-{}", rand::random::<u32>())),
        },
    )
    .await
    .expect("bob joins");
    let tokens: Vec<String> = (0..20).map(|i| format!(" <b{i}>")).collect();
    // Half of Bob's tokens go out just before the restore (some may still be in flight when
    // it is transformed), half after it was committed.
    for token in &tokens[..10] {
        bob.insert(bob.len(), token).await.expect("bob types");
    }
    let (status, restored) = restore(server.port, &document, 2, "while-typing").await;
    assert_eq!(status, 200, "{restored}");
    let restored_at = restored["revision"].as_u64().expect("revision");
    for token in &tokens[10..] {
        bob.insert(bob.len(), token).await.expect("bob types");
    }
    bob.settle(WAIT).await.expect("bob's edits acknowledged");
    let text = server.text(&document).await;
    bob.wait_until(WAIT, |c| c.text == text)
        .await
        .expect("bob converges");
    alice
        .wait_until(WAIT, |c| c.text == text)
        .await
        .expect("alice converges");
    // The restore made the text revision 2's, keeping only the edits it did not see
    // committed; everything typed after it is there exactly once.
    let (_, at_restore) = text_at(server.port, &document, restored_at).await;
    let at_restore = at_restore["text"].as_str().expect("text").to_owned();
    assert_eq!(without(&at_restore, &tokens), texts[2], "{at_restore:?}");
    assert_eq!(without(&text, &tokens), texts[2], "{text:?}");
    for token in &tokens[10..] {
        assert_eq!(
            text.matches(token.as_str()).count(),
            1,
            "{token} in {text:?}"
        );
    }
    alice.close().await;
    bob.close().await;
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_protected_documents_history_needs_its_password() {
    let server = Standalone::start().await;
    let document = unique_document("history-otp");
    let (texts, mut alice) = type_five(&server.ws(), &document).await;
    alice
        .send_json(&serde_json::json!({ "SetOtp": "hunter2" }))
        .await
        .expect("protect");
    // Protected once the server announces the password.
    loop {
        match alice.next_event(WAIT).await.expect("OTP announcement") {
            Event::Other(v) if v.get("OTP").is_some() => break,
            _ => continue,
        }
    }
    alice.close().await;
    let base = format!("/api/documents/{document}");
    for path in ["history", "text?revision=2", "diff?from=1"] {
        let (status, body) = get_json(server.port, &format!("{base}/{path}")).await;
        assert_eq!(
            (status, &body["error"]),
            (401, &Value::from("password_required")),
            "{path}"
        );
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, body) = get_json(server.port, &format!("{base}/{path}{sep}otp=wrong")).await;
        assert_eq!(
            (status, &body["error"]),
            (401, &Value::from("wrong_password")),
            "{path}"
        );
        let (status, body) = get_json(server.port, &format!("{base}/{path}{sep}otp=hunter2")).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = restore(server.port, &document, 2, "no-password").await;
    assert_eq!(
        (status, &body["error"]),
        (401, &Value::from("password_required"))
    );
    let (status, body) = http_post(
        server.port,
        &format!("{base}/restore?otp=hunter2"),
        "{\"revision\": 2, \"key\": \"with-password\"}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, at) = get_json(server.port, &format!("{base}/text?revision=6&otp=hunter2")).await;
    assert_eq!(at["text"], texts[2].as_str());
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_need_a_token_that_may_read_and_restore_one_that_may_write() {
    let server = Standalone::start_with(&[("JWT_SECRET", "s3cret")]).await;
    let exp = in_an_hour();
    let reader = token(
        serde_json::json!({"name": "Bob", "exp": exp, "read": ["*"]}),
        "s3cret",
    );
    let writer = token(
        serde_json::json!({"name": "Ada", "exp": exp, "write": ["*"]}),
        "s3cret",
    );
    let base = "/api/documents/jwt-history";
    let (status, body) = get_json(server.port, &format!("{base}/history")).await;
    assert_eq!(
        (status, &body["error"]),
        (401, &Value::from("token_required"))
    );
    // Admitted: the document was never written, which is the next answer.
    let (status, body) = get_json(server.port, &format!("{base}/history?token={reader}")).await;
    assert_eq!(
        (status, &body["error"]),
        (404, &Value::from("unknown_document"))
    );
    let restore_with = |t: String| async move {
        http_post(
            server.port,
            &format!("{base}/restore?token={t}"),
            "{\"revision\": 0, \"key\": \"k\"}",
        )
        .await
    };
    let (status, body) = restore_with(reader.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read_only"), "{body}");
    let (status, body) = restore_with(writer.clone()).await;
    assert_eq!(status, 404, "{body}");
    server.assert_no_panic();
}
