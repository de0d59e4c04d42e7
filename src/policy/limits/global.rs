//! Global rate limits: the sliding window counted in Redis, shared by every gateway that uses
//! the same Redis.

use super::{CompiledRate, RateState};
use crate::config::RedisTarget;
use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sliding-window decision in Redis, atomic and on Redis's clock. Windows are phased per
/// key from its first request (kept while the key stays active), so a key that starts in the
/// middle of a clock-aligned window does not get that window's full allowance on top of the
/// next one. The whole state of a key is one hash (`e`: when its first window began, `i`: the
/// index of the window `c` counts, `c`, `p`: this window's and the previous one's requests), so
/// the script touches only `KEYS[1]` and runs on Redis Cluster as on one server. ARGV: limit,
/// window in milliseconds. Returns {admitted, remaining, reset_ms}: for a refused request, the
/// time until one more fits.
pub(super) const SLIDING_WINDOW_LUA: &str = r#"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'e', 'i', 'c', 'p')
local epoch = tonumber(h[1])
local index, cur, prev = 0, 0, 0
if epoch == nil then
  epoch = now
else
  index = tonumber(h[2]) or 0
  cur = tonumber(h[3]) or 0
  prev = tonumber(h[4]) or 0
end
local now_index = math.floor((now - epoch) / window)
if now_index ~= index then
  if now_index == index + 1 then prev = cur else prev = 0 end
  cur = 0
  index = now_index
end
local elapsed = now - epoch - index * window
local weight = (window - elapsed) / window
local reset = window - elapsed
local admitted = math.floor(prev * weight + cur + 1 + 0.5) <= limit
if admitted then cur = cur + 1 end
redis.call('HSET', KEYS[1], 'e', string.format('%d', epoch), 'i', string.format('%d', index),
  'c', string.format('%d', cur), 'p', string.format('%d', prev))
redis.call('PEXPIRE', KEYS[1], window * 3)
if not admitted then
  -- Refused: how long until one more request fits, as the sliding estimate fades out.
  local retry
  if cur + 1 <= limit and prev > 0 then
    retry = math.max(window * (1 - (limit - cur - 1) / prev) - elapsed, 0)
  elseif cur > 0 then
    retry = reset + math.max(window * (1 - (limit - 1) / cur), 0)
  else
    retry = reset
  end
  return {0, 0, math.ceil(retry)}
end
local remaining = math.floor(limit - (prev * weight + cur) + 0.5)
if remaining < 0 then remaining = 0 end
return {1, remaining, reset}
"#;

/// Why a decision did not come from Redis.
pub(super) enum Skipped {
    /// Redis failed just now (the message says how).
    Failed(String),
    /// The breaker is open, a probe is under way, or the first connection is being made:
    /// Redis was not asked.
    NotAsked,
}

/// A Redis server holding global counters, with a lazily made, self-healing connection and a
/// circuit breaker: after a failure, decisions skip Redis for a back-off (doubled while probes
/// fail, up to a maximum), then one request at a time probes it, and its success closes the
/// breaker again.
pub struct RedisCounter {
    pub(super) backend: Backend,
    pub(super) conn: ArcSwapOption<Conn>,
    pub(super) connecting: AtomicBool,
    pub(super) timeout: Duration,
    pub(super) script: redis::Script,
    pub(super) breaker: Breaker,
}

/// One Redis server or a Redis Cluster.
pub(super) enum Backend {
    Server(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

impl Backend {
    /// The client for `target`, whose connections give up after `timeout`.
    pub(super) fn new(target: &RedisTarget, timeout: Duration) -> Option<Backend> {
        Some(match target {
            RedisTarget::Server(url) => Backend::Server(redis::Client::open(url.as_str()).ok()?),
            RedisTarget::Cluster(nodes) => Backend::Cluster(
                redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .build()
                    .ok()?,
            ),
        })
    }
}

/// A self-healing connection: the connection manager of one server, or a cluster connection
/// (which follows the cluster's slots and reconnects to its nodes by itself).
#[derive(Clone)]
pub(super) enum Conn {
    Server(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// The circuit breaker's state.
pub(super) struct Breaker {
    epoch: Instant,
    /// 0 while closed; else until when (ms since `epoch`) decisions skip Redis.
    open_until_ms: AtomicU64,
    /// The back-off of the next failed probe.
    backoff_ms: AtomicU64,
    probing: AtomicBool,
    min_ms: u64,
    max_ms: u64,
}

/// What the breaker lets a decision do.
enum Pass<'a> {
    /// Ask Redis.
    Closed,
    /// Ask Redis as the one probe; the guard lets the next probe go when dropped.
    Probe(ProbeGuard<'a>),
    /// Do not ask.
    Open,
}

struct ProbeGuard<'a>(&'a AtomicBool);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Breaker {
    pub(super) fn new(backoff: Duration, max_backoff: Duration) -> Breaker {
        let min_ms = (backoff.as_millis() as u64).max(1);
        Breaker {
            epoch: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(min_ms),
            probing: AtomicBool::new(false),
            min_ms,
            max_ms: (max_backoff.as_millis() as u64).max(min_ms),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// True while decisions skip Redis.
    pub(super) fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Relaxed) != 0
    }

    fn pass(&self) -> Pass<'_> {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Pass::Closed;
        }
        if self.now_ms() < until || self.probing.swap(true, Ordering::AcqRel) {
            return Pass::Open;
        }
        Pass::Probe(ProbeGuard(&self.probing))
    }

    fn succeeded(&self) {
        if self.open_until_ms.swap(0, Ordering::AcqRel) != 0 {
            self.backoff_ms.store(self.min_ms, Ordering::Relaxed);
            log::info!("redis answers again; global rate limits are shared again");
        }
    }

    fn failed(&self, why: &str, probe: bool) {
        let now = self.now_ms();
        if probe {
            let backoff = self.backoff_ms.load(Ordering::Relaxed);
            self.backoff_ms
                .store((backoff * 2).min(self.max_ms), Ordering::Relaxed);
            self.open_until_ms.store(now + backoff, Ordering::Release);
            log::debug!("redis probe: {why}; next in {backoff} ms");
        } else if self
            .open_until_ms
            .compare_exchange(0, now + self.min_ms, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.backoff_ms
                .store((self.min_ms * 2).min(self.max_ms), Ordering::Relaxed);
            log::warn!(
                "redis: {why}; global rate limits count locally until a probe finds it back (first in {} ms)",
                self.min_ms
            );
        }
    }
}

impl RedisCounter {
    async fn connection(&self) -> Result<Conn, Skipped> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        if self.connecting.swap(true, Ordering::AcqRel) {
            return Err(Skipped::NotAsked);
        }
        // Cleared however this ends, also when the caller's timeout drops this future.
        let _connecting = ProbeGuard(&self.connecting);
        let made = match &self.backend {
            Backend::Server(client) => {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(1);
                redis::aio::ConnectionManager::new_with_config(client.clone(), cfg)
                    .await
                    .map(Conn::Server)
            }
            Backend::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        };
        match made {
            Ok(c) => {
                self.conn.store(Some(Arc::new(c.clone())));
                Ok(c)
            }
            Err(e) => Err(Skipped::Failed(format!("cannot connect: {e}"))),
        }
    }

    /// Run `script` on `keys` (one Cluster slot: they share a hash tag) with `args` in Redis;
    /// connecting (when needed) and the script together take at most `timeout`. While the
    /// breaker is open, Redis is not asked.
    pub(super) async fn call<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, Skipped> {
        let probe = match self.breaker.pass() {
            Pass::Open => return Err(Skipped::NotAsked),
            Pass::Closed => None,
            Pass::Probe(guard) => Some(guard),
        };
        let work = async {
            let conn = self.connection().await?;
            let mut invocation = script.prepare_invoke();
            for k in keys {
                invocation.key(k);
            }
            for a in args {
                invocation.arg(a);
            }
            let answer = match conn {
                Conn::Server(mut c) => invocation.invoke_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async::<T>(&mut c).await,
            };
            answer.map_err(|e| Skipped::Failed(format!("script failed: {e}")))
        };
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Skipped::Failed(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        };
        match &result {
            Ok(_) => self.breaker.succeeded(),
            Err(Skipped::Failed(why)) => self.breaker.failed(why, probe.is_some()),
            Err(Skipped::NotAsked) => {}
        }
        drop(probe);
        result
    }

    /// One sliding-window decision in Redis.
    pub(super) async fn decide(
        &self,
        limit: &CompiledRate,
        key: &[u8],
    ) -> Result<(bool, RateState), Skipped> {
        let digest = Sha256::digest(key);
        // One key per limit key; its hash tag keeps anything derived from it on one slot.
        let name = format!(
            "tollgate:rl:{{{:016x}:{:016x}}}",
            limit.id,
            u64::from_be_bytes([
                digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6],
                digest[7]
            ])
        );
        let args = [limit.limit.to_string(), limit.per.as_millis().to_string()];
        let result = self
            .call::<(i64, i64, i64)>(&self.script, &[name], &args)
            .await;
        result.map(|(ok, remaining, reset_ms)| {
            (
                ok == 1,
                RateState {
                    limit: limit.limit,
                    remaining: remaining.max(0) as u64,
                    reset: (reset_ms.max(0) as u64).div_ceil(1000).max(1),
                    policy: limit.index,
                },
            )
        })
    }
}
