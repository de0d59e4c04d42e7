//! Rate and concurrency limits.
//!
//! Local rate limits count every key exactly ([`local`]): each key has a sliding window of its
//! own, phased from its first request, and a decision uses the estimate
//! `previous × (1 − elapsed fraction) + current`, which closes the fixed-window blind spot
//! (twice the limit in a burst straddling a window boundary). Only admitted requests are
//! counted, so a flood of refused requests does not lock a caller out of the next window. No
//! key is ever refused because of other keys.
//!
//! Global rate limits count in Redis with one Lua script per decision (the same sliding window,
//! on Redis's clock, atomically). When Redis is slow or unreachable the decision falls back to
//! the local count after at most `redis.timeout`, and the fallback is logged and counted.
//!
//! Counters live in [`LimitStore`], outside the configuration snapshot, keyed by a digest of the
//! route name and the limit itself: a reload that leaves a limit unchanged keeps its counts.

mod global;
mod local;
mod quota;

pub use quota::{window, PlanQuotas, QuotaOutcome, QuotaState, QuotaUsage};

use crate::config::{HeaderStyle, LimitKey, RedisConfig, RedisTarget, Route};
use arc_swap::ArcSwapOption;
use global::{Backend, Breaker, RedisCounter, SLIDING_WINDOW_LUA};
use http::header::{HeaderMap, HeaderValue};
use local::{Decision, KeyId, LocalCounters};
use pingora_limits::inflight::{Guard, Inflight};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A Redis server's counter and the settings it was made with.
struct RedisEntry {
    config: RedisConfig,
    counter: Arc<RedisCounter>,
}

/// Long-lived limit state, shared by every configuration snapshot.
pub struct LimitStore {
    /// Every key of every local rate limit.
    local: LocalCounters,
    inflight: Inflight,
    redis: Mutex<HashMap<RedisTarget, RedisEntry>>,
    /// Quota counts taken here while Redis did not answer, by window key and consumer.
    quotas: Mutex<HashMap<(String, String), quota::LocalCount>>,
    /// Decisions of global limits taken locally because Redis did not answer in time.
    pub redis_fallbacks: AtomicU64,
}

impl std::fmt::Debug for LimitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitStore")
            .field("redis_fallbacks", &self.redis_fallbacks)
            .finish()
    }
}

impl Default for LimitStore {
    fn default() -> Self {
        LimitStore {
            local: LocalCounters::new(crate::config::DEFAULT_RATE_LIMIT_MAX_KEYS),
            inflight: Inflight::new(),
            redis: Mutex::new(HashMap::new()),
            quotas: Mutex::new(HashMap::new()),
            redis_fallbacks: AtomicU64::new(0),
        }
    }
}

impl LimitStore {
    /// Hold at most `max_keys` keys of local rate limits (the configuration's
    /// `rate_limit_max_keys`).
    pub fn set_max_keys(&self, max_keys: usize) {
        self.local.set_max_keys(max_keys);
    }

    /// How many keys local rate limits hold at most.
    pub fn max_keys(&self) -> usize {
        self.local.max_keys()
    }

    /// Keys of local rate limits held now.
    pub fn keys_held(&self) -> usize {
        self.local.held()
    }

    /// Keys forgotten at the bound while they were still counting.
    pub fn keys_evicted(&self) -> u64 {
        self.local.evicted.load(Ordering::Relaxed)
    }

    fn redis(&self, cfg: &RedisConfig) -> Option<Arc<RedisCounter>> {
        let mut all = self.redis.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = all.get(&cfg.target) {
            if r.config == *cfg {
                return Some(r.counter.clone());
            }
        }
        let counter = Arc::new(RedisCounter {
            backend: Backend::new(&cfg.target, cfg.timeout)?,
            conn: ArcSwapOption::empty(),
            connecting: AtomicBool::new(false),
            timeout: cfg.timeout,
            script: redis::Script::new(SLIDING_WINDOW_LUA),
            breaker: Breaker::new(cfg.backoff, cfg.max_backoff),
        });
        all.insert(
            cfg.target.clone(),
            RedisEntry {
                config: cfg.clone(),
                counter: counter.clone(),
            },
        );
        Some(counter)
    }

    /// True while a Redis server of global limits is skipped after failures.
    pub fn redis_circuit_open(&self) -> bool {
        let all = self.redis.lock().unwrap_or_else(|e| e.into_inner());
        all.values().any(|r| r.counter.breaker.is_open())
    }

    /// Compile a route's limits, reusing the counters of unchanged limits; `headers` says which
    /// rate-limit headers its responses carry.
    pub fn compile(
        &self,
        route: &Route,
        redis: Option<&RedisConfig>,
        headers: HeaderStyle,
    ) -> RouteLimits {
        let names = policy_names(&route.rate_limits);
        let rates: Vec<CompiledRate> = route
            .rate_limits
            .iter()
            .enumerate()
            .map(|(index, l)| {
                let id = limit_id(&format!(
                    "rate|{}|{}|{}|{}|{}",
                    route.name,
                    l.requests,
                    l.per.as_millis(),
                    l.key,
                    l.global
                ));
                CompiledRate {
                    id,
                    index,
                    name: names[index].clone(),
                    limit: l.requests,
                    per: l.per,
                    key: l.key.clone(),
                    global: if l.global {
                        redis.and_then(|r| self.redis(r))
                    } else {
                        None
                    },
                }
            })
            .collect();
        let concurrency = route
            .concurrency_limit
            .as_ref()
            .map(|c| CompiledConcurrency {
                id: limit_id(&format!("concurrency|{}|{}|{}", route.name, c.max, c.key)),
                max: c.max,
                key: c.key.clone(),
            });
        let policy = (!rates.is_empty())
            .then(|| {
                let list: Vec<String> = rates.iter().map(CompiledRate::policy_item).collect();
                HeaderValue::from_str(&list.join(", ")).ok()
            })
            .flatten();
        RouteLimits {
            rates,
            concurrency,
            headers,
            policy,
        }
    }
}

/// Each rate limit's policy name in the `RateLimit` headers: what it counts by and its window
/// (`client_ip/60s`), numbered when two would share a name.
fn policy_names(limits: &[crate::config::RateLimit]) -> Vec<String> {
    let base: Vec<String> = limits
        .iter()
        .map(|l| {
            let per = if l.per.subsec_millis() == 0 {
                format!("{}s", l.per.as_secs())
            } else {
                format!("{}ms", l.per.as_millis())
            };
            format!("{}/{per}", l.key)
        })
        .collect();
    base.iter()
        .enumerate()
        .map(|(i, name)| {
            if base.iter().filter(|n| *n == name).count() > 1 {
                format!("{name}#{}", i + 1)
            } else {
                name.clone()
            }
        })
        .collect()
}

fn limit_id(definition: &str) -> u64 {
    let d = Sha256::digest(definition.as_bytes());
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

struct CompiledRate {
    id: u64,
    /// Its place among the route's rate limits.
    index: usize,
    /// Its policy name in the `RateLimit` headers.
    name: String,
    limit: u64,
    per: Duration,
    key: LimitKey,
    global: Option<Arc<RedisCounter>>,
}

impl CompiledRate {
    /// This limit as a `RateLimit-Policy` list member: name, quota and window (seconds, when
    /// whole).
    fn policy_item(&self) -> String {
        let mut item = format!("\"{}\";q={}", self.name, self.limit);
        if self.per.subsec_nanos() == 0 {
            item.push_str(&format!(";w={}", self.per.as_secs()));
        }
        item
    }
}

struct CompiledConcurrency {
    id: u64,
    max: u64,
    key: LimitKey,
}

/// One route's limits, ready for decisions.
pub struct RouteLimits {
    rates: Vec<CompiledRate>,
    concurrency: Option<CompiledConcurrency>,
    /// Which rate-limit headers responses carry.
    headers: HeaderStyle,
    /// `RateLimit-Policy`: every rate limit of the route.
    policy: Option<HeaderValue>,
}

impl std::fmt::Debug for RouteLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLimits")
            .field("rates", &self.rates.len())
            .field("concurrency", &self.concurrency.is_some())
            .finish()
    }
}

/// What the request offers as limit keys.
pub struct KeyInput<'a> {
    /// The authenticated caller's name.
    pub consumer: Option<&'a [u8]>,
    pub client_ip: Option<IpAddr>,
    pub headers: &'a HeaderMap,
}

/// The state of the tightest rate limit, for the `RateLimit` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    pub limit: u64,
    /// Requests the caller may still send now.
    pub remaining: u64,
    /// Seconds until the key's window turns; for a refused request, until one more fits.
    pub reset: u64,
    /// Which of the route's rate limits this is.
    pub policy: usize,
}

/// The rate-limit headers of one response.
pub type RateHeaderValues = [Option<(&'static str, HeaderValue)>; 5];

/// The decision of a route's limits.
pub enum Outcome {
    /// Admitted; the guard holds the concurrency slot until dropped.
    Allowed(Option<RateState>, Option<Guard>),
    /// Over a rate limit.
    RateLimited(RateState),
    /// Over the concurrency limit.
    TooManyInFlight,
}

fn key_bytes<'a>(key: &LimitKey, input: &KeyInput<'a>, buf: &'a mut [u8; 16]) -> &'a [u8] {
    match key {
        LimitKey::Consumer => input.consumer.unwrap_or(b""),
        LimitKey::ClientIp => match input.client_ip {
            Some(IpAddr::V4(v4)) => {
                buf[..4].copy_from_slice(&v4.octets());
                &buf[..4]
            }
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => {
                    buf[..4].copy_from_slice(&v4.octets());
                    &buf[..4]
                }
                None => {
                    *buf = v6.octets();
                    &buf[..]
                }
            },
            None => b"",
        },
        LimitKey::Route => b"",
        LimitKey::Header(h) => input.headers.get(h).map(|v| v.as_bytes()).unwrap_or(b""),
    }
}

impl RouteLimits {
    /// True when the route has rate limits.
    pub fn limits_rate(&self) -> bool {
        !self.rates.is_empty()
    }

    /// The rate-limit headers for `state` (draft-ietf-httpapi-ratelimit-headers): the route's
    /// `RateLimit-Policy` and the `RateLimit` of the tightest limit, its remaining requests and
    /// seconds to reset; or the older `RateLimit-Limit`/`-Remaining`/`-Reset`; or both.
    pub fn headers(&self, state: &RateState) -> RateHeaderValues {
        let mut out: RateHeaderValues = Default::default();
        let (standard, legacy) = (self.headers.standard(), self.headers.legacy());
        if standard {
            let name = self.rates.get(state.policy).map_or("", |r| r.name.as_str());
            let value = format!("\"{name}\";r={};t={}", state.remaining, state.reset);
            out[0] = self.policy.clone().map(|p| ("RateLimit-Policy", p));
            out[1] = HeaderValue::from_str(&value).ok().map(|v| ("RateLimit", v));
        }
        if legacy {
            out[2] = Some(("RateLimit-Limit", HeaderValue::from(state.limit)));
            out[3] = Some(("RateLimit-Remaining", HeaderValue::from(state.remaining)));
            out[4] = Some(("RateLimit-Reset", HeaderValue::from(state.reset)));
        }
        out
    }

    /// True when the route has no limits at all.
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty() && self.concurrency.is_none()
    }

    /// Decide for one request. Every rate limit must admit it; the tightest state is returned
    /// for the response headers.
    pub async fn check(&self, store: &LimitStore, input: &KeyInput<'_>) -> Outcome {
        let mut tightest: Option<RateState> = None;
        // Local counts taken so far, to give back if a later limit refuses the request.
        let mut counted: Vec<(KeyId, Decision)> = Vec::new();
        for limit in &self.rates {
            let mut buf = [0u8; 16];
            let key = key_bytes(&limit.key, input, &mut buf);
            let global = match &limit.global {
                // Boxed: Redis's future is large, and an unboxed one would be part of (and
                // copied with) every request's phase future, Redis or not.
                Some(redis) => match Box::pin(redis.decide(limit, key)).await {
                    Ok(decided) => Some(decided),
                    Err(_) => {
                        store.redis_fallbacks.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                },
                None => None,
            };
            let (ok, state) = match global {
                Some(decided) => decided,
                None => {
                    let id = store.local.key_id(limit.id, key);
                    let d = store
                        .local
                        .decide(id, limit.limit, limit.per.as_millis() as u64);
                    if d.admitted {
                        counted.push((id, d));
                    }
                    (d.admitted, local_state(limit, &d))
                }
            };
            if !ok {
                for (id, d) in &counted {
                    store.local.undo(*id, d);
                }
                return Outcome::RateLimited(state);
            }
            if tightest.is_none_or(|t| state.remaining < t.remaining) {
                tightest = Some(state);
            }
        }
        let guard = match &self.concurrency {
            Some(c) => {
                let mut buf = [0u8; 16];
                let key = key_bytes(&c.key, input, &mut buf);
                let (guard, count) = store.inflight.incr((c.id, key), 1);
                if count as u64 > c.max {
                    drop(guard);
                    for (id, d) in &counted {
                        store.local.undo(*id, d);
                    }
                    return Outcome::TooManyInFlight;
                }
                Some(guard)
            }
            None => None,
        };
        Outcome::Allowed(tightest, guard)
    }
}

/// The `RateLimit` state of a local decision: what the key may still send in the sliding
/// estimate, and until when (its window's turn, or, refused, until one more request fits).
fn local_state(limit: &CompiledRate, d: &Decision) -> RateState {
    let (prev, current) = (f64::from(d.previous), f64::from(d.current));
    let estimate = prev * (1.0 - d.fraction) + current;
    let per = limit.per.as_secs_f64();
    let (remaining, wait) = if d.admitted {
        let left = (limit.limit as f64 - estimate).round().max(0.0) as u64;
        (left, d.window_left_ms as f64 / 1000.0)
    } else {
        let l = limit.limit as f64;
        (0, wait_for_one(l, prev, current, d.fraction) * per)
    };
    RateState {
        limit: limit.limit,
        remaining,
        reset: (wait.ceil() as u64).max(1),
        policy: limit.index,
    }
}

/// How long (in windows) until one more request fits, for a key refused `f` into a window in
/// which it has sent `current`, after `prev` in the window before.
fn wait_for_one(limit: f64, prev: f64, current: f64, f: f64) -> f64 {
    // The point in a window at which `count` requests of the window before leave room for
    // `room` more, in the sliding estimate.
    let fits = |count: f64, room: f64| -> f64 {
        if count <= 0.0 || room >= count {
            0.0
        } else {
            1.0 - room.max(0.0) / count
        }
    };
    if current + 1.0 <= limit {
        // This window's own requests leave room: wait until the previous window's fade out.
        (fits(prev, limit - current - 1.0) - f).max(0.0)
    } else {
        // This window is full: wait into the next, where this window's requests fade out.
        1.0 - f + fits(current, limit - 1.0)
    }
}

#[cfg(test)]
mod tests;
