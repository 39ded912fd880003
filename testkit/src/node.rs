//! Node.js scripts as test clients: a scenario written against real npm packages (the Yjs
//! tests drive y-websocket's own provider this way) runs as a `node` child process with the
//! test's environment. Its standard output and error are kept, so a failing test prints what
//! the script said; the test can wait for a line the script prints and answer on its standard
//! input, to do something (kill a docnode) at the right moment of the scenario; every wait is
//! bounded, and the script is killed if its handle drops.
//!
//! A missing `node` or missing `node_modules` fails the test with how to install them, under
//! CI or not: such a test must never pass by running nothing.

use std::{
    path::Path,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::mpsc,
    task::JoinHandle,
};

/// Fails the test unless `node` runs and `dir` has its `node_modules`; `install` says how to
/// install them (e.g. the script that does).
pub fn require(dir: &Path, install: &str) {
    let version = std::process::Command::new("node").arg("--version").output();
    match version {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "`node --version` failed ({}): install Node.js (scripts/test.sh does: apt-get \
             install nodejs npm)",
            output.status
        ),
        Err(error) => panic!(
            "cannot run `node` ({error}): install Node.js (scripts/test.sh does: apt-get install \
             nodejs npm)"
        ),
    }
    assert!(
        dir.join("node_modules").is_dir(),
        "{} has no node_modules: run `{install}` (scripts/test.sh does) before the tests",
        dir.display()
    );
}

/// A running Node script.
pub struct NodeScript {
    /// The script's file name, for messages.
    name: String,
    /// The `node` process.
    child: Child,
    /// Its standard input, for answers to what it prints.
    stdin: Option<ChildStdin>,
    /// Lines of its standard output, in order, as they come.
    lines: mpsc::UnboundedReceiver<String>,
    /// Everything it printed so far, standard output and error interleaved by line.
    output: Arc<Mutex<String>>,
    /// The tasks copying its output; done once it closed both.
    readers: Vec<JoinHandle<()>>,
}

/// Copies `from`'s lines into `output` (prefixed with `prefix`) and, if given, to `lines`.
fn copy_lines(
    from: impl AsyncRead + Unpin + Send + 'static,
    prefix: &'static str,
    output: Arc<Mutex<String>>,
    lines: Option<mpsc::UnboundedSender<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(from).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let Ok(mut all) = output.lock() {
                all.push_str(prefix);
                all.push_str(&line);
                all.push('\n');
            }
            if let Some(lines) = &lines {
                let _ = lines.send(line);
            }
        }
    })
}

impl NodeScript {
    /// Starts `node <script>` in `dir` with `env` on top of the test's environment.
    pub fn start(dir: &Path, script: &str, env: &[(&str, String)]) -> Self {
        let mut child = Command::new("node")
            .arg(script)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node {script} in {}: {e}", dir.display()));
        let output = Arc::new(Mutex::new(String::new()));
        let (sender, lines) = mpsc::unbounded_channel();
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(copy_lines(stdout, "", output.clone(), Some(sender)));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(copy_lines(stderr, "[stderr] ", output.clone(), None));
        }
        Self {
            name: script.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            output,
            readers,
        }
    }

    /// Everything the script printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .map(|all| all.clone())
            .unwrap_or_default()
    }

    /// Waits until the script prints `line` (a whole line), at most `within`; fails the test,
    /// with the script's output, if it does not or ends first.
    pub async fn wait_for_line(&mut self, line: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(got)) if got.trim() == line => return,
                Ok(Some(_)) => {}
                Ok(None) => {
                    let status = self.exit_status(Duration::from_secs(10)).await;
                    panic!(
                        "{} ended ({status}) before printing {line:?}:\n{}",
                        self.name,
                        self.output()
                    );
                }
                Err(_) => panic!(
                    "{} did not print {line:?} within {} s:\n{}",
                    self.name,
                    within.as_secs(),
                    self.output()
                ),
            }
        }
    }

    /// Writes `line` to the script's standard input.
    pub async fn send_line(&mut self, line: &str) {
        let Some(stdin) = self.stdin.as_mut() else {
            panic!("{}: standard input already closed", self.name);
        };
        let written = async {
            stdin.write_all(format!("{line}\n").as_bytes()).await?;
            stdin.flush().await
        };
        if let Err(error) = written.await {
            panic!(
                "cannot write {line:?} to {}: {error}\n{}",
                self.name,
                self.output()
            );
        }
    }

    /// The exit status, waiting at most `within` (then the script is killed).
    async fn exit_status(&mut self, within: Duration) -> String {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(error)) => format!("unknown status: {error}"),
            Err(_) => {
                let _ = self.child.kill().await;
                format!("still running after {} s, killed", within.as_secs())
            }
        }
    }

    /// Waits for the script to exit, at most `within`, and returns its output; fails the test,
    /// printing the output, if it exits with a failure or runs too long (then it is killed).
    pub async fn finish(mut self, within: Duration) -> String {
        drop(self.stdin.take());
        let status: Result<ExitStatus, String> =
            match tokio::time::timeout(within, self.child.wait()).await {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(error)) => Err(format!("cannot wait for it: {error}")),
                Err(_) => {
                    let _ = self.child.kill().await;
                    Err(format!(
                        "still running after {} s, killed",
                        within.as_secs()
                    ))
                }
            };
        for reader in std::mem::take(&mut self.readers) {
            let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
        }
        let output = self.output();
        match status {
            Ok(status) if status.success() => {
                println!("---- {} ----\n{output}", self.name);
                output
            }
            Ok(status) => panic!("{} failed ({status}):\n{output}", self.name),
            Err(why) => panic!("{}: {why}:\n{output}", self.name),
        }
    }
}

/// Runs `node <script>` in `dir` to the end, at most `within`; its output, or a failed test
/// that prints it.
pub async fn run(dir: &Path, script: &str, env: &[(&str, String)], within: Duration) -> String {
    NodeScript::start(dir, script, env).finish(within).await
}
