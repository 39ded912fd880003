//! Hostile input against a real server: each bad input gets its documented error or close
//! code, changes nothing, leaves other clients unaffected and panics nothing. Also: OTP
//! protection (a wrong password never loads a cold document), JWT (expired, forged, wrong
//! audience, read-only), a slow reader that is dropped without slowing anyone else, and
//! readers that pause and are brought back with a compacted catch-up (or, once behind the
//! history window, with the whole text or a resume), and in a cluster a stuck reader that
//! holds up no other session on its gateway's shared stream to the docnode.

use std::time::Duration;

use codraft_testkit::{
    client::{Client, ClientError, Event, Options},
    cluster::Cluster,
    editing::{expect_close, unique_document},
    http::http_get,
    jwt::{in_an_hour, token},
    ports::free_port,
    standalone::Standalone,
};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

/// The close code of a refused socket: refusals open the socket and close it at once, so a
/// browser can read why (4401, 4403, 4429; see docs/security.md).
fn refusal_code(result: Result<Client, ClientError>) -> u16 {
    match result {
        Err(ClientError::Closed { code, .. }) => code,
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, but the document opened"),
    }
}

/// The close code a socket to `url` gets before it joins (101 if it joins).
async fn close_code(url: &str) -> u16 {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the upgrade succeeds; refusals close the socket");
    loop {
        match tokio::time::timeout(WAIT, socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                return frame.map(|f| u16::from(f.code)).unwrap_or(1005)
            }
            Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("\"History\"") => return 101,
            Ok(Some(Ok(_))) => {}
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    }
}

/// The value of an unlabelled series on the standalone server's `/metrics` (its admin port).
async fn metric(server: &Standalone, name: &str) -> f64 {
    let port = server
        .process
        .admin_port
        .expect("start the server with ADMIN_ADDR to read its metrics");
    let (status, page) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    page.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{name} is not on /metrics"))
}

async fn loaded_documents(server: &Standalone) -> u64 {
    let (status, body) = server.get("/api/stats").await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).expect("stats JSON");
    stats["num_documents"].as_u64().expect("num_documents")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_with_their_codes_and_change_nothing() {
    let server = Standalone::start_with(&[
        ("MAX_MESSAGE_SIZE_KB", "16"),
        ("EDITS_PER_SECOND", "5"),
        ("EDIT_BURST", "40"),
        ("HISTORY_WINDOW", "8"),
        ("MAX_DOCUMENT_SIZE_KB", "1"),
    ])
    .await;
    let document = unique_document("limits");
    let mut good = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    good.insert(0, "base").await.expect("edit");
    good.settle(WAIT).await.expect("ack");

    // A frame over the message limit: 4413.
    let mut big = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    let huge = format!(
        r#"{{"Edit":{{"revision":1,"operation":["{}",4]}}}}"#,
        "x".repeat(20_000)
    );
    big.send_raw(&huge).await.expect("send");
    assert_eq!(expect_close(&mut big).await, 4413);

    // An edit that would pass the document size limit (1 Ki code points): 4413.
    let mut grow = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    grow.insert(0, &"é".repeat(1100)).await.expect("send");
    assert_eq!(expect_close(&mut grow).await, 4413);

    // A flood of edits: 4429 once the bucket is empty.
    // On a document of its own: the flood's edits that get through before the limit trips
    // are committed, and they must not push this document's history past the good client.
    let flood_document = unique_document("flood");
    let mut flood = Client::connect(&server.ws(), &flood_document, Options::default())
        .await
        .expect("join");
    for _ in 0..100 {
        let _ = flood
            .send_raw(r#"{"Edit":{"revision":1,"operation":[]}}"#)
            .await;
    }
    assert_eq!(expect_close(&mut flood).await, 4429);

    // A revision older than the history kept: 4410.
    let mut stale = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    for i in 0..12 {
        good.insert(0, &i.to_string()).await.expect("edit");
        good.settle(WAIT).await.expect("ack");
    }
    stale
        .drain(Duration::from_millis(200))
        .await
        .expect("drain");
    stale
        .send_raw(r#"{"Edit":{"revision":1,"operation":[4,"!"]}}"#)
        .await
        .expect("send");
    assert_eq!(expect_close(&mut stale).await, 4410);

    // Negative counts where they make no sense, and a cursor far out of range.
    let mut odd = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    odd.set_cursor(&[1_000_000], &[(5, 9_000_000)])
        .await
        .expect("cursor");
    let odd_id = odd.user_id;
    let len = good.len();
    good.wait_until(WAIT, |c| c.cursors.contains_key(&odd_id))
        .await
        .expect("cursor arrives");
    let cursor = good.cursors[&odd_id].clone();
    assert!(
        cursor["cursors"][0].as_u64().expect("cursor") <= len,
        "{cursor}"
    );
    assert!(
        cursor["selections"][0][1].as_u64().expect("selection") <= len,
        "{cursor}"
    );
    odd.send_raw(r#"{"Edit":{"revision":1,"operation":[-3,"x"]}}"#)
        .await
        .expect("send");
    assert_eq!(expect_close(&mut odd).await, 4409);

    // Through all of it the good client kept working and nothing else changed.
    let before = server.text(&document).await;
    good.insert(good.len(), "!").await.expect("edit");
    good.settle(WAIT).await.expect("ack");
    assert_eq!(server.text(&document).await, format!("{before}!"));
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_joins_and_leaves_leaves_the_document_working() {
    let server = Standalone::start().await;
    let document = unique_document("churn");
    let mut steady = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    let churn: Vec<_> = (0..8)
        .map(|_| {
            let (ws, document) = (server.ws(), document.clone());
            tokio::spawn(async move {
                for _ in 0..25 {
                    if let Ok(c) = Client::connect(&ws, &document, Options::default()).await {
                        c.close().await;
                    }
                }
            })
        })
        .collect();
    for task in churn {
        task.await.expect("churn task");
    }
    steady.insert(0, "still here").await.expect("edit");
    steady.settle(WAIT).await.expect("ack");
    assert_eq!(server.text(&document).await, "still here");
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_before_the_document_loads() {
    let server = Standalone::start_with(&[("IDLE_UNLOAD_SECS", "1")]).await;
    let document = unique_document("secret");
    let mut owner = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    owner.insert(0, "classified").await.expect("edit");
    owner.settle(WAIT).await.expect("ack");
    owner
        .send_json(&json!({"SetOtp": "hunter2"}))
        .await
        .expect("protect");
    loop {
        match owner.next_event(WAIT).await.expect("OTP announcement") {
            Event::Other(v) if v.get("OTP").is_some() => {
                assert_eq!(v["OTP"], "hunter2");
                break;
            }
            _ => continue,
        }
    }
    // While loaded: a wrong or missing password is refused with 4401 before the session.
    let url = |otp: &str| format!("{}/api/socket/{document}?otp={otp}", server.ws());
    for bad in ["", "wrong"] {
        assert_eq!(
            close_code(&url(bad)).await,
            4401,
            "password {bad:?} accepted"
        );
    }
    assert_eq!(
        refusal_code(Client::connect(&server.ws(), &document, Options::default()).await),
        4401
    );
    owner.close().await;

    // Cold: wait for the unload, then a wrong password must not load it again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while loaded_documents(&server).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "document never unloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(close_code(&url("nope")).await, 4401);
    assert_eq!(
        loaded_documents(&server).await,
        0,
        "a refused client loaded the document"
    );

    // The right password opens it, with its text.
    let (mut socket, _) = tokio_tungstenite::connect_async(url("hunter2"))
        .await
        .expect("right password opens the document");
    let mut text = None;
    while text.is_none() {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("message");
        if let Message::Text(t) = message {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if let Some(history) = v.get("History") {
                text = history["operations"][0]["operation"][0]
                    .as_str()
                    .map(str::to_owned);
            }
        }
    }
    assert_eq!(text.as_deref(), Some("classified"));

    // Guessing is rate-limited per address and document: after the budget, 4429.
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(close_code(&url("guess")).await);
    }
    assert_eq!(codes.last(), Some(&4429), "{codes:?}");
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_refuses_bad_tokens_and_keeps_readers_read_only() {
    let server =
        Standalone::start_with(&[("JWT_SECRET", "s3cret"), ("JWT_AUDIENCE", "codraft")]).await;
    let document = unique_document("jwt");
    let url = |t: &str| format!("{}/api/socket/{document}?token={t}", server.ws());
    let writer = token(
        json!({"name": "Ada", "exp": in_an_hour(), "aud": "codraft", "write": ["jwt-*"]}),
        "s3cret",
    );
    let reader = token(
        json!({"name": "Bob", "exp": in_an_hour(), "aud": "codraft", "read": ["*"]}),
        "s3cret",
    );
    let expired = token(
        json!({"exp": 1_000_000, "aud": "codraft", "write": ["*"]}),
        "s3cret",
    );
    let forged = token(
        json!({"exp": in_an_hour(), "aud": "codraft", "write": ["*"]}),
        "other",
    );
    let audience = token(
        json!({"exp": in_an_hour(), "aud": "elsewhere", "write": ["*"]}),
        "s3cret",
    );
    let narrow = token(
        json!({"exp": in_an_hour(), "aud": "codraft", "write": ["nothing-here"]}),
        "s3cret",
    );
    // Refusals close the socket with 4000 + the HTTP status, so a browser can read them.
    assert_eq!(
        close_code(&format!("{}/api/socket/{document}", server.ws())).await,
        4401
    );
    assert_eq!(close_code(&url(&expired)).await, 4401);
    assert_eq!(close_code(&url(&forged)).await, 4401);
    assert_eq!(close_code(&url(&audience)).await, 4401);
    assert_eq!(close_code(&url(&narrow)).await, 4403);
    let (status_code, _) = server.get(&format!("/api/text/{document}")).await;
    assert_eq!(status_code, 401, "the text API is protected too");

    // The writer edits; its token's name replaces the name it claims.
    let (mut w, _) = tokio_tungstenite::connect_async(url(&writer))
        .await
        .expect("writer joins");
    let (mut r, _) = tokio_tungstenite::connect_async(url(&reader))
        .await
        .expect("reader joins");
    w.send(Message::text(
        r#"{"ClientInfo":{"name":"Mallory","hue":1}}"#,
    ))
    .await
    .expect("send");
    w.send(Message::text(
        r#"{"Edit":{"revision":1,"operation":["hi"]}}"#,
    ))
    .await
    .expect("send");
    // The reader sees the edit and the name from the token, and its own edit is refused.
    let mut saw_edit = false;
    let mut saw_name = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(saw_edit && saw_name) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = tokio::time::timeout(left, r.next())
            .await
            .expect("reader gets messages in time");
        if let Some(Ok(Message::Text(t))) = message {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if v["History"]["operations"]
                .as_array()
                .is_some_and(|ops| ops.iter().any(|o| o["operation"][0] == "hi"))
            {
                saw_edit = true;
            }
            if v["UserInfo"]["info"]["name"] == "Ada" {
                saw_name = true;
            }
            assert_ne!(
                v["UserInfo"]["info"]["name"], "Mallory",
                "a token's name must win"
            );
        }
    }
    r.send(Message::text(
        r#"{"Edit":{"revision":2,"operation":[2,"!"]}}"#,
    ))
    .await
    .expect("send");
    loop {
        let message = tokio::time::timeout(WAIT, r.next())
            .await
            .expect("an answer in time");
        if let Some(Ok(Message::Text(t))) = message {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if let Some(error) = v.get("Error") {
                assert_eq!(error["code"], 4403);
                break;
            }
        }
    }
    let (code, text) = server
        .get(&format!("/api/text/{document}?token={writer}"))
        .await;
    assert_eq!(code, 200);
    assert_eq!(text, "hi", "the reader's edit must not apply");
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_stops_reading_is_dropped_and_nobody_waits_for_it() {
    // A short grace: the client lags, gets no chance to catch up, and is closed.
    let server = slow_client_server("500", &[]).await;
    let document = unique_document("slow");
    // The slow client joins and then never reads again.
    let (mut slow, _) =
        tokio_tungstenite::connect_async(format!("{}/api/socket/{document}", server.ws()))
            .await
            .expect("slow client joins");
    let mut writer = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("writer joins");
    // Big edits (insert 100,000 characters, then delete them) fill every buffer on the way
    // to the slow client (loopback TCP buffers grow to megabytes) while the document stays
    // small. Bounded: at most 400 rounds, and it stops as soon as the slow client is dropped.
    let chunk = "z".repeat(100_000);
    for round in 0..400 {
        big_round(&mut writer, &chunk).await;
        if round % 5 == 4 && server.log().contains("too far behind") {
            break;
        }
    }
    // Now read what the slow client was sent: it ends with 4508.
    let mut code = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while code.is_none() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, slow.next())
            .await
            .expect("the close arrives in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => code = Some(u16::from(frame.code)),
            Some(Ok(_)) => continue,
            other => panic!("slow client ended without a close frame: {other:?}"),
        }
    }
    assert_eq!(code, Some(4508));
    server.assert_no_panic();
}

/// In a cluster every client session of a gateway shares one stream to its docnode
/// (`DocNode.Sessions`): a reader that stops reading must hold up only its own session. The
/// slow reader's document goes on (its writer is acknowledged) until the docnode finds it
/// lagging, which it can only once its frames stopped leaving, that is once the session's
/// credit on the shared stream ran out; then clients of another document, on the same
/// stream, edit and see each other's edits as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_stops_reading_holds_up_no_other_session_on_the_shared_stream() {
    let env = |_: usize, _: &codraft_testkit::cluster::Setup| {
        [
            ("CLIENT_QUEUE", "16"),
            // Never dropped during the test: its session stays stuck on the shared stream.
            ("SLOW_CLIENT_GRACE_MS", "600000"),
            ("EDITS_PER_SECOND", "100000"),
            ("EDIT_BURST", "100000"),
            ("MESSAGES_PER_SECOND", "100000"),
            ("WRITE_WAIT_SECS", "600"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
    };
    let cluster = Cluster::start_with(1, 1, env, env).await;
    let admin = cluster.docnodes[0]
        .admin_port
        .expect("docnodes have an admin port");
    let metric = |name: &'static str| async move {
        let (status, page) = http_get(admin, "/metrics").await;
        assert_eq!(status, 200);
        page.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} is not on the docnode's /metrics"))
    };
    let lagging = || metric("codraft_lagging_clients");
    let stuck_document = unique_document("stuck");
    let (slow, _) =
        tokio_tungstenite::connect_async(format!("{}/api/socket/{stuck_document}", cluster.ws(0)))
            .await
            .expect("slow client joins");
    let mut writer = Client::connect(&cluster.ws(0), &stuck_document, Options::default())
        .await
        .expect("writer joins");
    let chunk = "z".repeat(100_000);
    let mut rounds = 0;
    while lagging().await < 1.0 {
        assert!(rounds < 400, "the slow reader never lagged in 400 rounds");
        rounds += 1;
        big_round(&mut writer, &chunk).await;
    }
    // The slow session is stuck now; another document's clients share its stream.
    let document = unique_document("free");
    let mut a = Client::connect(&cluster.ws(0), &document, Options::default())
        .await
        .expect("a joins");
    let mut b = Client::connect(&cluster.ws(0), &document, Options::default())
        .await
        .expect("b joins");
    for i in 0..30u64 {
        let (from, to) = if i % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        from.insert(i, "x").await.expect("insert");
        from.settle(WAIT)
            .await
            .expect("acknowledged while a session is stuck");
        to.wait_until(WAIT, |c| c.len() == i + 1)
            .await
            .expect("seen by the other client while a session is stuck");
    }
    writer.insert(0, "still").await.expect("insert");
    writer
        .settle(WAIT)
        .await
        .expect("the slow reader's writer is still acknowledged");
    assert_eq!(a.text.to_string(), "x".repeat(30));
    assert_eq!(
        lagging().await,
        1.0,
        "the slow reader was dropped: the test proved nothing"
    );
    // Every session leaves the shared stream when its client goes, the stuck one too (out
    // of credit, it would never see its own end if its end did not close its credit).
    let sessions = || metric("codraft_shared_stream_sessions");
    assert_eq!(sessions().await, 4.0);
    drop((slow, writer, a, b));
    let deadline = tokio::time::Instant::now() + WAIT;
    while sessions().await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} sessions still on the shared stream after their clients left",
            sessions().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.assert_no_panic();
}

/// A standalone server for the slow-client tests: small client queues and the docnode's
/// grace `grace_ms`. Their writers send hundreds of edits as fast as they are acknowledged,
/// and their readers pause for seconds: neither the edit rate limit nor the gateway's write
/// wait is what they test, unless `extra` (applied last) sets it.
async fn slow_client_server(grace_ms: &str, extra: &[(&str, &str)]) -> Standalone {
    let mut env = vec![
        ("CLIENT_QUEUE", "16"),
        ("SLOW_CLIENT_GRACE_MS", grace_ms),
        ("EDITS_PER_SECOND", "100000"),
        ("EDIT_BURST", "100000"),
        // The writers here send as fast as the server answers: on an idle machine that passed
        // the default 400 messages a second and the writer, not the slow reader, was closed.
        ("MESSAGES_PER_SECOND", "100000"),
        ("WRITE_WAIT_SECS", "600"),
    ];
    // The metrics these tests read are on the admin port.
    let admin = format!("127.0.0.1:{}", free_port());
    env.push(("ADMIN_ADDR", &admin));
    env.extend_from_slice(extra);
    Standalone::start_with(&env).await
}

/// A writer on a fresh document named after `name`, which holds the acknowledged text "seed".
async fn seeded_writer(server: &Standalone, name: &str) -> (String, Client) {
    let document = unique_document(name);
    let mut writer = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("writer joins");
    writer.insert(0, "seed").await.expect("seed");
    writer.settle(WAIT).await.expect("seed acknowledged");
    (document, writer)
}

/// Writes one big insert and its deletion (100,000 characters), each acknowledged.
async fn big_round(writer: &mut Client, chunk: &str) {
    writer.insert(0, chunk).await.expect("insert");
    writer
        .settle(WAIT)
        .await
        .expect("the writer is never held up");
    writer.delete(0, 100_000).await.expect("delete");
    writer
        .settle(WAIT)
        .await
        .expect("the writer is never held up");
}

/// Big edits from `writer` fill every buffer on the way to a client that stopped reading,
/// until the docnode reports a lagging connection. Bounded: at most 200 rounds.
async fn until_lagging(server: &Standalone, writer: &mut Client) {
    let chunk = "z".repeat(100_000);
    for _ in 0..200 {
        big_round(writer, &chunk).await;
        if metric(server, "codraft_lagging_clients").await >= 1.0 {
            return;
        }
    }
    panic!("the paused reader never lagged");
}

/// A reader that edits, pauses until the docnode reports it lagging, and reads again once
/// more edits went by. Returns the server, document, writer and reader, with the reader
/// caught up on the text `"!seed mine"` (its own edit is " mine").
async fn a_paused_reader(reader_options: Options) -> (Standalone, String, Client, Client) {
    let server = slow_client_server("60000", &[]).await;
    let (document, mut writer) = seeded_writer(&server, "catch-up").await;
    let mut reader = Client::connect(&server.ws(), &document, reader_options)
        .await
        .expect("reader joins");
    assert_eq!(reader.text, "seed");
    // The reader stops reading (nothing polls it) until the docnode reports it lagging.
    until_lagging(&server, &mut writer).await;
    // Then it edits, still not reading: the gateway reads a client's messages even while it
    // cannot write to it, so the edit is committed while the reader lags, and its
    // acknowledgement can only come with the catch-up.
    reader
        .insert(4, " mine")
        .await
        .expect("the reader's edit is sent");
    // More traffic while it lags, for the catch-up to compact.
    let chunk = "z".repeat(100_000);
    for _ in 0..5 {
        big_round(&mut writer, &chunk).await;
    }
    // A mark made once, so that reaching the final text means having caught up.
    writer.insert(0, "!").await.expect("insert");
    writer.settle(WAIT).await.expect("acknowledged");
    let expected = "!seed mine";
    writer
        .wait_until(WAIT, |w| w.text == expected)
        .await
        .expect("the writer sees the reader's edit");
    // The reader reads again: it is not closed, its edit is acknowledged and it converges.
    reader
        .settle(WAIT)
        .await
        .expect("the reader's edit is acknowledged, without a close");
    reader
        .wait_until(WAIT, |r| r.text == expected)
        .await
        .expect("the reader converges");
    assert_eq!(server.text(&document).await, expected);
    assert!(metric(&server, "codraft_slow_client_catchups_total").await >= 1.0);
    assert_eq!(metric(&server, "codraft_lagging_clients").await, 0.0);
    assert_eq!(
        metric(&server, "codraft_slow_client_closes_total").await,
        0.0
    );
    (server, document, writer, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_pauses_gets_a_compacted_catch_up_with_its_acknowledgement() {
    // A plain Rustpad client: it counts one revision per History entry, so the entries it
    // receives show whether the catch-up was compacted.
    let (server, document, mut writer, mut reader) = a_paused_reader(Options::default()).await;
    assert_eq!(reader.acked_plain, 1);
    // Both hold one entry for the text before the reader joined; the writer got one entry per
    // log revision since, the reader fewer.
    let linear = writer.revision - 1;
    assert!(
        reader.revision < linear,
        "the reader got {} entries, as many as a linear replay ({linear})",
        reader.revision
    );
    // And it keeps working: a later edit from the writer reaches it normally.
    writer.insert(0, "?").await.expect("insert");
    writer.settle(WAIT).await.expect("acknowledged");
    reader
        .wait_until(WAIT, |r| r.text == "?!seed mine")
        .await
        .expect("the reader follows again");
    // Its next edit is based on a revision past the compacted entry: the server must map it
    // to the right log revision (a breakpoint), or the edit would not fit.
    reader.insert(11, " again").await.expect("insert");
    reader
        .settle(WAIT)
        .await
        .expect("the reader's edit is acknowledged");
    writer
        .wait_until(WAIT, |w| w.text == "?!seed mine again")
        .await
        .expect("the writer sees it");
    assert_eq!(server.text(&document).await, "?!seed mine again");
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exactly_once_reader_catches_up_and_still_resumes_at_the_right_revision() {
    let options = Options {
        client_id: Some(unique_document("reader")),
    };
    let (server, document, mut writer, mut reader) = a_paused_reader(options).await;
    assert_eq!(reader.acked, vec![1]);
    // It counts its log revision from its entries, so its catch-up keeps one entry per log
    // revision (the composed ops are followed by identity entries).
    assert_eq!(reader.revision, writer.revision - 1);
    // A reconnect resumes from the revision it counted: nothing is replayed twice.
    reader.reconnect().await.expect("the reader resumes");
    writer.insert(0, "?").await.expect("insert");
    writer.settle(WAIT).await.expect("acknowledged");
    reader
        .wait_until(WAIT, |r| r.text == "?!seed mine")
        .await
        .expect("the resumed reader converges");
    assert_eq!(server.text(&document).await, "?!seed mine");
    assert_eq!(reader.lost, 0);
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_behind_the_history_window_gets_the_whole_text_or_resumes() {
    // A window of 16 edits, far less than what goes by while the readers lag.
    let server = slow_client_server("60000", &[("HISTORY_WINDOW", "16")]).await;
    let (document, mut writer) = seeded_writer(&server, "behind").await;
    // A plain reader can take the whole text; an exactly-once one counts log revisions, so
    // it is closed and resumes from the op log instead.
    let mut plain = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("plain reader joins");
    let options = Options {
        client_id: Some(unique_document("resumer")),
    };
    let mut resumer = Client::connect(&server.ws(), &document, options)
        .await
        .expect("exactly-once reader joins");
    until_lagging(&server, &mut writer).await;
    let chunk = "z".repeat(100_000);
    for _ in 0..20 {
        big_round(&mut writer, &chunk).await;
    }
    writer.insert(0, "!").await.expect("insert");
    writer.settle(WAIT).await.expect("acknowledged");
    plain
        .wait_until(WAIT, |r| r.text == "!seed")
        .await
        .expect("the plain reader catches up from the whole text");
    // The resumer may have been caught up (if it lagged later than the plain reader, inside
    // the window) or closed; either way a reconnect leaves it on the same text.
    match resumer.wait_until(WAIT, |r| r.text == "!seed").await {
        Ok(()) => {}
        Err(ClientError::Closed { code: 4508, .. }) => {
            resumer.reconnect().await.expect("the resumer resumes");
        }
        Err(other) => panic!("the exactly-once reader failed: {other}"),
    }
    resumer
        .wait_until(WAIT, |r| r.text == "!seed")
        .await
        .expect("the resumer converges");
    assert_eq!(resumer.lost, 0);
    assert!(metric(&server, "codraft_slow_client_catchups_total").await >= 1.0);
    assert_eq!(metric(&server, "codraft_lagging_clients").await, 0.0);
    // Both keep editing normally.
    plain.insert(5, " a").await.expect("insert");
    plain.settle(WAIT).await.expect("acknowledged");
    resumer
        .wait_until(WAIT, |r| r.text == "!seed a")
        .await
        .expect("the resumer sees the plain reader's edit");
    resumer.insert(7, " b").await.expect("insert");
    resumer.settle(WAIT).await.expect("acknowledged");
    writer
        .wait_until(WAIT, |w| w.text == "!seed a b")
        .await
        .expect("the writer sees both edits");
    assert_eq!(server.text(&document).await, "!seed a b");
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_whose_socket_stays_full_is_cut_after_the_write_wait() {
    // The docnode would wait a minute before giving up on it; the gateway's one-second write
    // wait ends it first.
    let server = slow_client_server("60000", &[("WRITE_WAIT_SECS", "1")]).await;
    let document = unique_document("write-wait");
    let (mut stuck, _) =
        tokio_tungstenite::connect_async(format!("{}/api/socket/{document}", server.ws()))
            .await
            .expect("the stuck client joins");
    let mut writer = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("writer joins");
    assert_eq!(metric(&server, "codraft_connections").await, 2.0);
    // Traffic until every buffer towards the client that never reads is full (the docnode
    // reports it lagging) or the gateway has already dropped it (bounded: 200 rounds).
    let chunk = "z".repeat(100_000);
    for _ in 0..200 {
        big_round(&mut writer, &chunk).await;
        if metric(&server, "codraft_connections").await == 1.0
            || metric(&server, "codraft_lagging_clients").await >= 1.0
        {
            break;
        }
    }
    // The gateway's writer is stuck on it now; within about a second it gives up. Watched on
    // the gateway's connection gauge, every 50 ms for at most 30 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metric(&server, "codraft_connections").await != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway kept a client that never read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The docnode did not have to drop it, and the writer was never held up.
    assert_eq!(
        metric(&server, "codraft_slow_client_closes_total").await,
        0.0
    );
    // What was written before it stuck is still readable; then the stream ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, stuck.next())
            .await
            .expect("the stream ends in time")
        {
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(_)) => continue,
        }
    }
    writer.insert(0, "still here").await.expect("insert");
    writer.settle(WAIT).await.expect("acknowledged");
    server.assert_no_panic();
}
