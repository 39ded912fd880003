//! Client addresses through trusted proxies, and the wrong-password budget shared by every
//! gateway through Redis, against a real cluster (one docnode, three gateways).
//!
//! The requests all come from 127.0.0.1, standing in for a load balancer: gateways 0 and 1
//! trust it (TRUSTED_PROXIES) and count the client named in X-Forwarded-For / Forwarded;
//! gateway 2 trusts nobody, so the headers must change nothing there. A gateway whose Redis
//! is down keeps the budget itself.

use std::time::Duration;

use codraft_testkit::{
    client::{Client, Event, Options},
    cluster::{Cluster, Setup},
    editing::unique_document,
    ports::free_port,
    redis::REDIS,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);
const BUDGET: u32 = 3;
const PASSWORD: &str = "hunter2";

/// `GET /api/text/{document}` on `port` with extra headers; returns the status.
async fn get_text(port: u16, document: &str, headers: &[(&str, &str)]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the gateway");
    let mut request = format!("GET /api/text/{document} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read the response");
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

/// Opens `document` through `ws` and protects it with [`PASSWORD`].
async fn protect(ws: &str, document: &str) -> Client {
    let mut owner = Client::connect(ws, document, Options::default())
        .await
        .expect("join");
    owner.insert(0, "classified").await.expect("edit");
    owner.settle(WAIT).await.expect("ack");
    owner
        .send_json(&json!({ "SetOtp": PASSWORD }))
        .await
        .expect("protect");
    loop {
        if let Event::Other(v) = owner.next_event(WAIT).await.expect("OTP announcement") {
            if v.get("OTP").is_some() {
                return owner;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_password_budget_follows_the_forwarded_client_across_gateways() {
    let gateway_env = |i: usize, _: &Setup| {
        let mut env = vec![("OTP_FAILURES_PER_MINUTE".to_owned(), BUDGET.to_string())];
        if i < 2 {
            env.push((
                "TRUSTED_PROXIES".to_owned(),
                "127.0.0.1/32,10.0.0.0/8".to_owned(),
            ));
        }
        env
    };
    let cluster = Cluster::start_with(1, 3, |_, _| Vec::new(), gateway_env).await;
    let port = |i: usize| cluster.gateways[i].ready_port;
    let document = unique_document("guarded");
    let _owner = protect(&cluster.ws(0), &document).await;

    // The attacker, behind the balancer, alternates gateways: one budget for both.
    let attacker = [
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Document-Password", "wrong"),
    ];
    for attempt in 0..BUDGET {
        let status = get_text(port(attempt as usize % 2), &document, &attacker).await;
        assert_eq!(status, 401, "wrong password {attempt} is just wrong");
    }
    assert_eq!(
        get_text(port(1), &document, &attacker).await,
        429,
        "the budget is spent across gateways, not per gateway"
    );
    // Even the right password is refused for the blocked client, on either gateway ...
    let attacker_right = [
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Document-Password", PASSWORD),
    ];
    assert_eq!(get_text(port(0), &document, &attacker_right).await, 429);
    // ... and writing a fake address left of the proxy's entry buys nothing: the walk from
    // the right stops at the first untrusted hop, the attacker's real address.
    let spoofing = [
        ("X-Forwarded-For", "198.51.100.9, 203.0.113.7, 10.1.2.3"),
        ("X-Document-Password", "wrong"),
    ];
    assert_eq!(get_text(port(0), &document, &spoofing).await, 429);
    // The same through the standard header.
    let forwarded = [
        ("Forwarded", "for=198.51.100.9, for=\"203.0.113.7:4711\""),
        ("X-Document-Password", "wrong"),
    ];
    assert_eq!(get_text(port(1), &document, &forwarded).await, 429);

    // Everyone else behind the same balancer is not locked out.
    let bystander = [
        ("X-Forwarded-For", "198.51.100.9"),
        ("X-Document-Password", PASSWORD),
    ];
    assert_eq!(get_text(port(0), &document, &bystander).await, 200);
    assert_eq!(get_text(port(1), &document, &bystander).await, 200);

    // The shared counter and block live in Redis under the cluster's prefix, and expire.
    let redis = redis::Client::open(REDIS).expect("Redis client");
    let mut con = redis
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    for kind in ["guesses", "guess-block"] {
        let key = format!("{}:{kind}:203.0.113.7:{document}", cluster.prefix);
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut con)
            .await
            .expect("TTL");
        assert!(
            (1..=60).contains(&ttl),
            "{key} expires within a minute: TTL {ttl}"
        );
    }

    // A gateway that trusts no proxy ignores the headers: a fresh forged address per
    // request still spends the one budget of the real peer.
    let other = unique_document("guarded");
    let _owner = protect(&cluster.ws(2), &other).await;
    for attempt in 0..BUDGET {
        let forged = format!("192.0.2.{attempt}");
        let headers = [
            ("X-Forwarded-For", forged.as_str()),
            ("X-Document-Password", "wrong"),
        ];
        assert_eq!(get_text(port(2), &other, &headers).await, 401);
    }
    let forged = [
        ("X-Forwarded-For", "192.0.2.200"),
        ("X-Document-Password", "wrong"),
    ];
    assert_eq!(
        get_text(port(2), &other, &forged).await,
        429,
        "forged X-Forwarded-For from an untrusted peer must not buy a fresh budget"
    );
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_gateway_keeps_its_own_budget() {
    // The gateway's Redis is a port nobody listens on (membership is static, so it still
    // routes): the budget must still hold, counted on the gateway, and the log must say so.
    let dead = free_port();
    let gateway_env = |_: usize, setup: &Setup| {
        vec![
            ("OTP_FAILURES_PER_MINUTE".to_owned(), BUDGET.to_string()),
            ("TRUSTED_PROXIES".to_owned(), "127.0.0.1".to_owned()),
            ("DOCNODES".to_owned(), setup.urls.join(",")),
            ("REDIS_URL".to_owned(), format!("redis://127.0.0.1:{dead}")),
        ]
    };
    let cluster = Cluster::start_with(1, 1, |_, _| Vec::new(), gateway_env).await;
    let port = cluster.gateways[0].ready_port;
    let document = unique_document("guarded");
    let _owner = protect(&cluster.ws(0), &document).await;
    let attacker = [
        ("X-Forwarded-For", "203.0.113.8"),
        ("X-Document-Password", "wrong"),
    ];
    for attempt in 0..BUDGET {
        assert_eq!(
            get_text(port, &document, &attacker).await,
            401,
            "attempt {attempt}"
        );
    }
    assert_eq!(get_text(port, &document, &attacker).await, 429);
    let bystander = [
        ("X-Forwarded-For", "198.51.100.10"),
        ("X-Document-Password", PASSWORD),
    ];
    assert_eq!(get_text(port, &document, &bystander).await, 200);
    let log = cluster.gateways[0].log();
    assert!(
        log.contains("counting on this gateway only"),
        "the fallback is logged:\n{log}"
    );
    cluster.assert_no_panic();
}
