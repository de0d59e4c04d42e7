//! The front door: everything between a client's socket and the proxy's first phase.
//!
//! ```text
//! accept ─▶ PROXY header (listeners with proxy_protocol; before TLS on TLS listeners)
//!        ─▶ per-address connection cap (max_connections_per_ip)
//!        ─▶ HTTP/2: Pingora's own connection handling
//!        ─▶ HTTP/1: per request: read the head (keep-alive and header timeouts), check it
//!           strictly (head.rs) ─ refused: answer 4xx/5xx with the JSON body, close
//!           ─▶ Pingora reads exactly this request through conn.rs (body framing checked,
//!              body timeouts, pipelined bytes kept back) ─▶ the proxy's phases
//! ```
//!
//! In the proxy's phases, [`client`] finds the real client behind trusted proxies and
//! [`crate::canonical`] gives the one canonical path and host every decision is made on.

pub mod chunked;
pub mod client;
pub mod conn;
pub mod head;
pub mod per_ip;
pub mod proxy_protocol;

use crate::config::{Config, ForwardedHeader};
use crate::gateway::Gateway;
use crate::observe::access_log::{AccessLog, Entry, RequestText};
use crate::observe::metrics::{method_label, Metrics};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use client::TrustedProxies;
use conn::{Conn, ReadLimits};
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, Ssl, Stream};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// One listener's front-door settings.
#[derive(Debug)]
pub struct ListenerDoor {
    pub address: SocketAddr,
    /// Peers whose forwarding header is believed.
    pub trusted: TrustedProxies,
    pub forwarded_header: ForwardedHeader,
    pub proxy_protocol: bool,
    pub max_connections_per_ip: Option<u32>,
}

/// The front door of every traffic listener; built once per process (its settings change
/// with an upgrade).
pub struct FrontDoor {
    listeners: Vec<ListenerDoor>,
    /// Whether any listener trusts a proxy (when none does, the peer is always the client).
    any_trusted: bool,
    limits: Arc<ReadLimits>,
    send_timeout: Duration,
    per_ip: Arc<per_ip::PerIp>,
    state: Arc<ArcSwap<Gateway>>,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
}

impl std::fmt::Debug for FrontDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontDoor")
            .field("listeners", &self.listeners)
            .finish()
    }
}

/// The local and peer addresses of a connection, from its socket digest.
fn addresses(stream: &dyn GetSocketDigest) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let Some(d) = stream.get_socket_digest() else {
        return (None, None);
    };
    (
        d.local_addr().and_then(|a| a.as_inet()).copied(),
        d.peer_addr().and_then(|a| a.as_inet()).copied(),
    )
}

impl FrontDoor {
    /// The front door for `config`'s listeners; refusals are counted in `metrics` and logged
    /// to `access_log` with the current snapshot of `state`.
    pub fn new(
        config: &Config,
        state: Arc<ArcSwap<Gateway>>,
        metrics: Arc<Metrics>,
        access_log: Option<Arc<AccessLog>>,
    ) -> Arc<FrontDoor> {
        let process = &config.process;
        let t = process.client_timeouts;
        Arc::new(FrontDoor {
            any_trusted: process
                .listeners
                .iter()
                .any(|l| !l.trusted_proxies.is_empty()),
            listeners: process
                .listeners
                .iter()
                .map(|l| ListenerDoor {
                    address: l.address,
                    trusted: TrustedProxies(l.trusted_proxies.clone()),
                    forwarded_header: l.forwarded_header,
                    proxy_protocol: l.proxy_protocol,
                    max_connections_per_ip: l.max_connections_per_ip,
                })
                .collect(),
            limits: Arc::new(ReadLimits {
                header_timeout: t.header,
                body_timeout: t.body,
                body_min_rate: t.body_min_rate,
            }),
            send_timeout: t.send,
            per_ip: Arc::default(),
            state,
            metrics,
            access_log,
        })
    }

    /// How long reading a request body of at most `len` bytes may take: each wait at most
    /// `client_body_timeout`, and the whole at least `client_body_min_rate` fast after that
    /// allowance (the connection loop enforces the same on HTTP/1; this bounds HTTP/2 too).
    pub fn body_read_limits(&self, len: u64) -> (Duration, Duration) {
        let l = &self.limits;
        let total = match l.body_min_rate {
            0 => Duration::MAX,
            rate => l.body_timeout + Duration::from_secs(len.div_ceil(rate)),
        };
        (l.body_timeout, total)
    }

    /// How long a write to a client may wait (`client_send_timeout`).
    pub fn send_timeout(&self) -> Duration {
        self.send_timeout
    }

    /// The listener a connection to `local` arrived on (a listener on `0.0.0.0` or `[::]`
    /// matches any local address with its port).
    pub fn listener(&self, local: Option<SocketAddr>) -> Option<&ListenerDoor> {
        let local = local?;
        self.listeners
            .iter()
            .find(|l| l.address == local)
            .or_else(|| {
                self.listeners.iter().find(|l| {
                    l.address.ip().is_unspecified()
                        && l.address.port() == local.port()
                        && l.address.is_ipv4() == local.is_ipv4()
                })
            })
    }

    /// The client address of a request from `peer` on the listener at `local` (looked up only
    /// when some listener trusts a proxy), believing the forwarding header only from that
    /// listener's trusted proxies; and whether `peer` is one of them.
    pub fn client_address(
        &self,
        local: impl FnOnce() -> Option<SocketAddr>,
        peer: IpAddr,
        headers: &http::HeaderMap,
    ) -> (IpAddr, bool) {
        if !self.any_trusted {
            return (peer.to_canonical(), false);
        }
        match self.listener(local()) {
            Some(l) if !l.trusted.is_empty() => {
                let trusted = l.trusted.contains(peer);
                let ip = client::client_address(peer, &l.trusted, l.forwarded_header, headers);
                (ip, trusted)
            }
            _ => (peer.to_canonical(), false),
        }
    }

    /// Count a connection or request refused at the door.
    fn count_refusal(&self, reason: &'static str) {
        self.metrics.front_door_refusal(reason);
    }

    /// Read the PROXY header of a connection on a listener that expects one; false when the
    /// connection must be closed.
    async fn read_proxy_header(&self, stream: &mut L4Stream, door: &ListenerDoor) -> bool {
        let (_, peer) = addresses(&*stream);
        if !door.trusted.is_empty() && !peer.is_some_and(|p| door.trusted.contains(p.ip())) {
            // Only the configured balancers may say who the client is.
            self.count_refusal("proxy_protocol_untrusted");
            return false;
        }
        let deadline = Instant::now() + self.limits.header_timeout;
        match proxy_protocol::read(stream, deadline).await {
            Ok(Some(source)) => {
                proxy_protocol::set_peer(stream, source);
                true
            }
            Ok(None) => true,
            Err(e) => {
                log::debug!("connection from {peer:?} refused: {}", e.reason());
                self.count_refusal(e.reason());
                false
            }
        }
    }

    /// Admit a new connection: read its PROXY header (plain listeners; TLS listeners read it
    /// before the handshake, see [`FrontDoor::pre_tls`]) and count it against its address's
    /// cap. `None`: close it.
    pub async fn admit(&self, mut stream: Stream) -> Option<(Stream, Option<per_ip::Slot>)> {
        let (local, _) = addresses(&*stream);
        let Some(door) = self.listener(local) else {
            return Some((stream, None));
        };
        if door.proxy_protocol && stream.get_ssl_digest().is_none() {
            let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
            if !self.read_proxy_header(&mut l4, door).await {
                return None;
            }
            stream = l4;
        }
        let slot = match door.max_connections_per_ip {
            Some(max) => {
                let (_, peer) = addresses(&*stream);
                let ip = peer?.ip().to_canonical();
                match self.per_ip.acquire(ip, max) {
                    Some(slot) => Some(slot),
                    None => {
                        self.count_refusal("per_ip_connections");
                        return None;
                    }
                }
            }
            None => None,
        };
        Some((stream, slot))
    }

    /// An HTTP/2 connection, once its client has sent the 24-byte connection preface within
    /// `client_header_timeout` of the connect (Pingora's HTTP/2 handshake waits for it without a
    /// bound); `None` when it did not. A cleartext connection's preface was already awaited
    /// (peeked) when its protocol was told; over TLS it is read here and handed on first.
    pub async fn http2_preface(&self, stream: Stream, accepted: Instant) -> Option<Stream> {
        if stream.get_ssl_digest().is_none() {
            return Some(stream);
        }
        let mut stream = stream;
        let mut preface = [0u8; 24];
        let mut have = 0;
        let deadline = accepted + self.limits.header_timeout;
        while have < preface.len() {
            let read = tokio::time::timeout_at(deadline, stream.read(&mut preface[have..]));
            match read.await {
                Ok(Ok(n)) if n > 0 => have += n,
                _ => return None,
            }
        }
        let conn: Stream = Conn::passthrough(stream, &preface, self.limits.clone());
        Some(conn)
    }

    /// The callback that reads PROXY headers before the TLS handshake on TLS listeners.
    pub fn pre_tls(self: &Arc<Self>) -> Arc<dyn PreTlsProcess> {
        Arc::new(PreTls(self.clone()))
    }

    /// How slowly a request may be read.
    pub fn read_limits(&self) -> Arc<ReadLimits> {
        self.limits.clone()
    }

    /// How long a request head may take (`client_header_timeout`).
    pub fn header_timeout(&self) -> Duration {
        self.limits.header_timeout
    }

    /// The largest request head the current configuration accepts.
    pub fn max_head(&self) -> usize {
        self.state.load().max_request_header_size
    }

    /// Answer a request refused at the door, count and log it, and close the connection.
    pub async fn refuse(
        &self,
        conn: &mut Conn,
        status: u16,
        reason: &'static str,
        started: std::time::Instant,
    ) {
        self.count_refusal(reason);
        let mut buf = [0u8; crate::wire::REQUEST_ID_LEN];
        let request_id = crate::wire::new_request_id(&mut buf).to_string();
        let (method, target) = conn.request_line();
        self.metrics.record_request(
            None,
            method.as_ref().map_or("OTHER", method_label),
            status,
            started.elapsed().as_secs_f64(),
        );
        let response = refusal_response(status, &request_id);
        conn.answer_and_close(&response).await;
        let Some(log) = &self.access_log else {
            return;
        };
        let (_, peer) = addresses(&*conn);
        let tls = conn.get_ssl_digest();
        let duration = started.elapsed();
        log.write(&Entry {
            time: std::time::SystemTime::now() - duration,
            request_id: request_id.as_bytes(),
            client_ip: peer.map(|p| p.ip().to_canonical()),
            method: method.as_ref(),
            protocol: "HTTP/1.1",
            text: RequestText {
                path: &target,
                ..RequestText::default()
            },
            status,
            bytes_received: 0,
            bytes_sent: response.len() as u64,
            body_bytes_sent: 0,
            duration,
            route: None,
            upstream: None,
            tried: &[],
            upstream_status: None,
            upstream_connect: None,
            upstream_response: None,
            tls_version: tls.as_deref().map(crate::tls::version),
            tls_server_name: tls.as_deref().and_then(crate::tls::server_name),
            trace_id: None,
            span_id: None,
            consumer: None,
            cache_status: None,
            error: Some(reason),
        });
    }
}

/// A complete HTTP/1.1 answer for a refusal at the door: the problem details body, the request
/// id, and `Connection: close`. (No `instance`: the request could not be read.)
pub fn refusal_response(status: u16, request_id: &str) -> Vec<u8> {
    let body = crate::errors::body(status, request_id, None);
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/problem+json\r\nContent-Length: {}\r\nX-Request-Id: {request_id}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Reads PROXY headers before the TLS handshake, on the TLS listeners that expect them.
struct PreTls(Arc<FrontDoor>);

#[async_trait]
impl PreTlsProcess for PreTls {
    async fn process(&self, stream: &mut L4Stream) -> pingora_error::Result<()> {
        let (local, _) = addresses(&*stream);
        let Some(door) = self.0.listener(local) else {
            return Ok(());
        };
        if !door.proxy_protocol || self.0.read_proxy_header(stream, door).await {
            return Ok(());
        }
        pingora_error::Error::e_explain(
            pingora_error::ErrorType::AcceptError,
            "no valid PROXY protocol header",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_complete_http() {
        let r = refusal_response(400, "id-7");
        let text = String::from_utf8(r).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains("\r\nX-Request-Id: id-7"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 400);
        assert_eq!(v["request_id"], "id-7");
    }
}
