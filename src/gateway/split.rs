//! A route's traffic split: pools by weight, a request's pool drawn at random or, with a
//! sticky key, from the key's hash (the same client stays on the same pool, on every gateway
//! and across restarts), and canary rules (a header or cookie value) checked first.

use crate::config::{CanaryWhen, Split, StickyKey};
use crate::observe::metrics::RouteMetrics;
use crate::upstream::Pool;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;

/// One pool of a split, with the route's series labelled with it.
#[derive(Debug)]
pub struct Target {
    pub pool: Arc<Pool>,
    pub weight: u32,
    pub metrics: RouteMetrics,
}

/// A compiled split.
#[derive(Debug)]
pub struct RouteSplit {
    pub targets: Vec<Target>,
    total: u32,
    sticky: Option<StickyKey>,
    /// Each rule's condition and target index.
    canary: Vec<(CanaryWhen, usize)>,
}

/// What a request offers to choose its pool.
pub struct Chooser<'a> {
    pub headers: &'a HeaderMap,
    pub client_ip: Option<IpAddr>,
    pub consumer: Option<&'a str>,
}

impl RouteSplit {
    /// Compile `split` over the snapshot's `pools`; `metrics` makes a target's series.
    pub fn new(
        split: &Split,
        pools: &[Arc<Pool>],
        metrics: impl Fn(&Pool) -> RouteMetrics,
    ) -> RouteSplit {
        let mut targets: Vec<Target> = split
            .pools
            .iter()
            .filter_map(|&(i, weight)| {
                let pool = pools.get(i)?.clone();
                Some(Target {
                    metrics: metrics(&pool),
                    pool,
                    weight,
                })
            })
            .collect();
        let mut canary = Vec::new();
        for rule in &split.canary {
            let Some(pool) = pools.get(rule.pool) else {
                continue;
            };
            let index = match targets.iter().position(|t| Arc::ptr_eq(&t.pool, pool)) {
                Some(i) => i,
                None => {
                    // A canary-only pool: a target with no weight.
                    targets.push(Target {
                        metrics: metrics(pool),
                        pool: pool.clone(),
                        weight: 0,
                    });
                    targets.len() - 1
                }
            };
            canary.push((rule.when.clone(), index));
        }
        RouteSplit {
            total: targets.iter().map(|t| t.weight).sum(),
            targets,
            sticky: split.sticky.clone(),
            canary,
        }
    }

    /// The target this request goes to: the first canary rule it meets, else a pool by weight
    /// (drawn from the sticky key's hash when the route has one and the request carries it).
    pub fn choose(&self, req: &Chooser<'_>) -> usize {
        for (when, target) in &self.canary {
            let hit = match when {
                CanaryWhen::Header(name, value) => req
                    .headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.as_bytes() == value.as_bytes()),
                CanaryWhen::Cookie(name, value) => {
                    crate::wire::cookie(req.headers, name) == Some(value.as_bytes())
                }
            };
            if hit {
                return *target;
            }
        }
        if self.total == 0 {
            return 0;
        }
        let point = match self.sticky.as_ref().and_then(|k| sticky_bytes(k, req)) {
            Some(bytes) => sticky_point(&bytes, self.total),
            None => fastrand::u32(..self.total),
        };
        let mut acc = 0;
        for (i, t) in self.targets.iter().enumerate() {
            acc += t.weight;
            if point < acc {
                return i;
            }
        }
        0
    }
}

/// The sticky key's bytes in this request, if it carries them.
fn sticky_bytes(key: &StickyKey, req: &Chooser<'_>) -> Option<Vec<u8>> {
    match key {
        StickyKey::Consumer => req.consumer.map(|c| c.as_bytes().to_vec()),
        StickyKey::ClientIp => req.client_ip.map(|ip| match ip.to_canonical() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        }),
        StickyKey::Header(name) => req.headers.get(name).map(|v| v.as_bytes().to_vec()),
        StickyKey::Cookie(name) => crate::wire::cookie(req.headers, name).map(<[u8]>::to_vec),
    }
}

/// The documented sticky hash: the first 8 bytes of the key's SHA-256, big-endian, modulo the
/// split's total weight.
pub fn sticky_point(key: &[u8], total: u32) -> u32 {
    let d = Sha256::digest(key);
    let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (n % u64::from(total.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sticky_hash_is_stable() {
        // SHA-256("alice") begins 2bd806c97f0e00af: 3159282601090220207 % 100 = 7.
        assert_eq!(sticky_point(b"alice", 100), 7);
        assert!(sticky_point(b"bob", 7) < 7);
    }
}
