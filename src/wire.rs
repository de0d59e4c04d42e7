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
}
