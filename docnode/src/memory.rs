//! Gives the memory of unloaded documents back to the operating system.
//!
//! glibc's allocator keeps what a program frees in its arenas for reuse, so a docnode that
//! once held thousands of documents would keep their memory as resident set long after they
//! unloaded (the soak in BENCHMARKS.md: 12 MiB before, 46 MiB at 2,000 loaded documents, and
//! still 46 MiB with none loaded). The registry counts unloads; this task, when some
//! happened, asks the allocator to return its free pages (`malloc_trim`), at most once per
//! [`TRIM_EVERY`], so the cost (a walk of the free lists) never tracks the edit rate. On
//! other C libraries it does nothing.

use std::{sync::Arc, time::Duration};

use crate::registry::Registry;

/// Least time between two trims.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Starts the task; it ends when the registry is dropped.
pub fn start(registry: &Arc<Registry>) -> tokio::task::JoinHandle<()> {
    let registry = Arc::downgrade(registry);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            if registry.take_unloads() > 0 {
                trim();
            }
        }
    })
}

/// Returns free memory to the operating system, where the allocator can.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointer
    // and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
