//! Presence through Redis, against real processes and the local Redis: names and cursors
//! across gateways, cursors moved by edits, the presence API and its TTL, restore after a
//! failover, a Redis outage in the middle of editing, and a join storm.

use std::time::Duration;

use codraft_testkit::{
    client::{Client, Options},
    cluster::{Cluster, Setup},
    http::{http_get, metric},
    ports::free_port,
    proxy::Proxy,
    redis::require_redis,
};
use serde_json::Value;
use tokio::time::Instant;

fn doc(name: &str) -> String {
    format!("{name}-{:x}", rand::random::<u32>())
}

fn with_id(name: &str) -> Options {
    Options {
        client_id: Some(format!("{name}-{:x}", rand::random::<u32>())),
    }
}

async fn connect(ws: &str, document: &str, name: &str) -> Client {
    Client::connect(ws, document, with_id(name))
        .await
        .unwrap_or_else(|e| panic!("{name} could not join {document}: {e}"))
}

/// The presence API of gateway `port` for `document` (status and parsed body).
async fn presence(port: u16, document: &str) -> (u16, Value) {
    let (status, body) = http_get(port, &format!("/api/documents/{document}/presence")).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Polls the presence API until `check` holds (bounded by `within`); returns the last body.
async fn presence_until(
    port: u16,
    document: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = presence(port, document).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "presence of {document} never matched; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn user(body: &Value, user_id: u64) -> Option<&Value> {
    body["users"]
        .as_array()?
        .iter()
        .find(|u| u["user_id"].as_u64() == Some(user_id))
}

fn cursor_of(client: &Client, user_id: u64) -> Option<Vec<u64>> {
    let data = client.cursors.get(&user_id)?;
    Some(
        data["cursors"]
            .as_array()?
            .iter()
            .filter_map(Value::as_u64)
            .collect(),
    )
}

fn name_of(client: &Client, user_id: u64) -> Option<String> {
    Some(client.users.get(&user_id)?["name"].as_str()?.to_owned())
}

async fn wait_sees(client: &mut Client, user_id: u64, name: &str, cursor: &[u64]) {
    let result = client
        .wait_until(Duration::from_secs(10), |c| {
            name_of(c, user_id).as_deref() == Some(name)
                && cursor_of(c, user_id).as_deref() == Some(cursor)
        })
        .await;
    assert!(
        result.is_ok(),
        "client {} never saw {name} ({user_id}) at {cursor:?}: users {:?} cursors {:?} ({result:?})",
        client.user_id,
        client.users,
        client.cursors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_on_two_gateways_see_names_and_cursors_that_edits_move() {
    let cluster = Cluster::start(1, 2).await;
    let document = doc("names");
    let mut ada = connect(&cluster.ws(0), &document, "ada").await;
    let mut bob = connect(&cluster.ws(1), &document, "bob").await;
    ada.insert(0, "hello world").await.expect("insert");
    ada.settle(Duration::from_secs(10)).await.expect("ack");
    bob.wait_until(Duration::from_secs(10), |c| c.text == "hello world")
        .await
        .expect("bob got the text");
    ada.set_info("Ada", 10).await.expect("info");
    bob.set_info("Bob", 200).await.expect("info");
    // Bob's caret after "hello", and a selection over "world".
    bob.set_cursor(&[5], &[(6, 11)]).await.expect("cursor");
    ada.set_cursor(&[0], &[]).await.expect("cursor");
    wait_sees(&mut ada, bob.user_id, "Bob", &[5]).await;
    wait_sees(&mut bob, ada.user_id, "Ada", &[0]).await;

    // Ada types in front of Bob's caret: the server moves it as Rustpad's transform_index
    // does (an insert before a position shifts it; a delete before it pulls it back).
    ada.insert(0, "¡¡").await.expect("insert");
    ada.settle(Duration::from_secs(10)).await.expect("ack");
    ada.delete(4, 1).await.expect("delete"); // "¡¡hello world" -> "¡¡helo world"
    ada.settle(Duration::from_secs(10)).await.expect("ack");
    let text = cluster.text(0, &document).await;
    assert_eq!(text, "¡¡helo world");
    // A late joiner gets the moved cursor and selection, without Bob sending anything.
    let mut cal = connect(&cluster.ws(1), &document, "cal").await;
    wait_sees(&mut cal, bob.user_id, "Bob", &[6]).await;
    let selection = cal.cursors[&bob.user_id]["selections"].clone();
    assert_eq!(selection, serde_json::json!([[7, 12]]), "selection moved");
    // The presence API on the other gateway shows the moved positions too (republished
    // shortly after the edits).
    let body = presence_until(
        cluster.gateways[0].ready_port,
        &document,
        Duration::from_secs(10),
        |b| user(b, bob.user_id).is_some_and(|u| u["cursors"] == serde_json::json!([6])),
    )
    .await;
    assert_eq!(
        user(&body, bob.user_id).map(|u| u["name"].clone()),
        Some("Bob".into())
    );
    assert_eq!(body["count"], 3);
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_api_lists_live_users_and_forgets_vanished_ones_within_the_ttl() {
    let ttl = [("PRESENCE_TTL_SECS".to_owned(), "2".to_owned())];
    let mut cluster = Cluster::start_with(1, 1, |_, _| ttl.to_vec(), |_, _| Vec::new()).await;
    let port = cluster.gateways[0].ready_port;
    let document = doc("api");
    let mut ada = connect(&cluster.ws(0), &document, "ada").await;
    let mut bob = connect(&cluster.ws(0), &document, "bob").await;
    ada.set_info("Ada", 1).await.expect("info");
    bob.set_info("Bob", 2).await.expect("info");
    bob.set_cursor(&[0], &[]).await.expect("cursor");
    let body = presence_until(port, &document, Duration::from_secs(10), |b| {
        b["count"] == 2
            && user(b, bob.user_id)
                .is_some_and(|u| u["name"] == "Bob" && u["cursors"] == serde_json::json!([0]))
            && user(b, ada.user_id).is_some_and(|u| u["name"] == "Ada")
    })
    .await;
    assert_eq!(body["document"], document.as_str());
    // An unknown document has nobody; a bad id is refused.
    let (status, empty) = presence(port, &doc("nobody")).await;
    assert_eq!((status, empty["count"].clone()), (200, 0.into()));
    let (status, _) = http_get(port, "/api/documents/bad%20id/presence").await;
    assert_eq!(status, 400);

    // Bob's socket just goes away (no close frame): he disappears for the others and from
    // the API.
    let bob_id = bob.user_id;
    drop(bob);
    ada.wait_until(Duration::from_secs(10), |c| !c.users.contains_key(&bob_id))
        .await
        .expect("ada saw bob leave");
    presence_until(port, &document, Duration::from_secs(5), |b| {
        b["count"] == 1 && user(b, bob_id).is_none()
    })
    .await;

    // The docnode dies: nobody removes Ada's entry, so it must expire by itself.
    cluster.docnodes[0].kill();
    let killed = Instant::now();
    presence_until(port, &document, Duration::from_secs(6), |b| b["count"] == 0).await;
    assert!(
        killed.elapsed() < Duration::from_secs(2) + Duration::from_millis(1500),
        "presence outlived its TTL: {:?}",
        killed.elapsed()
    );
    drop(ada);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_failover_clients_see_cursors_without_anyone_resending() {
    let admin = [free_port(), free_port()];
    let mut cluster = Cluster::start_with(
        2,
        2,
        |_, _| Vec::new(),
        |i, _| vec![("ADMIN_ADDR".to_owned(), format!("127.0.0.1:{}", admin[i]))],
    )
    .await;
    let document = doc("failover");
    let owner = if codraft_common::ring::owner(["dn0", "dn1"], &document) == Some("dn0") {
        0
    } else {
        1
    };
    let mut ada = connect(&cluster.ws(0), &document, "ada").await;
    let mut bob = connect(&cluster.ws(1), &document, "bob").await;
    ada.insert(0, "some shared text").await.expect("insert");
    ada.settle(Duration::from_secs(10)).await.expect("ack");
    ada.set_info("Ada", 30).await.expect("info");
    bob.set_info("Bob", 60).await.expect("info");
    ada.set_cursor(&[4], &[]).await.expect("cursor");
    bob.set_cursor(&[11], &[(5, 11)]).await.expect("cursor");
    wait_sees(&mut ada, bob.user_id, "Bob", &[11]).await;
    wait_sees(&mut bob, ada.user_id, "Ada", &[4]).await;
    let (ada_id, bob_id) = (ada.user_id, bob.user_id);
    presence_until(
        cluster.gateways[0].ready_port,
        &document,
        Duration::from_secs(10),
        |b| {
            user(b, ada_id).is_some_and(|u| u["cursors"] == serde_json::json!([4]))
                && user(b, bob_id).is_some_and(|u| u["cursors"] == serde_json::json!([11]))
        },
    )
    .await;

    cluster.docnodes[owner].kill();
    // A newcomer on the surviving docnode sees both, restored from Redis.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut cal = loop {
        match Client::connect(&cluster.ws(0), &document, with_id("cal")).await {
            Ok(client) => break client,
            Err(e) => {
                assert!(Instant::now() < deadline, "cal could not join: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(cal.text, "some shared text");
    wait_sees(&mut cal, ada_id, "Ada", &[4]).await;
    wait_sees(&mut cal, bob_id, "Bob", &[11]).await;

    // Ada's and Bob's gateways carried their connections over to the surviving docnode: the
    // sockets stayed open, the user ids are the same, and the new owner got their names and
    // cursors from the gateways without either client sending anything again.
    ada.insert(0, "> ")
        .await
        .expect("ada's socket is still open");
    ada.settle(Duration::from_secs(20))
        .await
        .expect("ada's edit is acknowledged by the new owner");
    bob.wait_until(Duration::from_secs(20), |b| b.text == "> some shared text")
        .await
        .expect("bob's socket is still open and gets ada's edit");
    assert_eq!(
        (ada.user_id, bob.user_id),
        (ada_id, bob_id),
        "user ids kept"
    );
    let mut moved = 0.0;
    for gateway in &cluster.gateways {
        let (_, page) = http_get(gateway.health_port(), "/metrics").await;
        moved += metric(&page, "codraft_gateway_moves_total{outcome=\"moved\"}");
    }
    assert_eq!(moved, 2.0, "both connections were moved, not reconnected");
    wait_sees(&mut ada, bob_id, "Bob", &[11]).await;
    wait_sees(&mut bob, ada_id, "Ada", &[4]).await;
    // The newcomer saw nobody leave.
    cal.drain(Duration::from_millis(300))
        .await
        .expect("cal reads");
    assert!(cal.users.contains_key(&ada_id) && cal.users.contains_key(&bob_id));
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_never_pauses_edits_and_presence_recovers() {
    require_redis();
    let upstream = "127.0.0.1:6379".parse().expect("address");
    let proxy = Proxy::start(upstream).await;
    let via_proxy = format!("redis://{}", proxy.addr);
    // Membership entries outlive the outage, so only presence is affected by it.
    let env = move |_: usize, _: &Setup| {
        vec![
            ("REDIS_URL".to_owned(), via_proxy.clone()),
            ("MEMBERSHIP_TTL_MS".to_owned(), "30000".to_owned()),
            ("PRESENCE_TTL_SECS".to_owned(), "3".to_owned()),
        ]
    };
    let cluster = Cluster::start_with(1, 1, env.clone(), env).await;
    let port = cluster.gateways[0].ready_port;
    let document = doc("outage");
    let mut ada = connect(&cluster.ws(0), &document, "ada").await;
    let mut bob = connect(&cluster.ws(0), &document, "bob").await;
    ada.set_info("Ada", 1).await.expect("info");
    bob.set_info("Bob", 2).await.expect("info");
    presence_until(port, &document, Duration::from_secs(10), |b| {
        b["count"] == 2
    })
    .await;

    proxy.cut();
    // Edits go on with prompt acknowledgements for the whole outage.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut edits = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let sent = Instant::now();
        ada.insert(0, "x").await.expect("edit sent");
        ada.settle(Duration::from_secs(5))
            .await
            .expect("edit acknowledged during the outage");
        slowest = slowest.max(sent.elapsed());
        edits += 1;
        // A typist's pace: flat out, the per-connection edit limit (4429) would trip.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slowest < Duration::from_millis(500),
        "an edit took {slowest:?} during the outage"
    );
    assert!(edits > 10, "only {edits} edits in 3 s");
    // Presence keeps working among this docnode's clients meanwhile.
    bob.set_cursor(&[3], &[]).await.expect("cursor");
    wait_sees(&mut ada, bob.user_id, "Bob", &[3]).await;

    proxy.restore();
    // The heartbeat republishes everything, the cursor set during the outage included.
    let bob_id = bob.user_id;
    presence_until(port, &document, Duration::from_secs(10), |b| {
        b["count"] == 2 && user(b, bob_id).is_some_and(|u| u["cursors"] == serde_json::json!([3]))
    })
    .await;
    // Logged once for the outage, not per change.
    let log = cluster.docnodes[0].log();
    let outages = log.matches("presence: Redis unreachable").count();
    assert_eq!(outages, 1, "logged {outages} times");
    // Still editing normally.
    ada.insert(0, "y").await.expect("edit");
    ada.settle(Duration::from_secs(5)).await.expect("ack");
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_clients_join_one_document_at_once() {
    const CLIENTS: usize = 1000;
    // Each client is one socket here and one in the gateway: 1,000 each, under the usual
    // `ulimit -n` of the test machine (checked below, so the failure says why).
    let cluster = Cluster::start(1, 1).await;
    let port = cluster.gateways[0].ready_port;
    let document = doc("storm");
    let ws = cluster.ws(0);
    let joins: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (ws, document) = (ws.clone(), document.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match Client::connect(&ws, &document, with_id(&format!("s{i}"))).await {
                        Ok(client) => return client,
                        Err(e) if Instant::now() < deadline => {
                            let _ = e;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("client {i} could not join: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(CLIENTS);
    for join in joins {
        clients.push(join.await.expect("join task"));
    }
    // Every client got Identity and History (Client::connect waits for both).
    assert!(clients.iter().all(|c| c.user_id != 0));
    let body = presence_until(port, &document, Duration::from_secs(30), |b| {
        b["count"] == CLIENTS
    })
    .await;
    let mut ids: Vec<u64> = body["users"]
        .as_array()
        .map(|u| u.iter().filter_map(|u| u["user_id"].as_u64()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    let mut expected: Vec<u64> = clients.iter().map(|c| c.user_id).collect();
    expected.sort_unstable();
    assert_eq!(
        ids, expected,
        "the presence API lists exactly the clients that joined"
    );
    // They see each other: the last one to name itself is seen by everyone.
    let last = clients.len() - 1;
    clients[last].set_info("last", 5).await.expect("info");
    let last_id = clients[last].user_id;
    let checks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                c.wait_until(Duration::from_secs(30), |c| c.users.contains_key(&last_id))
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut saw = 0;
    for check in checks {
        saw += usize::from(check.await.expect("check task"));
    }
    assert_eq!(saw, CLIENTS, "clients that saw the last joiner's name");
    cluster.assert_no_panic();
}
