//! The local Redis the cluster tests share, and the key prefix that keeps each cluster's
//! membership and presence keys apart from every other test's.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

/// The local Redis the tests use.
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// Its address, for a [`crate::proxy::Proxy`] in front of it.
pub const REDIS_ADDR: &str = "127.0.0.1:6379";

/// A `REDIS_PREFIX` no other cluster uses.
pub fn unique_prefix() -> String {
    crate::unique_name("codraft_it")
}

/// Fails the test unless Redis answers PING (process tests cannot skip half-way, so a missing
/// Redis is always a failure, under CI or not).
pub fn require_redis() {
    let answer = ping();
    assert!(
        answer.as_deref().is_ok_and(|a| a.starts_with("+PONG")),
        "Redis at {REDIS_ADDR} is required for this test: {answer:?}"
    );
}

/// Sends one inline PING and returns what came back.
fn ping() -> std::io::Result<String> {
    let address = REDIS_ADDR
        .parse()
        .map_err(|_| std::io::Error::other("bad Redis address"))?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"PING\r\n")?;
    let mut answer = [0u8; 64];
    let read = stream.read(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer[..read]).into_owned())
}
