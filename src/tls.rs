//! TLS termination on listeners (Pingora's rustls backend): certificates chosen by SNI, with the
//! first certificate as the default for clients that send no (or an unknown) name, and client
//! certificates ([`client_auth`]).

pub mod client_auth;

pub use client_auth::{ClientCert, ClientVerifier};

use crate::config::Listener;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{
    ClientCertVerifier, ClientHello, CryptoProvider, ResolvesServerCert, UnixTime,
};
use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// What the handshake established, kept with the connection's TLS digest: the SNI name the
/// client sent (lower-cased) and its verified certificate.
#[derive(Debug)]
struct ConnectionFacts {
    server_name: Option<Arc<str>>,
    client: Option<ClientCert>,
    /// The client sent a certificate that the listener's current CA does not accept (a session
    /// resumed after a reload, or past the certificate's expiry).
    refused: bool,
    verifier: Arc<ClientVerifier>,
}

/// Keeps each connection's SNI name and verified client certificate in its TLS digest once
/// the handshake is done (read once per connection, not per request).
struct KeepConnectionFacts(Arc<ClientVerifier>);

#[async_trait]
impl TlsAccept for KeepConnectionFacts {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        // A resumed TLS session skips certificate verification and brings back the chain of
        // the handshake that made it: verified again here, against the CA in force now.
        let mut refused = false;
        let client = match tls.peer_cert_chain_der() {
            Some([leaf, intermediates @ ..]) => {
                match self
                    .0
                    .verify_client_cert(leaf, intermediates, UnixTime::now())
                {
                    Ok(_) => ClientCert::parse(leaf.as_ref()),
                    Err(_) => {
                        refused = true;
                        None
                    }
                }
            }
            _ => None,
        };
        Some(Arc::new(ConnectionFacts {
            server_name: tls.server_name().map(|n| Arc::from(n.to_ascii_lowercase())),
            client,
            refused,
            verifier: self.0.clone(),
        }))
    }
}

/// Whether the listener refuses this connection's requests: its certificate is no longer
/// accepted, or it has none where one is now required (both only on resumed sessions; a full
/// handshake already refused them).
pub fn refuses_client(digest: &SslDigest) -> bool {
    digest
        .extension
        .get::<ConnectionFacts>()
        .is_some_and(|f| f.refused || (f.client.is_none() && f.verifier.client_auth_mandatory()))
}

/// The connection's TLS version as OpenSSL and nginx's `$ssl_protocol` name it (`TLSv1.3`;
/// rustls names it `TLSv1_3`).
pub fn version(digest: &SslDigest) -> Cow<'static, str> {
    match digest.version.as_ref() {
        "TLSv1_3" => Cow::Borrowed("TLSv1.3"),
        "TLSv1_2" => Cow::Borrowed("TLSv1.2"),
        _ => digest.version.clone(),
    }
}

/// The SNI name the client sent on this TLS connection, if it sent one.
pub fn server_name(digest: &SslDigest) -> Option<&str> {
    digest
        .extension
        .get::<ConnectionFacts>()
        .and_then(|f| f.server_name.as_deref())
}

/// The client's verified certificate on this TLS connection, if it sent one.
pub fn client_cert(digest: &SslDigest) -> Option<&ClientCert> {
    digest
        .extension
        .get::<ConnectionFacts>()
        .and_then(|f| f.client.as_ref())
}

/// Chooses a certificate by the client's SNI name: exact names, then `*.` wildcards, then the
/// first certificate.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.org` stored as `example.org`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(c) = self.wildcard.get(parent) {
                return Some(c.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// Load a listener's certificates into a resolver.
pub fn resolver(listener: &Listener) -> Result<SniResolver, String> {
    pingora_rustls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider")?;
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for c in &listener.tls {
        let (certs, key) = pingora_rustls::load_certs_and_key_files(&c.cert, &c.key)
            .map_err(|e| format!("{}: {e}", c.cert))?
            .ok_or_else(|| format!("no certificate in {} or no key in {}", c.cert, c.key))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("{}: unusable private key: {e}", c.key))?;
        let ck = Arc::new(CertifiedKey::new(certs, signing));
        for n in &c.names {
            match n.strip_prefix("*.") {
                Some(parent) => {
                    wildcard
                        .entry(parent.to_string())
                        .or_insert_with(|| ck.clone());
                }
                None => {
                    exact.entry(n.clone()).or_insert_with(|| ck.clone());
                }
            }
        }
        default.get_or_insert(ck);
    }
    Ok(SniResolver {
        exact,
        wildcard,
        default: default.ok_or("no certificate")?,
    })
}

/// A listener's certificates, replaced in one step when the configuration is reloaded: new
/// handshakes use the new ones, connections already made keep theirs.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<SniResolver>,
    clients: Arc<ClientVerifier>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().resolve(hello)
    }
}

impl Certificates {
    /// Load `listener`'s certificates again (their files may have been renewed in place, or
    /// the configuration names others); on failure the ones in use stay.
    pub fn reload(&self, listener: &Listener) -> Result<(), String> {
        let next = resolver(listener)?;
        self.clients.set(listener.client_auth.as_ref())?;
        self.current.store(Arc::new(next));
        Ok(())
    }
}

/// Pingora TLS settings for a listener: SNI certificates and the client-certificate verifier
/// (returned too, to be reloaded), the SNI name and client certificate kept with each
/// connection, and HTTP/2 through ALPN when enabled.
pub fn settings(listener: &Listener) -> Result<(TlsSettings, Arc<Certificates>), String> {
    let current = ArcSwap::from_pointee(resolver(listener)?);
    let clients = Arc::new(ClientVerifier::new(listener.client_auth.as_ref())?);
    let mut s = TlsSettings::with_callbacks(Box::new(KeepConnectionFacts(clients.clone())))
        .map_err(|e| e.to_string())?;
    let certificates = Arc::new(Certificates { current, clients });
    s.set_cert_resolver(certificates.clone());
    s.set_client_cert_verifier(certificates.clients.clone());
    if listener.http2 {
        s.enable_h2();
    }
    Ok((s, certificates))
}
