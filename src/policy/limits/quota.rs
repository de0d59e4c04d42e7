//! Usage plans' quotas: requests per consumer over calendar periods (a day, an ISO week, a
//! month in the configured time zone), counted in Redis so that a quota holds across every
//! gateway sharing it and across restarts and upgrades. Each plan's period is one sorted set
//! (`tollgate:quota:{PLAN}:PERIOD:START`, the consumer as member and its count as score), so
//! that a consumer's usage is one `ZSCORE` and the plan's heaviest users one `ZREVRANGE`; the
//! hash tag puts all of a plan's sets on one slot of a Redis Cluster, so one script checks and
//! counts every quota of the plan at once (all or none). Only admitted requests are counted.
//!
//! When Redis does not answer in time the decision falls back to a count in this process, as
//! global rate limits do (logged once, counted in `tollgate_ratelimit_redis_fallbacks_total`):
//! the local count starts from the last count Redis gave for the consumer, and what it admits
//! is added to Redis with the consumer's next decision there, so an outage neither resets a
//! quota nor loses what was admitted meanwhile.

use super::global::{RedisCounter, Skipped};
use super::LimitStore;
use crate::config::{Period, Plan};
use http::HeaderValue;
use jiff::{civil, Timestamp, ToSpan, ZonedDateTime};
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

/// One request of `ARGV[1]` against every quota of a plan (`KEYS[i]`, with `ARGV` holding
/// for each its limit, the Unix second its set expires, and the requests admitted locally
/// while Redis was away, added first). Admitted only if every quota has room, and then counted
/// in every one. Returns {admitted, count of each quota}.
static COUNT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local member = ARGV[1]
local counts = {}
local admitted = 1
for i = 1, #KEYS do
  local limit, expire, pending = tonumber(ARGV[3 * i - 1]), ARGV[3 * i], tonumber(ARGV[3 * i + 1])
  if pending > 0 then
    redis.call('ZINCRBY', KEYS[i], pending, member)
    redis.call('EXPIREAT', KEYS[i], expire)
  end
  counts[i] = tonumber(redis.call('ZSCORE', KEYS[i], member) or '0')
  if counts[i] + 1 > limit then admitted = 0 end
end
if admitted == 1 then
  for i = 1, #KEYS do
    counts[i] = tonumber(redis.call('ZINCRBY', KEYS[i], 1, member))
    redis.call('EXPIREAT', KEYS[i], ARGV[3 * i])
  end
end
local out = {admitted}
for i = 1, #KEYS do out[i + 1] = counts[i] end
return out
"#,
    )
});

/// `ARGV[1]`'s count (0 when it has none).
static READ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new("return tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')")
});

/// The `ARGV[1]` members with the highest counts, with their counts.
static TOP: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "return redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')",
    )
});

/// The period containing `now` in `zone`: its start (as a key part: `2026-11-30`,
/// `2026-W49`, `2026-11`) and when it ends.
pub fn window(period: Period, now: &ZonedDateTime) -> (String, Timestamp) {
    let date = now.date();
    let (label, start) = match period {
        Period::Day => (date.to_string(), date),
        Period::Week => {
            let iso = date.iso_week_date();
            let monday = date
                .checked_sub((iso.weekday().to_monday_zero_offset() as i64).days())
                .unwrap_or(date);
            (format!("{}-W{:02}", iso.year(), iso.week()), monday)
        }
        Period::Month => (
            format!("{:04}-{:02}", date.year(), date.month()),
            civil::date(date.year(), date.month(), 1),
        ),
    };
    let next = match period {
        Period::Day => start.checked_add(1.day()),
        Period::Week => start.checked_add(1.week()),
        Period::Month => start.checked_add(1.month()),
    };
    // The next period starts at its first instant in the zone (a day that starts at 01:00
    // after a DST change starts then).
    let end = next
        .ok()
        .and_then(|d| d.to_zoned_datetime(now.time_zone().clone()).ok())
        .map(|z| z.timestamp())
        .unwrap_or_else(|| now.timestamp());
    (label, end)
}

/// One quota of a plan, compiled.
struct CompiledQuota {
    limit: u64,
    period: Period,
}

/// What a consumer has left of the tightest quota, for the `RateLimit` headers.
#[derive(Debug, Clone)]
pub struct QuotaState {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the period turns.
    pub reset: u64,
    pub period: Period,
    /// `RateLimit-Policy` of the plan's quotas.
    pub policy: HeaderValue,
}

/// The decision of a plan's quotas.
pub enum QuotaOutcome {
    Allowed(QuotaState),
    Refused(QuotaState),
}

/// A consumer's use of one quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUsage {
    pub period: Period,
    /// The period's key part (`2026-11-30`).
    pub window: String,
    pub limit: u64,
    pub used: u64,
    /// When the period ends (RFC 3339).
    pub resets_at: String,
    /// Read from this process's fallback count: Redis did not answer.
    pub local: bool,
}

/// A usage plan's quotas, ready for decisions.
pub struct PlanQuotas {
    pub name: Arc<str>,
    quotas: Vec<CompiledQuota>,
    zone: jiff::tz::TimeZone,
    redis: Option<Arc<RedisCounter>>,
    policy: HeaderValue,
}

impl std::fmt::Debug for PlanQuotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanQuotas")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn seconds(period: Period) -> u64 {
    match period {
        Period::Day => 86_400,
        Period::Week => 7 * 86_400,
        Period::Month => 30 * 86_400,
    }
}

impl PlanQuotas {
    /// The Redis key of the plan's `period` window `label`.
    fn key(&self, period: Period, label: &str) -> String {
        format!(
            "tollgate:quota:{{{}:{}:{label}}}",
            self.name,
            period.as_str()
        )
    }

    /// Count one request of `consumer` against every quota of the plan: admitted (and counted
    /// in every quota) only if each has room. The state returned is the tightest quota's when
    /// admitted, and when refused the exhausted quota that turns last (its reset is when the
    /// consumer may call again).
    pub async fn check(&self, store: &LimitStore, consumer: &str) -> QuotaOutcome {
        let now = ZonedDateTime::now().with_time_zone(self.zone.clone());
        let windows: Vec<(String, Timestamp)> = self
            .quotas
            .iter()
            .map(|q| {
                let (label, end) = window(q.period, &now);
                (self.key(q.period, &label), end)
            })
            .collect();
        let keys: Vec<String> = windows.iter().map(|(k, _)| k.clone()).collect();
        let pending = store.take_pending(&keys, consumer);
        let answer = match &self.redis {
            Some(r) => {
                let mut args = vec![consumer.to_string()];
                for ((q, (_, end)), p) in self.quotas.iter().zip(&windows).zip(&pending) {
                    args.push(q.limit.to_string());
                    args.push((end.as_second() + 86_400).to_string());
                    args.push(p.to_string());
                }
                r.call::<Vec<i64>>(&COUNT, &keys, &args).await
            }
            None => Err(Skipped::NotAsked),
        };
        let limits: Vec<u64> = self.quotas.iter().map(|q| q.limit).collect();
        let ends: Vec<i64> = windows.iter().map(|(_, e)| e.as_second()).collect();
        let (admitted, counts) = match answer {
            Ok(a) if a.len() == keys.len() + 1 => {
                let counts: Vec<u64> = a[1..].iter().map(|n| (*n).max(0) as u64).collect();
                store.seen_in_redis(&keys, consumer, &counts, &ends);
                (a[0] == 1, counts)
            }
            failed => {
                store.redis_fallbacks.fetch_add(1, Ordering::Relaxed);
                // A script that timed out may still run once Redis catches up (counting this
                // request there itself, pending included): only a request Redis was never
                // asked about is kept to add later.
                let unsent = matches!(failed, Err(Skipped::NotAsked));
                if unsent {
                    store.give_pending_back(&keys, consumer, &pending);
                }
                store.local_quota(&keys, consumer, &limits, &ends, unsent)
            }
        };
        let now_s = now.timestamp().as_second();
        let states = self
            .quotas
            .iter()
            .zip(&counts)
            .zip(&windows)
            .map(|((q, n), (_, end))| QuotaState {
                limit: q.limit,
                remaining: q.limit.saturating_sub(*n),
                reset: (end.as_second() - now_s).max(1) as u64,
                period: q.period,
                policy: self.policy.clone(),
            });
        if admitted {
            let tightest = states.min_by_key(|s| s.remaining);
            QuotaOutcome::Allowed(tightest.unwrap_or_else(|| self.empty_state()))
        } else {
            let exhausted = states.filter(|s| s.remaining == 0).max_by_key(|s| s.reset);
            QuotaOutcome::Refused(exhausted.unwrap_or_else(|| self.empty_state()))
        }
    }

    /// The state of a plan without quotas (never: a plan has one at least, checked with the
    /// file).
    fn empty_state(&self) -> QuotaState {
        QuotaState {
            limit: 0,
            remaining: 0,
            reset: 1,
            period: Period::Day,
            policy: self.policy.clone(),
        }
    }

    /// What `consumer` has used of each quota in the current periods.
    pub async fn usage(&self, store: &LimitStore, consumer: &str) -> Vec<QuotaUsage> {
        let now = ZonedDateTime::now().with_time_zone(self.zone.clone());
        let mut out = Vec::new();
        for q in &self.quotas {
            let (label, end) = window(q.period, &now);
            let key = self.key(q.period, &label);
            let read = match &self.redis {
                Some(r) => r
                    .call::<i64>(&READ, std::slice::from_ref(&key), &[consumer.to_string()])
                    .await
                    .ok(),
                None => None,
            };
            let (used, local) = match read {
                Some(n) => (n.max(0) as u64, false),
                None => (store.local_quota_used(&key, consumer), true),
            };
            out.push(QuotaUsage {
                period: q.period,
                window: label,
                limit: q.limit,
                used,
                resets_at: end.to_string(),
                local,
            });
        }
        out
    }

    /// The `n` consumers that used most of the plan's `period` quota in the current period,
    /// with their counts; `None` when Redis does not answer.
    pub async fn top(&self, period: Period, n: usize) -> Option<Vec<(String, u64)>> {
        let now = ZonedDateTime::now().with_time_zone(self.zone.clone());
        let (label, _) = window(period, &now);
        let redis = self.redis.as_ref()?;
        let flat: Vec<String> = redis
            .call(&TOP, &[self.key(period, &label)], &[n.max(1).to_string()])
            .await
            .ok()?;
        Some(
            flat.chunks(2)
                .filter_map(|c| Some((c.first()?.clone(), c.get(1)?.parse::<f64>().ok()? as u64)))
                .collect(),
        )
    }

    /// The plan's quota periods.
    pub fn periods(&self) -> Vec<(Period, u64)> {
        self.quotas.iter().map(|q| (q.period, q.limit)).collect()
    }
}

impl LimitStore {
    /// Compile a plan's quotas, counted in `redis` (the configuration's `redis`, which a plan
    /// with consumers requires) in `zone`.
    pub fn plan(
        &self,
        plan: &Plan,
        redis: Option<&crate::config::RedisConfig>,
        zone: &jiff::tz::TimeZone,
    ) -> PlanQuotas {
        let items: Vec<String> = plan
            .quotas
            .iter()
            .map(|q| {
                format!(
                    "\"quota-{}\";q={};w={}",
                    q.period.as_str(),
                    q.requests,
                    seconds(q.period)
                )
            })
            .collect();
        PlanQuotas {
            name: Arc::from(plan.name.as_str()),
            quotas: plan
                .quotas
                .iter()
                .map(|q| CompiledQuota {
                    limit: q.requests,
                    period: q.period,
                })
                .collect(),
            zone: zone.clone(),
            redis: redis.and_then(|r| self.redis(r)),
            policy: HeaderValue::from_str(&items.join(", "))
                .unwrap_or_else(|_| HeaderValue::from_static("")),
        }
    }

    /// Take the requests admitted locally (while Redis was away) for `consumer` in `keys`,
    /// to add them to Redis with this decision.
    fn take_pending(&self, keys: &[String], consumer: &str) -> Vec<u64> {
        let mut all = self.quotas.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .map(|k| {
                all.get_mut(&(k.clone(), consumer.to_string()))
                    .map_or(0, |c| std::mem::take(&mut c.pending))
            })
            .collect()
    }

    /// Redis did not take them: keep them for the next decision there.
    fn give_pending_back(&self, keys: &[String], consumer: &str, pending: &[u64]) {
        let mut all = self.quotas.lock().unwrap_or_else(|e| e.into_inner());
        for (k, p) in keys.iter().zip(pending).filter(|(_, p)| **p > 0) {
            if let Some(c) = all.get_mut(&(k.clone(), consumer.to_string())) {
                c.pending += p;
            }
        }
    }

    /// What Redis counts for `consumer` now: where a local count would start from.
    fn seen_in_redis(&self, keys: &[String], consumer: &str, counts: &[u64], ends: &[i64]) {
        let mut all = self.quotas.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut all);
        for ((k, n), end) in keys.iter().zip(counts).zip(ends) {
            let c = all.entry((k.clone(), consumer.to_string())).or_default();
            c.count = *n;
            c.expires = *end;
        }
    }

    /// The fallback decision: one more request of `consumer` if every quota (`keys`, `limits`)
    /// has room in the local count; counted in each, and (`keep`) kept to add to Redis later.
    fn local_quota(
        &self,
        keys: &[String],
        consumer: &str,
        limits: &[u64],
        ends: &[i64],
        keep: bool,
    ) -> (bool, Vec<u64>) {
        let mut all = self.quotas.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut all);
        let id = |k: &String| (k.clone(), consumer.to_string());
        let counts: Vec<u64> = keys
            .iter()
            .map(|k| all.get(&id(k)).map_or(0, |c| c.count))
            .collect();
        if counts.iter().zip(limits).any(|(n, l)| n + 1 > *l) {
            return (false, counts);
        }
        let mut after = Vec::with_capacity(keys.len());
        for (k, end) in keys.iter().zip(ends) {
            let c = all.entry(id(k)).or_default();
            c.count += 1;
            c.pending += u64::from(keep);
            c.expires = *end;
            after.push(c.count);
        }
        (true, after)
    }

    fn local_quota_used(&self, key: &str, consumer: &str) -> u64 {
        let all = self.quotas.lock().unwrap_or_else(|e| e.into_inner());
        all.get(&(key.to_string(), consumer.to_string()))
            .map_or(0, |c| c.count)
    }
}

/// A consumer's count in one quota's window, as this process knows it.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LocalCount {
    /// The last count Redis gave, plus what was admitted here since.
    count: u64,
    /// Admitted here while Redis was away, not yet added to Redis.
    pending: u64,
    /// When the window ends (Unix seconds): past it, the entry goes.
    expires: i64,
}

/// Forget windows that ended (at most once the map holds many entries).
fn prune(all: &mut std::collections::HashMap<(String, String), LocalCount>) {
    if all.len() < 1024 {
        return;
    }
    let now = Timestamp::now().as_second();
    all.retain(|_, c| c.expires > now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, zone: &str) -> ZonedDateTime {
        let tz = jiff::tz::TimeZone::get(zone).expect("a zone");
        text.parse::<civil::DateTime>()
            .expect("a time")
            .to_zoned_datetime(tz)
            .expect("in the zone")
    }

    #[test]
    fn periods_follow_the_calendar_of_the_zone() {
        let t = at("2026-11-30T23:30:00", "Europe/Berlin");
        let (day, end) = window(Period::Day, &t);
        assert_eq!(day, "2026-11-30");
        assert_eq!(end.to_string(), "2026-11-30T23:00:00Z");
        // 2026-11-30 is a Monday: its ISO week is 49 and began that day.
        let (week, end) = window(Period::Week, &t);
        assert_eq!(week, "2026-W49");
        assert_eq!(end.to_string(), "2026-12-06T23:00:00Z");
        let (month, end) = window(Period::Month, &t);
        assert_eq!(month, "2026-11");
        assert_eq!(end.to_string(), "2026-11-30T23:00:00Z");
        // The same instant is already December 1st in Tokyo.
        let tokyo = t.with_time_zone(jiff::tz::TimeZone::get("Asia/Tokyo").expect("a zone"));
        assert_eq!(window(Period::Day, &tokyo).0, "2026-12-01");
        assert_eq!(window(Period::Month, &tokyo).0, "2026-12");
        // A week across a year's end belongs to its ISO year; a DST day is 23 hours long.
        let (week, _) = window(Period::Week, &at("2027-01-01T12:00:00", "UTC"));
        assert_eq!(week, "2026-W53");
        let (_, end) = window(Period::Day, &at("2026-03-29T00:30:00", "Europe/Berlin"));
        assert_eq!(end.to_string(), "2026-03-29T22:00:00Z");
    }

    #[test]
    fn the_fallback_starts_from_redis_and_keeps_what_it_admits_for_redis() {
        let store = LimitStore::default();
        let keys = ["d".to_string(), "m".to_string()];
        let far = Timestamp::now().as_second() + 3600;
        // Redis said 1 (day) and 5 (month); the day's limit is 3, the month's 6.
        store.seen_in_redis(&keys, "a", &[1, 5], &[far, far]);
        assert_eq!(
            store.local_quota(&keys, "a", &[3, 6], &[far, far], true),
            (true, vec![2, 6])
        );
        // The month is full: refused, nothing counted.
        assert_eq!(
            store.local_quota(&keys, "a", &[3, 6], &[far, far], true),
            (false, vec![2, 6])
        );
        // After a timed-out script (which may still run): counted, not kept for Redis.
        assert_eq!(
            store.local_quota(&keys, "b", &[3, 6], &[far, far], false),
            (true, vec![1, 1])
        );
        assert_eq!(store.take_pending(&keys, "b"), vec![0, 0]);
        // What was admitted here goes to Redis with the next decision; given back if that fails.
        assert_eq!(store.take_pending(&keys, "a"), vec![1, 1]);
        assert_eq!(store.take_pending(&keys, "a"), vec![0, 0]);
        store.give_pending_back(&keys, "a", &[1, 1]);
        assert_eq!(store.take_pending(&keys, "a"), vec![1, 1]);
        assert_eq!(store.local_quota_used("d", "a"), 2);
        // Ended windows go once the map is large.
        let mut all = std::collections::HashMap::new();
        for i in 0..2000 {
            let c = LocalCount {
                count: 1,
                pending: 0,
                expires: if i % 2 == 0 { 0 } else { far },
            };
            all.insert((i.to_string(), "x".to_string()), c);
        }
        prune(&mut all);
        assert_eq!(all.len(), 1000);
    }
}
