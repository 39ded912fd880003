//! Concurrent editing workloads for the tests, on top of the protocol client: clients typing
//! at random places (non-ASCII included), typists of unique tokens that survive server
//! restarts, and the checks at the end (convergence, every token exactly once).

use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::client::{Client, ClientError, Event, Options};

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

/// A client that types unique tokens and survives server restarts: on any connection error
/// it reconnects (trying the given gateways in turn) and resumes with exactly-once.
pub struct Typist {
    /// The protocol client.
    pub client: Client,
    /// Every token this typist typed, in order.
    pub tokens: Vec<String>,
    /// Gateways to reconnect through.
    bases: Vec<String>,
    name: String,
    rng: StdRng,
    /// How many times it had to reconnect.
    pub reconnects: u32,
}

impl Typist {
    /// Joins `document` through `bases[0]` with an exactly-once client id.
    pub async fn join(bases: Vec<String>, document: &str, name: &str, seed: u64) -> Self {
        let options = Options {
            client_id: Some(format!("{name}-{}", rand::random::<u32>())),
        };
        Self::join_with(bases, document, name, seed, options).await
    }

    /// Joins like a plain Rustpad client: no client id, so it cannot resume by itself after a
    /// reconnect (a test with such typists asserts they never had to).
    pub async fn join_plain(bases: Vec<String>, document: &str, name: &str, seed: u64) -> Self {
        let options = Options { client_id: None };
        Self::join_with(bases, document, name, seed, options).await
    }

    async fn join_with(
        bases: Vec<String>,
        document: &str,
        name: &str,
        seed: u64,
        options: Options,
    ) -> Self {
        let mut client = None;
        for attempt in 0..100 {
            let base = &bases[attempt % bases.len()];
            match Client::connect(base, document, options.clone()).await {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Self {
            client: client.unwrap_or_else(|| panic!("{name} could not join {document}")),
            tokens: Vec::new(),
            bases,
            name: name.to_owned(),
            rng: StdRng::seed_from_u64(seed),
            reconnects: 0,
        }
    }

    /// Reconnects until it works (bounded: about 30 s), rotating through the gateways.
    async fn recover(&mut self) {
        for attempt in 0..300 {
            let base = self.bases[(self.reconnects as usize + attempt) % self.bases.len()].clone();
            self.client.set_base(&base);
            match self.client.reconnect().await {
                Ok(()) => {
                    self.reconnects += 1;
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("{} could not reconnect in 30 s", self.name);
    }

    /// Inserts one unique token at a token boundary (so tokens never split each other).
    pub async fn type_token(&mut self) {
        let token = format!("<{}.{}>", self.name, self.tokens.len());
        let boundaries: Vec<u64> = std::iter::once(0)
            .chain(
                self.client
                    .text
                    .chars()
                    .enumerate()
                    .filter(|(_, c)| *c == '>')
                    .map(|(i, _)| i as u64 + 1),
            )
            .collect();
        let at = boundaries[self.rng.random_range(0..boundaries.len())];
        self.tokens.push(token.clone());
        if self.client.insert(at, &token).await.is_err() {
            self.recover().await;
        }
    }

    /// Reads what arrived for up to `pause`, reconnecting if the connection broke.
    pub async fn read_for(&mut self, pause: Duration) {
        match self.client.next_event(pause).await {
            Ok(_) | Err(ClientError::Timeout) => {}
            Err(_) => self.recover().await,
        }
    }

    /// Waits (bounded) until every token is acknowledged, reconnecting as needed.
    pub async fn settle(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !self.client.is_synced() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still has unacknowledged edits after 60 s",
                self.name
            );
            match self.client.settle(Duration::from_secs(5)).await {
                Ok(()) => {}
                Err(ClientError::Timeout) => {}
                Err(_) => self.recover().await,
            }
        }
    }

    /// Waits (bounded) until this typist's text equals `expected`, reconnecting as needed.
    pub async fn converge(&mut self, expected: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.client.text != expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not converge:\nclient: {:?}\nserver: {expected:?}",
                self.name,
                self.client.text
            );
            match self.client.next_event(Duration::from_secs(1)).await {
                Ok(_) | Err(ClientError::Timeout) => {}
                Err(_) => self.recover().await,
            }
        }
    }
}

/// Checks that every token of every typist appears exactly once in `text`.
pub fn assert_each_token_once(typists: &[Typist], text: &str) {
    for typist in typists {
        assert_eq!(
            typist.client.lost, 0,
            "{} lost edits on resume",
            typist.name
        );
        for token in &typist.tokens {
            let count = text.matches(token.as_str()).count();
            assert_eq!(count, 1, "token {token} appears {count} times in {text:?}");
        }
    }
}

/// A document id no other test uses.
pub fn unique_document(name: &str) -> String {
    format!("{name}-{}", rand::random::<u32>())
}

/// Types `tokens` tokens with short random pauses, reading in between, then waits until
/// they are all acknowledged.
pub async fn type_tokens(mut typist: Typist, tokens: usize, seed: u64) -> Typist {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..tokens {
        typist.type_token().await;
        // A person's pace: read what arrives until the next keystroke is due (reading returns
        // at each message, so keep going until the deadline).
        let next = tokio::time::Instant::now() + Duration::from_millis(rng.random_range(5..25));
        while tokio::time::Instant::now() < next {
            typist
                .read_for(next.saturating_duration_since(tokio::time::Instant::now()))
                .await;
        }
    }
    typist.settle().await;
    typist
}

/// Reads until an Error message arrives, returning its code.
pub async fn expect_error(client: &mut Client) -> u64 {
    loop {
        match client.next_event(Duration::from_secs(20)).await {
            Ok(Event::Error(code, _)) => return code,
            Ok(_) => continue,
            Err(e) => panic!("expected an Error message, got {e}"),
        }
    }
}

/// Reads until the server closes, returning the close code.
pub async fn expect_close(client: &mut Client) -> u16 {
    loop {
        match client.next_event(Duration::from_secs(20)).await {
            Ok(_) => continue,
            Err(ClientError::Closed { code, .. }) => return code,
            Err(e) => panic!("expected a close, got {e}"),
        }
    }
}

/// Waits for every typist task, makes each converge with the committed text that the HTTP
/// port `port` serves, checks every token is there exactly once, and returns how many
/// reconnects the typists needed. `tasks` pairs each typist with its document's index.
pub async fn finish_typists(
    port: u16,
    documents: &[String],
    tasks: Vec<(usize, tokio::task::JoinHandle<Typist>)>,
) -> u32 {
    let mut by_document: Vec<Vec<Typist>> = documents.iter().map(|_| Vec::new()).collect();
    for (d, task) in tasks {
        by_document[d].push(task.await.expect("typist panicked"));
    }
    for (document, typists) in documents.iter().zip(by_document.iter_mut()) {
        let text = crate::http::text(port, document).await;
        for typist in typists.iter_mut() {
            typist.converge(&text).await;
        }
        assert_each_token_once(typists, &text);
    }
    by_document.iter().flatten().map(|t| t.reconnects).sum()
}
