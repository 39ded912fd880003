//! A temporary directory removed when its handle drops: a server's data directory, a
//! cluster's process logs. Named after its owner so a leftover one (after kill -9 of the test
//! itself) says where it came from.

use std::path::{Path, PathBuf};

/// A directory under the system temp dir, removed on drop — unless the test is failing: then
/// it stays (the whole of every process log, a server's data) and the test's output says
/// where.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory named `prefix_<pid>_<random>`, or why it could not be made.
    pub fn try_new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(crate::unique_name(prefix));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    /// A fresh directory; fails the test if it cannot be made.
    pub fn new(prefix: &str) -> Self {
        Self::try_new(prefix).unwrap_or_else(|e| panic!("cannot create temp dir: {e}"))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for a look at the failure: {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
