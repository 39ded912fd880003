//! Free loopback ports: the OS picks one by binding port 0, and the listener is closed again
//! so the server under test can bind it. Another process could take the port in between; on a
//! loopback-only test machine that race is rare enough to accept.

use std::net::TcpListener;

/// A free loopback port, or why none could be had.
pub fn try_free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// A free loopback port; fails the test if there is none.
pub fn free_port() -> u16 {
    try_free_port().unwrap_or_else(|e| panic!("no free port on loopback: {e}"))
}
