//! Rate and concurrency limits.
//!
//! Local rate limits count in Pingora's `Rate` estimator (two count-min sketches, the current and
//! the previous window, shared by every worker thread). A decision uses the sliding-window
//! estimate `previous × (1 − elapsed fraction) + current`, which closes the fixed-window blind
//! spot (twice the limit in a burst straddling a window boundary); only admitted requests are
//! counted, so a flood of refused requests does not lock a caller out of the next window. The
//! sketches are sized so that collisions between many keys stay far below the accuracy bound.
//!
//! Global rate limits count in Redis with one Lua script per decision (the same sliding window,
//! on Redis's clock, atomically). When Redis is slow or unreachable the decision falls back to
//! the local count after at most `redis.timeout`, and the fallback is logged and counted.
//!
//! Counters live in [`LimitStore`], outside the configuration snapshot, keyed by a digest of the
//! route name and the limit itself: a reload that leaves a limit unchanged keeps its counts.

mod global;

use crate::config::{HeaderStyle, LimitKey, RedisConfig, Route};
use arc_swap::ArcSwapOption;
use global::{RedisCounter, SLIDING_WINDOW_LUA};
use http::header::{HeaderMap, HeaderValue};
use pingora_limits::inflight::{Guard, Inflight};
use pingora_limits::rate::Rate;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Count-min sketch shape of every rate estimator: 4 rows of 65,536 counters (2 MiB per
/// window, 4 MiB per distinct window length). With 10,000 active keys a row is ~15 % occupied,
/// so a key is over-counted only when all four rows collide: about one key in 2,000, by one
/// other key's count.
const SKETCH_HASHES: usize = 4;
const SKETCH_SLOTS: usize = 65_536;

/// The count estimator of one window length and its companion holding fresh keys' phase.
type RatePair = (Arc<Rate>, Arc<Rate>);

/// Long-lived limit state, shared by every configuration snapshot.
pub struct LimitStore {
    /// Per window length: the request counts and, alongside, when in its window each key was
    /// first admitted (see [`decide_local`]).
    rates: Mutex<HashMap<Duration, RatePair>>,
    inflight: Inflight,
    redis: Mutex<HashMap<String, Arc<RedisCounter>>>,
    /// Decisions of global limits taken locally because Redis did not answer in time.
    pub redis_fallbacks: AtomicU64,
    epoch: Instant,
    last_fallback_log_ms: AtomicU64,
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
            rates: Mutex::new(HashMap::new()),
            inflight: Inflight::new(),
            redis: Mutex::new(HashMap::new()),
            redis_fallbacks: AtomicU64::new(0),
            epoch: Instant::now(),
            last_fallback_log_ms: AtomicU64::new(0),
        }
    }
}

impl LimitStore {
    fn rate(&self, per: Duration) -> RatePair {
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let make = || {
            Arc::new(Rate::new_with_estimator_config(
                per,
                SKETCH_HASHES,
                SKETCH_SLOTS,
            ))
        };
        rates.entry(per).or_insert_with(|| (make(), make())).clone()
    }

    fn redis(&self, cfg: &RedisConfig) -> Option<Arc<RedisCounter>> {
        let mut all = self.redis.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = all.get(&cfg.url) {
            if r.timeout == cfg.timeout {
                return Some(r.clone());
            }
        }
        let client = redis::Client::open(cfg.url.as_str()).ok()?;
        let r = Arc::new(RedisCounter {
            client,
            conn: ArcSwapOption::empty(),
            connecting: AtomicBool::new(false),
            next_attempt_ms: AtomicU64::new(0),
            timeout: cfg.timeout,
            script: redis::Script::new(SLIDING_WINDOW_LUA),
            epoch: Instant::now(),
        });
        all.insert(cfg.url.clone(), r.clone());
        Some(r)
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
                let (local, phase) = self.rate(l.per);
                CompiledRate {
                    id,
                    index,
                    name: names[index].clone(),
                    limit: l.requests,
                    per: l.per,
                    key: l.key.clone(),
                    local,
                    phase,
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

    fn note_fallback(&self, why: &str) {
        self.redis_fallbacks.fetch_add(1, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_fallback_log_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && self
                .last_fallback_log_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!("redis: {why}; global rate limits fall back to local counting");
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
    local: Arc<Rate>,
    /// Per key, where in the window (in thousandths) a fresh key's first request came.
    phase: Arc<Rate>,
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
        let mut counted: Vec<(&CompiledRate, u64)> = Vec::new();
        for limit in &self.rates {
            let mut buf = [0u8; 16];
            let key = key_bytes(&limit.key, input, &mut buf);
            let local_key = counter_key(limit.id, key);
            let (ok, state, local) = match &limit.global {
                Some(redis) => match redis.decide(limit, key).await {
                    Ok((ok, state)) => (ok, state, false),
                    Err(why) => {
                        store.note_fallback(&why);
                        let (ok, state) = decide_local(limit, local_key);
                        (ok, state, true)
                    }
                },
                None => {
                    let (ok, state) = decide_local(limit, local_key);
                    (ok, state, true)
                }
            };
            if !ok {
                for (l, k) in counted {
                    l.local.observe(&k, -1);
                }
                return Outcome::RateLimited(state);
            }
            if local {
                counted.push((limit, local_key));
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
                    for (l, k) in counted {
                        l.local.observe(&k, -1);
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

/// The counter of one key of one limit in the local estimator.
fn counter_key(limit_id: u64, key: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    limit_id.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// The local sliding-window decision: count the request, and take the count back if the
/// estimate then exceeds the limit.
///
/// With a previous window, the estimate of the trailing window is
/// `previous × (1 − f) + current` (`f`: how far into the current window we are). Without one
/// (a new key, or one idle for a window), the key is held to `limit × (1 − f₀)` in this window,
/// `f₀` being where in the window its first request came: a key that starts in the middle of a
/// window gets the share of the limit that a window starting with it would leave, not a whole
/// window's allowance on top of the next one. (The limiter's windows are shared by all keys;
/// Redis, below, phases each key's windows from its first request instead.)
fn decide_local(limit: &CompiledRate, k: u64) -> (bool, RateState) {
    let mut parts = limit.local.rate_with(&k, |c| c);
    if parts.curr_samples == 0 {
        // The call that rotates the windows reports the fraction from before the rotation;
        // read again for the new window's.
        parts = limit.local.rate_with(&k, |c| c);
    }
    let f = parts.current_interval_fraction;
    let current = limit.local.observe(&k, 1);
    let fresh = parts.prev_samples <= 0;
    let (estimate, cap) = if !fresh {
        (
            parts.prev_samples as f64 * (1.0 - f) + current as f64,
            limit.limit as f64,
        )
    } else {
        let first = limit.phase.rate_with(&k, |c| c.curr_samples);
        // The phase sketch sums the phases of keys that share its slots: an estimate later than
        // now can only be such a collision, and then the key counts as starting now (the most a
        // fresh key could claim), never as starting after the window's end.
        let f0 = if first > 0 {
            (first as f64 / 1000.0).min(f)
        } else {
            f
        };
        // At least one request: a key that first calls at the very end of a window is not
        // turned away.
        let cap = (limit.limit as f64 * (1.0 - f0)).round().max(1.0);
        (current as f64, cap)
    };
    // The estimate blends a fraction of the previous window: compare it rounded, or a small
    // limit would lose one request per window to the fraction.
    let allowed = estimate.round() <= cap;
    if !allowed {
        limit.local.observe(&k, -1);
    } else if fresh && current == 1 {
        // The first request of a fresh window: remember where in the window it came.
        limit.phase.observe(&k, ((f * 1000.0) as isize).max(1));
    }
    let windows = if allowed {
        // Until the window turns, when more is allowed.
        1.0 - f
    } else {
        let prev = parts.prev_samples.max(0) as f64;
        let admitted = (current - 1).max(0) as f64;
        wait_for_one(limit.limit as f64, cap, prev, admitted, f)
    };
    let remaining = (cap - estimate).round().max(0.0) as u64;
    (
        allowed,
        RateState {
            limit: limit.limit,
            remaining: if allowed { remaining } else { 0 },
            reset: ((windows * limit.per.as_secs_f64()).ceil() as u64).max(1),
            policy: limit.index,
        },
    )
}

/// How long (in windows) until one more request fits, for a key refused `f` into a window in
/// which it may send `cap` (the limit, or a fresh key's share) and has sent `current`, after
/// `prev` in the window before.
fn wait_for_one(limit: f64, cap: f64, prev: f64, current: f64, f: f64) -> f64 {
    // The point in a window at which `count` requests of the window before leave room for
    // `room` more, in the sliding estimate.
    let fits = |count: f64, room: f64| -> f64 {
        if count <= 0.0 || room >= count {
            0.0
        } else {
            1.0 - room.max(0.0) / count
        }
    };
    if current + 1.0 <= cap {
        // This window's own requests leave room: wait until the previous window's fade out.
        (fits(prev, cap - current - 1.0) - f).max(0.0)
    } else {
        // This window is full: wait into the next, where this window's requests fade out.
        1.0 - f + fits(current, limit - 1.0)
    }
}

#[cfg(test)]
mod tests;
