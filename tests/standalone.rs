//! The standalone server, driven as a real process over real WebSockets: convergence under
//! concurrent editing, late joiners, restarts, bad input and the HTTP API.

use std::time::Duration;

use codraft_ot::Operation;
use codraft_testkit::{
    client::{Client, Options},
    editing::{self, expect_close, expect_error, unique_document},
    standalone::Standalone,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_clients_on_one_document_converge() {
    let server = Standalone::start().await;
    let document = unique_document("eight");
    let clients = editing::connect_all(&server.ws(), &document, 8).await;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(editing::type_randomly(c, 40, i as u64)))
        .collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.expect("editor task panicked"));
    }
    let text = server.text(&document).await;
    assert!(!text.is_empty(), "nothing was typed");
    editing::assert_converged(&mut clients, &text).await;
    for client in &clients {
        // Local edits made while one was outstanding travel composed, so count sent edits.
        let expected: Vec<u64> = (1..=client.edits_sent()).collect();
        assert_eq!(
            client.acked, expected,
            "every edit acknowledged exactly once, in order"
        );
    }
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_documents_with_four_clients_each_converge() {
    let server = Standalone::start().await;
    let documents: Vec<String> = (0..50)
        .map(|i| unique_document(&format!("many{i}")))
        .collect();
    let mut tasks = Vec::new();
    for (d, document) in documents.iter().enumerate() {
        for (i, client) in editing::connect_all(&server.ws(), document, 4)
            .await
            .into_iter()
            .enumerate()
        {
            let seed = (d * 4 + i) as u64;
            tasks.push((d, tokio::spawn(editing::type_randomly(client, 15, seed))));
        }
    }
    let mut by_document: Vec<Vec<Client>> = (0..documents.len()).map(|_| Vec::new()).collect();
    for (d, task) in tasks {
        by_document[d].push(task.await.expect("editor task panicked"));
    }
    for (document, clients) in documents.iter().zip(by_document.iter_mut()) {
        let text = server.text(document).await;
        editing::assert_converged(clients, &text).await;
    }
    let (status, stats) = server.get("/api/stats").await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&stats).expect("stats is JSON");
    eprintln!("/api/stats after the 50-document run: {stats}");
    assert!(
        stats["num_documents"].as_u64().unwrap_or(0) >= 50,
        "{stats}"
    );
    assert!(
        stats["database_size"].as_u64().unwrap_or(0) >= 50,
        "{stats}"
    );
    assert!(
        stats["start_time"].as_u64().unwrap_or(0) > 1_600_000_000,
        "{stats}"
    );
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_the_current_text_in_one_entry() {
    let server = Standalone::start().await;
    let document = unique_document("late");
    let mut first = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    for i in 0..100 {
        first
            .insert(first.len(), &format!("line {i} 🎉\n"))
            .await
            .expect("edit");
        first.settle(WAIT).await.expect("acknowledged");
    }
    let late = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("late join");
    assert_eq!(late.text, first.text);
    // One History entry carried the whole text, not a replay of 100 edits.
    assert_eq!(late.revision, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_each_others_info_cursors_and_departures() {
    let server = Standalone::start().await;
    let document = unique_document("presence");
    let mut alice = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    alice.insert(0, "hello world").await.expect("edit");
    alice.settle(WAIT).await.expect("ack");
    alice.set_info("Alice", 42).await.expect("info");
    alice.set_cursor(&[5], &[(0, 5)]).await.expect("cursor");
    let alice_id = alice.user_id;
    alice
        .wait_until(WAIT, |c| c.users.contains_key(&alice_id))
        .await
        .expect("own info echoed");
    let mut bob = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    bob.wait_until(WAIT, |c| {
        c.users.get(&alice_id).is_some_and(|i| i["name"] == "Alice")
            && c.cursors.contains_key(&alice_id)
    })
    .await
    .expect("late joiner sees Alice and her cursor");
    // Bob types before Alice's cursor: the server moves it, as Rustpad's transform says.
    bob.insert(0, "¡").await.expect("edit");
    bob.settle(WAIT).await.expect("ack");
    bob.set_language("python").await.expect("language");
    alice
        .wait_until(WAIT, |c| c.language.as_deref() == Some("python"))
        .await
        .expect("language change reaches Alice");
    let mut carol = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    carol
        .wait_until(WAIT, |c| {
            c.cursors
                .get(&alice_id)
                .is_some_and(|d| d["cursors"][0] == 6 && d["selections"][0][1] == 6)
        })
        .await
        .expect("Alice's cursor moved past the inserted character");
    assert_eq!(carol.language.as_deref(), Some("python"));
    alice.close().await;
    carol
        .wait_until(WAIT, |c| !c.users.contains_key(&alice_id))
        .await
        .expect("departure announced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_text_language_and_revision() {
    let mut server = Standalone::start().await;
    let document = unique_document("restart");
    let options = Options {
        client_id: Some("restart-test".into()),
    };
    let mut client = Client::connect(&server.ws(), &document, options.clone())
        .await
        .expect("join");
    for word in ["durable ", "ünïcödé ", "🎉"] {
        client.insert(client.len(), word).await.expect("edit");
        client.settle(WAIT).await.expect("ack");
    }
    client.set_language("rust").await.expect("language");
    client
        .wait_until(WAIT, |c| c.language.as_deref() == Some("rust"))
        .await
        .expect("language committed");
    let before = client.log_revision().expect("revision known");
    client.close().await;

    // An orderly restart, then a SIGKILL: both keep everything acknowledged.
    server.terminate().await;
    server.restart().await;
    let mut after = Client::connect(&server.ws(), &document, options.clone())
        .await
        .expect("join after restart");
    after
        .drain(Duration::from_millis(100))
        .await
        .expect("drain");
    assert_eq!(after.text, "durable ünïcödé 🎉");
    assert_eq!(after.language.as_deref(), Some("rust"));
    assert_eq!(after.log_revision(), Some(before));
    after.insert(0, ">").await.expect("edit");
    after.settle(WAIT).await.expect("ack");
    server.kill();
    server.restart().await;
    assert_eq!(server.text(&document).await, ">durable ünïcödé 🎉");
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let server = Standalone::start().await;
    let document = unique_document("bad");
    let mut good = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    good.insert(0, "keep me").await.expect("edit");
    good.settle(WAIT).await.expect("ack");

    // Not understood: an Error, and the socket stays usable.
    let mut bad = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    for message in [
        "this is not json",
        r#"{"Unknown":{}}"#,
        r#"{"Edit":{"revision":1,"operation":[1.5]}}"#,
        r#"{"ClientInfo":{"name":"x","hue":9999}}"#,
    ] {
        bad.send_raw(message).await.expect("send");
        assert_eq!(expect_error(&mut bad).await, 4400, "for {message}");
    }
    bad.insert(0, "+").await.expect("still usable");
    bad.settle(WAIT).await.expect("ack after bad messages");

    // An op whose base length is wrong: error and close with 4409.
    let mut wrong_length = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    wrong_length
        .send_raw(r#"{"Edit":{"revision":1,"operation":[100,"x"]}}"#)
        .await
        .expect("send");
    assert_eq!(expect_close(&mut wrong_length).await, 4409);

    // A revision from the future: close with 4416.
    let mut future = Client::connect(&server.ws(), &document, Options::default())
        .await
        .expect("join");
    let len = future.len();
    let mut op = Operation::new();
    op.retain(len).insert("x");
    future
        .send_json(&serde_json::json!({"Edit": {"revision": 99, "operation": op}}))
        .await
        .expect("send");
    assert_eq!(expect_close(&mut future).await, 4416);

    // An invalid document id never upgrades.
    let (status, _) = server.get("/api/socket/bad%2Fid").await;
    assert_eq!(status, 400);

    // Nothing changed, and the good client is unaffected.
    assert_eq!(server.text(&document).await, "+keep me");
    good.insert(good.len(), "!").await.expect("edit");
    good.settle(WAIT).await.expect("ack");
    assert_eq!(server.text(&document).await, "+keep me!");
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_edit_is_applied_once() {
    let server = Standalone::start().await;
    let document = unique_document("once");
    let options = Options {
        client_id: Some("exactly-once".into()),
    };
    let mut client = Client::connect(&server.ws(), &document, options.clone())
        .await
        .expect("join");
    client.insert(0, "hello").await.expect("edit");
    client.settle(WAIT).await.expect("ack");
    // The same edit again, with the same seq, as a client does when its ack was lost.
    let mut raw = Client::connect(&server.ws(), &document, options)
        .await
        .expect("second connection of the same client");
    raw.send_json(&serde_json::json!({"Edit": {"revision": 0, "operation": ["hello"], "seq": 1}}))
        .await
        .expect("send");
    raw.insert(raw.len(), "!").await.expect("a new edit");
    raw.settle(WAIT).await.expect("ack");
    assert_eq!(server.text(&document).await, "hello!");
}
