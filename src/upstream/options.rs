//! What a pool's peers are reached with, the same for requests and health checks: the HTTP
//! version(s), and over TLS the CA to verify against and the client certificate to present.

use crate::config::{Protocol, Upstream};
use crate::fetch::ca_type;
use std::sync::Arc;

pub(crate) fn ca_of(up: &Upstream) -> Option<Arc<pingora_core::protocols::tls::CaType>> {
    Some(ca_type(up.tls.as_ref()?.ca.as_ref()?))
}

/// The client certificate a pool presents to its TLS peers, when configured.
pub(crate) fn client_cert_of(up: &Upstream) -> Option<Arc<pingora_core::utils::tls::CertKey>> {
    let (chain, key) = up.tls.as_ref()?.client_cert.as_ref()?;
    Some(Arc::new(pingora_core::utils::tls::CertKey::new(
        chain.clone(),
        key.clone(),
    )))
}

/// Concurrent requests one HTTP/2 connection to a peer carries before another is opened.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// Set what a pool's peers speak on a peer's options: the HTTP version(s) and, over TLS,
/// verification against the pool's CA (the same for requests and health checks).
pub(crate) fn apply_peer_options(
    up: &Upstream,
    ca: &Option<Arc<pingora_core::protocols::tls::CaType>>,
    o: &mut pingora_core::upstreams::peer::PeerOptions,
) {
    apply_protocol(up.protocol, o);
    if let Some(t) = &up.tls {
        o.verify_cert = t.verify;
        o.verify_hostname = t.verify;
        o.ca = ca.clone();
    }
}

/// Set the HTTP version(s) a pool speaks on a peer's options.
fn apply_protocol(protocol: Protocol, o: &mut pingora_core::upstreams::peer::PeerOptions) {
    match protocol {
        Protocol::Http1 => o.set_http_version(1, 1),
        Protocol::H2 => o.set_http_version(2, 2),
        Protocol::Auto => o.set_http_version(2, 1),
    }
    if protocol != Protocol::Http1 {
        o.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
}
