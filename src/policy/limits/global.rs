//! Global rate limits: the sliding window counted in Redis, shared by every gateway that uses
//! the same Redis.

use super::{CompiledRate, RateState};
use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sliding-window decision in Redis, atomic and on Redis's clock. Windows are phased per
/// key from its first request (kept while the key stays active), so a key that starts in the
/// middle of a clock-aligned window does not get that window's full allowance on top of the
/// next one. KEYS[1]: the counter's base name; ARGV: limit, window in milliseconds. Returns
/// {admitted, remaining, reset_ms}: for a refused request, the time until one more fits.
pub(super) const SLIDING_WINDOW_LUA: &str = r#"
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
    pub(super) client: redis::Client,
    pub(super) conn: ArcSwapOption<redis::aio::ConnectionManager>,
    pub(super) connecting: AtomicBool,
    pub(super) next_attempt_ms: AtomicU64,
    pub(super) timeout: Duration,
    pub(super) script: redis::Script,
    pub(super) epoch: Instant,
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
    pub(super) async fn decide(
        &self,
        limit: &CompiledRate,
        key: &[u8],
    ) -> Result<(bool, RateState), String> {
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
                    policy: limit.index,
                },
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}
