//! Many gateways and docnodes as real processes over real PostgreSQL and Redis: clients on
//! different gateways converge, SIGKILLed and restarted nodes lose no acknowledged edit, two
//! docnodes that both believe they own a document cannot both commit, and a rolling restart
//! under load loses nothing and closes no client's socket.

use std::time::{Duration, Instant};

use codraft_testkit::{
    cluster::Cluster,
    editing::{assert_each_token_once, finish_typists, type_tokens, unique_document, Typist},
    http::{http_get, metric},
    ports::free_port,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Runs typists on documents to the end, then checks convergence and exactly-once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_on_different_gateways_converge() {
    let cluster = Cluster::start(3, 2).await;
    let bases = [cluster.ws(0), cluster.ws(1)];
    let documents: Vec<String> = (0..4).map(|i| unique_document(&format!("gw{i}"))).collect();
    let mut tasks = Vec::new();
    for (d, document) in documents.iter().enumerate() {
        for i in 0..4 {
            // Alternate gateways: each document has clients on both.
            let mine = vec![bases[i % 2].clone(), bases[(i + 1) % 2].clone()];
            let typist =
                Typist::join(mine, document, &format!("d{d}c{i}"), (d * 4 + i) as u64).await;
            tasks.push((
                d,
                tokio::spawn(type_tokens(typist, 20, (d * 10 + i) as u64)),
            ));
        }
    }
    finish_typists(cluster.gateways[0].ready_port, &documents, tasks).await;
    // Both gateways serve the same committed text.
    for document in &documents {
        assert_eq!(
            cluster.text(0, document).await,
            cluster.text(1, document).await
        );
    }
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_and_restarting_nodes_loses_no_acknowledged_edit() {
    let mut cluster = Cluster::start(3, 2).await;
    let bases = [cluster.ws(0), cluster.ws(1)];
    let documents: Vec<String> = (0..6)
        .map(|i| unique_document(&format!("chaos{i}")))
        .collect();
    let mut tasks = Vec::new();
    for (d, document) in documents.iter().enumerate() {
        for i in 0..2 {
            let mine = vec![bases[i % 2].clone(), bases[(i + 1) % 2].clone()];
            let typist =
                Typist::join(mine, document, &format!("k{d}c{i}"), (d * 2 + i) as u64).await;
            tasks.push((
                d,
                tokio::spawn(type_tokens(typist, 100, (d * 7 + i) as u64)),
            ));
        }
    }
    // Chaos, bounded: six rounds of SIGKILL and restart while the typists type.
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..400))).await;
        if round % 3 == 2 {
            let g = rng.random_range(0..cluster.gateways.len());
            cluster.gateways[g].kill();
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
            cluster.gateways[g].start().await;
        } else {
            let n = rng.random_range(0..cluster.docnodes.len());
            cluster.docnodes[n].kill();
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
            cluster.docnodes[n].start().await;
        }
    }
    let reconnects = finish_typists(cluster.gateways[0].ready_port, &documents, tasks).await;
    assert!(
        reconnects > 0,
        "no client was interrupted; the test proved nothing"
    );
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_docnodes_that_both_claim_a_document_cannot_both_commit() {
    // dn0 believes it owns everything (a static view of itself); dn1 follows Redis, where
    // both are registered. gw0 routes only to dn0; gw1 follows Redis.
    let cluster = Cluster::start_with(
        2,
        2,
        |i, setup| {
            if i == 0 {
                vec![("DOCNODES".to_owned(), format!("dn0={}", setup.urls[0]))]
            } else {
                Vec::new()
            }
        },
        |i, setup| {
            if i == 0 {
                vec![("DOCNODES".to_owned(), format!("dn0={}", setup.urls[0]))]
            } else {
                Vec::new()
            }
        },
    )
    .await;
    // A document that dn1 owns by the shared view, so dn0 and dn1 both claim it.
    let document = (0..)
        .map(|i| format!("split-{i}-{}", rand::random::<u16>()))
        .find(|d| codraft_common::ring::owner(["dn0", "dn1"], d) == Some("dn1"))
        .expect("some document hashes to dn1");
    let on_dn0 = Typist::join(vec![cluster.ws(0)], &document, "a", 1).await;
    let on_dn1 = Typist::join(vec![cluster.ws(1)], &document, "b", 2).await;
    let tasks = vec![
        (0, tokio::spawn(type_tokens(on_dn0, 30, 1))),
        (0, tokio::spawn(type_tokens(on_dn1, 30, 2))),
    ];
    let documents = vec![document.clone()];
    let mut typists = Vec::new();
    for (_, task) in tasks {
        typists.push(task.await.expect("typist panicked"));
    }
    let text = cluster.text(1, &document).await;
    for typist in &mut typists {
        typist.converge(&text).await;
    }
    assert_each_token_once(&typists, &text);
    // The log has one op per revision and no gaps: nothing forked.
    let stats = query(
        &cluster.database_url(),
        &format!(
            "SELECT count(*) || ' ' || coalesce(max(revision) + 1, 0) || ' ' || \
             (SELECT revision FROM documents WHERE id = '{document}') \
             FROM oplog WHERE document = '{document}'"
        ),
    );
    let parts: Vec<&str> = stats.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "unexpected answer {stats:?}");
    assert!(
        parts[0] == parts[1] && parts[1] == parts[2],
        "log forked or has gaps: {stats}"
    );
    // dn0 lost the lease and sent its client to dn1.
    assert!(
        cluster.docnodes[0]
            .log()
            .contains("another docnode took this document"),
        "dn0 never noticed it was fenced"
    );
    drop(documents);
    cluster.assert_no_panic();
}

/// A rolling restart (SIGTERM, start again) of every docnode while clients type: each drain
/// hands its documents to the remaining docnodes and each restart takes its share back, and the
/// gateway carries every live connection across without closing its WebSocket, plain Rustpad
/// clients (no client id, so they could not resume by themselves) included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_loses_nothing_and_closes_no_socket() {
    let admin = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start_with(
        3,
        1,
        |_, _| Vec::new(),
        |_, _| vec![("ADMIN_ADDR".to_owned(), admin.clone())],
    )
    .await;
    let bases = vec![cluster.ws(0)];
    let documents: Vec<String> = (0..6)
        .map(|i| unique_document(&format!("roll{i}")))
        .collect();
    let mut tasks = Vec::new();
    for (d, document) in documents.iter().enumerate() {
        for i in 0..3 {
            let (name, seed) = (format!("r{d}c{i}"), (d * 3 + i) as u64);
            let typist = if i == 2 {
                Typist::join_plain(bases.clone(), document, &name, seed).await
            } else {
                Typist::join(bases.clone(), document, &name, seed).await
            };
            tasks.push((d, tokio::spawn(type_tokens(typist, 100, seed + 100))));
        }
    }
    for n in 0..cluster.docnodes.len() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        cluster.docnodes[n].terminate().await;
        let drained = started.elapsed();
        cluster.docnodes[n].start().await;
        eprintln!(
            "docnode dn{n}: drained in {drained:?}, back after {:?}",
            started.elapsed()
        );
        cluster.wait_gateway_sees(0, 3).await;
    }
    let port = cluster.gateways[0].ready_port;
    let reconnects = finish_typists(port, &documents, tasks).await;
    let (_, metrics) = http_get(cluster.gateways[0].health_port(), "/metrics").await;
    let moved = metric(&metrics, "codraft_gateway_moves_total{outcome=\"moved\"}");
    eprintln!("connections moved: {moved}, reconnects: {reconnects}");
    assert!(
        moved > 0.0,
        "no connection was moved; the test proved nothing"
    );
    assert_eq!(reconnects, 0, "a client had to reconnect:\n{metrics}");
    cluster.assert_no_panic();
}

/// Runs one SQL query with psql and returns its unaligned output.
fn query(url: &str, sql: &str) -> String {
    let output = std::process::Command::new("psql")
        .args([url, "-tAc", sql])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
