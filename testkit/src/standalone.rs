//! The standalone `codraft` binary (gateway and docnode in one process) on a loopback port of
//! its own, with a fresh data directory that outlives restarts and is removed at the end.

use crate::{
    http::{http_get, text},
    ports::free_port,
    process::{Binary, Process},
    tempdir::TempDir,
};

/// A running `codraft` standalone process.
pub struct Standalone {
    /// The process.
    pub process: Process,
    /// HTTP port.
    pub port: u16,
    /// Data directory and log; removed when the server is dropped (after the process).
    _data: TempDir,
}

impl Standalone {
    /// Starts a standalone server with a fresh data directory and waits until it is ready.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Like [`Standalone::start`], with extra environment variables (these win over the
    /// defaults, RUST_LOG included).
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        let data = TempDir::new("codraft-test");
        let port = free_port();
        let mut vars = vec![
            ("PORT".to_owned(), port.to_string()),
            ("BIND".to_owned(), "127.0.0.1".to_owned()),
            (
                "DATA_DIR".to_owned(),
                data.path().join("store").display().to_string(),
            ),
        ];
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let mut process = Process::new(
            "standalone",
            Binary::Standalone.path(),
            vars,
            data.path(),
            port,
        );
        process.start().await;
        Self {
            process,
            port,
            _data: data,
        }
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// GET a path; returns status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path).await
    }

    /// The committed text of a document.
    pub async fn text(&self, document: &str) -> String {
        text(self.port, document).await
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends SIGTERM and waits for an orderly exit.
    pub async fn terminate(&mut self) {
        self.process.terminate().await;
    }

    /// Starts the process again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.process.restart().await;
    }

    /// The process log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Fails the test if the log shows a panic.
    pub fn assert_no_panic(&self) {
        self.process.assert_no_panic();
    }
}
