//! The client's address as the gateway should count it: the TCP peer, unless the peer is a
//! trusted proxy (TRUSTED_PROXIES), in which case `Forwarded` or `X-Forwarded-For` is read
//! from the right, skipping every trusted hop, and the first untrusted address is the
//! client.
//!
//! Behind a load balancer every request comes from the balancer's few addresses; counting
//! those would put every user in one bucket, so one attacker locks everyone out. Trusting
//! the headers from anyone would let each request claim a fresh address. Walking from the
//! right is what keeps a client from choosing its address: proxies append, so everything left
//! of the last untrusted hop could have been written by the client itself.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use axum::http::HeaderMap;

/// An address block such as `10.0.0.0/8`, `fd00::/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network's address (host bits zeroed).
    network: IpAddr,
    /// Leading bits that must match.
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Self {
            network: mask(addr, prefix),
            prefix,
        })
    }
}

/// `addr` with all but its first `prefix` bits zeroed.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            // A shift by the whole width (prefix 0) keeps nothing.
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & kept))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = bits & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(kept))
        }
    }
}

impl Cidr {
    /// Whether `addr` lies in this block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.prefix) == self.network
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`, so a dual-stack listener's peers match IPv4 blocks.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Trusts the given blocks (none: the headers are never read).
    pub fn new(blocks: Vec<Cidr>) -> Self {
        Self(blocks)
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(addr))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        // `Forwarded` is the standard; when a proxy sends it, it is the chain to read.
        let chain = forwarded_chain(headers).unwrap_or_else(|| x_forwarded_for_chain(headers));
        let mut client = peer;
        for hop in chain.iter().rev() {
            match hop {
                // A hop a proxy could not name (`unknown`, an obfuscated id): nothing left of
                // it can be trusted, so the last trusted hop stands for the client.
                None => return client,
                Some(addr) => {
                    client = canonical(*addr);
                    if !self.trusts(client) {
                        return client;
                    }
                }
            }
        }
        client
    }
}

/// The `for=` addresses of every `Forwarded` header, in order (`None` for a hop that is not
/// an address), or `None` when there is no such header.
fn forwarded_chain(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut chain = Vec::new();
    let mut seen = false;
    for value in headers.get_all("forwarded") {
        seen = true;
        let Ok(value) = value.to_str() else {
            chain.push(None);
            continue;
        };
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim().eq_ignore_ascii_case("for").then(|| value.trim())
            });
            if let Some(node) = node {
                chain.push(parse_node(node));
            }
        }
    }
    seen.then_some(chain)
}

/// The addresses of every `X-Forwarded-For` header, in order.
fn x_forwarded_for_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(text) => text.split(',').map(|hop| parse_node(hop.trim())).collect(),
            Err(_) => vec![None],
        })
        .collect()
}

/// An address from a forwarding header: `1.2.3.4`, `1.2.3.4:5678`, `"[2001:db8::1]:4711"`,
/// `2001:db8::1`; anything else (`unknown`, `_hidden`) is `None`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(addr) = node.parse() {
        return Some(addr);
    }
    // IPv4 with a port.
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(blocks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(blocks.iter().map(|b| b.parse().expect("CIDR")).collect())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn blocks_parse_and_match() {
        let block: Cidr = "10.1.2.3/8".parse().expect("CIDR");
        assert!(block.contains(ip("10.200.0.1")));
        assert!(!block.contains(ip("11.0.0.1")));
        assert!(block.contains(ip("::ffff:10.0.0.9")));
        let single: Cidr = "192.0.2.1".parse().expect("address");
        assert!(single.contains(ip("192.0.2.1")) && !single.contains(ip("192.0.2.2")));
        let v6: Cidr = "fd00::/8".parse().expect("CIDR");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let everything: Cidr = "0.0.0.0/0".parse().expect("CIDR");
        assert!(everything.contains(ip("203.0.113.9")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("proxy".parse::<Cidr>().is_err());
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            trusted.client(ip("198.51.100.7"), &spoofed),
            ip("198.51.100.7")
        );
        // No TRUSTED_PROXIES: never read.
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &spoofed),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_chain_is_walked_from_the_right_past_trusted_hops() {
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        // The client wrote "6.6.6.6" itself; the edge proxy appended the real address.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.0.0.2")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &chain), ip("203.0.113.5"));
        // Split over several header lines, same answer.
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.5, 10.0.0.2"),
        ]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &split), ip("203.0.113.5"));
        // Every hop trusted: the leftmost is the client.
        let internal = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &internal), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_is_read_with_ports_brackets_and_unknown_hops() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let forwarded = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.3:8080",
        )]);
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &forwarded),
            ip("2001:db8::7")
        );
        // Forwarded wins over X-Forwarded-For when both are present.
        let both = headers(&[
            ("forwarded", "for=198.51.100.1"),
            ("x-forwarded-for", "203.0.113.1"),
        ]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &both), ip("198.51.100.1"));
        // An unknown hop stops the walk at the last trusted address.
        let unknown = headers(&[("forwarded", "for=6.6.6.6, for=unknown, for=10.0.0.4")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &unknown), ip("10.0.0.4"));
    }
}
