//! Client certificates on TLS listeners (mutual TLS): the verifier, swapped in place when the
//! configuration is reloaded, and what a verified certificate says about its holder — its
//! subject and subject alternative names, and the `X-Forwarded-Client-Cert` value sent upstream.

use crate::config::ClientAuth;
use arc_swap::ArcSwapOption;
use http::HeaderValue;
use pingora_rustls::{
    CertificateDer, ClientCertVerified, ClientCertVerifier, CryptoProvider, DigitallySignedStruct,
    RootCertStore, SignatureScheme, UnixTime, WebPkiClientVerifier,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::DistinguishedName;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

/// A listener's client-certificate verifier. Without `client_auth` it asks for no certificate;
/// with it, it verifies against the configured CA (required or optional). The CA and the mode
/// are replaced in one step by a reload; handshakes already done keep their result.
#[derive(Debug)]
pub struct ClientVerifier {
    current: ArcSwapOption<(Arc<dyn ClientCertVerifier>, bool)>,
    provider: Arc<CryptoProvider>,
}

impl ClientVerifier {
    /// The verifier for `auth` (none: no certificates asked for).
    pub fn new(auth: Option<&ClientAuth>) -> Result<ClientVerifier, String> {
        let provider = CryptoProvider::get_default()
            .cloned()
            .ok_or("no TLS crypto provider")?;
        let v = ClientVerifier {
            current: ArcSwapOption::empty(),
            provider,
        };
        v.set(auth)?;
        Ok(v)
    }

    /// Verify against `auth` from now on; on failure the verifier in use stays.
    pub fn set(&self, auth: Option<&ClientAuth>) -> Result<(), String> {
        let Some(auth) = auth else {
            self.current.store(None);
            return Ok(());
        };
        let mut roots = RootCertStore::empty();
        for der in &auth.ca {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("client_auth.ca_file: unusable CA certificate: {e}"))?;
        }
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone());
        let builder = if auth.required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        let verifier = builder.build().map_err(|e| format!("client_auth: {e}"))?;
        self.current
            .store(Some(Arc::new((verifier, auth.required))));
        Ok(())
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.current.load().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current.load().as_ref().is_some_and(|c| c.1)
    }

    /// No CA names are hinted (the CA can change under a running listener); clients offer the
    /// certificate they are configured with.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.current.load().as_ref() {
            Some(c) => c.0.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General(
                "no client certificate was asked for".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a verified client certificate says about its holder.
#[derive(Debug)]
pub struct ClientCert {
    /// The subject, RFC 4514 form (`CN=alice,O=Acme`), as `openssl x509 -subject -nameopt
    /// RFC2253` prints it.
    pub subject: String,
    /// The subject as configured names are matched on ([`crate::config::normalize_dn`]).
    pub subject_key: String,
    pub common_name: Option<String>,
    /// Subject alternative names.
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
    /// The `X-Forwarded-Client-Cert` value: `Hash=<sha256>;Subject="...";URI=...;DNS=...`.
    pub forwarded: HeaderValue,
}

impl ClientCert {
    /// Read the leaf certificate (DER) the handshake verified.
    pub fn parse(der: &[u8]) -> Option<ClientCert> {
        use sha2::Digest;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut rdns = Vec::new();
        let mut common_name = None;
        for rdn in cert.subject().iter_rdn() {
            let mut parts = Vec::new();
            for attr in rdn.iter() {
                let name = match x509_parser::objects::oid2abbrev(
                    attr.attr_type(),
                    x509_parser::objects::oid_registry(),
                ) {
                    Ok("Email") => "emailAddress".to_string(),
                    Ok(n) => n.to_string(),
                    Err(_) => attr.attr_type().to_id_string(),
                };
                let value = match attr.as_str() {
                    Ok(v) => {
                        if name == "CN" && common_name.is_none() {
                            common_name = Some(v.to_string());
                        }
                        escape_dn_value(v)
                    }
                    Err(_) => format!("#{}", hex::encode(attr.as_slice())),
                };
                parts.push(format!("{name}={value}"));
            }
            rdns.push(parts.join("+"));
        }
        // RFC 4514 writes the last RDN of the sequence first.
        rdns.reverse();
        let subject = rdns.join(",");
        let (mut dns, mut uris, mut emails) = (Vec::new(), Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    GeneralName::RFC822Name(e) => emails.push(e.to_string()),
                    _ => {}
                }
            }
        }
        let mut xfcc = format!("Hash={}", hex::encode(sha2::Sha256::digest(der)));
        xfcc.push_str(";Subject=\"");
        xfcc.push_str(&subject.replace('\\', "\\\\").replace('"', "\\\""));
        xfcc.push('"');
        for (key, values) in [("URI", &uris), ("DNS", &dns)] {
            for v in values.iter() {
                xfcc.push(';');
                xfcc.push_str(key);
                xfcc.push('=');
                xfcc.push_str(&quote_if_needed(v));
            }
        }
        // A name with bytes a header cannot carry leaves only the digest.
        let forwarded = HeaderValue::from_str(&xfcc).unwrap_or_else(|_| {
            HeaderValue::from_str(&format!("Hash={}", hex::encode(sha2::Sha256::digest(der))))
                .unwrap_or_else(|_| HeaderValue::from_static(""))
        });
        Some(ClientCert {
            subject_key: crate::config::normalize_dn(&subject),
            subject,
            common_name,
            dns,
            uris,
            emails,
            forwarded,
        })
    }
}

/// An attribute value escaped as RFC 4514 section 2.4 asks.
fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An `X-Forwarded-Client-Cert` value, quoted when it holds a separator.
fn quote_if_needed(v: &str) -> String {
    if v.contains([',', ';', '=', '"']) {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_and_names_of_a_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["Svc.Example.org".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::Ia5String::try_from("spiffe://acme/ns/prod/sa/billing").unwrap(),
        ));
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            rcgen::Ia5String::try_from("alice@acme.example").unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let c = ClientCert::parse(cert.der()).unwrap();
        assert_eq!(c.subject, "CN=alice,O=Acme\\, Inc.");
        assert_eq!(c.common_name.as_deref(), Some("alice"));
        assert_eq!(c.dns, vec!["svc.example.org"]);
        assert_eq!(c.uris, vec!["spiffe://acme/ns/prod/sa/billing"]);
        assert_eq!(c.emails, vec!["alice@acme.example"]);
        let xfcc = c.forwarded.to_str().unwrap();
        assert!(xfcc.starts_with("Hash="), "{xfcc}");
        assert!(
            xfcc.ends_with(";Subject=\"CN=alice,O=Acme\\\\, Inc.\";URI=spiffe://acme/ns/prod/sa/billing;DNS=svc.example.org"),
            "{xfcc}"
        );
        assert!(ClientCert::parse(b"not a certificate").is_none());
    }

    #[test]
    fn values_escaped_as_rfc_4514_asks() {
        assert_eq!(escape_dn_value("a+b"), "a\\+b");
        assert_eq!(escape_dn_value("#x "), "\\#x\\ ");
        assert_eq!(
            crate::config::normalize_dn(" CN = alice + UID=7, o=Acme\\, Inc., emailAddress=a@b"),
            "cn=alice+uid=7,o=Acme\\, Inc.,emailaddress=a@b"
        );
        assert_eq!(crate::config::normalize_dn(""), "");
    }
}
