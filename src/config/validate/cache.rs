//! The response cache: its memory, and each route's caching rules (key parts, methods,
//! freshness and stale windows).

use super::super::raw::{Parsed, RawCache, RawCacheKeyPart, RawRouteCache};
use super::super::{CacheConfig, CacheKeyPart, RouteCache};
use super::Validator;
use http::Method;
use serde_yaml::Value;
use std::time::Duration;

impl Validator<'_> {
    pub(super) fn cache(&mut self, value: Option<Value>) -> CacheConfig {
        let mut out = CacheConfig {
            max_size: 256 << 20,
            max_object_size: 8 << 20,
        };
        let Some(raw) = value.and_then(|v| self.item::<RawCache>("cache", v)) else {
            return out;
        };
        if let Some(s) = raw.max_size {
            out.max_size = s.0;
        }
        if let Some(s) = raw.max_object_size {
            out.max_object_size = s.0;
        }
        if out.max_size < 1 << 20 {
            self.error("cache.max_size", "must be at least 1MiB");
        }
        if out.max_object_size == 0 || out.max_object_size > 16 << 20 {
            self.error("cache.max_object_size", "must be between 1 byte and 16MiB");
        } else if out.max_object_size > out.max_size / 4 && raw.max_object_size.is_none() {
            // The user wrote only max_size: say where the number comes from.
            self.error(
                "cache.max_size",
                "is less than four times max_object_size, which defaults to 8MiB: set max_object_size to at most a quarter of max_size, or one object could evict most of the cache",
            );
        } else if out.max_object_size > out.max_size / 4 {
            self.error(
                "cache.max_object_size",
                "must be at most a quarter of max_size, or one object could evict most of the cache",
            );
        }
        out
    }

    pub(super) fn route_cache(
        &mut self,
        place: &str,
        raw: RawRouteCache,
        has_auth: bool,
    ) -> Option<RouteCache> {
        let before = self.errors.len();
        let mut key = Vec::new();
        let parts = raw.key.unwrap_or_else(|| {
            [
                RawCacheKeyPart::Host,
                RawCacheKeyPart::Path,
                RawCacheKeyPart::Query,
            ]
            .map(|p| Parsed(Ok(p)))
            .to_vec()
        });
        for (j, part) in parts.into_iter().enumerate() {
            let part = match part.0 {
                Ok(part) => part,
                Err(msg) => {
                    self.error(format!("{place}.key[{j}]"), msg);
                    continue;
                }
            };
            let p = match part {
                RawCacheKeyPart::Host => CacheKeyPart::Host,
                RawCacheKeyPart::Path => CacheKeyPart::Path,
                RawCacheKeyPart::Query => CacheKeyPart::Query,
                RawCacheKeyPart::Header(h) => CacheKeyPart::Header(h),
                RawCacheKeyPart::Consumer => {
                    if !has_auth {
                        self.error(
                            format!("{place}.key[{j}]"),
                            "`consumer` needs `auth` on the route: who the caller is must be known",
                        );
                    }
                    CacheKeyPart::Consumer
                }
            };
            if !key.contains(&p) {
                key.push(p);
            }
        }
        if !key.contains(&CacheKeyPart::Path) {
            self.warn(
                format!("{place}.key"),
                "does not include `path`: every path of the route shares one cached response",
            );
        }
        let mut methods = Vec::new();
        for (j, m) in raw
            .methods
            .unwrap_or_else(|| vec!["GET".into(), "HEAD".into()])
            .iter()
            .enumerate()
        {
            match m.to_ascii_uppercase().as_str() {
                "GET" => methods.push(Method::GET),
                "HEAD" => methods.push(Method::HEAD),
                _ => self.error(
                    format!("{place}.methods[{j}]"),
                    format!("\"{m}\" cannot be cached: only GET and HEAD"),
                ),
            }
        }
        let ttl = raw.ttl.map(|d| d.0).unwrap_or(Duration::ZERO);
        let swr = raw
            .stale_while_revalidate
            .map(|d| d.0)
            .unwrap_or(Duration::ZERO);
        let sie = raw.stale_if_error.map(|d| d.0).unwrap_or(Duration::ZERO);
        for (name, d) in [
            ("ttl", ttl),
            ("stale_while_revalidate", swr),
            ("stale_if_error", sie),
        ] {
            if d > Duration::from_secs(365 * 86400) {
                self.error(format!("{place}.{name}"), "must be at most a year");
            }
        }
        if self.errors.len() > before {
            return None;
        }
        Some(RouteCache {
            ttl,
            stale_while_revalidate: swr,
            stale_if_error: sie,
            key,
            methods,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::loader::Fixed;
    use super::super::super::CacheKeyPart;
    use super::super::testing::*;

    #[test]
    fn cache_sizes_and_route_rules() {
        let c = load_with(
            &format!("{LISTENER}{POOL}cache: {{max_size: 64MiB, max_object_size: 1MiB}}\nroutes:\n  - {{name: r, match: {{}}, upstream: a, cache: {{ttl: 30s, key: [path, path, 'header:Accept-Language']}}}}\n"),
            &Fixed::default(),
        );
        assert_eq!(c.process.cache.max_size, 64 << 20);
        let rc = c.routing.routes[0].cache.as_ref().expect("cache");
        assert_eq!(
            rc.key,
            vec![
                CacheKeyPart::Path,
                CacheKeyPart::Header(http::HeaderName::from_static("accept-language"))
            ]
        );
        assert_eq!(rc.methods, vec![http::Method::GET, http::Method::HEAD]);
        assert_reported(
            &errors(&format!(
                "{LISTENER}{POOL}{ROUTE}cache: {{max_size: 16MiB}}\n"
            )),
            &["cache.max_size: is less than four times max_object_size, which defaults to 8MiB"],
        );
        let e = errors(&format!("{LISTENER}{POOL}cache: {{max_size: 4MiB, max_object_size: 2MiB}}\nroutes:\n  - {{name: r, match: {{}}, upstream: a, cache: {{ttl: 9000h, key: [host, consumer, 'cookie:x'], methods: [POST]}}}}\n"));
        assert_reported(
            &e,
            &[
                "cache.max_object_size: must be at most a quarter of max_size",
                "routes[0].cache.key[2]: \"cookie:x\" is not a cache key part",
                "routes[0].cache.key[1]: `consumer` needs `auth` on the route",
                "routes[0].cache.methods[0]: \"POST\" cannot be cached",
                "routes[0].cache.ttl: must be at most a year",
            ],
        );
        let c = load_with(
            &format!("{LISTENER}{POOL}routes:\n  - {{name: r, match: {{}}, upstream: a, cache: {{key: [host]}}}}\n"),
            &Fixed::default(),
        );
        assert!(c.warnings[0]
            .to_string()
            .starts_with("routes[0].cache.key: does not include `path`"));
    }
}
