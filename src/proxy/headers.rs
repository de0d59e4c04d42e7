//! Header work on the request path: hop-by-hop removal, `X-Forwarded-*`, request ids and the
//! per-route set/add/remove transforms.

use crate::config::HeaderTransform;
use crate::wire::{written, FRAMING, HOP_BY_HOP};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

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

/// The hop-by-hop headers a message carries (`keep`: one of them not to remove), and those its
/// `Connection` names: only these are removed (each removal is a lookup in two maps).
fn hop_by_hop_present(headers: &HeaderMap, keep: Option<&str>) -> Vec<HeaderName> {
    let listed = connection_listed(headers);
    let mut out: Vec<HeaderName> = Vec::new();
    for k in headers.keys() {
        let hop = HOP_BY_HOP.contains(&k.as_str()) && keep != Some(k.as_str());
        if (hop || listed.contains(k)) && !out.contains(k) {
            out.push(k.clone());
        }
    }
    out
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
    for name in hop_by_hop_present(&req.headers, None) {
        req.remove_header(&name);
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
    for name in hop_by_hop_present(&resp.headers, Some("te")) {
        resp.remove_header(&name);
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

/// How a request header that describes the client's hop is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HopHeader {
    /// Not one of them.
    Other,
    /// `Forwarded` or `X-Forwarded-*`: kept from a trusted proxy, replaced from anyone else.
    Forwarding,
    /// A header some upstreams take the client's address from (`X-Real-IP`, `True-Client-IP`,
    /// ...): kept from a trusted proxy, dropped from anyone else.
    ClientAddress,
    /// Dropped from everyone: headers that make frameworks serve another path, method or host
    /// (`X-Original-URL`, `X-HTTP-Method-Override`, `X-Host`, ...), and spellings with `_` of
    /// the gateway's own and forwarding headers, which CGI-style servers (`HTTP_X_CONSUMER`)
    /// read as the real ones.
    Forged,
}

/// Client address headers that upstream frameworks and CDNs use, and the scheme claims some
/// frameworks read like `X-Forwarded-Proto`.
const CLIENT_ADDRESS: &[&[u8]] = &[
    b"x-real-ip",
    b"true-client-ip",
    b"x-client-ip",
    b"client-ip",
    b"cf-connecting-ip",
    b"x-cluster-client-ip",
    b"fastly-client-ip",
    b"x-originating-ip",
    b"x-remote-ip",
    b"x-remote-addr",
    b"x-proxyuser-ip",
    b"x-url-scheme",
    b"front-end-https",
];

/// Headers that make frameworks serve another path, method or host than the one the gateway
/// routed: dropped from everyone.
const REROUTING: &[&[u8]] = &[
    b"x-original-url",
    b"x-rewrite-url",
    b"x-original-uri",
    b"x-envoy-original-path",
    b"x-http-method-override",
    b"x-http-method",
    b"x-method-override",
    b"x-host",
    b"x-original-host",
];

/// The gateway's own request headers.
const OWN: &[&[u8]] = &[b"x-consumer", b"x-consumer-groups", b"x-request-id"];

/// Headers only the gateway says, in any spelling, from anyone (trusted proxies included): who
/// the caller is, and the client certificate verified on the connection.
const GATEWAY_ONLY: &[&[u8]] = &[
    b"x-consumer",
    b"x-consumer-groups",
    b"x-forwarded-client-cert",
];

/// `name` equals `expected` (lower case, with `-`) when `_` is read as `-`.
fn dash_eq(name: &[u8], expected: &[u8]) -> bool {
    name.len() == expected.len()
        && name
            .iter()
            .zip(expected)
            .all(|(a, b)| a == b || (*a == b'_' && *b == b'-'))
}

fn classify(name: &HeaderName) -> HopHeader {
    let n = name.as_str().as_bytes();
    // Every name of interest starts with one of these: most headers are ruled out at once.
    if !matches!(n.first(), Some(b'x' | b'f' | b't' | b'c')) {
        return HopHeader::Other;
    }
    if GATEWAY_ONLY.iter().any(|c| dash_eq(n, c)) {
        return HopHeader::Forged;
    }
    let underscore = n.contains(&b'_');
    let class = if (n.len() > 12 && dash_eq(&n[..12], b"x-forwarded-")) || dash_eq(n, b"forwarded")
    {
        HopHeader::Forwarding
    } else if CLIENT_ADDRESS.iter().any(|c| dash_eq(n, c)) {
        HopHeader::ClientAddress
    } else if REROUTING.iter().any(|c| dash_eq(n, c))
        || (underscore && OWN.iter().any(|c| dash_eq(n, c)))
    {
        HopHeader::Forged
    } else {
        HopHeader::Other
    };
    if underscore && class != HopHeader::Other {
        HopHeader::Forged
    } else {
        class
    }
}

/// Every value of `name`, joined with `", "` (several field lines are one list).
fn joined(req: &RequestHeader, name: &HeaderName) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for v in req.headers.get_all(name) {
        let v = v.as_bytes().trim_ascii();
        if v.is_empty() {
            continue;
        }
        match &mut out {
            Some(o) => {
                o.extend_from_slice(b", ");
                o.extend_from_slice(v);
            }
            None => out = Some(v.to_vec()),
        }
    }
    out
}

/// A `Forwarded` node (RFC 7239 section 6) as it may be written in `for=`, re-serialised; `None`
/// for anything else, so that no value can carry other parameters or quotes along.
fn forwarded_node(value: &[u8]) -> Option<String> {
    let inner = match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    };
    let text = std::str::from_utf8(inner).ok()?;
    let obfuscated = |s: &str| {
        s.len() > 1
            && s.starts_with('_')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    let port_ok = |p: &str| {
        (!p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())) || obfuscated(p)
    };
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{v6}]"), port)
    } else {
        let (name, port) = match text.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (text, None),
        };
        let valid = name.parse::<std::net::Ipv4Addr>().is_ok()
            || name.eq_ignore_ascii_case("unknown")
            || obfuscated(name);
        if !valid {
            return None;
        }
        (name.to_string(), port)
    };
    match port {
        None if !name.starts_with('[') => Some(name),
        None => Some(format!("\"{name}\"")),
        Some(p) if port_ok(p) => Some(format!("\"{name}:{p}\"")),
        Some(_) => None,
    }
}

/// The `for=` nodes of a `Forwarded` list, one element each (`host=`, `proto=` and `by=`
/// parameters are left out: the gateway cannot tell a proxy's from a client's), each checked to
/// be a node and written anew.
fn forwarded_nodes(list: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len());
    for element in list.split(|b| *b == b',') {
        let node = element.split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            (pair.len() > 4 && pair[..4].eq_ignore_ascii_case(b"for="))
                .then(|| forwarded_node(&pair[4..]))
                .flatten()
        });
        if let Some(node) = node {
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(b"for=");
            out.extend_from_slice(node.as_bytes());
        }
    }
    out
}

/// Set the forwarding headers. The request is for the host the gateway routed on, so
/// `X-Forwarded-Host` is always that host. From a trusted proxy, `X-Forwarded-For` (all its
/// lines) gets the proxy's address appended, `Forwarded` keeps its `for=` nodes and gets one for
/// the proxy, `X-Forwarded-Proto` is kept when it says `http` or `https`, and client address
/// headers are kept. From anyone else every `Forwarded`, `X-Forwarded-*` and client address
/// header is dropped, and `X-Forwarded-For` is the client alone. Headers that re-route inside
/// frameworks and `_` spellings of these names are dropped from everyone.
pub fn set_forwarding(req: &mut RequestHeader, hop: &Hop) {
    let drop_from_peer = |class: HopHeader| match class {
        HopHeader::Other => false,
        HopHeader::Forged => true,
        HopHeader::Forwarding | HopHeader::ClientAddress => !hop.trusted,
    };
    if req.headers.keys().any(|k| drop_from_peer(classify(k))) {
        let dropped: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|k| drop_from_peer(classify(k)))
            .cloned()
            .collect();
        for name in dropped {
            req.remove_header(&name);
        }
    }
    let mut proto = if hop.tls { &HTTPS } else { &HTTP };
    let mut buf = [0u8; 48];
    if hop.trusted {
        if let Some(peer) = hop.peer {
            let len = crate::wire::write_ip(peer, &mut buf);
            let ip = &buf[..len];
            let value = match joined(req, &X_FORWARDED_FOR) {
                Some(mut list) => {
                    list.extend_from_slice(b", ");
                    list.extend_from_slice(ip);
                    HeaderValue::from_bytes(&list)
                }
                None => HeaderValue::from_bytes(ip),
            };
            if let Ok(v) = value {
                let _ = req.insert_header(written::X_FORWARDED_FOR, v);
            }
            if let Some(list) = joined(req, &header::FORWARDED) {
                let mut nodes = forwarded_nodes(&list);
                if !nodes.is_empty() {
                    nodes.extend_from_slice(b", ");
                }
                match peer {
                    std::net::IpAddr::V4(_) => {
                        nodes.extend_from_slice(b"for=");
                        nodes.extend_from_slice(ip);
                    }
                    std::net::IpAddr::V6(_) => {
                        nodes.extend_from_slice(b"for=\"[");
                        nodes.extend_from_slice(ip);
                        nodes.extend_from_slice(b"]\"");
                    }
                }
                if let Ok(v) = HeaderValue::from_bytes(&nodes) {
                    let _ = req.insert_header(header::FORWARDED, v);
                }
            }
        }
        if let Some(p) = req.headers.get(&X_FORWARDED_PROTO) {
            if p.as_bytes().eq_ignore_ascii_case(b"https") {
                proto = &HTTPS;
            } else if p.as_bytes().eq_ignore_ascii_case(b"http") {
                proto = &HTTP;
            }
        }
    } else if let Some(ip) = hop.client {
        let len = crate::wire::write_ip(ip, &mut buf);
        if let Ok(v) = HeaderValue::from_bytes(&buf[..len]) {
            let _ = req.insert_header(written::X_FORWARDED_FOR, v);
        }
    }
    let _ = req.insert_header(written::X_FORWARDED_PROTO, proto.clone());
    match hop.host {
        Some(h) => {
            let _ = req.insert_header(written::X_FORWARDED_HOST, h.clone());
        }
        None => {
            req.remove_header(&X_FORWARDED_HOST);
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
    let mut buf = [0u8; crate::wire::REQUEST_ID_LEN];
    let id = crate::wire::new_request_id(&mut buf);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
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

pub use crate::wire::cookie;

/// Find `name=value` in a query string (raw, not percent-decoded).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a [u8]> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod tests;
