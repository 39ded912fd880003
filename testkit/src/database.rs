//! A PostgreSQL database of its own per test (or benchmark run), created on the server that
//! DATABASE_URL names (default: the local one) and dropped when its handle drops, pass or
//! fail, so tests run in parallel without seeing each other's rows.
//!
//! A missing server: [`TestDatabase::create`] skips (returns `None` after saying why) outside
//! CI and fails loudly under `CI=true`, since CI must never pass by testing nothing;
//! [`TestDatabase::require`] always fails loudly, for the process tests, which need the
//! database to start a cluster at all.

use std::time::Duration;

use tokio_postgres::NoTls;

/// The server the tests use unless DATABASE_URL names another.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Why a database could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// No server answered (or it refused the connection).
    #[error("Postgres is not reachable at {url} ({reason}); start it (scripts/test.sh does) or set DATABASE_URL")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered but would not run a statement.
    #[error("Postgres refused `{statement}`: {source}")]
    Statement {
        /// The statement.
        statement: String,
        /// The server's error.
        source: tokio_postgres::Error,
    },
}

/// A database that exists for one test; dropped (with FORCE) when this drops.
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// URL of this database.
    pub url: String,
    /// URL of the database it was created from (kept to drop it).
    server_url: String,
}

/// The server the tests use: DATABASE_URL, or [`DEFAULT_URL`].
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

impl TestDatabase {
    /// Creates a fresh database, or returns `None` (after saying why) when no Postgres is
    /// reachable outside CI. Under `CI=true` a missing Postgres panics.
    pub async fn create() -> Option<Self> {
        match Self::create_on(&server_url()).await {
            Ok(database) => Some(database),
            Err(error @ DatabaseError::Unreachable { .. }) if !crate::in_ci() => {
                eprintln!("skipping: {error}");
                None
            }
            Err(error) => panic!("cannot create a test database: {error}"),
        }
    }

    /// Creates a fresh database; fails the test if there is no Postgres, under CI or not.
    pub async fn require() -> Self {
        Self::create_on(&server_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is required for this test: {e}"))
    }

    /// Creates a fresh database on the server `server_url` names.
    pub async fn create_on(server_url: &str) -> Result<Self, DatabaseError> {
        let server = connect(server_url).await?;
        let name = format!("codraft_t_{:016x}", rand::random::<u64>());
        let statement = format!("CREATE DATABASE {name}");
        // CREATE DATABASE copies template1 and can briefly collide with another test doing
        // the same; a retry sorts that out.
        let mut attempt = 0;
        loop {
            match server.batch_execute(&statement).await {
                Ok(()) => break,
                Err(error) if attempt < 5 => {
                    attempt += 1;
                    eprintln!("{statement} failed ({error}); retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(source) => return Err(DatabaseError::Statement { statement, source }),
            }
        }
        Ok(Self {
            url: with_database(server_url, &name),
            name,
            server_url: server_url.to_owned(),
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
        // Drop may run inside the test's runtime, which cannot block on itself: use a thread
        // with a runtime of its own. FORCE ends the connections still open.
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let server = connect(&server_url).await.map_err(|e| e.to_string())?;
                server
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
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, DatabaseError> {
    let unreachable = |reason: String| DatabaseError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| unreachable("timed out".to_owned()))?
        .map_err(|e| unreachable(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
