//! The last minutes of the gateway's traffic, for the status page's charts: sampled once a
//! second from the metrics registry (and peers' health handed in), kept in a ring, and turned
//! into per-route series (requests/s, error rate, p50/p99 latency, cache hit ratio, rate-limit
//! refusals/s) and per-peer health strips. Only the admin thread touches it.

use prometheus::proto::MetricFamily;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// Seconds between samples.
pub const STEP_SECONDS: u64 = 1;
/// Samples kept: ten minutes.
pub const SAMPLES: usize = 600;

/// Cumulative counts of one route at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
struct RouteTotals {
    requests: f64,
    errors: f64,
    cache_hits: f64,
    cache_lookups: f64,
    limited: f64,
    /// The latency histogram's cumulative bucket counts (upper bound in seconds, count).
    buckets: Vec<(f64, f64)>,
}

/// A route's totals before it had any.
static NONE_YET: RouteTotals = RouteTotals {
    requests: 0.0,
    errors: 0.0,
    cache_hits: 0.0,
    cache_lookups: 0.0,
    limited: 0.0,
    buckets: Vec::new(),
};

/// What one interval saw on one route.
#[derive(Debug, Clone, Default, PartialEq)]
struct RouteInterval {
    requests: f64,
    errors: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    cache_hits: f64,
    cache_lookups: f64,
    limited: f64,
}

#[derive(Debug)]
struct Sample {
    /// Unix milliseconds.
    at_ms: u64,
    /// The interval it covers (from the sample before), in seconds; 0 for the first sample,
    /// which only sets the baseline.
    seconds: f64,
    /// The routes that saw anything in the interval (idle ones are left out: they count 0).
    routes: BTreeMap<String, RouteInterval>,
    /// `upstream/peer` → in the pool.
    peers: BTreeMap<String, bool>,
}

#[derive(Default)]
struct Inner {
    last: Option<BTreeMap<String, RouteTotals>>,
    samples: VecDeque<Sample>,
}

/// The ring of samples.
#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

impl History {
    /// Take a sample at `at_ms` (Unix milliseconds) from the registry's families and the
    /// peers' health (`upstream/peer`, in the pool).
    pub fn record(&self, at_ms: u64, families: &[MetricFamily], peers: BTreeMap<String, bool>) {
        let totals = route_totals(families);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let seconds = inner
            .samples
            .back()
            .map_or(0.0, |s| at_ms.saturating_sub(s.at_ms) as f64 / 1000.0);
        let routes = match &inner.last {
            Some(before) => totals
                .iter()
                .map(|(name, now)| {
                    let then = before.get(name).unwrap_or(&NONE_YET);
                    (name.clone(), interval(then, now))
                })
                .filter(|(_, i)| i.requests > 0.0 || i.limited > 0.0)
                .collect(),
            None => BTreeMap::new(),
        };
        inner.last = Some(totals);
        if inner.samples.len() == SAMPLES {
            inner.samples.pop_front();
        }
        inner.samples.push_back(Sample {
            at_ms,
            seconds,
            routes,
            peers,
        });
    }

    /// The series, as `GET /status/history` answers them: `t` (Unix seconds per sample), per
    /// route `rps`, `error_rate` (share of 5xx), `p50_ms`, `p99_ms`, `cache_hit_ratio`,
    /// `limited_per_s` (null where the interval had nothing to measure), and per peer `up`
    /// (1, 0). The first sample only sets the baseline, so it is left out.
    pub fn series(&self) -> Value {
        let Ok(inner) = self.inner.lock() else {
            return json!({});
        };
        // The baseline sample measures nothing.
        let samples: Vec<&Sample> = inner.samples.iter().filter(|s| s.seconds > 0.0).collect();
        let names: std::collections::BTreeSet<&String> =
            samples.iter().flat_map(|s| s.routes.keys()).collect();
        let idle = RouteInterval::default();
        let mut routes = Map::new();
        for name in names {
            let get = |f: &dyn Fn(&RouteInterval, f64) -> Option<f64>| -> Vec<Value> {
                samples
                    .iter()
                    .map(
                        |s| match f(s.routes.get(name).unwrap_or(&idle), s.seconds) {
                            Some(v) if v.is_finite() => json!((v * 1000.0).round() / 1000.0),
                            _ => Value::Null,
                        },
                    )
                    .collect()
            };
            routes.insert(
                name.clone(),
                json!({
                    "rps": get(&|r, s| Some(r.requests / s)),
                    "error_rate": get(&|r, _| (r.requests > 0.0).then(|| r.errors / r.requests)),
                    "p50_ms": get(&|r, _| r.p50_ms),
                    "p99_ms": get(&|r, _| r.p99_ms),
                    "cache_hit_ratio": get(&|r, _| (r.cache_lookups > 0.0).then(|| r.cache_hits / r.cache_lookups)),
                    "limited_per_s": get(&|r, s| Some(r.limited / s)),
                }),
            );
        }
        let peer_names: std::collections::BTreeSet<&String> =
            samples.iter().flat_map(|s| s.peers.keys()).collect();
        let mut peers = Map::new();
        for name in peer_names {
            let up: Vec<Value> = samples
                .iter()
                .map(|s| match s.peers.get(name) {
                    Some(true) => json!(1),
                    Some(false) => json!(0),
                    None => Value::Null,
                })
                .collect();
            peers.insert(name.clone(), Value::Array(up));
        }
        json!({
            "step_seconds": STEP_SECONDS,
            "t": samples.iter().map(|s| s.at_ms / 1000).collect::<Vec<_>>(),
            "routes": routes,
            "peers": peers,
        })
    }
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// Per route, the cumulative counts the registry holds now.
fn route_totals(families: &[MetricFamily]) -> BTreeMap<String, RouteTotals> {
    let mut out: BTreeMap<String, RouteTotals> = BTreeMap::new();
    for f in families {
        for m in f.get_metric() {
            let route = label(m, "route");
            if route.is_empty() || route == "none" {
                continue;
            }
            let known = matches!(
                f.name(),
                "tollgate_requests_total"
                    | "tollgate_request_duration_seconds"
                    | "tollgate_cache_requests_total"
                    | "tollgate_ratelimit_rejected_total"
            );
            if !known {
                continue;
            }
            let e = out.entry(route.to_string()).or_default();
            match f.name() {
                "tollgate_requests_total" => {
                    let v = m.get_counter().get_value();
                    e.requests += v;
                    if label(m, "code").starts_with('5') {
                        e.errors += v;
                    }
                }
                "tollgate_request_duration_seconds" => {
                    let h = m.get_histogram();
                    e.buckets = h
                        .get_bucket()
                        .iter()
                        .map(|b| (b.upper_bound(), b.cumulative_count() as f64))
                        .collect();
                    e.buckets.push((f64::INFINITY, h.get_sample_count() as f64));
                }
                "tollgate_cache_requests_total" => {
                    let v = m.get_counter().get_value();
                    e.cache_lookups += v;
                    if matches!(label(m, "status"), "HIT" | "STALE" | "REVALIDATED") {
                        e.cache_hits += v;
                    }
                }
                "tollgate_ratelimit_rejected_total" => {
                    e.limited += m.get_counter().get_value();
                }
                _ => {}
            }
        }
    }
    out
}

/// What happened between two totals of a route.
fn interval(then: &RouteTotals, now: &RouteTotals) -> RouteInterval {
    let d = |a: f64, b: f64| (b - a).max(0.0);
    // Bucket counts of this interval alone (a reload that restarts the counters gives none).
    let buckets: Vec<(f64, f64)> = now
        .buckets
        .iter()
        .map(|(le, n)| {
            let before = then
                .buckets
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, d(before, *n))
        })
        .collect();
    RouteInterval {
        requests: d(then.requests, now.requests),
        errors: d(then.errors, now.errors),
        p50_ms: quantile(&buckets, 0.50).map(|s| s * 1000.0),
        p99_ms: quantile(&buckets, 0.99).map(|s| s * 1000.0),
        cache_hits: d(then.cache_hits, now.cache_hits),
        cache_lookups: d(then.cache_lookups, now.cache_lookups),
        limited: d(then.limited, now.limited),
    }
}

/// The `q` quantile of cumulative buckets, interpolated within its bucket as Prometheus's
/// `histogram_quantile` does (the last finite bound stands for the `+Inf` bucket).
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            let share = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let b = [
            (0.001, 0.0),
            (0.01, 50.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 0.5).unwrap() - 0.01).abs() < 1e-12);
        let p99 = quantile(&b, 0.99).unwrap();
        assert!((p99 - 0.0982).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        // Everything above the last bound: the last bound.
        assert_eq!(
            quantile(&[(0.1, 0.0), (f64::INFINITY, 4.0)], 0.5),
            Some(0.1)
        );
    }

    #[test]
    fn samples_become_series_per_interval() {
        let h = History::default();
        let m = crate::observe::metrics::Metrics::new();
        let peers = |up: bool| BTreeMap::from([("a/127.0.0.1:1".to_string(), up)]);
        h.record(100_000, &m.gather_routes(), peers(true));
        h.record(101_000, &m.gather_routes(), peers(false));
        let s = h.series();
        assert_eq!(s["t"], json!([101]));
        assert_eq!(s["peers"]["a/127.0.0.1:1"], json!([0]));
        // No more than SAMPLES are kept.
        for i in 0..(SAMPLES as u64 + 5) {
            h.record(200_000 + i * 1000, &[], BTreeMap::new());
        }
        assert_eq!(h.inner.lock().unwrap().samples.len(), SAMPLES);
    }

    #[test]
    fn rates_are_per_second_of_the_interval_measured() {
        let h = History::default();
        let m = crate::observe::metrics::Metrics::new();
        let r = m.route(0, 1, std::sync::Arc::from("r"), "a");
        h.record(10_000, &m.gather_routes(), BTreeMap::new());
        for status in [200, 200, 200, 503] {
            m.record_request(Some(&r), "GET", status, 0.004);
        }
        // The tick came late: two seconds, not one.
        h.record(12_000, &m.gather_routes(), BTreeMap::new());
        h.record(13_000, &m.gather_routes(), BTreeMap::new());
        let s = h.series();
        assert_eq!(s["routes"]["r"]["rps"], json!([2.0, 0.0]));
        assert_eq!(s["routes"]["r"]["error_rate"], json!([0.25, null]));
        let p50 = s["routes"]["r"]["p50_ms"][0].as_f64().unwrap();
        assert!(p50 > 2.5 && p50 <= 5.0, "{p50}");
        assert_eq!(s["routes"]["r"]["p99_ms"][1], json!(null));
    }
}
