//! Starts real codraft processes for integration tests: the standalone binary (and, as the
//! distributed issues land, docnodes and gateways), each on its own loopback port with its
//! own data directory, logs kept for the failure report.
//!
//! Every process is killed when its handle drops, so a failing test leaves nothing behind.

#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free loopback port (the OS picks; a race with another process is possible but rare).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path).expect("cannot create temp dir");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `codraft` standalone process.
pub struct Standalone {
    child: Option<Child>,
    /// HTTP port.
    pub port: u16,
    data: TempDir,
    log: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl Standalone {
    /// Starts a standalone server with a fresh data directory and waits until it is ready.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Like [`Standalone::start`], with extra environment variables.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        let data = TempDir::new("codraft-test");
        let log = data.path().join("server.log");
        let mut server = Self {
            child: None,
            port: free_port(),
            data,
            log,
            extra_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("cannot open log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_codraft"));
        command
            .env("PORT", self.port.to_string())
            .env("BIND", "127.0.0.1")
            .env("DATA_DIR", self.data.path().join("store"))
            .env("RUST_LOG", "info,codraft_docnode=debug")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.extra_env {
            command.env(k, v);
        }
        self.child = Some(command.spawn().expect("cannot start codraft"));
        wait_ready(self.port, &self.log).await;
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
        let (status, body) = self.get(&format!("/api/text/{document}")).await;
        assert_eq!(status, 200, "GET /api/text/{document}: {body}");
        body
    }

    /// Kills the process with SIGKILL: nothing gets to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for an orderly exit.
    pub async fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let waited = tokio::task::spawn_blocking(move || child.wait()).await;
            let status = waited.expect("wait task").expect("wait");
            assert!(
                status.success(),
                "codraft exited with {status} after SIGTERM"
            );
        }
    }

    /// Starts the process again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// The process log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test if the log shows a panic.
    pub fn assert_no_panic(&self) {
        let log = self.log();
        assert!(!log.contains("panicked"), "server panicked:\n{log}");
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
        self.kill();
    }
}

/// Polls `/readyz` until the server answers 200 (bounded: 60 s).
pub async fn wait_ready(port: u16, log: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = try_http_get(port, "/readyz").await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "server on port {port} not ready in 60 s; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal HTTP/1.0 GET against loopback.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
}

async fn try_http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, body.to_owned()))
}

pub mod editing;
