//! Whose address a request is: the TCP peer's, or, when the peer is a trusted proxy (the
//! gateway), the client address that proxy forwarded.
//!
//! The forwarded address is read only from `guard.client_ip_header` (e.g. `X-Real-IP`, or
//! `X-Forwarded-For`) and only when the TCP peer is one of `guard.trusted_proxies` (loopback
//! by default, where a gateway on the same host connects from): anyone else could write any
//! address there. In a list (`X-Forwarded-For: client, proxy1, proxy2`) each proxy appends
//! the address it received from, so the entries a client can forge are on the left: the
//! client is the rightmost entry that is not itself a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};

/// Addresses, or networks in CIDR form, trusted to forward the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// No proxy is trusted.
    pub fn none() -> Self {
        TrustedProxies(Vec::new())
    }

    /// Parses `10.0.0.0/8`, `192.0.2.1`, `::1`, `fd00::/8`.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                let (addr, bits) = match e.split_once('/') {
                    Some((a, b)) => (a, Some(b)),
                    None => (e.as_str(), None),
                };
                let ip: IpAddr = addr
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{e}` is not an address or a CIDR network"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits = match bits {
                    Some(b) => b
                        .trim()
                        .parse::<u8>()
                        .ok()
                        .filter(|b| *b <= max)
                        .ok_or_else(|| format!("`{e}` has no valid prefix length"))?,
                    None => max,
                };
                Ok((canonical(ip), bits))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|(net, bits)| in_network(ip, *net, *bits))
    }
}

/// An IPv4-mapped IPv6 address as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The client's address: the forwarded one when the peer is trusted and forwarded one, else
/// the peer's.
pub fn client_address(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    header: Option<&HeaderName>,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let peer = peer.map(|p| canonical(p.ip()));
    let (Some(name), Some(from)) = (header, peer) else {
        return peer;
    };
    if !trusted.contains(from) {
        return Some(from);
    }
    // Every entry of every line, left to right, as the proxies appended them.
    let entries: Vec<IpAddr> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|e| e.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect();
    entries
        .iter()
        .rev()
        .find(|ip| !trusted.contains(**ip))
        .or(entries.first())
        .copied()
        .or(Some(from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn networks_match_by_prefix() {
        let p = proxies(&["10.0.0.0/8", "192.0.2.1", "::1", "fd00::/8"]);
        assert!(p.contains("10.200.3.4".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        assert!(p.contains("192.0.2.1".parse().unwrap()));
        assert!(!p.contains("192.0.2.2".parse().unwrap()));
        assert!(p.contains("::1".parse().unwrap()));
        assert!(p.contains("fd12::1".parse().unwrap()));
        assert!(
            p.contains("::ffff:10.1.1.1".parse().unwrap()),
            "v4-mapped is v4"
        );
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x"] {
            assert!(TrustedProxies::parse(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_entry_and_only_behind_a_trusted_peer() {
        let name = HeaderName::from_static("x-forwarded-for");
        let trusted = proxies(&["127.0.0.0/8", "10.0.0.0/8"]);
        let gateway: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.9:5000".parse().unwrap();
        let addr = |h: &HeaderMap, peer| client_address(h, Some(peer), Some(&name), &trusted);
        // The client wrote the leftmost entry; the rightmost untrusted one is the real one.
        assert_eq!(
            addr(&xff("1.1.1.1, 203.0.113.5, 10.0.0.7"), gateway),
            "203.0.113.5".parse().ok()
        );
        assert_eq!(
            addr(&xff("203.0.113.5"), gateway),
            "203.0.113.5".parse().ok()
        );
        // Only proxies in the list: the leftmost (the first hop's client).
        assert_eq!(
            addr(&xff("10.0.0.8, 10.0.0.7"), gateway),
            "10.0.0.8".parse().ok()
        );
        // From an untrusted peer the header means nothing.
        assert_eq!(addr(&xff("203.0.113.5"), stranger), Some(stranger.ip()));
        // No header, or garbage: the peer.
        assert_eq!(addr(&HeaderMap::new(), gateway), Some(gateway.ip()));
        assert_eq!(addr(&xff("not an address"), gateway), Some(gateway.ip()));
        // No header configured: the peer, whatever was sent.
        assert_eq!(
            client_address(&xff("203.0.113.5"), Some(gateway), None, &trusted),
            Some(gateway.ip())
        );
    }
}
