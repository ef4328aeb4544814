//! `X-Forwarded-*` (SEC-16): what the upstream learns about the caller's request comes from
//! the host (the BFF), never from the caller.
//!
//! A browser (or anyone who can reach the BFF) can send `X-Forwarded-For: 10.0.0.1`,
//! `X-Real-IP`, `X-Original-URL: /admin` or `X-Rewrite-URL`; an upstream that trusts them for
//! access rules or routing would be fooled. So every such header is dropped from the incoming
//! request, and the BFF sets `X-Forwarded-For` (the connection's peer), `X-Forwarded-Proto` and
//! `X-Forwarded-Host` (the BFF's public URL) itself. Only a peer listed in `trusted_proxies`
//! (the load balancer in front of the BFF) may pass on its own `X-Forwarded-For` chain,
//! `-Proto` and `-Host`, and only well-formed ones.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};

/// Whether `name` (lower case) is an incoming header that claims something about the original
/// request (`X-Forwarded-For`, `X-Real-IP`, `X-Original-URL`, …): never forwarded as the
/// caller sent it.
pub fn is_forwarding_header(name: &str) -> bool {
    matches!(
        name,
        "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-server"
            | "x-real-ip"
            | "x-original-url"
            | "x-original-uri"
            | "x-rewrite-url"
            | "x-client-ip"
            | "true-client-ip"
    )
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a single address.
    ///
    /// ```
    /// use tokenkeeper_proxy::Cidr;
    /// let lb: Cidr = "10.1.0.0/16".parse().unwrap();
    /// assert!(lb.contains("10.1.2.3".parse().unwrap()));
    /// assert!(!lb.contains("10.2.0.1".parse().unwrap()));
    /// assert!("10.1.0.0/33".parse::<Cidr>().is_err());
    /// ```
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
        };
        Ok(Self { network, prefix })
    }
}

/// What the host says upstream about each request: `X-Forwarded-For` (the connection's peer),
/// `X-Forwarded-Proto` and `X-Forwarded-Host` (the host's public URL); a trusted proxy's own
/// well-formed values pass on.
#[derive(Debug, Clone)]
pub struct Forwarding {
    trusted: Vec<Cidr>,
    proto: HeaderValue,
    host: HeaderValue,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

impl Forwarding {
    /// From the host's public origin (`https://app.example.com`) and its trusted proxies.
    pub fn new(public: &url::Url, trusted: Vec<Cidr>) -> Self {
        let host = match (public.host_str(), public.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => String::new(),
        };
        Self {
            trusted,
            proto: HeaderValue::from_str(public.scheme())
                .unwrap_or(HeaderValue::from_static("https")),
            host: HeaderValue::from_str(&host).unwrap_or(HeaderValue::from_static("")),
        }
    }

    /// Whether `peer` is one of the trusted proxies.
    pub fn trusts(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_some_and(|addr| self.trusted.iter().any(|c| c.contains(addr.ip())))
    }

    /// What a trusted proxy (`peer` in `trusted_proxies`) claims in `incoming` — its
    /// well-formed `X-Forwarded-For` chain, `-Proto` and `-Host` — read before the caller's
    /// forwarding headers are dropped. Nothing for anyone else.
    pub fn claimed(&self, incoming: &HeaderMap, peer: Option<SocketAddr>) -> Claimed {
        let trusted = peer.is_some_and(|addr| self.trusted.iter().any(|c| c.contains(addr.ip())));
        if !trusted {
            return Claimed::default();
        }
        let chain = incoming
            .get(&X_FORWARDED_FOR)
            .filter(|v| {
                v.len() <= 1024
                    && v.to_str()
                        .is_ok_and(|v| v.split(',').all(|ip| ip.trim().parse::<IpAddr>().is_ok()))
            })
            .cloned();
        let proto = incoming
            .get(&X_FORWARDED_PROTO)
            .filter(|v| matches!(v.as_bytes(), b"http" | b"https"))
            .cloned();
        let host = incoming
            .get(&X_FORWARDED_HOST)
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 255
                    && v.as_bytes().iter().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                    })
            })
            .cloned();
        Claimed { chain, proto, host }
    }

    /// Sets `X-Forwarded-For/-Proto/-Host` on `out` (which holds none: they were dropped) for
    /// a request from `peer`, with what a trusted proxy `claimed`.
    pub fn apply(&self, claimed: Claimed, peer: Option<SocketAddr>, out: &mut HeaderMap) {
        out.insert(
            X_FORWARDED_PROTO,
            claimed.proto.unwrap_or_else(|| self.proto.clone()),
        );
        out.insert(
            X_FORWARDED_HOST,
            claimed.host.unwrap_or_else(|| self.host.clone()),
        );
        let Some(peer) = peer.map(|addr| addr.ip()) else {
            return;
        };
        let value = match claimed.chain {
            Some(chain) => chain
                .to_str()
                .ok()
                .and_then(|chain| HeaderValue::from_str(&format!("{chain}, {peer}")).ok()),
            None => peer_value(peer),
        };
        if let Some(value) = value {
            out.insert(X_FORWARDED_FOR, value);
        }
    }
}

/// What a trusted proxy said about the original request ([`Forwarding::claimed`]).
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    chain: Option<HeaderValue>,
    proto: Option<HeaderValue>,
    host: Option<HeaderValue>,
}

/// `peer` as a header value. A connection's requests come from one peer, and keep-alive
/// connections send many: each thread keeps the last peer's value, so the address is formatted
/// once per peer and thread, not per request.
fn peer_value(peer: IpAddr) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((ip, value)) = last.as_ref() {
            if *ip == peer {
                return Some(value.clone());
            }
        }
        let value = HeaderValue::from_str(&peer.to_string()).ok()?;
        *last = Some((peer, value.clone()));
        Some(value)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn networks_contain_their_addresses_only() {
        let v4: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(v4.contains("192.168.255.1".parse().unwrap()));
        assert!(v4.contains("::ffff:192.168.1.1".parse().unwrap()));
        assert!(!v4.contains("192.169.0.1".parse().unwrap()));
        assert!(!v4.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "x",
            "10.0.0.0/-1",
            "",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
