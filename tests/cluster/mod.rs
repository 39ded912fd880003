//! Starts real codraft processes for integration tests: the standalone binary, or a cluster of
//! docnodes and gateways, each on its own loopback ports, with a database of its own on the
//! local PostgreSQL and a key prefix of its own on the local Redis, so tests run in parallel.
//! Logs are kept and printed when a test fails; every process is killed when its handle drops.
//!
//! Under `CI=true` a missing PostgreSQL or Redis fails the test loudly; it never skips.

#![allow(dead_code)]

pub mod editing;
pub mod proxy;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The local PostgreSQL the tests use.
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";
/// The local Redis the tests use.
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// A free loopback port (the OS picks; a race with another process is possible but rare).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on loopback")
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique(prefix));
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

/// A database of its own on the local PostgreSQL, dropped at the end.
pub struct TestDatabase {
    name: String,
}

fn psql(sql: &str) -> Result<(), String> {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl TestDatabase {
    /// Creates the database; fails the test if PostgreSQL is not there.
    pub fn create() -> Self {
        let name = unique("codraft_it");
        if let Err(error) = psql(&format!("CREATE DATABASE {name}")) {
            panic!("PostgreSQL at 127.0.0.1:5432 is required for this test: {error}");
        }
        Self { name }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("{POSTGRES}/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// Fails the test unless Redis answers.
pub fn require_redis() {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "ping"])
        .output();
    let ok = output
        .as_ref()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"));
    assert!(
        ok,
        "Redis at 127.0.0.1:6379 is required for this test: {output:?}"
    );
}

/// One codraft process: how to start it, and the running child.
pub struct Process {
    /// A name for logs ("docnode dn0", "gateway gw1").
    pub name: String,
    program: &'static str,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// The port whose `/readyz` says the process is ready (a gateway's or standalone
    /// server's public port, unless it has an admin port).
    pub ready_port: u16,
    /// The admin port (ADMIN_ADDR) of a gateway or standalone server given one: `/readyz` and
    /// `/metrics` are there, and its public port (`ready_port`) serves only the editor and API.
    pub admin_port: Option<u16>,
    /// What `/readyz` must contain (e.g. a gateway seeing all docnodes).
    ready_body: Option<String>,
    child: Option<Child>,
}

impl Process {
    /// A process of `program` with `env`, logging into `dir`, ready when `ready_port` says so.
    pub fn new(
        name: &str,
        program: &'static str,
        env: Vec<(String, String)>,
        dir: &Path,
        ready_port: u16,
    ) -> Self {
        Self {
            name: name.to_owned(),
            program,
            env,
            log: dir.join(format!("{}.log", name.replace(' ', "-"))),
            ready_port,
            admin_port: None,
            ready_body: None,
            child: None,
        }
    }

    /// Starts the process and waits until it is ready.
    pub async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("cannot open log file");
        let mut command = Command::new(self.program);
        command
            .env(
                "RUST_LOG",
                "info,codraft_docnode=debug,codraft_gateway=debug",
            )
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name)),
        );
        self.wait_ready().await;
    }

    /// The port serving `/readyz` and `/metrics`.
    pub fn health_port(&self) -> u16 {
        self.admin_port.unwrap_or(self.ready_port)
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, body)) = try_http_get(self.health_port(), "/readyz").await {
                if self
                    .ready_body
                    .as_deref()
                    .is_none_or(|want| body.contains(want))
                {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not ready in 60 s; log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process with SIGKILL: nothing gets to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for an orderly exit; fails the test on a non-zero status.
    pub async fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let waited = tokio::task::spawn_blocking(move || child.wait()).await;
            let status = waited.expect("wait task").expect("wait");
            assert!(
                status.success(),
                "{} exited with {status} after SIGTERM",
                self.name
            );
        }
    }

    /// Kills the process if it runs, then starts it again with the same settings.
    pub async fn restart(&mut self) {
        self.kill();
        self.start().await;
    }

    /// The process log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test if the log shows a panic.
    pub fn assert_no_panic(&self) {
        let log = self.log();
        assert!(!log.contains("panicked"), "{} panicked:\n{log}", self.name);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .lines()
                .rev()
                .take(80)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("---- {} log (last 80 lines) ----\n{tail}", self.name);
        }
        self.kill();
    }
}

/// A running `codraft` standalone process.
pub struct Standalone {
    /// The process.
    pub process: Process,
    /// HTTP port.
    pub port: u16,
    _data: TempDir,
}

impl Standalone {
    /// Starts a standalone server with a fresh data directory and waits until it is ready.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Like [`Standalone::start`], with extra environment variables.
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
        let admin_port = admin_port_of(&vars);
        let mut process = Process::new(
            "standalone",
            env!("CARGO_BIN_EXE_codraft"),
            vars,
            data.path(),
            port,
        );
        process.admin_port = admin_port;
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

/// What a cluster's environment hooks can use.
pub struct Setup {
    /// gRPC URL of each docnode, by index.
    pub urls: Vec<String>,
    /// The cluster's database.
    pub database_url: String,
}

/// A cluster of docnode and gateway processes over one database and one Redis prefix.
pub struct Cluster {
    /// Docnodes, `dn0`, `dn1`, ….
    pub docnodes: Vec<Process>,
    /// Gateways, `gw0`, `gw1`, ….
    pub gateways: Vec<Process>,
    /// gRPC URL of each docnode, by index.
    pub docnode_urls: Vec<String>,
    /// The Redis prefix of this cluster.
    pub prefix: String,
    database: TestDatabase,
    _dir: TempDir,
}

impl Cluster {
    /// Starts `docnodes` docnodes and `gateways` gateways discovering them through Redis.
    pub async fn start(docnodes: usize, gateways: usize) -> Self {
        Self::start_with(docnodes, gateways, |_, _| Vec::new(), |_, _| Vec::new()).await
    }

    /// Like [`Cluster::start`]; `docnode_env(i, setup)` and `gateway_env(i, setup)` add (or
    /// override) environment variables of docnode or gateway `i`. A gateway given DOCNODES
    /// waits only until it sees those.
    pub async fn start_with(
        docnodes: usize,
        gateways: usize,
        docnode_env: impl Fn(usize, &Setup) -> Vec<(String, String)>,
        gateway_env: impl Fn(usize, &Setup) -> Vec<(String, String)>,
    ) -> Self {
        require_redis();
        let database = TestDatabase::create();
        let dir = TempDir::new("codraft-cluster");
        let prefix = unique("codraft_it");
        let common = |extra: &[(&str, String)]| -> Vec<(String, String)> {
            let mut env = vec![
                ("REDIS_URL".to_owned(), REDIS.to_owned()),
                ("REDIS_PREFIX".to_owned(), prefix.clone()),
                ("MEMBERSHIP_TTL_MS".to_owned(), "1200".to_owned()),
            ];
            env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            env
        };
        let ports: Vec<(u16, u16)> = (0..docnodes).map(|_| (free_port(), free_port())).collect();
        let urls: Vec<String> = ports
            .iter()
            .map(|(g, _)| format!("http://127.0.0.1:{g}"))
            .collect();
        let setup = Setup {
            urls: urls.clone(),
            database_url: database.url(),
        };
        let mut nodes = Vec::new();
        for (i, &(grpc, admin)) in ports.iter().enumerate() {
            let mut env = common(&[
                ("NODE_ID", format!("dn{i}")),
                ("DOCNODE_ADDR", format!("127.0.0.1:{grpc}")),
                ("ADMIN_ADDR", format!("127.0.0.1:{admin}")),
                ("DATABASE_URL", database.url()),
                ("SHUTDOWN_TIMEOUT_SECS", "5".to_owned()),
            ]);
            env.extend(docnode_env(i, &setup));
            nodes.push(Process::new(
                &format!("docnode dn{i}"),
                env!("CARGO_BIN_EXE_docnode"),
                env,
                dir.path(),
                admin,
            ));
        }
        let mut gws = Vec::new();
        for i in 0..gateways {
            let port = free_port();
            let mut env = common(&[("PORT", port.to_string()), ("BIND", "127.0.0.1".to_owned())]);
            let extra = gateway_env(i, &setup);
            let sees = extra
                .iter()
                .find(|(k, _)| k == "DOCNODES")
                .map_or(docnodes, |(_, v)| v.split(',').count());
            env.extend(extra);
            let mut gw = Process::new(
                &format!("gateway gw{i}"),
                env!("CARGO_BIN_EXE_gateway"),
                env,
                dir.path(),
                port,
            );
            gw.admin_port = admin_port_of(&gw.env);
            gw.ready_body = Some(format!("ready: {sees} docnodes"));
            gws.push(gw);
        }
        let mut cluster = Self {
            docnodes: nodes,
            gateways: gws,
            docnode_urls: urls,
            prefix,
            database,
            _dir: dir,
        };
        for node in &mut cluster.docnodes {
            node.start().await;
        }
        for gateway in &mut cluster.gateways {
            gateway.start().await;
        }
        cluster
    }

    /// `ws://` base URL of gateway `i`.
    pub fn ws(&self, i: usize) -> String {
        format!("ws://127.0.0.1:{}", self.gateways[i].ready_port)
    }

    /// The committed text of a document, through gateway `i`.
    pub async fn text(&self, i: usize, document: &str) -> String {
        text(self.gateways[i].ready_port, document).await
    }

    /// The database URL.
    pub fn database_url(&self) -> String {
        self.database.url()
    }

    /// Waits until gateway `i` sees `count` docnodes (membership has caught up).
    pub async fn wait_gateway_sees(&self, i: usize, count: usize) {
        let want = format!("ready: {count} docnodes");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, body)) = try_http_get(self.gateways[i].health_port(), "/readyz").await {
                if body.contains(&want) {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway {i} never saw {count} docnodes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails the test if any process log shows a panic.
    pub fn assert_no_panic(&self) {
        for p in self.docnodes.iter().chain(&self.gateways) {
            p.assert_no_panic();
        }
    }
}

/// The port of ADMIN_ADDR in a process's environment, if it sets one.
fn admin_port_of(env: &[(String, String)]) -> Option<u16> {
    let (_, addr) = env.iter().rev().find(|(k, _)| k == "ADMIN_ADDR")?;
    addr.rsplit_once(':')?.1.parse().ok()
}

/// The committed text of a document through the HTTP port `port`.
pub async fn text(port: u16, document: &str) -> String {
    let (status, body) = http_get(port, &format!("/api/text/{document}")).await;
    assert_eq!(status, 200, "GET /api/text/{document}: {body}");
    body
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

/// The value of one series in a Prometheus text exposition (0 if absent).
pub fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
