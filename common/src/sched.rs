//! How codraft's threads ask Linux's scheduler for the CPU: in short turns, and, for
//! background work, at a lower priority ([`lower_priority`]).
//!
//! Since Linux 6.6 the fair scheduler (EEVDF) lets a running thread keep the CPU for the
//! rest of its time slice when another thread wakes (1.4 ms by default on a 2-core machine,
//! more on larger ones). On a server with fewer cores than busy threads, the thread that
//! commits a batch of edits, woken by a busy runtime thread, then waited for the core before
//! it could even ask the disk for anything, and the runtime waited behind a fold the same
//! way: both were the tail of the open-loop edit round trip (BENCHMARKS.md, "Short time
//! slices for the threads an edit waits on"). Since Linux 6.12 a thread can ask for a shorter
//! slice (`sched_setattr` with `sched_runtime`; no privilege needed): a woken thread with a
//! short slice gets the core at once, and a running one gives it up sooner. How much of the
//! CPU each thread gets is unchanged (that is its nice value). A thread started by one that
//! asked has the short slice too. Older kernels ignore the request; elsewhere than Linux
//! this does nothing.

/// The time slice asked for by the threads an edit waits on: Linux's shortest (0.1 ms).
pub const SHORT_SLICE_NANOS: u64 = 100_000;

/// Asks for short time slices for the calling thread (see the module's text). Every thread
/// of the runtime does as it starts ([`runtime`]), and so do the embedded store's threads.
pub fn short_slices() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: an all-zero `sched_attr` is valid (SCHED_OTHER, nice 0, no flags).
        let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
        attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
        attr.sched_policy = libc::SCHED_OTHER as u32;
        attr.sched_runtime = SHORT_SLICE_NANOS;
        // Keeps the thread's nice value: SCHED_FLAG_KEEP_PARAMS is not wanted (it would keep
        // the old slice too), so the current one is read first.
        // SAFETY: getpriority takes no pointer; `who` 0 is the calling thread.
        attr.sched_nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        // SAFETY: `attr` is a valid `sched_attr` of the size given in it, alive for the call;
        // pid 0 is the calling thread.
        let failed = unsafe {
            libc::syscall(
                libc::SYS_sched_setattr,
                0,
                &attr as *const libc::sched_attr,
                0,
            )
        } != 0;
        if failed {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "the scheduler refused a short time slice; this thread keeps the default"
            );
        }
    }
}

/// Lowers the calling thread's CPU priority to `nice` (raising a nice value needs no
/// privilege; Linux keeps one per thread). Elsewhere than Linux, where nice values are per
/// process, it does nothing.
pub fn lower_priority(nice: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority takes no pointer; `who` 0 is the calling thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
    Ok(())
}

/// The multi-threaded Tokio runtime every codraft binary runs on (what `#[tokio::main]`
/// builds), its threads asking for short time slices as they start ([`short_slices`]).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(short_slices)
        .build()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's (slice in ns, nice) as the kernel reports them.
    fn reported() -> (u64, i32) {
        // SAFETY: an all-zero `sched_attr` is valid; `sched_getattr` fills at most `size`
        // bytes of it, for the calling thread (pid 0).
        let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::sched_attr>() as u32;
        let r = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut libc::sched_attr,
                size,
                0,
            )
        };
        assert_eq!(r, 0, "sched_getattr: {}", std::io::Error::last_os_error());
        (attr.sched_runtime, attr.sched_nice)
    }

    /// A thread that asks gets the short slice and keeps its nice value. Kernels before 6.12
    /// report no slice (0) for a fair thread, and there only the nice value is checked.
    #[test]
    fn a_thread_that_asks_has_the_short_slice_and_keeps_its_nice_value() {
        let (before, after) = std::thread::spawn(|| {
            lower_priority(5).expect("nice 5");
            let before = reported();
            short_slices();
            (before, reported())
        })
        .join()
        .expect("the thread ran");
        assert_eq!(after.1, 5, "nice value");
        if before.0 != 0 {
            assert_ne!(before.0, SHORT_SLICE_NANOS, "the default slice");
            assert_eq!(after.0, SHORT_SLICE_NANOS, "slice");
        }
    }
}
