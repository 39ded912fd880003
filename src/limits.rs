//! Process limits the servers raise for themselves at start.

/// Raises the soft limit of open files to the hard one: every client connection is an open
/// file, and the soft limit is often 1,024 where the hard one is far above (systemd units,
/// many container runtimes), which would cap a gateway at about a thousand clients. Says in
/// the log what is in force.
pub fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open files limit"),
    }
}
