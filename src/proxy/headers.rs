//! Header work on the request path: hop-by-hop removal, `X-Forwarded-*`, request ids and the
//! per-route set/add/remove transforms.

use crate::config::HeaderTransform;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};

/// `X-Request-Id`, the name the gateway reads and writes.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The names the gateway adds, as written on the wire. Pingora keeps each added header's
/// written case beside the header map; from a `&'static str` it takes that case as is, where a
/// `HeaderName` costs a search among the standard names and a copy of the name per request.
pub mod wire {
    pub const X_REQUEST_ID: &str = "X-Request-Id";
    pub const X_FORWARDED_FOR: &str = "X-Forwarded-For";
    pub const X_FORWARDED_PROTO: &str = "X-Forwarded-Proto";
    pub const X_FORWARDED_HOST: &str = "X-Forwarded-Host";
    pub const X_CONSUMER: &str = "X-Consumer";
    pub const X_CONSUMER_GROUPS: &str = "X-Consumer-Groups";
    pub const X_CACHE_STATUS: &str = "X-Cache-Status";
}
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

/// Hop-by-hop headers (RFC 9110 section 7.6.1 and the usual extras): never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Headers that define message framing; the gateway manages them itself.
const FRAMING: &[&str] = &["content-length", "transfer-encoding", "host"];

/// True for headers a route's transform may not set: hop-by-hop and framing headers.
pub fn is_framing_or_hop(name: &HeaderName) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n) || (FRAMING.contains(&n) && n != "host")
}

/// Names listed in the `Connection` header(s), which are hop-by-hop for this message.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        let Ok(s) = v.to_str() else { continue };
        for token in s.split(',') {
            let t = token.trim();
            if t.is_empty() {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(t.as_bytes()) {
                // Never let a client strip framing or the host through `Connection`.
                if !FRAMING.contains(&name.as_str()) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// Whether the request asks for a protocol upgrade (WebSocket), which keeps `Upgrade`.
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
                .unwrap_or(false)
        })
}

/// Whether any header is hop-by-hop: one pass over the (few) names, so that the common message
/// without any skips the removal work.
fn has_hop_by_hop(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| HOP_BY_HOP.contains(&k.as_str()))
}

/// Whether the client said it accepts trailers (`TE: trailers`).
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        })
    })
}

/// Remove hop-by-hop headers from a request about to go upstream.
pub fn strip_request_hop_by_hop(req: &mut RequestHeader) {
    if !has_hop_by_hop(&req.headers) {
        return;
    }
    let upgrade = is_upgrade(&req.headers);
    let upgrade_value = req.headers.get(header::UPGRADE).cloned();
    let trailers = accepts_trailers(&req.headers);
    for name in connection_listed(&req.headers) {
        req.remove_header(&name);
    }
    for name in HOP_BY_HOP {
        req.remove_header(*name);
    }
    if trailers {
        // `TE: trailers` is the one TE value passed on (as HTTP/2 allows): gRPC servers
        // require it to know that trailers, where the call's status travels, get through.
        let _ = req.insert_header(header::TE, HeaderValue::from_static("trailers"));
    }
    if let (true, Some(v)) = (upgrade, upgrade_value) {
        let _ = req.insert_header(header::UPGRADE, v);
        let _ = req.insert_header(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Remove hop-by-hop headers from an upstream response (a `101` keeps its upgrade headers).
pub fn strip_response_hop_by_hop(resp: &mut ResponseHeader) {
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    if !has_hop_by_hop(&resp.headers) {
        return;
    }
    for name in connection_listed(&resp.headers) {
        resp.remove_header(&name);
    }
    for name in HOP_BY_HOP {
        if *name != "te" {
            resp.remove_header(*name);
        }
    }
}

/// The hop a request arrived over, as the forwarding headers describe it.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The client, as the gateway determined it.
    pub client: Option<std::net::IpAddr>,
    /// The connection's peer (after any PROXY header).
    pub peer: Option<std::net::IpAddr>,
    /// The peer is a trusted proxy: the forwarding headers it sent are kept and extended.
    pub trusted: bool,
    /// The `Host` the request goes upstream with.
    pub host: Option<&'a HeaderValue>,
    /// The client connection is TLS.
    pub tls: bool,
}

/// Whether a request header is a forwarding header a client could forge: `Forwarded` or any
/// `X-Forwarded-*`.
fn is_forwarding(name: &HeaderName) -> bool {
    let n = name.as_str().as_bytes();
    n == b"forwarded" || (n.len() > 12 && &n[..12] == b"x-forwarded-")
}

/// Set the forwarding headers. From a trusted proxy, `X-Forwarded-For` gets the proxy's address
/// appended, an incoming `Forwarded` gets an element for it, and `X-Forwarded-Proto`/`-Host`
/// are kept when the proxy set them. From anyone else every incoming `Forwarded` and
/// `X-Forwarded-*` header is dropped and replaced: `X-Forwarded-For` is the client alone.
pub fn set_forwarding(req: &mut RequestHeader, hop: &Hop) {
    let proto = if hop.tls { &HTTPS } else { &HTTP };
    let mut buf = [0u8; 48];
    if hop.trusted {
        if let Some(peer) = hop.peer {
            let len = write_ip(peer, &mut buf);
            let ip = &buf[..len];
            let value = match req.headers.get(&X_FORWARDED_FOR) {
                Some(prev) if !prev.as_bytes().trim_ascii().is_empty() => {
                    HeaderValue::from_bytes(&[prev.as_bytes(), b", ", ip].concat())
                }
                _ => HeaderValue::from_bytes(ip),
            };
            if let Ok(v) = value {
                let _ = req.insert_header(wire::X_FORWARDED_FOR, v);
            }
            if let Some(prev) = req.headers.get(header::FORWARDED) {
                let node = match peer {
                    std::net::IpAddr::V4(_) => format!("for={peer}"),
                    std::net::IpAddr::V6(_) => format!("for=\"[{peer}]\""),
                };
                let mut v = prev.as_bytes().to_vec();
                v.extend_from_slice(b", ");
                v.extend_from_slice(node.as_bytes());
                if let Ok(v) = HeaderValue::from_bytes(&v) {
                    let _ = req.insert_header(header::FORWARDED, v);
                }
            }
        }
        if !req.headers.contains_key(&X_FORWARDED_PROTO) {
            let _ = req.insert_header(wire::X_FORWARDED_PROTO, proto.clone());
        }
        if !req.headers.contains_key(&X_FORWARDED_HOST) {
            if let Some(h) = hop.host {
                let _ = req.insert_header(wire::X_FORWARDED_HOST, h.clone());
            }
        }
        return;
    }
    if req.headers.keys().any(is_forwarding) {
        let forged: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|k| is_forwarding(k))
            .cloned()
            .collect();
        for name in forged {
            req.remove_header(&name);
        }
    }
    if let Some(ip) = hop.client {
        let len = write_ip(ip, &mut buf);
        if let Ok(v) = HeaderValue::from_bytes(&buf[..len]) {
            let _ = req.insert_header(wire::X_FORWARDED_FOR, v);
        }
    }
    let _ = req.insert_header(wire::X_FORWARDED_PROTO, proto.clone());
    if let Some(h) = hop.host {
        let _ = req.insert_header(wire::X_FORWARDED_HOST, h.clone());
    }
}

/// Writes `ip` in its usual text form into `buf` (no formatting machinery for IPv4, the common
/// case); returns the length written.
fn write_ip(ip: std::net::IpAddr, buf: &mut [u8; 48]) -> usize {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write;
            let mut w = &mut buf[..];
            let _ = write!(w, "{ip}");
            48 - w.len()
        }
    }
}

/// The request id to use: the client's when it is sane (1–200 visible ASCII characters),
/// otherwise a new random UUID.
pub fn request_id(incoming: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = incoming {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 200 && b.iter().all(|c| (0x21..0x7f).contains(c)) {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4();
    let s = id.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Apply a route's transform to request headers.
pub fn apply_request(t: &HeaderTransform, req: &mut RequestHeader) {
    for name in &t.remove {
        req.remove_header(name);
    }
    for (name, value) in &t.set {
        let _ = req.insert_header(name.clone(), value.clone());
    }
    for (name, value) in &t.add {
        let _ = req.append_header(name.clone(), value.clone());
    }
}

/// Apply a route's transform to response headers.
pub fn apply_response(t: &HeaderTransform, resp: &mut ResponseHeader) {
    for name in &t.remove {
        resp.remove_header(name);
    }
    for (name, value) in &t.set {
        let _ = resp.insert_header(name.clone(), value.clone());
    }
    for (name, value) in &t.add {
        let _ = resp.append_header(name.clone(), value.clone());
    }
}

/// Find `name=value` in a `;`-separated cookie header list.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    for v in headers.get_all(header::COOKIE) {
        for pair in v.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if let Some(eq) = pair.iter().position(|b| *b == b'=') {
                if &pair[..eq] == name.as_bytes() {
                    return Some(&pair[eq + 1..]);
                }
            }
        }
    }
    None
}

/// Find `name=value` in a query string (raw, not percent-decoded).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a [u8]> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_addresses_as_display_does() {
        let mut addrs: Vec<std::net::IpAddr> = [
            "0.0.0.0",
            "1.2.3.4",
            "10.100.255.9",
            "255.255.255.255",
            "99.100.101.9",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:192.0.2.128",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        addrs.extend((0..=255u8).map(|o| std::net::IpAddr::from([o, 255 - o, o / 3, 7])));
        for ip in addrs {
            let mut buf = [0u8; 48];
            let n = write_ip(ip, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), ip.to_string());
        }
    }

    fn forwarded(hop: &Hop, incoming: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in incoming {
            req.append_header(k.to_string(), *v).unwrap();
        }
        set_forwarding(&mut req, hop);
        req
    }

    #[test]
    fn forged_forwarding_headers_are_replaced() {
        let host = HeaderValue::from_static("api.example.com");
        let hop = Hop {
            client: Some("192.0.2.9".parse().unwrap()),
            peer: Some("192.0.2.9".parse().unwrap()),
            trusted: false,
            host: Some(&host),
            tls: false,
        };
        let req = forwarded(
            &hop,
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("forwarded", "for=6.6.6.6;host=admin.example;proto=https"),
                ("x-forwarded-host", "admin.example"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "443"),
                ("x-forwarded-prefix", "/admin"),
                ("x-kept", "1"),
            ],
        );
        assert_eq!(req.headers.get("x-forwarded-for").unwrap(), "192.0.2.9");
        assert_eq!(req.headers.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            req.headers.get("x-forwarded-host").unwrap(),
            "api.example.com"
        );
        assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), "http");
        for gone in ["forwarded", "x-forwarded-port", "x-forwarded-prefix"] {
            assert!(req.headers.get(gone).is_none(), "{gone}");
        }
        assert!(req.headers.get("x-kept").is_some());
    }

    #[test]
    fn trusted_proxies_chain_is_extended() {
        let host = HeaderValue::from_static("api.example.com");
        let hop = Hop {
            client: Some("203.0.113.7".parse().unwrap()),
            peer: Some("10.0.0.2".parse().unwrap()),
            trusted: true,
            host: Some(&host),
            tls: true,
        };
        let req = forwarded(
            &hop,
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=203.0.113.7"),
            ],
        );
        assert_eq!(
            req.headers.get("x-forwarded-for").unwrap(),
            "203.0.113.7, 10.0.0.2"
        );
        assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(
            req.headers.get("x-forwarded-host").unwrap(),
            "api.example.com"
        );
        assert_eq!(
            req.headers.get("forwarded").unwrap(),
            "for=203.0.113.7, for=10.0.0.2"
        );
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("connection", "keep-alive, x-secret, content-length")
            .unwrap();
        req.insert_header("keep-alive", "timeout=5").unwrap();
        req.insert_header("x-secret", "1").unwrap();
        req.insert_header("te", "gzip").unwrap();
        req.insert_header("x-kept", "1").unwrap();
        strip_request_hop_by_hop(&mut req);
        for gone in ["connection", "keep-alive", "x-secret", "te"] {
            assert!(req.headers.get(gone).is_none(), "{gone}");
        }
        assert!(req.headers.get("x-kept").is_some());
    }

    #[test]
    fn te_trailers_alone_is_passed_on() {
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        req.insert_header("connection", "te").unwrap();
        req.insert_header("te", "gzip, Trailers;q=1").unwrap();
        strip_request_hop_by_hop(&mut req);
        assert_eq!(req.headers.get("te").unwrap(), "trailers");
        assert!(req.headers.get("connection").is_none());
    }

    #[test]
    fn websocket_upgrade_kept() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("connection", "Upgrade").unwrap();
        req.insert_header("upgrade", "websocket").unwrap();
        strip_request_hop_by_hop(&mut req);
        assert_eq!(req.headers.get("upgrade").unwrap(), "websocket");
        assert_eq!(req.headers.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn request_ids() {
        let v = HeaderValue::from_static("abc-123");
        assert_eq!(request_id(Some(&v)), v);
        let bad = HeaderValue::from_static("has space");
        let generated = request_id(Some(&bad));
        assert_eq!(generated.len(), 36);
        assert_ne!(request_id(None), request_id(None));
    }

    #[test]
    fn cookie_and_query() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; session=xyz"));
        assert_eq!(cookie(&h, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&h, "nope"), None);
        assert_eq!(query_param("a=1&user=42", "user"), Some(&b"42"[..]));
    }
}
