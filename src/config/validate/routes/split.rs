//! Where a route sends: one pool (`upstream`), or several by weight (`upstreams`), optionally
//! sticky per client, with canary rules checked first.

use super::super::super::raw::{RawCanary, RawMirror, RawWeightedPool};
use super::super::super::{CanaryRule, CanaryWhen, Mirror, Split, StickyKey};
use super::super::Validator;
use super::RouteContext;
use http::{HeaderName, HeaderValue};

impl Validator<'_> {
    /// The route's pool (the first of a split) and its split, if any.
    pub(super) fn route_pools(
        &mut self,
        base: &str,
        upstream: Option<String>,
        upstreams: Option<Vec<RawWeightedPool>>,
        sticky: Option<String>,
        canary: Option<Vec<RawCanary>>,
        rc: &RouteContext,
    ) -> (usize, Option<Split>) {
        let pools: Vec<(usize, u32)> = match (upstream, upstreams) {
            (Some(_), Some(_)) => {
                self.error(
                    base,
                    "give `upstream` (one pool) or `upstreams` (several by weight), not both",
                );
                return (0, None);
            }
            (None, None) => {
                self.error(
                    base,
                    "missing `upstream` (one pool) or `upstreams` (several by weight)",
                );
                return (0, None);
            }
            (Some(name), None) => {
                vec![(
                    self.route_upstream(&format!("{base}.upstream"), &name, rc),
                    1,
                )]
            }
            (None, Some(list)) => self.weighted(base, list, rc),
        };
        let single = pools.len() == 1;
        let sticky = sticky.and_then(|s| self.sticky(&format!("{base}.sticky"), &s));
        let canary: Vec<CanaryRule> = canary
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| self.canary(&format!("{base}.canary[{i}]"), c, rc))
            .collect();
        if single && canary.is_empty() {
            if sticky.is_some() {
                self.warn(
                    format!("{base}.sticky"),
                    "has no effect: the route sends to one pool",
                );
            }
            return (pools.first().map_or(0, |p| p.0), None);
        }
        let first = pools.first().map_or(0, |p| p.0);
        (
            first,
            Some(Split {
                pools,
                sticky,
                canary,
            }),
        )
    }

    /// `routes[].mirror`.
    pub(super) fn mirror(&mut self, base: &str, m: RawMirror, rc: &RouteContext) -> Option<Mirror> {
        let place = format!("{base}.mirror");
        let pool = self.route_upstream(&format!("{place}.pool"), &m.pool, rc);
        let percent = m.percent.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&percent) || percent.is_nan() {
            self.error(format!("{place}.percent"), "must be between 0 and 100");
            return None;
        }
        let max_body_size = m.max_body_size.map_or(64 * 1024, |s| s.0);
        if max_body_size > 16 * 1024 * 1024 {
            self.error(format!("{place}.max_body_size"), "must be at most 16MiB");
            return None;
        }
        Some(Mirror {
            pool,
            percent,
            max_body_size,
        })
    }

    fn weighted(
        &mut self,
        base: &str,
        list: Vec<RawWeightedPool>,
        rc: &RouteContext,
    ) -> Vec<(usize, u32)> {
        if list.is_empty() {
            self.error(format!("{base}.upstreams"), "must list at least one pool");
        }
        let mut pools: Vec<(usize, u32)> = Vec::new();
        for (i, p) in list.into_iter().enumerate() {
            let place = format!("{base}.upstreams[{i}]");
            let index = self.route_upstream(&format!("{place}.pool"), &p.pool, rc);
            let weight = match p.weight.unwrap_or(1) {
                w @ 0..=1000 => w as u32,
                _ => {
                    self.error(format!("{place}.weight"), "must be between 0 and 1000");
                    1
                }
            };
            if pools.iter().any(|(j, _)| *j == index) {
                self.error(format!("{place}.pool"), "is listed twice");
            }
            pools.push((index, weight));
        }
        if !pools.is_empty() && pools.iter().all(|(_, w)| *w == 0) {
            self.error(
                format!("{base}.upstreams"),
                "every weight is 0: at least one pool must take traffic",
            );
        }
        pools
    }

    fn sticky(&mut self, place: &str, text: &str) -> Option<StickyKey> {
        let key = match text {
            "consumer" => Some(StickyKey::Consumer),
            "client_ip" => Some(StickyKey::ClientIp),
            _ => {
                if let Some(h) = text.strip_prefix("header:") {
                    HeaderName::from_bytes(h.as_bytes())
                        .ok()
                        .map(StickyKey::Header)
                } else {
                    text.strip_prefix("cookie:")
                        .filter(|c| !c.is_empty())
                        .map(|c| StickyKey::Cookie(c.to_string()))
                }
            }
        };
        if key.is_none() {
            self.error(
                place,
                format!("\"{text}\" is not a sticky key: use consumer, client_ip, header:NAME or cookie:NAME"),
            );
        }
        key
    }

    fn canary(&mut self, place: &str, c: RawCanary, rc: &RouteContext) -> Option<CanaryRule> {
        let pool = self.route_upstream(&format!("{place}.pool"), &c.pool, rc);
        let when = match (c.header, c.cookie) {
            (Some(h), None) => {
                let name = HeaderName::from_bytes(h.as_bytes());
                let value = HeaderValue::from_str(&c.value);
                match (name, value) {
                    (Ok(n), Ok(v)) => CanaryWhen::Header(n, v),
                    _ => {
                        self.error(place, format!("\"{h}: {}\" is not a valid header", c.value));
                        return None;
                    }
                }
            }
            (None, Some(cookie)) if !cookie.is_empty() => CanaryWhen::Cookie(cookie, c.value),
            _ => {
                self.error(
                    place,
                    "give `header` or `cookie` (one of them), and `value`",
                );
                return None;
            }
        };
        Some(CanaryRule { when, pool })
    }
}
