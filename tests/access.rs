//! Passwords and tokens end to end, against real processes: every read path of a protected
//! document needs its password (the text API, the presence API); a tab that knocks without a
//! password never locks its address out, and wrong guesses on one document never block
//! another; refusals reach a browser as a close code and a reason; a reader is told at join
//! that it is read-only.

use std::time::Duration;

use codraft_testkit::{
    client::{Client, Event, Options},
    cluster::Cluster,
    editing::unique_document,
    jwt::{in_an_hour, token},
    standalone::Standalone,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};

const WAIT: Duration = Duration::from_secs(20);

/// A GET with extra request headers against loopback: status, and the body as JSON when it
/// is JSON (else as a string).
async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("an answer in time")
        .expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    (status, body)
}

/// How a socket ended up: joined (with the messages up to the first History), or closed
/// with a code, a reason and the messages before the close.
#[derive(Debug)]
enum Answer {
    Joined(Vec<Value>),
    Closed(u16, String, Vec<Value>),
}

impl Answer {
    fn close_code(&self) -> Option<u16> {
        match self {
            Answer::Closed(code, ..) => Some(*code),
            Answer::Joined(_) => None,
        }
    }
}

/// Opens `url` and reads until the join completes or the server closes. A refused upgrade
/// fails the test: a browser could not read it.
async fn open(url: &str) -> Answer {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("the upgrade of {url} must succeed, got {e}"));
    let mut messages = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
                let joined = value.get("History").is_some();
                messages.push(value);
                if joined {
                    let _ = socket.close(None).await;
                    return Answer::Joined(messages);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((u16::from(CloseCode::Status), String::new()));
                return Answer::Closed(code, reason, messages);
            }
            Some(Ok(_)) => {}
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    }
}

/// A standalone server with a document `prefix-…` that holds `text` and has password `otp`.
async fn protected_document(server: &Standalone, prefix: &str, text: &str, otp: &str) -> String {
    let document = unique_document(prefix);
    let mut owner = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    owner.insert(0, text).await.expect("edit");
    owner.settle(WAIT).await.expect("ack");
    owner
        .send_json(&json!({ "SetOtp": otp }))
        .await
        .expect("protect");
    loop {
        match owner.next_event(WAIT).await.expect("OTP announcement") {
            Event::Other(v) if v.get("OTP").is_some() => break,
            _ => continue,
        }
    }
    owner.close().await;
    document
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_api_needs_a_protected_documents_password() {
    let server = Standalone::start().await;
    let document = protected_document(&server, "text", "top secret", "hunter2").await;
    let path = format!("/api/text/{document}");

    let (status, body) = get(server.port, &path, &[]).await;
    assert_eq!(status, 401, "no password must not read the text: {body}");
    assert_eq!(body["error"], "password_required", "{body}");
    let (status, body) = get(server.port, &format!("{path}?otp=wrong"), &[]).await;
    assert_eq!(
        status, 401,
        "a wrong password must not read the text: {body}"
    );
    assert_eq!(body["error"], "wrong_password", "{body}");
    let (status, body) = get(server.port, &path, &[("X-Document-Password", "also-wrong")]).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, "wrong_password".into())
    );

    let (status, body) = get(server.port, &format!("{path}?otp=hunter2"), &[]).await;
    assert_eq!((status, body), (200, Value::from("top secret")));
    let (status, body) = get(server.port, &path, &[("X-Document-Password", "hunter2")]).await;
    assert_eq!((status, body), (200, Value::from("top secret")));

    // A document without a password reads as before.
    let open_document = unique_document("open");
    let mut writer = Client::connect(&server.ws(), &open_document, Options::default())
        .await
        .expect("join");
    writer.insert(0, "public").await.expect("edit");
    writer.settle(WAIT).await.expect("ack");
    let (status, body) = get(server.port, &format!("/api/text/{open_document}"), &[]).await;
    assert_eq!((status, body), (200, Value::from("public")));
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_a_browser_as_close_codes_and_never_lock_out_other_documents() {
    let server = Standalone::start_with(&[("OTP_FAILURES_PER_MINUTE", "3")]).await;
    let locked = protected_document(&server, "locked", "one", "right").await;
    let other = protected_document(&server, "other", "two", "pass").await;
    let url =
        |document: &str, otp: &str| format!("{}/api/socket/{document}?otp={otp}", server.ws());

    // A tab left open without the password knocks again and again: each time it is asked
    // for the password, and never rate-limited (asking is not guessing).
    for _ in 0..12 {
        match open(&format!("{}/api/socket/{locked}", server.ws())).await {
            Answer::Closed(code, reason, messages) => {
                assert_eq!(code, 4401);
                assert!(reason.starts_with("password_required:"), "{reason}");
                assert_eq!(
                    messages.last().map(|m| m["Refused"]["error"].clone()),
                    Some("password_required".into()),
                    "{messages:?}"
                );
            }
            joined => panic!("opened without its password: {joined:?}"),
        }
    }
    // Wrong guesses: refused with wrong_password, then 4429 once the budget is spent.
    let mut codes = Vec::new();
    for _ in 0..5 {
        match open(&url(&locked, "guess")).await {
            Answer::Closed(code, reason, _) => codes.push((code, reason)),
            joined => panic!("a wrong password opened the document: {joined:?}"),
        }
    }
    assert!(
        codes[0].0 == 4401 && codes[0].1.starts_with("wrong_password:"),
        "{codes:?}"
    );
    assert_eq!(codes.last().map(|c| c.0), Some(4429), "{codes:?}");
    // The blocked pair stays blocked, even for the right password ...
    assert_eq!(open(&url(&locked, "right")).await.close_code(), Some(4429));
    // ... and nothing else from the same address is: other protected documents open with
    // their password, unprotected ones without, and the text API still answers.
    assert!(matches!(
        open(&url(&other, "pass")).await,
        Answer::Joined(_)
    ));
    let free = unique_document("free");
    assert!(matches!(
        open(&format!("{}/api/socket/{free}", server.ws())).await,
        Answer::Joined(_)
    ));
    let (status, _) = get(server.port, &format!("/api/text/{other}?otp=pass"), &[]).await;
    assert_eq!(status, 200);
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_told_at_join_that_it_is_read_only() {
    let server = Standalone::start_with(&[
        ("JWT_SECRET", "s3cret"),
        ("LOGIN_URL", "https://login.example/sso"),
    ])
    .await;
    let document = unique_document("readers");
    // With `client=`, as the web client connects, so the server sends `Joined` too.
    let url = |t: &str| {
        format!(
            "{}/api/socket/{document}?client=tab-1&token={t}",
            server.ws()
        )
    };
    let reader = token(
        json!({"name": "Bob", "exp": in_an_hour(), "read": ["*"]}),
        "s3cret",
    );
    let writer = token(
        json!({"name": "Ada", "exp": in_an_hour(), "write": ["*"]}),
        "s3cret",
    );

    let Answer::Joined(messages) = open(&url(&reader)).await else {
        panic!("the reader could not join");
    };
    assert_eq!(
        messages.first().and_then(|m| m.get("Access")),
        Some(&json!({"read_only": true, "name": "Bob"})),
        "the first message must say the connection is read-only: {messages:?}"
    );
    let joined = messages
        .iter()
        .find_map(|m| m.get("Joined"))
        .expect("a Joined message");
    assert_eq!(joined["read_only"], true, "{joined}");

    let Answer::Joined(messages) = open(&url(&writer)).await else {
        panic!("the writer could not join");
    };
    assert_eq!(
        messages.first().and_then(|m| m.get("Access")),
        Some(&json!({"read_only": false, "name": "Ada"})),
        "{messages:?}"
    );
    let joined = messages
        .iter()
        .find_map(|m| m.get("Joined"))
        .expect("a Joined message");
    assert!(joined.get("read_only").is_none(), "{joined}");

    // Without a token: a close a browser can read, with where to sign in.
    match open(&format!("{}/api/socket/{document}", server.ws())).await {
        Answer::Closed(code, reason, messages) => {
            assert_eq!(code, 4401);
            assert!(reason.starts_with("token_required:"), "{reason}");
            assert_eq!(
                messages.last().map(|m| m["Refused"]["login_url"].clone()),
                Some("https://login.example/sso".into())
            );
        }
        joined => panic!("joined without a token: {joined:?}"),
    }
    let narrow = token(
        json!({"exp": in_an_hour(), "read": ["elsewhere"]}),
        "s3cret",
    );
    assert_eq!(open(&url(&narrow)).await.close_code(), Some(4403));
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_presence_api_needs_a_protected_documents_password() {
    let cluster = Cluster::start(1, 1).await;
    let port = cluster.gateways[0].ready_port;
    let document = unique_document("presence");
    let mut owner = Client::connect(&cluster.ws(0), &document, Options::default())
        .await
        .expect("join");
    owner.set_info("Ada", 10).await.expect("info");
    owner
        .send_json(&json!({"SetOtp": "hunter2"}))
        .await
        .expect("protect");
    loop {
        match owner.next_event(WAIT).await.expect("OTP announcement") {
            Event::Other(v) if v.get("OTP").is_some() => break,
            _ => continue,
        }
    }
    let path = format!("/api/documents/{document}/presence");
    let (status, body) = get(port, &path, &[]).await;
    assert_eq!(
        status, 401,
        "presence of a protected document leaked: {body}"
    );
    assert_eq!(body["error"], "password_required");
    let (status, _) = get(port, &format!("{path}?otp=nope"), &[]).await;
    assert_eq!(status, 401);
    let (status, body) = get(port, &path, &[("X-Document-Password", "hunter2")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["document"], document.as_str());
    owner.close().await;
    cluster.assert_no_panic();
}
