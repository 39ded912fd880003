//! Nothing acknowledged is ever lost: the standalone process killed with SIGKILL at random
//! moments while clients type, and a docnode whose PostgreSQL becomes unreachable mid-edit.

use std::time::Duration;

use codraft_testkit::{
    cluster::Cluster,
    editing::{finish_typists, type_tokens, unique_document, Typist},
    proxy::Proxy,
    standalone::Standalone,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standalone_killed_at_random_moments_keeps_every_acknowledged_edit() {
    let mut server = Standalone::start().await;
    let documents: Vec<String> = (0..4)
        .map(|i| unique_document(&format!("crash{i}")))
        .collect();
    let mut tasks = Vec::new();
    for (d, document) in documents.iter().enumerate() {
        for i in 0..2 {
            let typist = Typist::join(
                vec![server.ws()],
                document,
                &format!("s{d}c{i}"),
                (d * 2 + i) as u64,
            )
            .await;
            tasks.push((
                d,
                tokio::spawn(type_tokens(typist, 150, (d * 5 + i) as u64)),
            ));
        }
    }
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        server.restart().await;
    }
    let reconnects = finish_typists(server.port, &documents, tasks).await;
    assert!(
        reconnects > 0,
        "the kills never interrupted a client; the test proved nothing"
    );
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_pauses_edits_and_loses_nothing() {
    let proxy = Proxy::start("127.0.0.1:5432".parse().expect("address")).await;
    let proxy_addr = proxy.addr;
    let cluster = Cluster::start_with(
        1,
        1,
        move |_, setup| {
            let url = setup
                .database_url
                .replace("127.0.0.1:5432", &proxy_addr.to_string());
            vec![("DATABASE_URL".to_owned(), url)]
        },
        |_, _| Vec::new(),
    )
    .await;
    let documents: Vec<String> = (0..3)
        .map(|i| unique_document(&format!("outage{i}")))
        .collect();
    let mut tasks = Vec::new();
    for (d, document) in documents.iter().enumerate() {
        for i in 0..2 {
            let typist = Typist::join(
                vec![cluster.ws(0)],
                document,
                &format!("o{d}c{i}"),
                (d * 2 + i) as u64,
            )
            .await;
            tasks.push((d, tokio::spawn(type_tokens(typist, 30, (d * 3 + i) as u64))));
        }
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        cluster.docnodes[0].is_running(),
        "docnode must survive the outage"
    );
    proxy.restore();
    let reconnects = finish_typists(cluster.gateways[0].ready_port, &documents, tasks).await;
    // A pause, not an error storm: nobody was disconnected.
    assert_eq!(reconnects, 0, "clients were disconnected during the outage");
    assert!(
        cluster.docnodes[0].log().contains("retrying the flush"),
        "the outage never reached a commit; the test proved nothing"
    );
    cluster.assert_no_panic();
}
