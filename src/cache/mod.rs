//! Response caching: the byte-bounded store ([`storage::MemoryStore`]), cache keys, and the rules
//! for what may be stored. The proxy's cache phases call into [`Cache`] and [`RouteCacheRules`].
//!
//! What is stored: responses to `GET`/`HEAD` (a `HEAD` miss fetches the full `GET`) on routes with
//! `cache`, when the upstream's `Cache-Control`/`Expires` allow it or, absent any, for the route's
//! `ttl` on statuses that are cacheable by default. Never: `no-store`, `private`, `Vary: *`, a
//! response with `Set-Cookie`, or the answer to a request with credentials, unless the route's key
//! includes `consumer` (so one consumer can never receive another's response).

pub mod storage;

use crate::config::{CacheConfig, CacheKeyPart, RouteCache};
use http::{header, HeaderMap, Method, StatusCode};
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora_cache::filters::{calculate_fresh_until, calculate_serve_stale_durations};
use pingora_cache::key::{CacheHashKey, CacheKey, HashBinary};
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::{
    CacheMeta, CacheMetaDefaults, CachePhase, NoCacheReason, RespCacheable, VarianceBuilder,
};
use pingora_http::ResponseHeader;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use storage::MemoryStore;

/// How long a request waits on the cache lock for another request's fill before it goes to the
/// upstream itself.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The process-wide cache: storage, the lock that collapses concurrent misses, per-route
/// generations (bumped to purge a whole route) and the key hash. Outlives configuration
/// snapshots.
pub struct Cache {
    pub store: &'static MemoryStore,
    pub lock: &'static CacheKeyLockImpl,
    pub max_object_size: usize,
    generations: Mutex<HashMap<String, Arc<AtomicU64>>>,
    key_hash: KeyHash,
}

/// The hash a cache key is stored and found under: 128 bits of a keyed hash (SipHash, through
/// std's `RandomState`, whose key is drawn from the operating system's random source when the
/// process starts and never leaves it), instead of Pingora's unkeyed BLAKE2b (2,000
/// instructions per hit, a thirtieth of a whole hit). A client cannot aim two keys at one hash
/// without the key, and 128 bits rule out collisions by chance; the cache lives in this
/// process's memory only, so a hash that differs between processes changes nothing. (nginx
/// stores its cache under the MD5 of the key, unkeyed.)
#[derive(Clone)]
struct KeyHash(std::hash::RandomState);

impl KeyHash {
    fn new() -> KeyHash {
        KeyHash(std::hash::RandomState::new())
    }

    /// The two halves are the keyed hash of two distinct inputs (the key's bytes, tagged 0 and
    /// 1).
    fn of(&self, bytes: &[u8]) -> HashBinary {
        use std::hash::BuildHasher;
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.0.hash_one((0u8, bytes)).to_le_bytes());
        out[8..].copy_from_slice(&self.0.hash_one((1u8, bytes)).to_le_bytes());
        out
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("budget", &self.store.budget())
            .field("held", &self.store.held_bytes())
            .finish()
    }
}

impl Cache {
    /// Create the cache. The store and lock live for the whole process (Pingora's cache API
    /// takes `'static` references).
    pub fn new(config: &CacheConfig) -> Cache {
        let store: &'static MemoryStore =
            Box::leak(Box::new(MemoryStore::new(config.max_size as usize)));
        let lock: &'static CacheKeyLockImpl = Box::leak(Box::new(CacheLock::new(LOCK_TIMEOUT)));
        Cache {
            store,
            lock,
            max_object_size: config.max_object_size as usize,
            generations: Mutex::new(HashMap::new()),
            key_hash: KeyHash::new(),
        }
    }

    /// The generation counter of a route (shared by every snapshot).
    pub fn generation(&self, route: &str) -> Arc<AtomicU64> {
        let mut g = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(route.to_string()).or_default().clone()
    }

    /// Drop every cached response of a route: its keys change, so old entries are never found
    /// again (their memory is reclaimed by eviction).
    pub fn purge_route(&self, route: &str) -> u64 {
        self.generation(route).fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// One route's cache rules, compiled for the request path.
pub struct RouteCacheRules {
    pub config: RouteCache,
    route: String,
    generation: Arc<AtomicU64>,
    defaults: CacheMetaDefaults,
    /// The process's key hash (the same for every snapshot).
    key_hash: KeyHash,
}

impl std::fmt::Debug for RouteCacheRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCacheRules")
            .field("route", &self.route)
            .field("config", &self.config)
            .finish()
    }
}

/// What the key parts are read from.
pub struct KeyInput<'a> {
    pub host: &'a [u8],
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub headers: &'a HeaderMap,
    pub consumer: &'a [u8],
}

fn no_default_freshness(_: StatusCode) -> Option<Duration> {
    None
}

/// Statuses a cache may store without explicit freshness (RFC 9110 section 15.1), given the
/// route's `ttl`.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

fn push_part(primary: &mut Vec<u8>, bytes: &[u8]) {
    primary.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    primary.extend_from_slice(bytes);
}

impl RouteCacheRules {
    /// Compile a route's cache rules.
    pub fn new(cache: &Cache, route: &str, config: &RouteCache) -> RouteCacheRules {
        let clamp = |d: Duration| d.as_secs().min(u32::MAX as u64) as u32;
        RouteCacheRules {
            defaults: CacheMetaDefaults::new(
                no_default_freshness,
                clamp(config.stale_while_revalidate),
                clamp(config.stale_if_error),
            ),
            config: config.clone(),
            route: route.to_string(),
            generation: cache.generation(route),
            key_hash: cache.key_hash.clone(),
        }
    }

    /// Whether this request may use the cache at all: `Err` says why not (`method`: not a
    /// cached method; `request`: it carries credentials and the route's key has no `consumer`).
    pub fn request_cacheable(
        &self,
        method: &Method,
        headers: &HeaderMap,
        authenticated: bool,
    ) -> Result<(), &'static str> {
        if !self.config.methods.contains(method) {
            return Err("method");
        }
        let credentials = authenticated || headers.contains_key(header::AUTHORIZATION);
        if credentials && !self.config.per_consumer() {
            return Err("request");
        }
        Ok(())
    }

    /// The cache key: the route, its generation and the configured parts, each length-prefixed.
    pub fn key(&self, input: &KeyInput) -> CacheKey {
        let mut primary = Vec::with_capacity(64 + input.path.len() + input.query.len());
        push_part(&mut primary, self.route.as_bytes());
        push_part(
            &mut primary,
            &self.generation.load(Ordering::Acquire).to_be_bytes(),
        );
        for part in &self.config.key {
            match part {
                CacheKeyPart::Host => push_part(&mut primary, input.host),
                CacheKeyPart::Path => push_part(&mut primary, input.path),
                CacheKeyPart::Query => push_part(&mut primary, input.query),
                CacheKeyPart::Consumer => push_part(&mut primary, input.consumer),
                CacheKeyPart::Header(h) => {
                    push_part(&mut primary, h.as_str().as_bytes());
                    let v = input.headers.get(h).map(|v| v.as_bytes()).unwrap_or(b"");
                    push_part(&mut primary, v);
                }
            }
        }
        let hash = self.key_hash.of(&primary);
        let mut key = CacheKey::new(primary, "");
        key.set_primary_bin_override(hash);
        key
    }

    /// The primary hash of a key, for purging one object.
    pub fn primary_of(&self, input: &KeyInput) -> HashBinary {
        self.key(input).primary_bin()
    }

    /// Decide whether a response may be stored, and for how long.
    pub fn response_cacheable(&self, resp: &ResponseHeader) -> RespCacheable {
        let per_consumer = self.config.per_consumer();
        if resp.headers.contains_key(header::SET_COOKIE) && !per_consumer {
            return RespCacheable::Uncacheable(NoCacheReason::Custom("set-cookie"));
        }
        if resp.headers.get_all(header::VARY).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii() == b"*")
        }) {
            return RespCacheable::Uncacheable(NoCacheReason::Custom("vary-star"));
        }
        let cc = CacheControl::from_resp_headers(resp);
        if let Some(cc) = &cc {
            if cc.is_cacheable() == Cacheable::No || cc.private() {
                return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
            }
        }
        let now = SystemTime::now();
        let fresh_until = calculate_fresh_until(now, cc.as_ref(), resp, false, &self.defaults)
            .or_else(|| {
                (heuristically_cacheable(resp.status) && !self.config.ttl.is_zero())
                    .then(|| now.checked_add(self.config.ttl))
                    .flatten()
            });
        let Some(fresh_until) = fresh_until else {
            return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        };
        let (swr, sie) = calculate_serve_stale_durations(cc.as_ref(), &self.defaults);
        let mut header = resp.clone();
        if let Some(cc) = &cc {
            cc.strip_private_headers(&mut header);
        }
        RespCacheable::Cacheable(CacheMeta::new(fresh_until, now, swr, sie, header))
    }

    /// The variance of a stored response: the values of the request headers its `Vary` names.
    pub fn variance(meta: &CacheMeta, req: &HeaderMap) -> Option<HashBinary> {
        let mut vb = VarianceBuilder::new();
        let mut names: Vec<String> = Vec::new();
        for v in meta.headers().get_all(header::VARY) {
            if let Ok(s) = v.to_str() {
                for name in s.split(',') {
                    let n = name.trim().to_ascii_lowercase();
                    if !n.is_empty() && !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
        }
        if names.is_empty() {
            return None;
        }
        for n in names {
            let value = req
                .get(n.as_str())
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            vb.add_owned_name_value(n, value);
        }
        vb.finalize()
    }
}

/// How a response met the cache, for its `Cache-Status` (RFC 9211).
pub struct Outcome<'a> {
    pub phase: CachePhase,
    /// The stored response's metadata, when there is one.
    pub meta: Option<&'a CacheMeta>,
    /// The upstream's status, when it was asked.
    pub upstream_status: Option<u16>,
    /// The upstream's response was found storable.
    pub stored: bool,
    /// Why the cache was not used for this request (`method`, `request`), when it was not.
    pub skipped: Option<&'static str>,
    /// The cache was looked up (and, if the phase says nothing else, missed).
    pub looked_up: bool,
}

/// The `Cache-Status` field value (RFC 9211) of a response, with Tollgate as the cache:
/// `tollgate; hit; ttl=57` (fresh; a negative `ttl` for a stale copy served), `tollgate;
/// fwd=miss; fwd-status=200; stored`, `tollgate; fwd=stale; fwd-status=304` (revalidated),
/// `tollgate; fwd=bypass` (or `method`, `request`: the cache was not used).
pub fn cache_status(o: &Outcome) -> String {
    let ttl = || {
        o.meta.map(|m| {
            let now = SystemTime::now();
            match m.fresh_until().duration_since(now) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
            }
        })
    };
    // Written without the formatting machinery: this runs on every hit.
    let mut out = String::with_capacity(48);
    out.push_str("tollgate; ");
    let mut digits = itoa::Buffer::new();
    match o.phase {
        CachePhase::Hit | CachePhase::Stale | CachePhase::StaleUpdating => {
            out.push_str("hit");
            if let Some(t) = ttl() {
                out.push_str("; ttl=");
                out.push_str(digits.format(t));
            }
            return out;
        }
        CachePhase::Miss => out.push_str("fwd=miss"),
        CachePhase::Expired | CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
            out.push_str("fwd=stale")
        }
        // Looked up, missed, and the response turned out not storable.
        _ if o.looked_up => out.push_str("fwd=miss"),
        _ => {
            out.push_str("fwd=");
            out.push_str(o.skipped.unwrap_or("bypass"));
        }
    }
    if let Some(s) = o.upstream_status {
        out.push_str("; fwd-status=");
        out.push_str(digits.format(s));
    }
    if o.stored {
        out.push_str("; stored");
    }
    if matches!(o.phase, CachePhase::Revalidated) {
        if let Some(t) = ttl() {
            out.push_str("; ttl=");
            out.push_str(digits.format(t));
        }
    }
    out
}

/// The `X-Cache-Status` value for where a response came from.
pub fn status_label(phase: &CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit => "HIT",
        CachePhase::Miss => "MISS",
        CachePhase::Expired => "EXPIRED",
        CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
        _ => "BYPASS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(cache: &Cache) -> RouteCacheRules {
        let config = RouteCache {
            ttl: Duration::from_secs(60),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            key: vec![CacheKeyPart::Host, CacheKeyPart::Path, CacheKeyPart::Query],
            methods: vec![Method::GET],
        };
        RouteCacheRules::new(cache, "r", &config)
    }

    fn hash(rules: &RouteCacheRules, path: &str) -> HashBinary {
        let headers = HeaderMap::new();
        let input = KeyInput {
            host: b"a.test",
            path: path.as_bytes(),
            query: b"",
            headers: &headers,
            consumer: b"",
        };
        let key = rules.key(&input);
        // What the store and Pingora's lock and eviction read is the keyed hash.
        assert_eq!(key.primary_bin(), rules.primary_of(&input));
        assert_eq!(key.combined_bin(), key.primary_bin());
        key.primary_bin()
    }

    #[test]
    fn keys_hash_alike_across_snapshots_and_apart_across_processes() {
        let config = CacheConfig {
            max_size: 1 << 20,
            max_object_size: 1 << 16,
        };
        let cache = Cache::new(&config);
        // A reload builds new rules from the same process-wide cache: the same hashes.
        let (before, after) = (rules(&cache), rules(&cache));
        assert_eq!(hash(&before, "/a"), hash(&after, "/a"));
        assert_ne!(hash(&before, "/a"), hash(&before, "/b"));
        // The two halves are not one value twice.
        let h = hash(&before, "/a");
        assert_ne!(h[..8], h[8..]);
        // Another cache (as in another process) has another key.
        let other = Cache::new(&config);
        assert_ne!(hash(&rules(&other), "/a"), hash(&before, "/a"));
    }
}
