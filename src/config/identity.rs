//! The checked model of who callers are: authentication methods, JWT issuers and their keys,
//! consumers and the names their client certificates carry.

use std::fmt;
use std::time::Duration;

/// A way a caller proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A key in `X-API-Key` (or the configured header) or `Authorization: Bearer`.
    ApiKey,
    /// `Authorization: Basic` checked against a bcrypt hash.
    Basic,
    /// `Authorization: Bearer <JWT>` from a configured issuer.
    Jwt,
    /// A client certificate verified on the TLS connection, mapped to a consumer.
    Mtls,
}

/// A JWT issuer and the keys that verify its tokens.
#[derive(Clone)]
pub struct JwtIssuer {
    pub issuer: String,
    pub keys: Vec<JwtKey>,
    /// The algorithms tokens may be signed with.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// Accepted `aud` values; empty means `aud` is not checked.
    pub audience: Vec<String>,
    /// The claim naming the consumer (`sub` by default).
    pub consumer_claim: String,
    /// The claim listing groups, if any.
    pub groups_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Where the keys are fetched from, when they are not in the file (`keys` is then empty).
    pub remote: Option<RemoteJwks>,
}

/// A JWKS fetched over HTTPS, directly or through an OpenID Connect discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// The JWKS document's URL, or the discovery document's when `discovery` is set.
    pub url: http::Uri,
    pub discovery: bool,
    /// Trust these CA certificates (DER) instead of the system's.
    pub ca: Option<Vec<Vec<u8>>>,
    /// Bounds on the time between fetches (the answer's `Cache-Control: max-age` within them;
    /// `max` without one); `min` also spaces fetches forced by unknown key ids and retries.
    pub refresh_min: Duration,
    pub refresh_max: Duration,
    /// Connect, write and read timeout of one fetch.
    pub timeout: Duration,
}

impl fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("JwtIssuer")
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// One verification key of an issuer.
#[derive(Clone)]
pub struct JwtKey {
    /// The JWKS `kid`, when the key came from a JWKS document.
    pub kid: Option<String>,
    pub key: jsonwebtoken::DecodingKey,
    /// The configured algorithms that fit this key's type.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
}

/// A known caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    pub groups: Vec<String>,
    /// SHA-256 digests of the consumer's API keys (keys given in clear are hashed at load).
    pub api_key_digests: Vec<[u8; 32]>,
    /// Basic-auth user name and bcrypt hash.
    pub basic_auth: Option<(String, String)>,
    /// Names of client certificates that identify the consumer.
    pub client_certs: Vec<CertIdentity>,
    /// The usage plan (index into [`super::Routing::plans`]) whose quotas the consumer uses.
    pub plan: Option<usize>,
}

/// A distinguished name as certificates are matched on: its RDNs (and the parts of a
/// multi-valued one, `+`) without spaces around them, attribute types in lower case
/// (`CN = alice, O=Acme` → `cn=alice,o=Acme`).
pub fn normalize_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut part = String::new();
    let mut escaped = false;
    let push = |part: &str, out: &mut String| {
        let part = part.trim();
        match part.split_once('=') {
            Some((t, v)) => {
                out.push_str(&t.trim().to_ascii_lowercase());
                out.push('=');
                out.push_str(v.trim());
            }
            None => out.push_str(part),
        }
    };
    for c in dn.chars() {
        if (c == ',' || c == '+') && !escaped {
            push(&part, &mut out);
            out.push(c);
            part.clear();
        } else {
            part.push(c);
        }
        escaped = c == '\\' && !escaped;
    }
    push(&part, &mut out);
    out
}

/// A name a verified client certificate carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertIdentity {
    /// The whole subject, RFC 4514 form (`CN=alice,O=Acme`).
    Subject(String),
    /// The subject's common name.
    CommonName(String),
    /// A DNS name among the subject alternative names (lower case).
    Dns(String),
    /// A URI among the subject alternative names (a SPIFFE id, say).
    Uri(String),
    /// An e-mail address among the subject alternative names.
    Email(String),
}
