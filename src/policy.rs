//! Who may call a route: IP rules, authentication (API keys so far) and authorization (groups,
//! consumers). Compiled from the configuration into small lookup structures; [`Policies::check`]
//! returns a [`Decision`] and the proxy writes the answer.

use crate::config::{AuthMethod, Config, Route};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// `X-Consumer`: the authenticated consumer's name, sent upstream.
pub static X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");
/// `X-Consumer-Groups`: its groups, comma-separated.
pub static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");

/// SHA-256 of an API key; keys are stored and compared only as digests.
pub fn key_digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// Index of a consumer in the configuration.
pub type ConsumerId = usize;

/// A consumer as the request path needs it.
#[derive(Debug)]
pub struct ConsumerInfo {
    pub name: String,
    pub groups: Vec<String>,
    /// Precomputed header values for `X-Consumer` and `X-Consumer-Groups`.
    pub name_header: HeaderValue,
    pub groups_header: Option<HeaderValue>,
}

/// The outcome of the policy checks for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on; the consumer when the caller authenticated.
    Allow(Option<ConsumerId>),
    /// Missing or invalid credentials: 401 with this `WWW-Authenticate` challenge.
    Unauthorized(&'static str),
    /// Known but not allowed (IP, group or consumer rule): 403.
    Forbidden,
}

/// The compiled consumers and keys.
#[derive(Debug)]
pub struct Policies {
    consumers: Vec<ConsumerInfo>,
    keys: HashMap<[u8; 32], ConsumerId>,
    api_key_header: HeaderName,
}

const API_KEY_CHALLENGE: &str = "ApiKey realm=\"tollgate\"";

impl Policies {
    /// Compile from a validated configuration.
    pub fn new(config: &Config) -> Policies {
        let mut keys = HashMap::new();
        let consumers = config
            .consumers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                for d in &c.api_key_digests {
                    keys.insert(*d, i);
                }
                ConsumerInfo {
                    name: c.name.clone(),
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
        }
    }

    /// The consumer behind an id.
    pub fn consumer(&self, id: ConsumerId) -> &ConsumerInfo {
        &self.consumers[id]
    }

    /// Run the route's rules in order: IP rules, authentication, authorization.
    pub fn check(&self, route: &Route, client: Option<IpAddr>, headers: &HeaderMap) -> Decision {
        if !route.ip_deny.is_empty() || !route.ip_allow.is_empty() {
            let Some(ip) = client else {
                return Decision::Forbidden;
            };
            let ip = canonical(ip);
            if route.ip_deny.iter().any(|n| n.contains(&ip)) {
                return Decision::Forbidden;
            }
            if !route.ip_allow.is_empty() && !route.ip_allow.iter().any(|n| n.contains(&ip)) {
                return Decision::Forbidden;
            }
        }
        if route.auth.is_empty() {
            return Decision::Allow(None);
        }
        let mut consumer = None;
        for method in &route.auth {
            match method {
                AuthMethod::ApiKey => {
                    if let Some(key) = self.presented_key(headers) {
                        consumer = self.find_key(key);
                        if consumer.is_none() {
                            return Decision::Unauthorized(API_KEY_CHALLENGE);
                        }
                    }
                }
            }
            if consumer.is_some() {
                break;
            }
        }
        let Some(id) = consumer else {
            return Decision::Unauthorized(API_KEY_CHALLENGE);
        };
        // With both rules, either one admits: a named consumer, or a member of a listed group.
        let unrestricted = route.allow_groups.is_empty() && route.allow_consumers.is_empty();
        let named = route.allow_consumers.contains(&id);
        let in_group = self.consumers[id]
            .groups
            .iter()
            .any(|g| route.allow_groups.contains(g));
        let allowed = unrestricted || named || in_group;
        if allowed {
            Decision::Allow(Some(id))
        } else {
            Decision::Forbidden
        }
    }

    /// The API key the request presents: the key header, else `Authorization: Bearer`.
    fn presented_key<'a>(&self, headers: &'a HeaderMap) -> Option<&'a [u8]> {
        if let Some(v) = headers.get(&self.api_key_header) {
            return Some(v.as_bytes());
        }
        let auth = headers.get(header::AUTHORIZATION)?.as_bytes();
        if auth.len() > 7 && auth[..7].eq_ignore_ascii_case(b"bearer ") {
            Some(auth[7..].trim_ascii())
        } else {
            None
        }
    }

    /// Look a key up by its digest, confirming the match in constant time.
    fn find_key(&self, key: &[u8]) -> Option<ConsumerId> {
        let digest = key_digest(key);
        let (stored, id) = self.keys.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(*id)
    }
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

    fn setup(route_extra: &str) -> (Policies, Route) {
        let text = format!(
            "listeners: [{{address: 127.0.0.1:1}}]\nupstreams: {{u: {{peers: [127.0.0.1:2]}}}}\nconsumers:\n  - {{name: alice, groups: [staff], api_keys: [alice-key-1]}}\n  - {{name: carol, groups: [partners], api_keys: [\"sha256:{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u{route_extra}}}\n",
            hex::encode(key_digest(b"carol-key-1"))
        );
        let c = crate::config::parse(&text).expect("valid");
        (Policies::new(&c), c.routes[0].clone())
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

    #[test]
    fn api_keys_clear_and_hashed() {
        let (p, r) = setup(", auth: [api_key]");
        assert_eq!(
            p.check(&r, LOCAL, &headers(&[("x-api-key", "alice-key-1")])),
            Decision::Allow(Some(0))
        );
        assert_eq!(
            p.check(
                &r,
                LOCAL,
                &headers(&[("authorization", "Bearer carol-key-1")])
            ),
            Decision::Allow(Some(1))
        );
        assert!(matches!(
            p.check(&r, LOCAL, &headers(&[("x-api-key", "wrong-key")])),
            Decision::Unauthorized(_)
        ));
        assert!(matches!(
            p.check(&r, LOCAL, &headers(&[])),
            Decision::Unauthorized(_)
        ));
    }

    #[test]
    fn groups_consumers_and_ips() {
        let (p, r) = setup(", auth: [api_key], allow_groups: [staff]");
        assert_eq!(
            p.check(&r, LOCAL, &headers(&[("x-api-key", "carol-key-1")])),
            Decision::Forbidden
        );
        let (p, r) = setup(", auth: [api_key], allow_consumers: [carol]");
        assert_eq!(
            p.check(&r, LOCAL, &headers(&[("x-api-key", "carol-key-1")])),
            Decision::Allow(Some(1))
        );
        assert_eq!(
            p.check(&r, LOCAL, &headers(&[("x-api-key", "alice-key-1")])),
            Decision::Forbidden
        );
        let (p, r) = setup(", ip_allow: [10.0.0.0/8], ip_deny: [10.1.0.0/16]");
        assert_eq!(p.check(&r, LOCAL, &headers(&[])), Decision::Forbidden);
        assert_eq!(
            p.check(&r, Some("10.2.3.4".parse().unwrap()), &headers(&[])),
            Decision::Allow(None)
        );
        assert_eq!(
            p.check(&r, Some("10.1.3.4".parse().unwrap()), &headers(&[])),
            Decision::Forbidden
        );
        assert_eq!(
            p.check(&r, Some("::ffff:10.2.3.4".parse().unwrap()), &headers(&[])),
            Decision::Allow(None)
        );
    }
}
