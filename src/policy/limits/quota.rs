//! Usage plans' quotas: requests per consumer over calendar periods (a day, an ISO week, a
//! month in the configured time zone), counted in Redis so that a quota holds across every
//! gateway sharing it and across restarts and upgrades. Each plan's period is one sorted set
//! (`tollgate:quota:{PLAN:PERIOD:START}`, the consumer as member and its count as score), so
//! that a consumer's usage is one `ZSCORE` and the plan's heaviest users one `ZREVRANGE`; its
//! hash tag keeps it on one slot of a Redis Cluster. Only admitted requests are counted. When
//! Redis does not answer in time the decision falls back to a count in this process, as global
//! rate limits do (logged once, counted in `tollgate_ratelimit_redis_fallbacks_total`).

use super::global::RedisCounter;
use super::LimitStore;
use crate::config::{Period, Plan};
use http::HeaderValue;
use jiff::{civil, Timestamp, ToSpan, ZonedDateTime};
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

/// Count one request of `ARGV[1]` if it stays within `ARGV[2]`; the set expires at `ARGV[3]`
/// (Unix seconds). Returns {admitted, count}.
static COUNT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local n = tonumber(redis.call('ZINCRBY', KEYS[1], 1, ARGV[1]))
if n > tonumber(ARGV[2]) then
  n = tonumber(redis.call('ZINCRBY', KEYS[1], -1, ARGV[1]))
  return {0, n}
end
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return {1, n}
"#,
    )
});

/// Give back one request of `ARGV[1]` (a later quota refused it).
static UNCOUNT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new("return tonumber(redis.call('ZINCRBY', KEYS[1], -1, ARGV[1]))")
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

    /// Count one request of `consumer` against every quota of the plan; refused by the first
    /// quota it would exceed (the counts already taken are given back).
    pub async fn check(&self, store: &LimitStore, consumer: &str) -> QuotaOutcome {
        let now = ZonedDateTime::now().with_time_zone(self.zone.clone());
        let mut tightest: Option<QuotaState> = None;
        let mut taken: Vec<(String, bool)> = Vec::new();
        for q in &self.quotas {
            let (label, end) = window(q.period, &now);
            let key = self.key(q.period, &label);
            let expire = (end.as_second() + 86_400).to_string();
            let args = [consumer.to_string(), q.limit.to_string(), expire];
            let answer = match &self.redis {
                Some(r) => r.call::<(i64, i64)>(&COUNT, key.clone(), &args).await.ok(),
                None => None,
            };
            let (admitted, count, local) = match answer {
                Some((ok, n)) => (ok == 1, n.max(0) as u64, false),
                None => {
                    store.redis_fallbacks.fetch_add(1, Ordering::Relaxed);
                    let (ok, n) = store.local_quota(&key, consumer, q.limit);
                    (ok, n, true)
                }
            };
            let reset = (end.as_second() - now.timestamp().as_second()).max(1) as u64;
            let state = QuotaState {
                limit: q.limit,
                remaining: q.limit.saturating_sub(count),
                reset,
                period: q.period,
                policy: self.policy.clone(),
            };
            if !admitted {
                for (key, local) in taken {
                    self.give_back(store, &key, consumer, local).await;
                }
                return QuotaOutcome::Refused(state);
            }
            taken.push((key, local));
            if tightest
                .as_ref()
                .is_none_or(|t| state.remaining < t.remaining)
            {
                tightest = Some(state);
            }
        }
        match tightest {
            Some(t) => QuotaOutcome::Allowed(t),
            // A plan has at least one quota (checked with the file).
            None => QuotaOutcome::Allowed(QuotaState {
                limit: 0,
                remaining: 0,
                reset: 1,
                period: Period::Day,
                policy: self.policy.clone(),
            }),
        }
    }

    async fn give_back(&self, store: &LimitStore, key: &str, consumer: &str, local: bool) {
        let redis = self.redis.as_ref().filter(|_| !local);
        let done = match redis {
            Some(r) => r
                .call::<i64>(&UNCOUNT, key.to_string(), &[consumer.to_string()])
                .await
                .is_ok(),
            None => false,
        };
        if !done {
            store.local_quota_undo(key, consumer);
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
                    .call::<i64>(&READ, key.clone(), &[consumer.to_string()])
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
            .call(&TOP, self.key(period, &label), &[n.max(1).to_string()])
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

    /// The fallback count: one more request of `consumer` in `key` if it fits `limit`.
    fn local_quota(&self, key: &str, consumer: &str, limit: u64) -> (bool, u64) {
        let mut all = self.quotas.lock().unwrap_or_else(|e| e.into_inner());
        let n = all
            .entry((key.to_string(), consumer.to_string()))
            .or_insert(0);
        if *n >= limit {
            return (false, *n);
        }
        *n += 1;
        (true, *n)
    }

    fn local_quota_undo(&self, key: &str, consumer: &str) {
        let mut all = self.quotas.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = all.get_mut(&(key.to_string(), consumer.to_string())) {
            *n = n.saturating_sub(1);
        }
    }

    fn local_quota_used(&self, key: &str, consumer: &str) -> u64 {
        let all = self.quotas.lock().unwrap_or_else(|e| e.into_inner());
        all.get(&(key.to_string(), consumer.to_string()))
            .copied()
            .unwrap_or(0)
    }
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
    fn the_fallback_count_stops_at_the_limit_and_gives_back() {
        let store = LimitStore::default();
        assert_eq!(store.local_quota("k", "a", 2), (true, 1));
        assert_eq!(store.local_quota("k", "a", 2), (true, 2));
        assert_eq!(store.local_quota("k", "a", 2), (false, 2));
        assert_eq!(store.local_quota("k", "b", 2), (true, 1));
        store.local_quota_undo("k", "a");
        assert_eq!(store.local_quota_used("k", "a"), 1);
    }
}
