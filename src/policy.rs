//! Who may call a route: IP rules, authentication (API keys so far) and authorization (groups,
//! consumers). Compiled from the configuration into small lookup structures; [`Policies::check`]
//! returns a [`Decision`] and the proxy writes the answer.

use crate::config::{AuthMethod, Config, Route};
use base64::Engine;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
    /// Missing or invalid credentials: 401 with the route's `WWW-Authenticate` challenges.
    Unauthorized,
    /// Known but not allowed (IP, group or consumer rule): 403.
    Forbidden,
}

/// The compiled consumers and credentials.
#[derive(Debug)]
pub struct Policies {
    consumers: Vec<ConsumerInfo>,
    keys: HashMap<[u8; 32], ConsumerId>,
    api_key_header: HeaderName,
    /// Basic-auth user name → (consumer, bcrypt hash).
    users: HashMap<String, (ConsumerId, Arc<str>)>,
    basic_cache: BasicCache,
    /// Bounds how many bcrypt verifications run at once, so that a flood of wrong passwords
    /// cannot take every CPU.
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
}

/// The `WWW-Authenticate` challenge for each method.
pub fn challenge(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::ApiKey => "ApiKey realm=\"tollgate\"",
        AuthMethod::Basic => "Basic realm=\"tollgate\", charset=\"UTF-8\"",
    }
}

/// Results of recent basic-auth verifications, keyed by a digest of the credentials, so that
/// bcrypt (deliberately slow) runs once per credential and not once per request. Sharded to
/// keep threads from contending; each shard is bounded.
#[derive(Debug)]
struct BasicCache {
    shards: Vec<Mutex<CacheShard>>,
}

/// Credential digest → (verdict, when it was reached).
type CacheShard = HashMap<[u8; 32], (Option<ConsumerId>, Instant)>;

const CACHE_SHARDS: usize = 16;
const CACHE_SHARD_CAPACITY: usize = 1024;
const CACHE_OK_TTL: Duration = Duration::from_secs(300);
const CACHE_FAIL_TTL: Duration = Duration::from_secs(10);

impl BasicCache {
    fn new() -> Self {
        BasicCache {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, d: &[u8; 32]) -> &Mutex<CacheShard> {
        &self.shards[d[0] as usize % CACHE_SHARDS]
    }

    /// `Some(result)` when a fresh verdict is cached.
    fn get(&self, d: &[u8; 32]) -> Option<Option<ConsumerId>> {
        let shard = self.shard(d).lock().ok()?;
        let (id, at) = shard.get(d)?;
        let ttl = if id.is_some() {
            CACHE_OK_TTL
        } else {
            CACHE_FAIL_TTL
        };
        (at.elapsed() < ttl).then_some(*id)
    }

    fn put(&self, d: [u8; 32], id: Option<ConsumerId>) {
        if let Ok(mut shard) = self.shard(&d).lock() {
            if shard.len() >= CACHE_SHARD_CAPACITY {
                shard.retain(|_, (id, at)| {
                    at.elapsed()
                        < if id.is_some() {
                            CACHE_OK_TTL
                        } else {
                            CACHE_FAIL_TTL
                        }
                });
                if shard.len() >= CACHE_SHARD_CAPACITY {
                    shard.clear();
                }
            }
            shard.insert(d, (id, Instant::now()));
        }
    }
}

impl Policies {
    /// Compile from a validated configuration.
    pub fn new(config: &Config) -> Policies {
        let mut keys = HashMap::new();
        let mut users = HashMap::new();
        for (i, c) in config.consumers.iter().enumerate() {
            if let Some((user, hash)) = &c.basic_auth {
                users.insert(user.clone(), (i, Arc::from(hash.as_str())));
            }
        }
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
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Policies {
            consumers,
            keys,
            api_key_header: config.api_key_header.clone(),
            users,
            basic_cache: BasicCache::new(),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(cpus.max(2))),
        }
    }

    /// The consumer behind an id.
    pub fn consumer(&self, id: ConsumerId) -> &ConsumerInfo {
        &self.consumers[id]
    }

    /// Run the route's rules in order: IP rules, authentication, authorization.
    pub async fn check(
        &self,
        route: &Route,
        client: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Decision {
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
        // The first method whose credentials the request carries decides; presenting wrong
        // credentials is a failure even if another method is also accepted.
        let mut consumer = None;
        for method in &route.auth {
            let verdict = match method {
                AuthMethod::ApiKey => self.presented_key(headers).map(|k| self.find_key(k)),
                AuthMethod::Basic => match basic_credentials(headers) {
                    Some((user, pass)) => Some(self.verify_basic(&user, &pass).await),
                    None => None,
                },
            };
            match verdict {
                Some(Some(id)) => {
                    consumer = Some(id);
                    break;
                }
                Some(None) => return Decision::Unauthorized,
                None => continue,
            }
        }
        let Some(id) = consumer else {
            return Decision::Unauthorized;
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

    /// Check a user name and password against the consumer's bcrypt hash, off the worker
    /// thread, with recent verdicts cached.
    async fn verify_basic(&self, user: &str, pass: &[u8]) -> Option<ConsumerId> {
        let mut h = Sha256::new();
        h.update(b"basic\0");
        h.update(user.as_bytes());
        h.update(b"\0");
        h.update(pass);
        let digest: [u8; 32] = h.finalize().into();
        if let Some(verdict) = self.basic_cache.get(&digest) {
            return verdict;
        }
        let verdict = match self.users.get(user) {
            Some((id, hash)) => {
                let _slot = self.bcrypt_slots.acquire().await.ok()?;
                let hash = hash.clone();
                let pass = pass.to_vec();
                let ok = tokio::task::spawn_blocking(move || {
                    bcrypt::verify(&pass, &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                ok.then_some(*id)
            }
            None => None,
        };
        self.basic_cache.put(digest, verdict);
        verdict
    }

    /// Look a key up by its digest, confirming the match in constant time.
    fn find_key(&self, key: &[u8]) -> Option<ConsumerId> {
        let digest = key_digest(key);
        let (stored, id) = self.keys.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(*id)
    }
}

/// The user name and password of `Authorization: Basic`, if present and well formed.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let auth = headers.get(header::AUTHORIZATION)?.as_bytes();
    if auth.len() <= 6 || !auth[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth[6..].trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
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

    fn check(p: &Policies, r: &Route, ip: Option<IpAddr>, h: &HeaderMap) -> Decision {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(p.check(r, ip, h))
    }

    #[test]
    fn api_keys_clear_and_hashed() {
        let (p, r) = setup(", auth: [api_key]");
        assert_eq!(
            check(&p, &r, LOCAL, &headers(&[("x-api-key", "alice-key-1")])),
            Decision::Allow(Some(0))
        );
        assert_eq!(
            check(
                &p,
                &r,
                LOCAL,
                &headers(&[("authorization", "Bearer carol-key-1")])
            ),
            Decision::Allow(Some(1))
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
            Decision::Allow(Some(1))
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
