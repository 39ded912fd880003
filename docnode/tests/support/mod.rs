//! What the store tests share: a throwaway Postgres database per test, and commits that
//! type a known text.
//!
//! Each test gets its own database (`codraft_t_<random>`), created through the server named
//! by DATABASE_URL (default `postgres://postgres@127.0.0.1:5432/test`) and dropped when the
//! test ends, pass or fail, so tests run in parallel without seeing each other's rows.
//! Without a Postgres the tests skip with a note, except under `CI=true`, where a missing
//! Postgres is a failure: CI must never pass by testing nothing.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use codraft_docnode::store::{DocumentCommit, LoggedOp};
use codraft_ot::Operation;
use tokio_postgres::NoTls;

/// The server the tests use unless DATABASE_URL names another.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database that exists for one test.
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// URL of this database.
    pub url: String,
    /// URL of the database it was created from (kept to drop it).
    admin_url: String,
}

impl TestDatabase {
    /// Creates a fresh database, or returns `None` (after saying why) when no Postgres is
    /// reachable outside CI. Under `CI=true` a missing Postgres panics.
    pub async fn create() -> Option<Self> {
        let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let admin = match connect(&admin_url).await {
            Ok(client) => client,
            Err(error) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!(
                        "Postgres is not reachable at {admin_url} ({error}); CI must run the \
                         Postgres store tests against a real server: start it (scripts/test.sh \
                         does) or set DATABASE_URL"
                    );
                }
                eprintln!("skipping: no Postgres at {admin_url} ({error}); set DATABASE_URL");
                return None;
            }
        };
        let name = format!("codraft_t_{:016x}", rand::random::<u64>());
        // CREATE DATABASE copies template1 and can briefly collide with another test doing
        // the same; a retry sorts that out.
        let mut attempt = 0;
        loop {
            match admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
            {
                Ok(()) => break,
                Err(error) if attempt < 5 => {
                    attempt += 1;
                    eprintln!("CREATE DATABASE {name} failed ({error}); retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(error) => panic!("cannot create test database {name}: {error}"),
            }
        }
        Some(Self {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        })
    }

    /// A plain client on this database, for looking at or adjusting rows directly.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread
        // with a runtime of its own. FORCE ends the pools' connections still open.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let admin = connect(&admin_url).await.map_err(|e| e.to_string())?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// Connects a plain client, with a deadline.
async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `url` pointing at database `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{name}{query}", &base[..path_start])
}

/// The character op `revision` types in [`typing`]: documents read 0123456789012...
pub fn char_at(revision: u64) -> char {
    char::from_digit((revision % 10) as u32, 10).unwrap_or('?')
}

/// The text after `revision` ops of [`typing`].
pub fn typed_text(revision: u64) -> String {
    (0..revision).map(char_at).collect()
}

/// A commit of `n` ops to `document`, each appending one character, continuing from `base`.
/// Ops carry client id `client` with sequence numbers equal to their revision plus one.
pub fn typing(document: &str, epoch: u64, base: u64, n: u64, client: &str) -> DocumentCommit {
    let ops = (base..base + n)
        .map(|revision| {
            let mut operation = Operation::new();
            operation
                .retain(revision)
                .insert(&char_at(revision).to_string());
            LoggedOp {
                revision,
                operation,
                author: 7,
                client_id: Some(client.to_owned()),
                seq: Some(revision + 1),
            }
        })
        .collect();
    DocumentCommit {
        document: Arc::from(document),
        base_revision: base,
        epoch,
        ops,
        language: None,
    }
}

/// One commit as the batch the committer would send.
pub fn batch(commits: impl IntoIterator<Item = DocumentCommit>) -> Arc<[DocumentCommit]> {
    commits.into_iter().collect()
}
