//! A tiny HTTP/1.0 GET over plain TCP, enough for what tests and the load generator read
//! from a server: `/readyz`, `GET /api/text/{id}`, `/metrics` pages, so none of them needs an
//! HTTP client library.
//!
//! The load generator derives the HTTP address from the WebSocket URL it is pointed at
//! (`ws://host:port/prefix` becomes `http://host:port/prefix`); tests name a loopback port.
//! TLS (`wss://`) is out of scope: both talk to servers on this machine.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most a response may carry: a document is at most a few MiB of text.
const MAX_RESPONSE: u64 = 64 << 20;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Why an HTTP request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The WebSocket URL cannot be turned into an HTTP address.
    #[error("cannot use URL {url:?}: {why}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Connecting, writing or reading failed.
    #[error("HTTP request failed: {0}")]
    Io(#[from] std::io::Error),
    /// The server's answer is not an HTTP response this client understands.
    #[error("unreadable HTTP response: {0}")]
    Response(String),
    /// The server answered with a status other than 200.
    #[error("HTTP status {status} for {path}")]
    Status {
        /// The status code.
        status: u16,
        /// The requested path.
        path: String,
    },
    /// No complete answer within the time limit.
    #[error("HTTP request timed out after {0:?}")]
    Timeout(Duration),
}

/// Where the server's HTTP API is, derived from its WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// Host name or address (IPv6 without brackets).
    host: String,
    /// TCP port.
    port: u16,
    /// Path prefix in front of `/api/...` (empty when the server is at the root).
    prefix: String,
}

impl HttpTarget {
    /// The server on loopback port `port`, at the root.
    pub fn loopback(port: u16) -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port,
            prefix: String::new(),
        }
    }

    /// The HTTP side of a `ws://host[:port][/prefix]` URL.
    pub fn from_ws_url(url: &str) -> Result<Self, HttpError> {
        let bad = |why| HttpError::Url {
            url: url.to_owned(),
            why,
        };
        if url.starts_with("wss://") {
            return Err(bad(
                "wss:// is not supported; point the load generator at ws://",
            ));
        }
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| bad("expected a ws:// URL such as ws://127.0.0.1:3030"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in IPv6 host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| bad("the port is not a number"))?,
            None => 80,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// `http://host:port/prefix`, for messages.
    pub fn base(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}{}", self.host, self.port, self.prefix)
        } else {
            format!("http://{}:{}{}", self.host, self.port, self.prefix)
        }
    }

    /// GETs `path` (which starts with `/`); returns the status and the body.
    pub async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), HttpError> {
        tokio::time::timeout(TIMEOUT, self.get_inner(path))
            .await
            .map_err(|_| HttpError::Timeout(TIMEOUT))?
    }

    async fn get_inner(&self, path: &str) -> Result<(u16, Vec<u8>), HttpError> {
        let mut stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        let request = format!(
            "GET {}{path} HTTP/1.0\r\nHost: {}:{}\r\nConnection: close\r\n\r\n",
            self.prefix, self.host, self.port
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        let read = (&mut stream)
            .take(MAX_RESPONSE + 1)
            .read_to_end(&mut response)
            .await?;
        if read as u64 > MAX_RESPONSE {
            return Err(HttpError::Response(format!(
                "response larger than {MAX_RESPONSE} bytes"
            )));
        }
        parse_response(&response)
    }

    /// The committed text of `document` (`GET /api/text/{document}`).
    pub async fn document_text(&self, document: &str) -> Result<String, HttpError> {
        let path = format!("/api/text/{document}");
        let (status, body) = self.get(&path).await?;
        if status != 200 {
            return Err(HttpError::Status { status, path });
        }
        String::from_utf8(body)
            .map_err(|_| HttpError::Response(format!("{path} returned text that is not UTF-8")))
    }
}

/// GETs `path` from the server on loopback port `port`; returns status and body (lossily
/// decoded). Fails the test if there is no answer.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    match HttpTarget::loopback(port).get(path).await {
        Ok((status, body)) => (status, String::from_utf8_lossy(&body).into_owned()),
        Err(error) => panic!("GET {path} on port {port}: {error}"),
    }
}

/// The committed text of a document through the HTTP port `port`; fails the test unless the
/// server answers 200.
pub async fn text(port: u16, document: &str) -> String {
    let (status, body) = http_get(port, &format!("/api/text/{document}")).await;
    assert_eq!(status, 200, "GET /api/text/{document}: {body}");
    body
}

/// The value of one series in a Prometheus text exposition (0 if absent).
pub fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Splits a whole HTTP/1.x response into status and body (decoding chunked bodies).
fn parse_response(response: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| HttpError::Response("no end of headers".into()))?;
    let head = std::str::from_utf8(&response[..end])
        .map_err(|_| HttpError::Response("headers are not UTF-8".into()))?;
    let body = &response[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| HttpError::Response("no status code".into()))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        decode_chunked(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn decode_chunked(mut body: &[u8]) -> Result<Vec<u8>, HttpError> {
    let bad = || HttpError::Response("malformed chunked body".into());
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| bad())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad())?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err(bad());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_http_address_from_the_websocket_url() {
        let t = HttpTarget::from_ws_url("ws://127.0.0.1:3030").expect("valid");
        assert_eq!(t.base(), "http://127.0.0.1:3030");
        let t = HttpTarget::from_ws_url("ws://localhost/pad/").expect("valid");
        assert_eq!((t.port, t.prefix.as_str()), (80, "/pad"));
        let t = HttpTarget::from_ws_url("ws://[::1]:4000").expect("valid");
        assert_eq!(t.base(), "http://[::1]:4000");
        assert!(HttpTarget::from_ws_url("wss://example").is_err());
        assert!(HttpTarget::from_ws_url("http://127.0.0.1:3030").is_err());
        assert!(HttpTarget::from_ws_url("ws://127.0.0.1:port").is_err());
    }

    #[test]
    fn reads_plain_and_chunked_responses() {
        let plain = b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nh\xc3\xa9lo";
        assert_eq!(
            parse_response(plain).expect("parses"),
            (200, "hélo".as_bytes().to_vec())
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).expect("parses"),
            (200, b"abcde".to_vec())
        );
        assert!(parse_response(b"garbage").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }
}
