//! The real client behind a chain of proxies. The connection's peer (after any PROXY header) is
//! the first hop; only when it is one of the listener's `trusted_proxies` is its forwarding
//! header believed, and then the header is read from the right, each trusted address sending
//! the walk one hop further left, until the first address that is not trusted: that is the
//! client (nginx's `real_ip_recursive on`). Anything a client could have written itself
//! (entries left of the first untrusted hop, malformed entries) is never taken.

pub use crate::config::ForwardedHeader;
use http::header::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The addresses whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client's address for a request from `peer`, given the request's headers.
pub fn client_address(
    peer: IpAddr,
    trusted: &TrustedProxies,
    which: ForwardedHeader,
    headers: &HeaderMap,
) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let name = match which {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    // Later header lines come after earlier ones: walk lines and entries from the right.
    for line in headers.get_all(name).iter().rev() {
        let Ok(text) = line.to_str() else {
            return client;
        };
        for entry in text.rsplit(',') {
            let parsed = match which {
                ForwardedHeader::XForwardedFor => parse_node(entry.trim()),
                ForwardedHeader::Forwarded => forwarded_for(entry),
            };
            let Some(ip) = parsed else {
                return client;
            };
            client = ip.to_canonical();
            if !trusted.contains(client) {
                return client;
            }
        }
    }
    client
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:443`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse().ok();
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// The `for=` node of one `Forwarded` element (`for=192.0.2.60;proto=http;by=...`), when it is
/// an address (not `unknown` or an obfuscated `_name`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        parse_node(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers("x-forwarded-for", &["1.1.1.1"]);
        assert_eq!(
            client_address(ip("192.0.2.1"), &t, ForwardedHeader::XForwardedFor, &h),
            ip("192.0.2.1")
        );
        assert_eq!(
            client_address(
                ip("10.0.0.1"),
                &TrustedProxies::default(),
                ForwardedHeader::XForwardedFor,
                &h
            ),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn first_untrusted_from_the_right() {
        let t = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
        let h = headers("x-forwarded-for", &["6.6.6.6, 203.0.113.7", "10.1.1.1"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &t, ForwardedHeader::XForwardedFor, &h),
            ip("203.0.113.7")
        );
        let h = headers("x-forwarded-for", &["203.0.113.7:5555, [2001:db8::5]:80"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &t, ForwardedHeader::XForwardedFor, &h),
            ip("203.0.113.7")
        );
        // Every hop trusted: the leftmost one is the client.
        let h = headers("x-forwarded-for", &["10.9.9.9, 10.1.1.1"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &t, ForwardedHeader::XForwardedFor, &h),
            ip("10.9.9.9")
        );
        // No header: the trusted peer itself.
        assert_eq!(
            client_address(
                ip("10.0.0.1"),
                &t,
                ForwardedHeader::XForwardedFor,
                &HeaderMap::new()
            ),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn garbage_stops_the_walk() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers("x-forwarded-for", &["1.1.1.1, nonsense, 10.2.2.2"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &t, ForwardedHeader::XForwardedFor, &h),
            ip("10.2.2.2")
        );
        let h = headers("x-forwarded-for", &["1.1.1.1, "]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &t, ForwardedHeader::XForwardedFor, &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_header() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(
            "forwarded",
            &[
                "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https",
                "For=10.3.3.3;by=x",
            ],
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &t, ForwardedHeader::Forwarded, &h),
            "2001:db8:cafe::17".parse::<IpAddr>().unwrap()
        );
        let h = headers("forwarded", &["for=1.1.1.1, for=unknown"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &t, ForwardedHeader::Forwarded, &h),
            ip("10.0.0.1")
        );
        // The header not chosen is never read.
        let h = headers("x-forwarded-for", &["1.1.1.1"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &t, ForwardedHeader::Forwarded, &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn mapped_addresses() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers("x-forwarded-for", &["::ffff:203.0.113.9"]);
        assert_eq!(
            client_address(
                ip("::ffff:10.0.0.1"),
                &t,
                ForwardedHeader::XForwardedFor,
                &h
            ),
            ip("203.0.113.9")
        );
    }
}
