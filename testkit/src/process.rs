//! One server process under test: how to start it (program, environment, the port whose
//! `/readyz` says it is ready), the running child, and its log. Tests kill it with SIGKILL
//! (nothing gets to clean up), stop it with SIGTERM (an orderly drain) or restart it with the
//! same settings; the last lines of its log are printed when the test fails, and it is killed
//! when its handle drops, so no test leaves a server behind.
//!
//! Also where the server binaries are: they belong to the root package, so a test of another
//! crate cannot have Cargo build them for it (see [`Binary::path`]).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use crate::http::HttpTarget;

/// How long a process may take to become ready before a test gives up on it.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// The log filter of a test's processes unless its environment sets RUST_LOG.
const DEFAULT_LOG: &str = "info,codraft_docnode=debug,codraft_gateway=debug";

/// How many log lines a failing test prints per process.
const LOG_TAIL: usize = 80;

/// Why a process could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be run (missing binary, no log file).
    #[error("cannot start {name} ({}): {source}", program.display())]
    Start {
        /// The process's name.
        name: String,
        /// The executable.
        program: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The process did not become ready in time.
    #[error("{name} not ready in {} s; log:\n{log}", within.as_secs())]
    NotReady {
        /// The process's name.
        name: String,
        /// How long it was given.
        within: Duration,
        /// Its log so far.
        log: String,
    },
    /// The process exited before it was ready.
    #[error("{name} exited ({status}) before it was ready; log:\n{log}")]
    Exited {
        /// The process's name.
        name: String,
        /// How it exited.
        status: ExitStatus,
        /// Its log.
        log: String,
    },
    /// Waiting for the process to exit failed.
    #[error("cannot wait for {name} to exit: {source}")]
    Wait {
        /// The process's name.
        name: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// A server binary of the root package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `codraft`: gateway and docnode in one process.
    Standalone,
    /// `docnode`.
    Docnode,
    /// `gateway`.
    Gateway,
}

impl Binary {
    /// The executable's file name.
    fn file_name(self) -> &'static str {
        match self {
            Binary::Standalone => "codraft",
            Binary::Docnode => "docnode",
            Binary::Gateway => "gateway",
        }
    }

    /// The environment variable that names the binary explicitly.
    fn override_variable(self) -> &'static str {
        match self {
            Binary::Standalone => "CODRAFT_BIN",
            Binary::Docnode => "CODRAFT_DOCNODE_BIN",
            Binary::Gateway => "CODRAFT_GATEWAY_BIN",
        }
    }

    /// Where the binary is: the file its override variable names; else the one beside the
    /// running test, in its own profile (Cargo builds the root package's binaries there for
    /// the root package's tests, so a debug test never runs a stale release binary); else the
    /// workspace's target directory, release first (the test script builds it), then debug.
    /// Fails the test, saying how to build it, when there is none.
    pub fn path(self) -> PathBuf {
        if let Some(path) = std::env::var_os(self.override_variable()) {
            return PathBuf::from(path);
        }
        let name = self.file_name();
        let beside_test = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join(name)));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let candidates: Vec<PathBuf> = beside_test
            .into_iter()
            .chain([
                target.join("release").join(name),
                target.join("debug").join(name),
            ])
            .collect();
        candidates
            .iter()
            .find(|path| path.is_file())
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no {name} binary at any of {candidates:?}: run `cargo build --release \
                     --workspace` (or `cargo build`) first, or set {}",
                    self.override_variable()
                )
            })
    }
}

/// The port of ADMIN_ADDR in a process's environment, if it sets one.
fn admin_port_of(env: &[(String, String)]) -> Option<u16> {
    let (_, addr) = env.iter().rev().find(|(k, _)| k == "ADMIN_ADDR")?;
    addr.rsplit_once(':')?.1.parse().ok()
}

/// One server process: how to start it, and the running child.
pub struct Process {
    /// A name for logs ("docnode dn0", "gateway gw1").
    pub name: String,
    /// The executable.
    program: PathBuf,
    /// Environment variables on top of the test's own.
    env: Vec<(String, String)>,
    /// The file its stderr goes to (appended across restarts).
    log: PathBuf,
    /// The port whose `/readyz` says the process is ready (a gateway's or standalone
    /// server's public port, unless it has an admin port).
    pub ready_port: u16,
    /// The admin port (ADMIN_ADDR) of a process given one: `/readyz` and `/metrics` are
    /// there, and a gateway's public port (`ready_port`) serves only the editor and API.
    pub admin_port: Option<u16>,
    /// What `/readyz` must contain (e.g. a gateway seeing all docnodes).
    ready_body: Option<String>,
    /// The running child, if started and not stopped since.
    child: Option<Child>,
}

impl Process {
    /// A process not yet started: `program` with `env`, logging to `<log_dir>/<name>.log`,
    /// ready when `/readyz` on `ready_port` answers 200.
    pub fn new(
        name: &str,
        program: impl Into<PathBuf>,
        env: Vec<(String, String)>,
        log_dir: &Path,
        ready_port: u16,
    ) -> Self {
        let admin_port = admin_port_of(&env);
        Self {
            name: name.to_owned(),
            program: program.into(),
            env,
            log: log_dir.join(format!("{}.log", name.replace(' ', "-"))),
            ready_port,
            admin_port,
            ready_body: None,
            child: None,
        }
    }

    /// The port serving `/readyz` and `/metrics`.
    pub fn health_port(&self) -> u16 {
        self.admin_port.unwrap_or(self.ready_port)
    }

    /// Counts the process ready only once its `/readyz` body also contains `body`.
    pub fn ready_when(mut self, body: impl Into<String>) -> Self {
        self.ready_body = Some(body.into());
        self
    }

    /// Starts the process without waiting for it.
    pub fn spawn(&mut self) -> Result<(), ProcessError> {
        let start_error = |source| ProcessError::Start {
            name: self.name.clone(),
            program: self.program.clone(),
            source,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(start_error)?;
        let mut command = Command::new(&self.program);
        command
            .env("RUST_LOG", DEFAULT_LOG)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(command.spawn().map_err(start_error)?);
        Ok(())
    }

    /// Waits (polling `/readyz`) until the process is ready, at most `within`. Fails at once
    /// if the process has exited: whatever answers on its port then is not this process (a
    /// server that could not bind its port exits, and another may hold that port).
    pub async fn wait_ready(&mut self, within: Duration) -> Result<(), ProcessError> {
        let http = HttpTarget::loopback(self.health_port());
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(ProcessError::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log(),
                });
            }
            if let Ok((200, body)) = http.get("/readyz").await {
                let body = String::from_utf8_lossy(&body);
                if self
                    .ready_body
                    .as_deref()
                    .is_none_or(|want| body.contains(want))
                {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProcessError::NotReady {
                    name: self.name.clone(),
                    within,
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the process and waits until it is ready; fails the test (with the log) if it
    /// does not start or is not ready within [`READY_WITHIN`].
    pub async fn start(&mut self) {
        let started = match self.spawn() {
            Ok(()) => self.wait_ready(READY_WITHIN).await,
            Err(error) => Err(error),
        };
        if let Err(error) = started {
            panic!("{error}");
        }
    }

    /// How the child exited, if it was started and has exited since.
    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The running child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

    /// Sends SIGTERM and waits for the process to exit; its exit status, or `None` if it was
    /// not running.
    pub async fn stop(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let wait_error = |source| ProcessError::Wait {
            name: self.name.clone(),
            source,
        };
        let waited = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(|e| wait_error(std::io::Error::other(e)))?;
        waited.map(Some).map_err(wait_error)
    }

    /// Sends SIGTERM and waits for an orderly exit; fails the test on a non-zero status.
    pub async fn terminate(&mut self) {
        match self.stop().await {
            Ok(Some(status)) => assert!(
                status.success(),
                "{} exited with {status} after SIGTERM",
                self.name
            ),
            Ok(None) => {}
            Err(error) => panic!("{error}"),
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
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
            eprintln!(
                "---- {} log (last {LOG_TAIL} lines) ----\n{tail}",
                self.name
            );
        }
        self.kill();
    }
}
