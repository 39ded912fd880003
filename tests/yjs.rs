//! Yjs documents (`/yjs/{room}`, the y-websocket protocol) with the real npm clients: the
//! scenarios are Node scripts in `tests/yjs/` that drive y-websocket's own
//! `WebsocketProvider` (yjs, y-protocols, lib0 and ws, pinned in its package-lock.json);
//! these tests start real servers with the testkit, run the scripts against them, and kill or
//! drain docnodes at the moments a script asks for. Each script prints its SEED: run a test
//! with `SEED=<seed>` in the environment to replay a script's choices.
//!
//! Install the scripts' packages first: `tests/yjs/install.sh` (scripts/test.sh does).

use std::{path::PathBuf, time::Duration};

use codraft_testkit::{
    cluster::Cluster,
    jwt::{in_an_hour, token},
    node::{self, NodeScript},
    standalone::Standalone,
    tempdir::TempDir,
};
use serde_json::json;

/// How long one scenario may run before the test kills it.
const SCRIPT_WITHIN: Duration = Duration::from_secs(240);

/// The scripts' folder, with `node_modules` installed (else the test fails saying how).
fn scripts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/yjs");
    node::require(&dir, "tests/yjs/install.sh");
    dir
}

/// Runs a scenario script to the end with `env`; fails the test with its output if it fails.
async fn run(script: &str, env: &[(&str, String)]) -> String {
    node::run(&scripts(), script, env, SCRIPT_WITHIN).await
}

/// The `GATEWAYS` value for `ws://` bases: their `/yjs` endpoints.
fn gateways(bases: &[String]) -> String {
    bases
        .iter()
        .map(|base| format!("{base}/yjs"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A room name of the test's own.
fn room(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_providers_converge_and_what_was_acknowledged_survives_a_kill() {
    let mut server = Standalone::start().await;
    let targets = gateways(&[server.ws()]);
    let dir = TempDir::new("codraft-yjs");
    let result = dir.path().join("result.json").display().to_string();
    run(
        "converge.mjs",
        &[
            ("GATEWAYS", targets.clone()),
            ("PROVIDERS", "2".into()),
            ("ROUNDS", "60".into()),
            ("RESULT_FILE", result.clone()),
        ],
    )
    .await;
    // Everything the providers saw acknowledged is in the store: SIGKILL, start again.
    server.kill();
    server.restart().await;
    run(
        "check.mjs",
        &[("GATEWAYS", targets), ("EXPECT_FILE", result.clone())],
    )
    .await;
    check_history(&server, &result).await;
    server.assert_no_panic();
}

/// The history API on the document converge.mjs wrote `result` of: the newest revision's
/// text is the providers' text, revision 0 is empty, the sessions name the providers (from
/// their awareness states), and a diff (OT documents only) is refused clearly.
async fn check_history(server: &Standalone, result: &str) {
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(result).expect("result file"))
            .expect("result JSON");
    let id = format!("y:{}", result["room"].as_str().expect("room"));
    let get_json = async |path: String| {
        let (status, body) = server.get(&path).await;
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: {status} {body}: {e}"));
        (status, json)
    };
    let (status, history) = get_json(format!("/api/documents/{id}/history?limit=200")).await;
    assert_eq!(status, 200, "history: {history}");
    let newest = history["revision"].as_u64().expect("revision");
    assert!(newest > 0, "updates were committed: {history}");
    let names: std::collections::BTreeSet<&str> = history["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["author"]["name"].as_str())
        .collect();
    assert!(
        names.contains("p0") && names.contains("p1"),
        "the sessions name both providers: {history}"
    );
    let (status, now) = get_json(format!(
        "/api/documents/{id}/text?revision={newest}&root=text"
    ))
    .await;
    assert_eq!(status, 200, "text: {now}");
    assert_eq!(now["text"], result["text"], "the newest revision's text");
    let (_, empty) = get_json(format!("/api/documents/{id}/text?revision=0&root=text")).await;
    assert_eq!(empty["text"], "", "revision 0 is the empty document");
    let (status, diff) = get_json(format!("/api/documents/{id}/diff?from=0")).await;
    assert_eq!(status, 400, "a Yjs document has no diff: {diff}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_providers_on_one_server_converge() {
    let server = Standalone::start().await;
    run(
        "converge.mjs",
        &[
            ("GATEWAYS", gateways(&[server.ws()])),
            ("PROVIDERS", "20".into()),
            ("ROUNDS", "25".into()),
        ],
    )
    .await;
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_provider_merges_its_edits_on_reconnect() {
    let server = Standalone::start().await;
    run("offline.mjs", &[("GATEWAYS", gateways(&[server.ws()]))]).await;
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_document_refuses_a_provider_without_its_password() {
    let server = Standalone::start().await;
    run("protected.mjs", &[("GATEWAYS", gateways(&[server.ws()]))]).await;
    server.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_provider_syncs_but_its_edits_reach_no_one() {
    let secret = "yjs-secret";
    let server = Standalone::start_with(&[("JWT_SECRET", secret)]).await;
    let room = room("access");
    let claims = |grants: serde_json::Value| {
        let mut claims = json!({ "exp": in_an_hour() });
        if let (Some(claims), Some(grants)) = (claims.as_object_mut(), grants.as_object()) {
            claims.extend(grants.clone());
        }
        token(claims, secret)
    };
    run(
        "access.mjs",
        &[
            ("GATEWAYS", gateways(&[server.ws()])),
            ("ROOM", room.clone()),
            (
                "WRITE_TOKEN",
                claims(json!({ "name": "Ada", "write": ["y:*"] })),
            ),
            // Exactly the document's id: a Yjs room is `y:<room>`.
            (
                "READ_TOKEN",
                claims(json!({ "name": "Bob", "read": [format!("y:{room}")] })),
            ),
            // The plain (OT) document of the same name is another document.
            (
                "OTHER_TOKEN",
                claims(json!({ "read": [room.clone()], "write": ["y:elsewhere-*"] })),
            ),
        ],
    )
    .await;
    server.assert_no_panic();
}

/// Two docnodes and two gateways: providers spread over both gateways converge (two, then
/// twenty), see each other's awareness, merge offline edits, and a password set through one
/// gateway protects the document on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_on_two_gateways_converge_and_share_awareness() {
    let cluster = Cluster::start(2, 2).await;
    let targets = gateways(&[cluster.ws(0), cluster.ws(1)]);
    for (providers, rounds) in [("2", "60"), ("20", "25")] {
        run(
            "converge.mjs",
            &[
                ("GATEWAYS", targets.clone()),
                ("PROVIDERS", providers.into()),
                ("ROUNDS", rounds.into()),
            ],
        )
        .await;
    }
    run("offline.mjs", &[("GATEWAYS", targets.clone())]).await;
    run("protected.mjs", &[("GATEWAYS", targets)]).await;
    cluster.assert_no_panic();
}

/// How the owner of the documents goes away in a chaos test.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGKILL: nothing gets to clean up.
    Kill,
    /// SIGTERM: an orderly drain that hands the documents over.
    Drain,
}

/// Providers on two gateways type into two rooms owned by one docnode (see chaos.mjs) while
/// that docnode is stopped, then started again: no acknowledged update is lost, the providers
/// converge, and no socket closes.
async fn chaos(stop: Stop) {
    let mut cluster = Cluster::start(2, 2).await;
    let nodes = ["dn0", "dn1"];
    let owner_of = |room: &str| {
        codraft_common::ring::owner(nodes, &format!("y:{room}")).expect("two docnodes")
    };
    let survivors = room("chaos");
    let owner = owner_of(&survivors);
    let witnesses = (0..)
        .map(|i| format!("{survivors}-durable{i}"))
        .find(|r| owner_of(r) == owner)
        .expect("some room hashes to the same docnode");
    let index = nodes
        .iter()
        .position(|n| *n == owner)
        .expect("the owner is one of the docnodes");
    eprintln!("{stop:?}: rooms {survivors} and {witnesses} are owned by {owner}");

    let mut script = NodeScript::start(
        &scripts(),
        "chaos.mjs",
        &[
            ("GATEWAYS", gateways(&[cluster.ws(0), cluster.ws(1)])),
            ("ROOM", survivors),
            ("DURABLE_ROOM", witnesses),
            ("EXPECT_NO_CLOSE", "1".into()),
            ("SCRIPT_TIMEOUT_MS", "200000".into()),
        ],
    );
    script
        .wait_for_line("@ready", Duration::from_secs(60))
        .await;
    match stop {
        Stop::Kill => cluster.docnodes[index].kill(),
        Stop::Drain => cluster.docnodes[index].terminate().await,
    }
    script
        .wait_for_line("@moved", Duration::from_secs(90))
        .await;
    cluster.docnodes[index].start().await;
    for gateway in 0..cluster.gateways.len() {
        cluster.wait_gateway_sees(gateway, nodes.len()).await;
    }
    script.send_line("done").await;
    script.finish(SCRIPT_WITHIN).await;
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_docnode_mid_edit_loses_no_acknowledged_update() {
    chaos(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_the_owner_docnode_closes_no_socket_and_loses_nothing() {
    chaos(Stop::Drain).await;
}
