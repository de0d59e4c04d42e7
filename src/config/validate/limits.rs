//! Rate and concurrency limits of a route (what each counts by, how often, where), and the
//! Redis server that holds global counters.

use super::super::raw::{
    Parsed, RawConcurrencyLimit, RawHeaderStyle, RawLimitKey, RawRateLimit, RawRedis, RawScope,
};
use super::super::{ConcurrencyLimit, HeaderStyle, LimitKey, RateLimit, RedisConfig, RedisTarget};
use super::Validator;
use serde_yaml::Value;
use std::time::Duration;

impl Validator<'_> {
    /// Which header convention (`key`: `rate_limit_headers` or `cache_status_headers`)
    /// responses follow (`standard` by default).
    pub(super) fn header_style(&mut self, key: &str, value: Option<Value>) -> HeaderStyle {
        match value.and_then(|v| self.item::<RawHeaderStyle>(key, v)) {
            None | Some(RawHeaderStyle::Standard) => HeaderStyle::Standard,
            Some(RawHeaderStyle::Legacy) => HeaderStyle::Legacy,
            Some(RawHeaderStyle::Both) => HeaderStyle::Both,
        }
    }

    /// `rate_limit_max_keys`: how many keys local rate limits hold at most.
    pub(super) fn max_keys(&mut self, value: Option<Value>) -> usize {
        const DEFAULT: usize = super::super::DEFAULT_RATE_LIMIT_MAX_KEYS;
        let Some(n) = value.and_then(|v| self.item::<u64>("rate_limit_max_keys", v)) else {
            return DEFAULT;
        };
        if !(1000..=100_000_000).contains(&n) {
            self.error(
                "rate_limit_max_keys",
                format!("{n} is out of range: from 1000 to 100000000 keys (about 80 bytes each)"),
            );
            return DEFAULT;
        }
        n as usize
    }

    /// What a limit counts by; `consumer` needs the route to authenticate its callers.
    fn limit_key(
        &mut self,
        place: String,
        key: Parsed<RawLimitKey>,
        has_auth: bool,
    ) -> Option<LimitKey> {
        let key = match key.0 {
            Err(msg) => {
                self.error(place, msg);
                return None;
            }
            Ok(key) => key,
        };
        let key = match key {
            RawLimitKey::Consumer => LimitKey::Consumer,
            RawLimitKey::ClientIp => LimitKey::ClientIp,
            RawLimitKey::Route => LimitKey::Route,
            RawLimitKey::Header(h) => LimitKey::Header(h),
        };
        if key == LimitKey::Consumer && !has_auth {
            self.error(
                place,
                "`key: consumer` needs `auth` on the route: who the caller is must be known",
            );
            return None;
        }
        Some(key)
    }

    /// A route's rate limits (`base` is the route's place).
    pub(super) fn rate_limits(
        &mut self,
        base: &str,
        raw: Option<Vec<RawRateLimit>>,
        has_auth: bool,
        have_redis: bool,
    ) -> Vec<RateLimit> {
        let mut rate_limits = Vec::new();
        for (j, rl) in raw.unwrap_or_default().into_iter().enumerate() {
            let place = format!("{base}.rate_limit[{j}]");
            let key = self.limit_key(format!("{place}.key"), rl.key, has_auth);
            if rl.requests == 0 {
                self.error(format!("{place}.requests"), "must be at least 1");
            }
            if rl.per.0 < Duration::from_secs(1) || rl.per.0 > Duration::from_secs(86400) {
                self.error(format!("{place}.per"), "must be between 1s and 24h");
            }
            let global = rl.scope == Some(RawScope::Global);
            if global && !have_redis {
                self.error(
                    format!("{place}.scope"),
                    "global limits are counted in Redis: add a top-level `redis` section",
                );
            }
            if let Some(key) = key {
                let limit = RateLimit {
                    requests: rl.requests,
                    per: rl.per.0,
                    key,
                    global,
                };
                if rate_limits.contains(&limit) {
                    self.error(place, "is the same as an earlier limit of this route");
                } else {
                    rate_limits.push(limit);
                }
            }
        }
        rate_limits
    }

    /// A route's bound on requests in flight per key.
    pub(super) fn concurrency_limit(
        &mut self,
        base: &str,
        raw: Option<RawConcurrencyLimit>,
        has_auth: bool,
    ) -> Option<ConcurrencyLimit> {
        let cl = raw?;
        let place = format!("{base}.concurrency_limit");
        let key = self.limit_key(format!("{place}.key"), cl.key, has_auth);
        if cl.max == 0 {
            self.error(format!("{place}.max"), "must be at least 1");
        }
        key.map(|key| ConcurrencyLimit { max: cl.max, key })
    }

    pub(super) fn redis(&mut self, value: Value) -> Option<RedisConfig> {
        let raw = self.item::<RawRedis>("redis", value)?;
        let target = match (raw.url, raw.cluster) {
            (Some(_), Some(_)) => {
                self.error(
                    "redis",
                    "give `url` (one server) or `cluster` (a Redis Cluster's nodes), not both",
                );
                return None;
            }
            (None, None) => {
                self.error(
                    "redis",
                    "missing `url` (one server) or `cluster` (a Redis Cluster's nodes)",
                );
                return None;
            }
            (Some(url), None) => {
                if let Err(e) = redis::Client::open(url.as_str()) {
                    self.error("redis.url", format!("\"{url}\" is not a Redis URL: {e}"));
                    return None;
                }
                RedisTarget::Server(url)
            }
            (None, Some(nodes)) => {
                if nodes.is_empty() {
                    self.error("redis.cluster", "must list at least one node");
                    return None;
                }
                let mut ok = true;
                for (i, url) in nodes.iter().enumerate() {
                    if let Err(e) = redis::Client::open(url.as_str()) {
                        self.error(
                            format!("redis.cluster[{i}]"),
                            format!("\"{url}\" is not a Redis URL: {e}"),
                        );
                        ok = false;
                    }
                }
                if !ok {
                    return None;
                }
                if let Err(e) = redis::cluster::ClusterClient::new(nodes.clone()) {
                    self.error("redis.cluster", format!("not a usable node list: {e}"));
                    return None;
                }
                RedisTarget::Cluster(nodes)
            }
        };
        let timeout = raw
            .timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_millis(50));
        if timeout.is_zero() || timeout > Duration::from_secs(5) {
            self.error("redis.timeout", "must be greater than zero and at most 5s");
        }
        let backoff = raw.backoff.map_or(Duration::from_secs(1), |d| d.0);
        let max_backoff = raw.max_backoff.map_or(Duration::from_secs(10), |d| d.0);
        if backoff < Duration::from_millis(100) || backoff > Duration::from_secs(60) {
            self.error("redis.backoff", "must be between 100ms and 60s");
        } else if max_backoff < backoff || max_backoff > Duration::from_secs(600) {
            self.error(
                "redis.max_backoff",
                format!(
                    "must be at least `backoff` ({}) and at most 10m",
                    humantime::format_duration(backoff)
                ),
            );
        }
        Some(RedisConfig {
            target,
            timeout,
            backoff,
            max_backoff,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::loader::Fixed;
    use super::super::super::{LimitKey, RedisTarget};
    use super::super::testing::*;

    fn route(extra: &str) -> String {
        format!("{LISTENER}{POOL}routes:\n  - {{name: r, match: {{}}, upstream: a{extra}}}\n")
    }

    #[test]
    fn limits_and_their_keys() {
        let c = load_with(
            &route(", rate_limit: [{requests: 5, per: 1m, key: 'header:X-Tenant'}], concurrency_limit: {max: 2, key: client_ip}"),
            &Fixed::default(),
        );
        let r = &c.routing.routes[0];
        assert_eq!(
            r.rate_limits[0].key,
            LimitKey::Header(http::HeaderName::from_static("x-tenant"))
        );
        assert_eq!(r.concurrency_limit.as_ref().map(|c| c.max), Some(2));
        assert_reported(
            &errors(&route(", rate_limit: [{requests: 5, per: 1m, key: consumer}, {requests: 5, per: 25h, key: route}, {requests: 5, per: 25h, key: route}], concurrency_limit: {max: 1, key: consumer}")),
            &[
                "routes[0].rate_limit[0].key: `key: consumer` needs `auth` on the route",
                "routes[0].rate_limit[1].per: must be between 1s and 24h",
                "routes[0].rate_limit[2]: is the same as an earlier limit of this route",
                "routes[0].concurrency_limit.key: `key: consumer` needs `auth`",
            ],
        );
    }

    #[test]
    fn global_limits_need_redis() {
        let limit = ", rate_limit: [{requests: 5, per: 1m, key: route, scope: global}]";
        assert_reported(
            &errors(&route(limit)),
            &["routes[0].rate_limit[0].scope: global limits are counted in Redis"],
        );
        let c = load_with(
            &format!("{}redis: {{url: 'redis://127.0.0.1:6379'}}\n", route(limit)),
            &Fixed::default(),
        );
        assert!(c.routing.routes[0].rate_limits[0].global);
        let redis = c.routing.redis.expect("redis");
        assert_eq!(
            (redis.timeout, redis.backoff, redis.max_backoff),
            (
                std::time::Duration::from_millis(50),
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(10)
            )
        );
        assert_reported(
            &errors(&format!(
                "{}redis: {{url: 'redis://127.0.0.1:6379', backoff: 10ms}}\n",
                route(limit)
            )),
            &["redis.backoff: must be between 100ms and 60s"],
        );
        assert_reported(
            &errors(&format!(
                "{}redis: {{url: 'redis://127.0.0.1:6379', backoff: 5s, max_backoff: 2s}}\n",
                route(limit)
            )),
            &["redis.max_backoff: must be at least `backoff` (5s) and at most 10m"],
        );
    }

    #[test]
    fn the_key_bound() {
        let c = load_with(&route(""), &Fixed::default());
        assert_eq!(c.routing.rate_limit_max_keys, 1_000_000);
        let c = load_with(
            &format!("rate_limit_max_keys: 5000\n{}", route("")),
            &Fixed::default(),
        );
        assert_eq!(c.routing.rate_limit_max_keys, 5000);
        for bad in ["10", "1000000000", "lots"] {
            assert_reported(
                &errors(&format!("rate_limit_max_keys: {bad}\n{}", route(""))),
                &["rate_limit_max_keys: "],
            );
        }
    }

    #[test]
    fn one_server_or_a_cluster() {
        let limit = ", rate_limit: [{requests: 5, per: 1m, key: route, scope: global}]";
        let c = load_with(
            &format!(
                "{}redis: {{cluster: ['redis://127.0.0.1:7000', 'redis://127.0.0.1:7001']}}\n",
                route(limit)
            ),
            &Fixed::default(),
        );
        assert_eq!(
            c.routing.redis.map(|r| r.target),
            Some(RedisTarget::Cluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into()
            ]))
        );
        for (redis, problem) in [
            (
                "{url: 'redis://a:1', cluster: ['redis://b:2']}",
                "redis: give `url` (one server) or `cluster`",
            ),
            (
                "{timeout: 50ms}",
                "redis: missing `url` (one server) or `cluster`",
            ),
            (
                "{cluster: []}",
                "redis.cluster: must list at least one node",
            ),
            (
                "{cluster: ['redis://a:1', 'http://b:2']}",
                "redis.cluster[1]: \"http://b:2\" is not a Redis URL",
            ),
        ] {
            let text = format!("{}redis: {redis}\n", route(limit));
            let found = errors(&text);
            assert_reported(&found, &[problem]);
            // A broken Redis section is reported once, not again at every global limit.
            assert!(!found.iter().any(|e| e.contains("routes[0]")), "{found:?}");
        }
    }
}
