//! Concurrent editing workloads for the integration tests: clients typing at random places
//! (non-ASCII included), and the convergence check at the end.

use std::time::Duration;

use codraft_bench::client::{Client, ClientError, Options};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Snippets the editors type: ASCII, accents, CJK, astral emoji and a 7-code-point family.
pub const SNIPPETS: &[&str] = &["a", "hello ", "é", "中文", "🎉", "👨‍👩‍👧‍👦", "\n", "naïve ", "x"];

/// Connects `count` clients with exactly-once ids to `document`.
pub async fn connect_all(ws: &str, document: &str, count: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let options = Options {
            client_id: Some(format!("c{i}-{}", rand::random::<u32>())),
        };
        clients.push(
            Client::connect(ws, document, options)
                .await
                .unwrap_or_else(|e| panic!("client {i} could not join {document}: {e}")),
        );
    }
    clients
}

/// One random edit: mostly inserts of a snippet, sometimes a short delete.
pub async fn random_edit(client: &mut Client, rng: &mut StdRng) -> Result<(), ClientError> {
    let len = client.len();
    if len > 0 && rng.random_bool(0.25) {
        let at = rng.random_range(0..len);
        let count = rng.random_range(1..=3);
        client.delete(at, count).await
    } else {
        let at = rng.random_range(0..=len);
        let snippet = SNIPPETS[rng.random_range(0..SNIPPETS.len())];
        client.insert(at, snippet).await
    }
}

/// Has one client make `edits` random edits, reading what arrives in between, then waits
/// until all its edits are acknowledged.
pub async fn type_randomly(mut client: Client, edits: usize, seed: u64) -> Client {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..edits {
        random_edit(&mut client, &mut rng)
            .await
            .expect("edit could not be sent");
        // Read whatever the others did meanwhile, for a short random while.
        let pause = Duration::from_millis(rng.random_range(0..4));
        match client.next_event(pause).await {
            Ok(_) | Err(ClientError::Timeout) => {}
            Err(e) => panic!("client failed while typing: {e}"),
        }
    }
    client
        .settle(Duration::from_secs(30))
        .await
        .expect("edits were not acknowledged in time");
    client
}

/// Waits until every client holds `expected`, then checks it.
pub async fn assert_converged(clients: &mut [Client], expected: &str) {
    for (i, client) in clients.iter_mut().enumerate() {
        let result = client
            .wait_until(Duration::from_secs(30), |c| c.text == expected)
            .await;
        assert!(
            result.is_ok(),
            "client {i} did not converge ({result:?}):\nclient: {:?}\nserver: {expected:?}",
            client.text
        );
    }
}
