//! Who may call a route: IP rules, authentication (API keys, basic auth, JWT, client
//! certificates) and authorization
//! (groups, consumers). Compiled from the configuration into small lookup structures;
//! [`Policies::check`] returns a [`Decision`] and the proxy writes the answer.

mod basic;
pub mod cors;
pub mod forward_auth;
pub mod jwks;
mod jwt;
pub mod limits;

use crate::config::{AuthMethod, CertIdentity, Route, Routing};
use crate::tls::ClientCert;
use crate::wire::key_digest;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Index of a consumer in the configuration.
pub type ConsumerId = usize;

/// A consumer as the request path needs it.
#[derive(Debug)]
pub struct ConsumerInfo {
    pub name: Arc<str>,
    pub groups: Vec<String>,
    /// Precomputed header values for `X-Consumer` and `X-Consumer-Groups`.
    pub name_header: HeaderValue,
    pub groups_header: Option<HeaderValue>,
}

/// Who an authenticated caller is.
#[derive(Debug, PartialEq, Eq)]
pub enum Identity {
    /// A consumer of the configuration (API key, basic auth).
    Consumer(ConsumerId),
    /// The subject of a verified token; it may or may not name a configured consumer.
    Token(Box<TokenIdentity>),
}

/// What a verified token says about its bearer.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The configured consumer the token names, if any.
    pub consumer: Option<ConsumerId>,
    /// The bearer's name as logged: the `X-Consumer` value, when it is text.
    pub name_text: Option<Arc<str>>,
    pub name: HeaderValue,
    /// The consumer's groups and the token's own.
    pub groups: Vec<String>,
    pub groups_header: Option<HeaderValue>,
}

/// The outcome of the policy checks for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on; who the caller is when it authenticated.
    Allow(Option<Identity>),
    /// Missing or invalid credentials: 401 with the route's `WWW-Authenticate` challenges.
    Unauthorized,
    /// Known but not allowed (IP, group or consumer rule): 403.
    Forbidden,
}

/// Who may call one route: its IP rules, the authentication methods it accepts and the
/// consumers and groups it admits, compiled from the route's configuration.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Client addresses allowed (empty: any).
    ip_allow: Vec<ipnet::IpNet>,
    /// Client addresses refused.
    ip_deny: Vec<ipnet::IpNet>,
    /// Accepted authentication methods; empty means a public route.
    auth: Vec<AuthMethod>,
    /// Consumers in one of these groups may call (empty: no group rule).
    allow_groups: Vec<String>,
    /// These consumers may call (empty: no consumer rule).
    allow_consumers: Vec<ConsumerId>,
}

impl Access {
    /// Whether the route's IP rules admit `client` (`ip_deny` first, then `ip_allow`).
    pub fn address_allowed(&self, client: Option<IpAddr>) -> bool {
        if self.ip_deny.is_empty() && self.ip_allow.is_empty() {
            return true;
        }
        let Some(ip) = client else {
            return false;
        };
        let ip = canonical(ip);
        !self.ip_deny.iter().any(|n| n.contains(&ip))
            && (self.ip_allow.is_empty() || self.ip_allow.iter().any(|n| n.contains(&ip)))
    }

    /// Compile a route's rules.
    pub fn new(route: &Route) -> Access {
        Access {
            ip_allow: route.ip_allow.clone(),
            ip_deny: route.ip_deny.clone(),
            auth: route.auth.clone(),
            allow_groups: route.allow_groups.clone(),
            allow_consumers: route.allow_consumers.clone(),
        }
    }

    /// Whether callers must authenticate.
    pub fn authenticates(&self) -> bool {
        !self.auth.is_empty()
    }

    /// The `WWW-Authenticate` challenges of a 401, one per accepted method that has an HTTP
    /// authentication scheme (client certificates have none).
    pub fn challenges(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.auth.iter().filter_map(|m| challenge(*m))
    }
}

/// The compiled consumers and credentials.
#[derive(Debug)]
pub struct Policies {
    consumers: Vec<ConsumerInfo>,
    keys: HashMap<[u8; 32], ConsumerId>,
    api_key_header: HeaderName,
    basic: basic::BasicAuth,
    jwt: jwt::JwtVerifier,
    certs: CertConsumers,
}

/// The `WWW-Authenticate` challenge for each method that has one.
pub fn challenge(method: AuthMethod) -> Option<&'static str> {
    match method {
        AuthMethod::ApiKey => Some("ApiKey realm=\"tollgate\""),
        AuthMethod::Basic => Some("Basic realm=\"tollgate\", charset=\"UTF-8\""),
        AuthMethod::Jwt => Some("Bearer realm=\"tollgate\""),
        AuthMethod::Mtls => None,
    }
}

/// Consumers by the names their client certificates carry.
#[derive(Debug, Default)]
struct CertConsumers {
    subject: HashMap<String, ConsumerId>,
    common_name: HashMap<String, ConsumerId>,
    dns: HashMap<String, ConsumerId>,
    uri: HashMap<String, ConsumerId>,
    email: HashMap<String, ConsumerId>,
}

impl CertConsumers {
    fn add(&mut self, id: &CertIdentity, consumer: ConsumerId) {
        let (map, name) = match id {
            CertIdentity::Subject(s) => (&mut self.subject, s),
            CertIdentity::CommonName(s) => (&mut self.common_name, s),
            CertIdentity::Dns(s) => (&mut self.dns, s),
            CertIdentity::Uri(s) => (&mut self.uri, s),
            CertIdentity::Email(s) => (&mut self.email, s),
        };
        map.insert(name.clone(), consumer);
    }

    /// The consumer a certificate names: by URI, DNS name, e-mail address, subject, then
    /// common name.
    fn find(&self, cert: &ClientCert) -> Option<ConsumerId> {
        let any = |map: &HashMap<String, ConsumerId>, names: &[String]| {
            names.iter().find_map(|n| map.get(n).copied())
        };
        any(&self.uri, &cert.uris)
            .or_else(|| any(&self.dns, &cert.dns))
            .or_else(|| any(&self.email, &cert.emails))
            .or_else(|| self.subject.get(&cert.subject_key).copied())
            .or_else(|| {
                cert.common_name
                    .as_ref()
                    .and_then(|cn| self.common_name.get(cn).copied())
            })
    }
}

impl Policies {
    /// Compile from a validated configuration.
    pub fn new(config: &Routing, previous: Option<&Policies>) -> Policies {
        let mut keys = HashMap::new();
        let mut certs = CertConsumers::default();
        let users = config.consumers.iter().enumerate().filter_map(|(i, c)| {
            c.basic_auth
                .as_ref()
                .map(|(user, hash)| (user.clone(), i, hash.clone()))
        });
        let basic = basic::BasicAuth::new(users);
        let consumers = config
            .consumers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                for d in &c.api_key_digests {
                    keys.insert(*d, i);
                }
                for id in &c.client_certs {
                    certs.add(id, i);
                }
                ConsumerInfo {
                    name: Arc::from(c.name.as_str()),
                    groups: c.groups.clone(),
                    name_header: HeaderValue::from_str(&c.name)
                        .unwrap_or_else(|_| HeaderValue::from_static("-")),
                    groups_header: (!c.groups.is_empty())
                        .then(|| HeaderValue::from_str(&c.groups.join(",")).ok())
                        .flatten(),
                }
            })
            .collect();
        Policies {
            consumers,
            keys,
            api_key_header: config.api_key_header.clone(),
            basic,
            jwt: jwt::JwtVerifier::new(&config.jwt, previous.map(|p| &p.jwt)),
            certs,
        }
    }

    /// The JWT key sets fetched while running.
    pub fn remote_key_sets(&self) -> impl Iterator<Item = Arc<jwks::RemoteKeys>> + '_ {
        self.jwt.remote_sets()
    }

    /// The consumer behind an id.
    pub fn consumer(&self, id: ConsumerId) -> &ConsumerInfo {
        &self.consumers[id]
    }

    /// Run the route's rules in order: IP rules, authentication, authorization. `cert` is the
    /// client certificate verified on the request's TLS connection.
    pub async fn check(
        &self,
        access: &Access,
        client: Option<IpAddr>,
        headers: &HeaderMap,
        cert: Option<&ClientCert>,
    ) -> Decision {
        if !access.address_allowed(client) {
            return Decision::Forbidden;
        }
        if access.auth.is_empty() {
            return Decision::Allow(None);
        }
        // The first method whose credentials the request carries decides; presenting wrong
        // credentials is a failure even if another method is also accepted.
        let accepts_jwt = access.auth.contains(&AuthMethod::Jwt);
        let mut identity = None;
        for method in &access.auth {
            let verdict =
                match method {
                    AuthMethod::ApiKey => self
                        .presented_key(headers, accepts_jwt)
                        .map(|k| self.find_key(k).map(Identity::Consumer)),
                    AuthMethod::Basic => match basic::credentials(headers) {
                        Some((user, pass)) => Some(
                            self.basic
                                .verify(&user, &pass)
                                .await
                                .map(Identity::Consumer),
                        ),
                        None => None,
                    },
                    AuthMethod::Jwt => match bearer(headers) {
                        Some(token) => Some(self.jwt.verify(token).await.map(|claimed| {
                            Identity::Token(Box::new(self.token_identity(claimed)))
                        })),
                        None => None,
                    },
                    // A verified certificate no consumer claims is no credential here (another
                    // accepted method may still identify the caller).
                    AuthMethod::Mtls => cert
                        .and_then(|c| self.certs.find(c))
                        .map(|id| Some(Identity::Consumer(id))),
                };
            match verdict {
                Some(Some(id)) => {
                    identity = Some(id);
                    break;
                }
                Some(None) => return Decision::Unauthorized,
                None => continue,
            }
        }
        let Some(identity) = identity else {
            return Decision::Unauthorized;
        };
        // With both rules, either one admits: a named consumer, or a member of a listed group.
        let unrestricted = access.allow_groups.is_empty() && access.allow_consumers.is_empty();
        let (consumer, groups) = match &identity {
            Identity::Consumer(id) => (Some(*id), &self.consumers[*id].groups),
            Identity::Token(t) => (t.consumer, &t.groups),
        };
        let named = consumer.is_some_and(|id| access.allow_consumers.contains(&id));
        let in_group = groups.iter().any(|g| access.allow_groups.contains(g));
        if unrestricted || named || in_group {
            Decision::Allow(Some(identity))
        } else {
            Decision::Forbidden
        }
    }

    /// The caller's name as logged: what `X-Consumer` carries, when it is text.
    pub fn name_of<'a>(&'a self, identity: &'a Identity) -> Option<&'a str> {
        match identity {
            Identity::Consumer(id) => Some(&self.consumers[*id].name),
            Identity::Token(t) => t.name_text.as_deref(),
        }
    }

    /// The `X-Consumer` and `X-Consumer-Groups` values for an identity.
    pub fn identity_headers<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> (&'a HeaderValue, Option<&'a HeaderValue>) {
        match identity {
            Identity::Consumer(id) => {
                let c = &self.consumers[*id];
                (&c.name_header, c.groups_header.as_ref())
            }
            Identity::Token(t) => (&t.name, t.groups_header.as_ref()),
        }
    }

    fn token_identity(&self, claimed: jwt::Claimed) -> TokenIdentity {
        let consumer = self.consumers.iter().position(|c| *c.name == *claimed.name);
        let mut groups = consumer
            .map(|id| self.consumers[id].groups.clone())
            .unwrap_or_default();
        for g in claimed.groups {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        let groups_header = (!groups.is_empty())
            .then(|| HeaderValue::from_str(&groups.join(",")).ok())
            .flatten();
        let name =
            HeaderValue::from_str(&claimed.name).unwrap_or_else(|_| HeaderValue::from_static("-"));
        TokenIdentity {
            consumer,
            name_text: name.to_str().ok().map(Arc::from),
            name,
            groups,
            groups_header,
        }
    }

    /// The API key the request presents: the key header, else `Authorization: Bearer` when the
    /// route does not also take JWTs (then a bearer token is a JWT).
    fn presented_key<'a>(&self, headers: &'a HeaderMap, accepts_jwt: bool) -> Option<&'a [u8]> {
        if let Some(v) = headers.get(&self.api_key_header) {
            return Some(v.as_bytes());
        }
        if accepts_jwt {
            return None;
        }
        bearer(headers).map(str::as_bytes)
    }

    /// Look a key up by its digest, confirming the match in constant time.
    fn find_key(&self, key: &[u8]) -> Option<ConsumerId> {
        let digest = key_digest(key);
        let (stored, id) = self.keys.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(*id)
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case("bearer ").then(|| rest.trim())
}

/// An IPv4-mapped IPv6 address compares as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(route_extra: &str) -> (Policies, Access) {
        let text = format!(
            "listeners: [{{address: 127.0.0.1:1}}]\nupstreams: {{u: {{peers: [127.0.0.1:2]}}}}\nconsumers:\n  - {{name: alice, groups: [staff], api_keys: [alice-key-1]}}\n  - {{name: carol, groups: [partners], api_keys: [\"sha256:{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u{route_extra}}}\n",
            hex::encode(key_digest(b"carol-key-1"))
        );
        let c = crate::config::parse(&text).expect("valid");
        (
            Policies::new(&c.routing, None),
            Access::new(&c.routing.routes[0]),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    fn check(p: &Policies, r: &Access, ip: Option<IpAddr>, h: &HeaderMap) -> Decision {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(p.check(r, ip, h, None))
    }

    #[test]
    fn api_keys_clear_and_hashed() {
        let (p, r) = setup(", auth: [api_key]");
        assert_eq!(
            check(&p, &r, LOCAL, &headers(&[("x-api-key", "alice-key-1")])),
            Decision::Allow(Some(Identity::Consumer(0)))
        );
        assert_eq!(
            check(
                &p,
                &r,
                LOCAL,
                &headers(&[("authorization", "Bearer carol-key-1")])
            ),
            Decision::Allow(Some(Identity::Consumer(1)))
        );
        assert!(matches!(
            check(&p, &r, LOCAL, &headers(&[("x-api-key", "wrong-key")])),
            Decision::Unauthorized
        ));
        assert!(matches!(
            check(&p, &r, LOCAL, &headers(&[])),
            Decision::Unauthorized
        ));
    }

    #[test]
    fn groups_consumers_and_ips() {
        let (p, r) = setup(", auth: [api_key], allow_groups: [staff]");
        assert_eq!(
            check(&p, &r, LOCAL, &headers(&[("x-api-key", "carol-key-1")])),
            Decision::Forbidden
        );
        let (p, r) = setup(", auth: [api_key], allow_consumers: [carol]");
        assert_eq!(
            check(&p, &r, LOCAL, &headers(&[("x-api-key", "carol-key-1")])),
            Decision::Allow(Some(Identity::Consumer(1)))
        );
        assert_eq!(
            check(&p, &r, LOCAL, &headers(&[("x-api-key", "alice-key-1")])),
            Decision::Forbidden
        );
        let (p, r) = setup(", ip_allow: [10.0.0.0/8], ip_deny: [10.1.0.0/16]");
        assert_eq!(check(&p, &r, LOCAL, &headers(&[])), Decision::Forbidden);
        assert_eq!(
            check(&p, &r, Some("10.2.3.4".parse().unwrap()), &headers(&[])),
            Decision::Allow(None)
        );
        assert_eq!(
            check(&p, &r, Some("10.1.3.4".parse().unwrap()), &headers(&[])),
            Decision::Forbidden
        );
        assert_eq!(
            check(
                &p,
                &r,
                Some("::ffff:10.2.3.4".parse().unwrap()),
                &headers(&[])
            ),
            Decision::Allow(None)
        );
    }
}
