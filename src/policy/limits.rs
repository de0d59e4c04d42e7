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

use crate::config::{LimitKey, RedisConfig, Route};
use arc_swap::ArcSwapOption;
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

    /// Compile a route's limits, reusing the counters of unchanged limits.
    pub fn compile(&self, route: &Route, redis: Option<&RedisConfig>) -> RouteLimits {
        let rates = route
            .rate_limits
            .iter()
            .map(|l| {
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
        RouteLimits { rates, concurrency }
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

fn limit_id(definition: &str) -> u64 {
    let d = Sha256::digest(definition.as_bytes());
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

struct CompiledRate {
    id: u64,
    limit: u64,
    per: Duration,
    key: LimitKey,
    local: Arc<Rate>,
    /// Per key, where in the window (in thousandths) a fresh key's first request came.
    phase: Arc<Rate>,
    global: Option<Arc<RedisCounter>>,
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

/// The state of the tightest rate limit, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the current window ends.
    pub reset: u64,
}

impl RateState {
    /// The `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` values.
    pub fn header_values(&self) -> [(&'static str, HeaderValue); 3] {
        [
            ("ratelimit-limit", HeaderValue::from(self.limit)),
            ("ratelimit-remaining", HeaderValue::from(self.remaining)),
            ("ratelimit-reset", HeaderValue::from(self.reset)),
        ]
    }
}

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
/// window's allowance on top of the next one.
fn decide_local(limit: &CompiledRate, k: u64) -> (bool, RateState) {
    let mut parts = limit.local.rate_with(&k, |c| c);
    if parts.curr_samples == 0 {
        // The call that rotates the windows reports the fraction from before the rotation;
        // read again for the new window's.
        parts = limit.local.rate_with(&k, |c| c);
    }
    let f = parts.current_interval_fraction;
    let current = limit.local.observe(&k, 1);
    let (estimate, cap) = if parts.prev_samples > 0 {
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
    let reset = ((1.0 - f) * limit.per.as_secs_f64()).ceil() as u64;
    // The estimate blends a fraction of the previous window: compare it rounded, or a small
    // limit would lose one request per window to the fraction.
    let allowed = estimate.round() <= cap;
    if !allowed {
        limit.local.observe(&k, -1);
    } else if parts.prev_samples <= 0 && current == 1 {
        // The first request of a fresh window: remember where in the window it came.
        limit.phase.observe(&k, ((f * 1000.0) as isize).max(1));
    }
    let remaining = (cap - estimate).round().max(0.0) as u64;
    (
        allowed,
        RateState {
            limit: limit.limit,
            remaining: if allowed { remaining } else { 0 },
            reset: reset.max(1),
        },
    )
}

/// The sliding-window decision in Redis, atomic and on Redis's clock. Windows are phased per
/// key from its first request (kept while the key stays active), so a key that starts in the
/// middle of a clock-aligned window does not get that window's full allowance on top of the
/// next one. KEYS[1]: the counter's base name; ARGV: limit, window in milliseconds. Returns
/// {admitted, remaining, reset_ms}.
const SLIDING_WINDOW_LUA: &str = r#"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch_key = KEYS[1] .. ':epoch'
local epoch = tonumber(redis.call('GET', epoch_key))
if epoch == nil then
  epoch = now
  redis.call('SET', epoch_key, string.format('%d', epoch), 'PX', window * 3)
else
  redis.call('PEXPIRE', epoch_key, window * 3)
end
local index = math.floor((now - epoch) / window)
local elapsed = now - epoch - index * window
local cur_key = KEYS[1] .. ':' .. string.format('%d', index)
local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. string.format('%d', index - 1)) or '0')
local cur = tonumber(redis.call('GET', cur_key) or '0')
local weight = (window - elapsed) / window
local reset = window - elapsed
if math.floor(prev * weight + cur + 1 + 0.5) > limit then
  return {0, 0, reset}
end
cur = redis.call('INCR', cur_key)
if cur == 1 then
  redis.call('PEXPIRE', cur_key, window * 2 + 1000)
end
local remaining = math.floor(limit - (prev * weight + cur) + 0.5)
if remaining < 0 then remaining = 0 end
return {1, remaining, reset}
"#;

/// A Redis server holding global counters, with a lazily made, self-healing connection.
pub struct RedisCounter {
    client: redis::Client,
    conn: ArcSwapOption<redis::aio::ConnectionManager>,
    connecting: AtomicBool,
    next_attempt_ms: AtomicU64,
    timeout: Duration,
    script: redis::Script,
    epoch: Instant,
}

impl RedisCounter {
    async fn connection(&self) -> Result<redis::aio::ConnectionManager, String> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        if now < self.next_attempt_ms.load(Ordering::Relaxed) {
            return Err("not connected".into());
        }
        if self.connecting.swap(true, Ordering::AcqRel) {
            return Err("connecting".into());
        }
        // Cleared however this ends, also when the caller's timeout drops this future.
        struct Connecting<'a>(&'a AtomicBool);
        impl Drop for Connecting<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _connecting = Connecting(&self.connecting);
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        // Until this attempt ends (or is dropped by the caller's timeout), others fall back;
        // a failed attempt is not repeated for a second.
        self.next_attempt_ms.store(now + 1000, Ordering::Relaxed);
        match redis::aio::ConnectionManager::new_with_config(self.client.clone(), cfg).await {
            Ok(c) => {
                self.conn.store(Some(Arc::new(c.clone())));
                Ok(c)
            }
            Err(e) => Err(format!("cannot connect: {e}")),
        }
    }

    /// One decision in Redis; connecting (when needed) and the script together take at most
    /// `timeout`.
    async fn decide(&self, limit: &CompiledRate, key: &[u8]) -> Result<(bool, RateState), String> {
        let digest = Sha256::digest(key);
        let name = format!(
            "tollgate:rl:{:016x}:{:016x}",
            limit.id,
            u64::from_be_bytes([
                digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6],
                digest[7]
            ])
        );
        let work = async {
            let mut conn = self.connection().await?;
            let mut invocation = self.script.key(name);
            invocation
                .arg(limit.limit)
                .arg(limit.per.as_millis() as u64);
            invocation
                .invoke_async::<(i64, i64, i64)>(&mut conn)
                .await
                .map_err(|e| format!("script failed: {e}"))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok((ok, remaining, reset_ms))) => Ok((
                ok == 1,
                RateState {
                    limit: limit.limit,
                    remaining: remaining.max(0) as u64,
                    reset: (reset_ms.max(0) as u64).div_ceil(1000).max(1),
                },
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200,000 fresh keys in one window, far more than the sketches have slots: shared slots must
    /// not cap a key below its allowance (a summed phase once read as "started after the end of
    /// the window" and held keys to one request).
    #[test]
    fn many_fresh_keys_keep_their_allowance() {
        let config = crate::config::parse(
            "listeners: [{address: 127.0.0.1:1}]\nupstreams: {u: {peers: [127.0.0.1:2]}}\nroutes:\n  - {name: r, match: {}, upstream: u, rate_limit: [{requests: 1000000, per: 1s, key: client_ip}]}\n",
        )
        .expect("test configuration");
        let store = LimitStore::default();
        let limits = store.compile(&config.routing.routes[0], None);
        let headers = HeaderMap::new();
        // The keys start in the middle of a window (windows count from the limit's creation), so
        // each one's phase is about 500/1000 and two of them in one slot sum past the window.
        std::thread::sleep(std::time::Duration::from_millis(400));
        for round in 0..2 {
            for i in 0..200_000u32 {
                let input = KeyInput {
                    consumer: None,
                    client_ip: Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))),
                    headers: &headers,
                };
                let outcome = futures::executor::block_on(limits.check(&store, &input));
                assert!(
                    matches!(outcome, Outcome::Allowed(..)),
                    "key {i} refused in round {round}"
                );
            }
        }
    }
}
