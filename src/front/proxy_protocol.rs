//! The PROXY protocol (versions 1 and 2, HAProxy's specification), which a load balancer such
//! as AWS NLB or HAProxy sends at the start of each connection to say whose connection it is.
//! On a listener that expects it, the header is read before anything else (before the TLS
//! handshake on a TLS listener), parsed with the `ppp` crate, and the client address it
//! carries becomes the connection's peer address for everything after: IP rules, limits,
//! hashing, `X-Forwarded-For`, logs. A connection without a valid header is closed.

use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use ppp::{HeaderResult, PartialResult};
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Why a connection's PROXY header was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The connection does not start with a PROXY header.
    Missing,
    /// It starts like one but is malformed.
    Invalid,
    /// The header did not arrive in time, or the client closed first.
    Incomplete,
}

impl HeaderError {
    /// The reason label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            HeaderError::Missing => "proxy_protocol_missing",
            HeaderError::Invalid => "proxy_protocol_invalid",
            HeaderError::Incomplete => "proxy_protocol_incomplete",
        }
    }
}

const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest version 1 header, CRLF included.
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest header accepted: version 1 is at most 107 bytes; version 2 is 16 bytes, then up
/// to 216 of addresses, then TLVs (AWS adds its VPC endpoint id, HAProxy can add TLS details;
/// the format allows up to 64 KiB in all).
const MAX_HEADER: usize = 4096;

/// Whether `buf` could still be the start of a PROXY header.
fn could_be_header(buf: &[u8]) -> bool {
    let v1 = &V1_PREFIX[..buf.len().min(V1_PREFIX.len())];
    let v2 = &V2_SIGNATURE[..buf.len().min(V2_SIGNATURE.len())];
    buf.starts_with(v1) || buf.starts_with(v2)
}

/// Read the PROXY header at the start of `stream` (waiting until `deadline`), put back the
/// bytes after it, and return the client address it names (`None` for a health check from
/// the balancer itself: version 2 `LOCAL`, version 1 `UNKNOWN`).
pub async fn read(
    stream: &mut L4Stream,
    deadline: Instant,
) -> Result<Option<SocketAddr>, HeaderError> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut filled = 0;
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf[filled..])).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(HeaderError::Incomplete),
            Ok(Ok(n)) => filled += n,
        }
        if !could_be_header(&buf[..filled]) {
            return Err(HeaderError::Missing);
        }
        if buf.starts_with(V1_PREFIX) && !buf[..filled].contains(&b'\n') && filled < V1_MAX {
            // Version 1 is one line: read all of it before parsing (a line cut short, say
            // before its last port, is otherwise taken for a malformed one).
            continue;
        }
        let parsed = HeaderResult::parse(&buf[..filled]);
        if parsed.is_incomplete() {
            if filled == MAX_HEADER {
                return Err(HeaderError::Invalid);
            }
            continue;
        }
        let (len, source) = match parsed {
            HeaderResult::V1(Ok(h)) => {
                let source = match h.addresses {
                    ppp::v1::Addresses::Tcp4(a) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    ppp::v1::Addresses::Tcp6(a) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    ppp::v1::Addresses::Unknown => None,
                };
                (h.header.len(), source)
            }
            HeaderResult::V2(Ok(h)) => {
                let source = match (h.command, h.addresses) {
                    (ppp::v2::Command::Local, _) => None,
                    (_, ppp::v2::Addresses::IPv4(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    (_, ppp::v2::Addresses::IPv6(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    // UNIX sockets or an unspecified family: the connection's own peer stands.
                    _ => None,
                };
                (h.len(), source)
            }
            _ => return Err(HeaderError::Invalid),
        };
        stream.rewind(&buf[len..filled]);
        return Ok(source);
    }
}

/// Make `source` the connection's peer address, as every later reader of the socket digest
/// (Pingora's `client_addr`) sees it.
pub fn set_peer(stream: &mut L4Stream, source: SocketAddr) {
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(source)));
    if let Some(old) = stream.get_socket_digest() {
        if let Some(local) = old.local_addr() {
            let _ = digest.local_addr.set(Some(local.clone()));
        }
    }
    stream.set_socket_digest(digest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(could_be_header(b"PRO"));
        assert!(could_be_header(b"PROXY TCP4 "));
        assert!(could_be_header(b"\r\n\r\n\0"));
        assert!(!could_be_header(b"GET / HTTP/1.1\r\n"));
        assert!(!could_be_header(b"PROXZ"));
        assert!(!could_be_header(b"\x16\x03\x01"));
    }
}
