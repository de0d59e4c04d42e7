//! The traffic listeners: addresses, TLS certificates (checked and their names read now),
//! HTTP/2, HTTPS redirects, and the front-door settings of each (trusted proxies, the
//! forwarding header, PROXY protocol, the per-address connection cap).

use super::super::raw::{RawForwardedHeader, RawListener};
use super::super::{Certificate, ClientAuth, ForwardedHeader, Listener};
use super::{index_path, Validator};
use serde_yaml::Value;
use std::net::SocketAddr;

/// A listener's front-door settings, validated.
struct ListenerFront {
    trusted_proxies: Vec<ipnet::IpNet>,
    forwarded_header: ForwardedHeader,
    proxy_protocol: bool,
    max_connections_per_ip: Option<u32>,
}

impl Validator<'_> {
    pub(super) fn listeners(&mut self, value: Option<Value>) -> Vec<Listener> {
        let items = self.sequence("listeners", value, true);
        let mut out: Vec<Listener> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let base = index_path("listeners", i);
            let Some(raw) = self.item::<RawListener>(&base, item) else {
                continue;
            };
            let front = self.listener_front(&base, &raw);
            let mut tls = Vec::new();
            let mut client_auth = None;
            if let Some(t) = raw.tls {
                client_auth = t.client_auth.and_then(|c| {
                    let ca =
                        self.ca_bundle(&format!("{base}.tls.client_auth.ca_file"), &c.ca_file)?;
                    Some(ClientAuth {
                        ca,
                        required: c.required.unwrap_or(true),
                    })
                });
                let mut pairs: Vec<(String, String)> = Vec::new();
                match (t.cert, t.key) {
                    (Some(c), Some(k)) => pairs.push((c, k)),
                    (None, None) => {}
                    _ => self.error(format!("{base}.tls"), "give both cert and key"),
                }
                for p in t.certificates.unwrap_or_default() {
                    pairs.push((p.cert, p.key));
                }
                if pairs.is_empty() {
                    self.error(format!("{base}.tls"), "needs cert and key, or certificates");
                }
                for (j, (cert, key)) in pairs.into_iter().enumerate() {
                    let cert = self.loader.path(&cert).to_string_lossy().into_owned();
                    let key = self.loader.path(&key).to_string_lossy().into_owned();
                    match self.tls_names(&cert, &key) {
                        Ok(names) => tls.push(Certificate { cert, key, names }),
                        Err(m) => self.error(format!("{base}.tls.certificates[{j}]"), m),
                    }
                }
            }
            if raw.redirect_https.is_some() && !tls.is_empty() {
                self.error(
                    format!("{base}.redirect_https"),
                    "a TLS listener cannot redirect to HTTPS",
                );
            }
            match raw.address.parse::<SocketAddr>() {
                Ok(address) => {
                    if out.iter().any(|l| l.address == address) {
                        self.error(
                            format!("{base}.address"),
                            format!("{address} is listed twice"),
                        );
                    }
                    out.push(Listener {
                        address,
                        // TLS listeners offer HTTP/2 through ALPN unless told not to; plain
                        // ones accept cleartext HTTP/2 (h2c, prior knowledge) only when asked.
                        http2: raw.http2.unwrap_or(!tls.is_empty()),
                        tls,
                        redirect_https: raw.redirect_https,
                        trusted_proxies: front.trusted_proxies,
                        forwarded_header: front.forwarded_header,
                        proxy_protocol: front.proxy_protocol,
                        max_connections_per_ip: front.max_connections_per_ip,
                        client_auth,
                    });
                }
                Err(_) => self.error(
                    format!("{base}.address"),
                    format!(
                        "\"{}\" is not an IP address and port such as 0.0.0.0:8080 or [::]:8080",
                        raw.address
                    ),
                ),
            }
        }
        out
    }

    fn listener_front(&mut self, base: &str, raw: &RawListener) -> ListenerFront {
        let trusted_proxies = self.cidrs(
            &format!("{base}.trusted_proxies"),
            raw.trusted_proxies.clone().unwrap_or_default(),
        );
        if raw.forwarded_header.is_some() && trusted_proxies.is_empty() {
            self.warn(
                format!("{base}.forwarded_header"),
                "has no effect without trusted_proxies: no forwarding header is believed",
            );
        }
        let max_connections_per_ip = raw.max_connections_per_ip;
        if max_connections_per_ip == Some(0) {
            self.error(
                format!("{base}.max_connections_per_ip"),
                "must be at least 1 (leave it out for no limit)",
            );
        }
        ListenerFront {
            trusted_proxies,
            forwarded_header: match raw.forwarded_header {
                None | Some(RawForwardedHeader::XForwardedFor) => ForwardedHeader::XForwardedFor,
                Some(RawForwardedHeader::Forwarded) => ForwardedHeader::Forwarded,
            },
            proxy_protocol: raw.proxy_protocol.unwrap_or(false),
            max_connections_per_ip,
        }
    }

    /// Check a certificate and key pair as the listener will load them (every PEM section
    /// must read; the first PKCS#1, PKCS#8 or SEC1 key is the key) and return the DNS names the
    /// certificate is for.
    fn tls_names(&self, cert: &str, key: &str) -> Result<Vec<String>, String> {
        use rustls_pki_types::pem::{self, PemObject, SectionKind};
        use rustls_pki_types::CertificateDer;
        let read = |p: &str| -> Result<Vec<u8>, String> {
            self.loader
                .read(std::path::Path::new(p))
                .map_err(|e| format!("cannot read {cert} or {key}: {e}"))
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let broken = |p: &str, e: pem::Error| {
            format!("cannot read {cert} or {key}: a PEM section of {p} cannot be read ({e})")
        };
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| broken(cert, e))?;
        let mut has_key = false;
        for section in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(&key_pem) {
            let (kind, _) = section.map_err(|e| broken(key, e))?;
            has_key |= matches!(
                kind,
                SectionKind::RsaPrivateKey | SectionKind::PrivateKey | SectionKind::EcPrivateKey
            );
        }
        let Some(leaf) = certs.first().filter(|_| has_key) else {
            return Err(format!("no certificate in {cert} or no key in {key}"));
        };
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| format!("{cert} is not a valid X.509 certificate: {e}"))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push(d.to_ascii_lowercase());
                }
            }
        }
        if names.is_empty() {
            return Err(format!(
                "{cert} names no DNS host (subject alternative names)"
            ));
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::loader::Fixed;
    use super::super::testing::*;
    use crate::config::ForwardedHeader;

    fn errors(text: &str) -> Vec<String> {
        errors_with(text, &Fixed::default())
    }

    #[test]
    fn listener_settings() {
        let c = crate::config::parse(&format!(
            "listeners:\n  - {{address: 127.0.0.1:1, trusted_proxies: [10.0.0.0/8, 192.0.2.7], forwarded_header: forwarded, proxy_protocol: true, max_connections_per_ip: 50}}\n{POOL}{ROUTE}"
        ))
        .expect("valid");
        let l = &c.process.listeners[0];
        assert_eq!(l.trusted_proxies.len(), 2);
        assert_eq!(l.forwarded_header, ForwardedHeader::Forwarded);
        assert!(l.proxy_protocol);
        assert_eq!(l.max_connections_per_ip, Some(50));
        let e = errors(&format!(
            "listeners:\n  - {{address: 127.0.0.1:1, trusted_proxies: [10.0.0.0/33, nope], max_connections_per_ip: 0}}\n  - {{address: 127.0.0.1:2, forwarded_header: x-real-ip, proxy_protocol: maybe}}\n{POOL}{ROUTE}"
        ));
        for place in [
            "listeners[0].trusted_proxies[0]:",
            "listeners[0].trusted_proxies[1]:",
            "listeners[0].max_connections_per_ip:",
            "listeners[1].forwarded_header:",
            "listeners[1].proxy_protocol:",
        ] {
            assert!(e.iter().any(|m| m.starts_with(place)), "{place} in {e:?}");
        }
        let c = crate::config::parse(&format!(
            "listeners: [{{address: 127.0.0.1:1, forwarded_header: forwarded}}]\n{POOL}{ROUTE}"
        ))
        .expect("valid");
        assert!(c.warnings[0]
            .to_string()
            .starts_with("listeners[0].forwarded_header:"));
    }

    /// A machine holding a certificate for `names` and its key.
    fn with_certificate(names: &[&str]) -> Fixed {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).expect("certificate");
        Fixed::default()
            .file("cert.pem", c.cert.pem())
            .file("key.pem", c.key_pair.serialize_pem())
            .file("junk.pem", "not a certificate")
            .file(
                "broken.pem",
                "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
            )
    }

    #[test]
    fn certificates_are_read_and_their_names_kept() {
        let machine = with_certificate(&["api.test", "*.example.org"]);
        let c = load_with(
            &format!("listeners:\n  - {{address: 127.0.0.1:1, tls: {{cert: cert.pem, key: key.pem}}}}\n{POOL}{ROUTE}"),
            &machine,
        );
        let l = &c.process.listeners[0];
        assert_eq!(l.tls[0].names, vec!["api.test", "*.example.org"]);
        assert_eq!(l.tls[0].cert, "/conf/cert.pem");
        // TLS listeners offer HTTP/2 unless told not to.
        assert!(l.http2);
        let e = errors_with(
            &format!("listeners:\n  - {{address: 127.0.0.1:1, tls: {{cert: missing.pem, key: key.pem}}}}\n  - {{address: 127.0.0.1:2, tls: {{cert: junk.pem, key: key.pem}}}}\n  - {{address: 127.0.0.1:3, tls: {{cert: cert.pem}}}}\n  - {{address: 127.0.0.1:4, tls: {{cert: cert.pem, key: key.pem}}, redirect_https: 443}}\n  - {{address: 127.0.0.1:5, tls: {{cert: broken.pem, key: key.pem}}}}\n{POOL}{ROUTE}"),
            &machine,
        );
        assert_reported(
            &e,
            &[
                "listeners[0].tls.certificates[0]: cannot read /conf/missing.pem",
                "listeners[1].tls.certificates[0]: no certificate in /conf/junk.pem",
                "listeners[2].tls: give both cert and key",
                "listeners[3].redirect_https: a TLS listener cannot redirect to HTTPS",
                "listeners[4].tls.certificates[0]: cannot read /conf/broken.pem or /conf/key.pem: a PEM section",
            ],
        );
    }

    #[test]
    fn addresses_are_ip_and_port_and_listed_once() {
        let e = errors(&format!(
            "listeners:\n  - {{address: localhost:80}}\n  - {{address: 127.0.0.1:5}}\n  - {{address: 127.0.0.1:5}}\n{POOL}{ROUTE}"
        ));
        assert_reported(
            &e,
            &[
                "listeners[0].address: \"localhost:80\" is not an IP address and port",
                "listeners[2].address: 127.0.0.1:5 is listed twice",
            ],
        );
    }
}
