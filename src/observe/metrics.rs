//! Prometheus metrics. Label values come from the configuration (route and upstream names) or
//! small fixed sets (methods, status codes, error kinds), never from raw request data, so the
//! number of series stays bounded.

use crate::gateway::Gateway;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::cell::RefCell;
use std::sync::Arc;

/// One route's (or upstream's) series as resolved by one thread.
#[derive(Default)]
struct Handles {
    duration: Option<Histogram>,
    /// `tollgate_requests_total` children by method and status.
    requests: Vec<(&'static str, u16, IntCounter)>,
}

/// The series one thread resolved for one registry and one configuration snapshot, by route and
/// by upstream index.
#[derive(Default)]
struct ThreadHandles {
    registry: usize,
    generation: u64,
    routes: Vec<Handles>,
    upstreams: Vec<Handles>,
}

thread_local! {
    /// Resolving a child through `with_label_values` hashes the labels and takes the vector's
    /// lock; the request path does it once per thread, snapshot and label set instead, and then
    /// finds the child by index. Series are never removed, so a kept child stays registered.
    static HANDLES: RefCell<ThreadHandles> = RefCell::new(ThreadHandles::default());
}

fn slot(v: &mut Vec<Handles>, i: usize) -> &mut Handles {
    if v.len() <= i {
        v.resize_with(i + 1, Handles::default);
    }
    &mut v[i]
}

/// The gateway's metrics registry and handles.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub ratelimit_rejected: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub cache_requests: IntCounterVec,
    pub connections: IntGauge,
    pub config_reloads: IntCounterVec,
    pub access_log_dropped: IntCounter,
    pub front_door_refusals: IntCounterVec,
    peer_healthy: IntGaugeVec,
    peer_in_flight: IntGaugeVec,
    cache_bytes: IntGauge,
    cache_entries: IntGauge,
    redis_fallbacks: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric definition");
    r.register(Box::new(h.clone())).expect("unique metric name");
    h
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(g.clone())).expect("unique metric name");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric definition");
    r.register(Box::new(g.clone())).expect("unique metric name");
    g
}

fn single_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric definition");
    r.register(Box::new(c.clone())).expect("unique metric name");
    c
}

/// A bounded label for a request method.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Metrics {
    /// Create the registry with every metric at zero.
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = r.register(Box::new(pc));
        }
        let m = Metrics {
            requests: counter(&r, "tollgate_requests_total", "Requests answered, by route, method and status.", &["route", "method", "status"]),
            request_duration: histogram(&r, "tollgate_request_duration_seconds", "Time from the request to the end of the response, by route.", &["route"]),
            upstream_duration: histogram(&r, "tollgate_upstream_duration_seconds", "Time from choosing a peer to its response header, by upstream.", &["upstream"]),
            upstream_errors: counter(&r, "tollgate_upstream_errors_total", "Failures talking to upstream peers, by upstream and kind.", &["upstream", "kind"]),
            ratelimit_rejected: counter(&r, "tollgate_ratelimit_rejected_total", "Requests refused by a rate or concurrency limit, by route.", &["route"]),
            auth_failures: counter(&r, "tollgate_auth_failures_total", "Requests refused by authentication (unauthenticated) or authorization (forbidden), by route.", &["route", "reason"]),
            cache_requests: counter(&r, "tollgate_cache_requests_total", "Requests on cached routes, by route and X-Cache-Status.", &["route", "status"]),
            connections: gauge(&r, "tollgate_connections", "Client connections currently open."),
            config_reloads: counter(&r, "tollgate_config_reloads_total", "Configuration reloads, by result.", &["result"]),
            access_log_dropped: single_counter(&r, "tollgate_access_log_dropped_total", "Access log lines dropped because the writer fell behind."),
            front_door_refusals: counter(&r, "tollgate_front_door_refusals_total", "Requests and connections refused at the front door, before routing, by reason.", &["reason"]),
            peer_healthy: gauge_vec(&r, "tollgate_upstream_peer_healthy", "1 when a peer is in its pool (healthy and not cooling down), else 0.", &["upstream", "peer"]),
            peer_in_flight: gauge_vec(&r, "tollgate_upstream_peer_in_flight", "Requests in flight to a peer.", &["upstream", "peer"]),
            cache_bytes: gauge(&r, "tollgate_cache_bytes", "Bytes held by the response cache."),
            cache_entries: gauge(&r, "tollgate_cache_entries", "Responses held by the response cache."),
            redis_fallbacks: single_counter(&r, "tollgate_ratelimit_redis_fallbacks_total", "Global rate-limit decisions taken locally because Redis did not answer in time."),
            registry: r,
        };
        for result in ["success", "failure"] {
            m.config_reloads.with_label_values(&[result]);
        }
        Arc::new(m)
    }

    /// Run `f` on this thread's cached handles for `gateway`'s snapshot.
    fn with_handles<R>(&self, gateway: &Gateway, f: impl FnOnce(&mut ThreadHandles) -> R) -> R {
        HANDLES.with(|h| {
            let mut h = h.borrow_mut();
            let registry = self as *const Metrics as usize;
            if h.registry != registry || h.generation != gateway.generation {
                *h = ThreadHandles {
                    registry,
                    generation: gateway.generation,
                    ..ThreadHandles::default()
                };
            }
            f(&mut h)
        })
    }

    /// Count one answered request and its duration; `route` indexes `gateway.routes` (`None`:
    /// no route matched).
    pub fn record_request(
        &self,
        gateway: &Gateway,
        route: Option<usize>,
        method: &'static str,
        status: u16,
        seconds: f64,
    ) {
        let name = route
            .map(|r| gateway.routes[r].name.as_str())
            .unwrap_or("none");
        // Requests without a route share the slot after the last route.
        let index = route.unwrap_or(gateway.routes.len());
        self.with_handles(gateway, |h| {
            let handles = slot(&mut h.routes, index);
            handles
                .duration
                .get_or_insert_with(|| self.request_duration.with_label_values(&[name]))
                .observe(seconds);
            match handles
                .requests
                .iter()
                .find(|(m, s, _)| *s == status && *m == method)
            {
                Some((_, _, c)) => c.inc(),
                None => {
                    let code = http::StatusCode::from_u16(status).ok();
                    let label = code.as_ref().map(|c| c.as_str()).unwrap_or("0");
                    let c = self.requests.with_label_values(&[name, method, label]);
                    c.inc();
                    handles.requests.push((method, status, c));
                }
            }
        });
    }

    /// Observe an upstream's time to response header; `upstream` indexes `gateway.pools`.
    pub fn record_upstream(&self, gateway: &Gateway, upstream: usize, seconds: f64) {
        let name = gateway.pools[upstream].config.name.as_str();
        self.with_handles(gateway, |h| {
            slot(&mut h.upstreams, upstream)
                .duration
                .get_or_insert_with(|| self.upstream_duration.with_label_values(&[name]))
                .observe(seconds);
        });
    }

    /// Make sure every configured route and upstream has its series, so dashboards see zeros.
    pub fn declare(&self, gateway: &Gateway) {
        for r in &gateway.routes {
            self.ratelimit_rejected.with_label_values(&[&r.name]);
        }
    }

    /// The Prometheus text exposition, with scrape-time values refreshed from `gateway`.
    pub fn render(&self, gateway: &Gateway) -> String {
        self.peer_healthy.reset();
        self.peer_in_flight.reset();
        for pool in &gateway.pools {
            for peer in pool.peers() {
                let addr = peer.address.to_string();
                let labels = [pool.config.name.as_str(), addr.as_str()];
                self.peer_healthy
                    .with_label_values(&labels)
                    .set(i64::from(pool.is_available(&peer.address)));
                self.peer_in_flight
                    .with_label_values(&labels)
                    .set(peer.in_flight.load(std::sync::atomic::Ordering::Relaxed) as i64);
            }
        }
        self.cache_bytes
            .set(gateway.cache.store.held_bytes() as i64);
        self.cache_entries.set(gateway.cache.store.entries() as i64);
        let fallbacks = gateway
            .limits
            .redis_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed);
        let seen = self.redis_fallbacks.get();
        if fallbacks > seen {
            self.redis_fallbacks.inc_by(fallbacks - seen);
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
