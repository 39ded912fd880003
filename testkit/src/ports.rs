//! Loopback ports for servers under test.
//!
//! A port is probed by binding it and closing the listener again, so the server under test can
//! bind it. Two things could take it in between, and both happened in CI before this module
//! chose ports itself:
//!
//! - another test of the same binary, whose own probe the OS answered with the same port
//!   (`bind(0)` hands out ports at random, and a closed probe frees its port at once), or
//!   which had the port free for a moment while one of its processes was killed and restarted;
//! - an outgoing connection, whose source port the OS picks from the same ephemeral range.
//!
//! So ports come from a counter below the ephemeral range (`ip_local_port_range`), where no
//! outgoing connection lands, and the counter never hands out a port twice in one process.
//! The counter starts at an offset taken from the process id, so test binaries run side by
//! side (two checkouts) usually pick different ports; a port another process holds fails the
//! probe and is skipped.

use std::net::TcpListener;
use std::sync::Mutex;

/// How many ports below the ephemeral range are used.
const SPAN: u16 = 12_000;

/// The lowest port ever handed out (below it are the well-known and registered services a
/// machine is likely to run).
const LOWEST: u16 = 10_000;

/// The next port to probe, once started.
static NEXT: Mutex<Option<u16>> = Mutex::new(None);

/// The lowest port of the ephemeral range, from `/proc` (Linux's default when unreadable).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The ports handed out: `[low, high)`, below the ephemeral range.
fn window() -> (u16, u16) {
    let high = ephemeral_start().max(LOWEST + 1_000);
    (high.saturating_sub(SPAN).max(LOWEST), high)
}

/// A free loopback port never handed out before by this process, or why none could be had.
pub fn try_free_port() -> std::io::Result<u16> {
    let (low, high) = window();
    let mut next = NEXT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // The offset is below the window's span, so the sum fits.
    let start = next.unwrap_or_else(|| low + (std::process::id() % u32::from(high - low)) as u16);
    let (port, after) = probe(start, low, high, |port| {
        TcpListener::bind(("127.0.0.1", port)).is_ok()
    })?;
    *next = Some(after);
    Ok(port)
}

/// The first port from `start` on (wrapping within `[low, high)`) that is free, and the port
/// to start from next time.
fn probe(
    start: u16,
    low: u16,
    high: u16,
    is_free: impl Fn(u16) -> bool,
) -> std::io::Result<(u16, u16)> {
    let mut port = start;
    for _ in low..high {
        let candidate = port;
        port = if port + 1 >= high { low } else { port + 1 };
        if is_free(candidate) {
            return Ok((candidate, port));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("every loopback port in {low}..{high} is taken"),
    ))
}

/// A free loopback port never handed out before by this process; fails the test if there is
/// none.
pub fn free_port() -> u16 {
    try_free_port().unwrap_or_else(|e| panic!("no free port on loopback: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn hands_out_distinct_ports_below_the_ephemeral_range() {
        let ephemeral = ephemeral_start();
        let mut seen = HashSet::new();
        for _ in 0..500 {
            let port = free_port();
            assert!(port < ephemeral, "{port} is in the ephemeral range");
            assert!(seen.insert(port), "{port} handed out twice");
        }
    }

    // Which ports are free is decided here, not by the machine: with real listeners another
    // test's outgoing connection could take the neighbouring port (it did, in CI).
    #[test]
    fn skips_a_taken_port_and_wraps_within_the_window() {
        let taken = [20_001, 20_002];
        let free = |port| !taken.contains(&port);
        assert_eq!(
            probe(20_001, 20_000, 20_003, free).ok(),
            Some((20_000, 20_001))
        );
        assert_eq!(
            probe(20_000, 20_000, 20_003, free).ok(),
            Some((20_000, 20_001))
        );
        let none = probe(20_001, 20_001, 20_003, free);
        assert!(none.is_err(), "every port taken, yet {none:?}");
    }
}
