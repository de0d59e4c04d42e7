//! Wire-level facts every module may use (a leaf: it imports nothing from the crate): the
//! header names the gateway reads and writes, which headers are hop-by-hop or frame a message,
//! and the digest API keys are stored and compared as.

use http::header::HeaderName;
use sha2::{Digest, Sha256};

/// `X-Request-Id`, the name the gateway reads and writes.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Consumer`: the authenticated consumer's name, sent upstream.
pub static X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");
/// `X-Consumer-Groups`: its groups, comma-separated.
pub static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");
/// `X-Forwarded-Client-Cert`: the client certificate verified on the connection (Envoy's
/// format).
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The names the gateway adds, as written on the wire. Pingora keeps each added header's
/// written case beside the header map; from a `&'static str` it takes that case as is, where a
/// `HeaderName` costs a search among the standard names and a copy of the name per request.
pub mod written {
    pub const X_REQUEST_ID: &str = "X-Request-Id";
    pub const X_FORWARDED_FOR: &str = "X-Forwarded-For";
    pub const X_FORWARDED_PROTO: &str = "X-Forwarded-Proto";
    pub const X_FORWARDED_HOST: &str = "X-Forwarded-Host";
    pub const X_CONSUMER: &str = "X-Consumer";
    pub const X_CONSUMER_GROUPS: &str = "X-Consumer-Groups";
    pub const X_FORWARDED_CLIENT_CERT: &str = "X-Forwarded-Client-Cert";
    pub const X_CACHE_STATUS: &str = "X-Cache-Status";
    pub const CACHE_STATUS: &str = "Cache-Status";
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1 and the usual extras): never forwarded.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Headers that define message framing (and the host); the gateway manages them itself.
pub const FRAMING: &[&str] = &["content-length", "transfer-encoding", "host"];

/// True for headers a route's transform may not set: hop-by-hop and framing headers.
pub fn is_framing_or_hop(name: &HeaderName) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n) || (FRAMING.contains(&n) && n != "host")
}

/// Length of a generated request id: 32 lower-case hex digits, as nginx's `$request_id`.
pub const REQUEST_ID_LEN: usize = 32;

thread_local! {
    /// This thread's request ids: a random 64-bit prefix (drawn once per thread from the
    /// operating system's seed) and a counter that starts at a random point.
    static REQUEST_IDS: std::cell::Cell<(u64, u64)> =
        std::cell::Cell::new((fastrand::u64(..), fastrand::u64(..)));
}

/// A new request id, written into `buf`: unique without drawing random numbers per request
/// (the thread's random prefix, then its counter). Request ids must be unique, not secret.
pub fn new_request_id(buf: &mut [u8; REQUEST_ID_LEN]) -> &str {
    let (prefix, counter) = REQUEST_IDS.with(|c| {
        let (p, n) = c.get();
        c.set((p, n.wrapping_add(1)));
        (p, n)
    });
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&prefix.to_be_bytes());
    bytes[8..].copy_from_slice(&counter.to_be_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        buf[2 * i] = HEX[usize::from(b >> 4)];
        buf[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(buf).unwrap_or("0")
}

/// SHA-256 of an API key; keys are stored and compared only as digests.
pub fn key_digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// Find `name=value` in a `;`-separated cookie header list.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    for v in headers.get_all(http::header::COOKIE) {
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

/// Add `name` to the `Vary` of a response with these `headers`, unless `Vary` already names it
/// or is `*`; the value to append, if any.
pub fn vary_adds(headers: &http::HeaderMap, name: &'static str) -> Option<&'static str> {
    let covered = headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*" || v.trim().eq_ignore_ascii_case(name));
    (!covered).then_some(name)
}

/// Writes `ip` in its usual text form into `buf` (no formatting machinery for IPv4, the common
/// case); returns the length written.
pub fn write_ip(ip: std::net::IpAddr, buf: &mut [u8; 48]) -> usize {
    match ip {
        std::net::IpAddr::V4(v4) => write_ipv4(v4, buf),
        std::net::IpAddr::V6(_) => {
            use std::io::Write;
            let mut w = &mut buf[..];
            let _ = write!(w, "{ip}");
            48 - w.len()
        }
    }
}

/// `ip` in dotted decimal at the start of `buf` (at least 16 bytes); the length written.
fn write_ipv4(ip: std::net::Ipv4Addr, buf: &mut [u8]) -> usize {
    let mut n = 0;
    for octet in ip.octets() {
        // Four bytes copied whatever the octet's length (`255.` the longest), then counted.
        let (text, len) = &OCTETS[usize::from(octet)];
        buf[n..n + 4].copy_from_slice(text);
        n += usize::from(*len);
    }
    n - 1
}

/// Each octet's decimal text and a dot after it, padded to four bytes, and the length.
static OCTETS: [([u8; 4], u8); 256] = {
    let mut table = [([0u8; 4], 0u8); 256];
    let mut o = 0;
    while o < 256 {
        let (text, len) = if o >= 100 {
            (
                [
                    b'0' + (o / 100) as u8,
                    b'0' + (o / 10 % 10) as u8,
                    b'0' + (o % 10) as u8,
                    b'.',
                ],
                4,
            )
        } else if o >= 10 {
            ([b'0' + (o / 10) as u8, b'0' + (o % 10) as u8, b'.', 0], 3)
        } else {
            ([b'0' + o as u8, b'.', 0, 0], 2)
        };
        table[o] = (text, len);
        o += 1;
    }
    table
};

/// Writes `addr` as its `Display` does (`1.2.3.4:80`, `[::1]:80`) into `buf`, IPv4 without the
/// formatting machinery; returns the length written.
pub fn write_socket_addr(addr: std::net::SocketAddr, buf: &mut [u8; 64]) -> usize {
    let std::net::SocketAddr::V4(v4) = addr else {
        use std::io::Write;
        let mut w = &mut buf[..];
        let _ = write!(w, "{addr}");
        return 64 - w.len();
    };
    let mut at = write_ipv4(*v4.ip(), buf);
    buf[at] = b':';
    at += 1;
    let port = v4.port();
    let digits = match port {
        10_000.. => 5,
        1_000.. => 4,
        100.. => 3,
        10.. => 2,
        _ => 1,
    };
    let mut p = port;
    for i in (0..digits).rev() {
        buf[at + i] = b'0' + (p % 10) as u8;
        p /= 10;
    }
    at + digits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_hop_by_hop_headers() {
        for name in [
            "connection",
            "te",
            "upgrade",
            "content-length",
            "transfer-encoding",
        ] {
            assert!(is_framing_or_hop(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["host", "x-api-key", "authorization"] {
            assert!(!is_framing_or_hop(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn request_ids_are_unique_hex_across_threads() {
        let ids = || {
            (0..1000)
                .map(|_| new_request_id(&mut [0u8; REQUEST_ID_LEN]).to_string())
                .collect::<Vec<_>>()
        };
        let mut all = ids();
        all.extend(std::thread::spawn(ids).join().unwrap());
        assert!(all.iter().all(|i| i.len() == 32
            && i.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))));
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 2000);
    }

    #[test]
    fn key_digests_are_sha256() {
        assert_eq!(
            hex::encode(key_digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn every_ipv4_octet_is_written_as_display_writes_it() {
        for o in 0..=255u8 {
            for at in 0..4 {
                let mut octets = [255, 0, 7, 10];
                octets[at] = o;
                let ip = std::net::IpAddr::from(octets);
                let mut buf = [0u8; 48];
                let n = super::write_ip(ip, &mut buf);
                assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), ip.to_string());
            }
        }
    }

    #[test]
    fn socket_addresses_are_written_as_display_writes_them() {
        let addrs = [
            "0.0.0.0:0",
            "1.2.3.4:9",
            "10.100.255.9:10",
            "255.255.255.255:65535",
            "127.0.0.1:8080",
            "192.0.2.1:443",
            "[::1]:80",
            "[2001:db8::8a2e:370:7334]:65535",
            "[fe80::1%7]:1",
        ];
        for a in addrs {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            let mut buf = [0u8; 64];
            let n = super::write_socket_addr(addr, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), addr.to_string());
        }
        for port in [1u16, 99, 100, 999, 1000, 9999, 10_000, 54_321] {
            let addr = std::net::SocketAddr::from(([8, 8, 4, 4], port));
            let mut buf = [0u8; 64];
            let n = super::write_socket_addr(addr, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), addr.to_string());
        }
    }
}
