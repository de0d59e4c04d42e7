//! Prometheus metrics. Label values come from the configuration (route and upstream names) or
//! small fixed sets (methods, status codes, error kinds), never from raw request data, so the
//! number of series stays bounded.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

mod features;
mod route;
mod stats;
use route::Families;
pub use route::{RouteMetrics, API_VIOLATION_KINDS, RETRY_REASONS};
pub use stats::{JwksStat, PeerStat, Stats};

/// `tollgate_requests_total` children of one route (or of requests without one) by method
/// and status, as resolved by one thread.
#[derive(Default)]
struct Handles {
    requests: Vec<(&'static str, u16, IntCounter)>,
}

/// The series one thread resolved for one registry and one configuration snapshot, by route
/// slot; requests without a route are kept apart (they do not change with a reload).
#[derive(Default)]
struct ThreadHandles {
    registry: usize,
    generation: u64,
    routes: Vec<Handles>,
    unrouted: Handles,
    /// `tollgate_front_door_refusals_total` children by reason.
    refusals: Vec<(&'static str, IntCounter)>,
}

thread_local! {
    /// Resolving a child through `with_label_values` hashes the labels and takes the vector's
    /// lock; the request path does it once per thread, snapshot and label set instead, and then
    /// finds the child by index. Series are never removed, so a kept child stays registered.
    static HANDLES: RefCell<ThreadHandles> = RefCell::new(ThreadHandles::default());
}

/// Why a request was refused by a route's access policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Unauthenticated,
    Forbidden,
}

/// The `kind` of an upstream failure, as `tollgate_upstream_errors_total` labels it.
pub const UPSTREAM_ERROR_KINDS: [&str; 8] = [
    "connect_refused",
    "connect_timeout",
    "connect_error",
    "read_timeout",
    "write_timeout",
    "reset",
    "protocol",
    "other",
];

/// The `X-Cache-Status` labels of `tollgate_cache_requests_total`.
pub const CACHE_LABELS: [&str; 6] = ["HIT", "MISS", "EXPIRED", "STALE", "REVALIDATED", "BYPASS"];

fn slot(v: &mut Vec<Handles>, i: usize) -> &mut Handles {
    if v.len() <= i {
        v.resize_with(i + 1, Handles::default);
    }
    &mut v[i]
}

/// The gateway's metrics registry and handles.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    /// Requests that matched no route.
    unrouted_duration: OnceLock<Histogram>,
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    retries: IntCounterVec,
    retry_budget_exhausted: IntCounterVec,
    mirror_requests: IntCounterVec,
    compressed: IntCounterVec,
    compression_bytes: IntCounterVec,
    forward_auth: IntCounterVec,
    ratelimit_rejected: IntCounterVec,
    auth_failures: IntCounterVec,
    cache_requests: IntCounterVec,
    api_violations: IntCounterVec,
    plan_requests: IntCounterVec,
    /// Client connections open now.
    pub connections: IntGauge,
    pub config_reloads: IntCounterVec,
    build_info: IntGaugeVec,
    last_reload_successful: IntGauge,
    last_reload_success_time: IntGauge,
    pub access_log_dropped: IntCounter,
    /// The span exporter's counters.
    pub spans: crate::observe::otlp::ExportCounters,
    front_door_refusals: IntCounterVec,
    peer_healthy: IntGaugeVec,
    peer_in_flight: IntGaugeVec,
    cache_bytes: IntGauge,
    cache_entries: IntGauge,
    redis_fallbacks: IntCounter,
    rate_limit_keys: IntGauge,
    rate_limit_evictions: IntCounter,
    redis_circuit_open: IntGauge,
    dns_failures: IntCounterVec,
    ejections: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_fetches: IntCounterVec,
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

/// The Pingora release the gateway is built on.
const PINGORA_VERSION: &str = "0.9";

/// The exposition format's media type (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
            request_duration: histogram(&r, "tollgate_request_duration_seconds", "Time from the request to the end of the response, by route.", &["route"]),
            unrouted_duration: OnceLock::new(),
            requests: counter(&r, "tollgate_requests_total", "Requests answered, by route, method and status code.", &["route", "method", "code"]),
            upstream_duration: histogram(&r, "tollgate_upstream_duration_seconds", "Time from choosing a peer to its response header, by upstream.", &["upstream"]),
            upstream_errors: counter(&r, "tollgate_upstream_errors_total", "Failures talking to upstream peers, by upstream and kind.", &["upstream", "kind"]),
            retries: counter(&r, "tollgate_upstream_retries_total", "Attempts retried on another peer, by upstream and reason.", &["upstream", "reason"]),
            forward_auth: counter(&r, "tollgate_forward_auth_total", "Requests checked by a route's authorization service, by route and result (allowed, cached, refused, failed_denied, failed_allowed).", &["route", "result"]),
            compressed: counter(&r, "tollgate_compressed_responses_total", "Answers compressed by the gateway, by route and coding.", &["route", "coding"]),
            compression_bytes: counter(&r, "tollgate_compression_bytes_total", "Body bytes of compressed answers before (in) and after (out) compression, by route.", &["route", "direction"]),
            mirror_requests: counter(&r, "tollgate_mirror_requests_total", "Requests copied to a route's shadow pool, by route and result (sent, failed, skipped: body over max_body_size or not sent upstream).", &["route", "result"]),
            retry_budget_exhausted: counter(&r, "tollgate_upstream_retry_budget_exhausted_total", "Retries not made because the pool's retry budget was spent, by upstream.", &["upstream"]),
            ratelimit_rejected: counter(&r, "tollgate_ratelimit_rejected_total", "Requests refused by a limit, by route and kind (rate or concurrency).", &["route", "kind"]),
            auth_failures: counter(&r, "tollgate_auth_failures_total", "Requests refused by authentication (unauthenticated) or authorization (forbidden), by route.", &["route", "reason"]),
            cache_requests: counter(&r, "tollgate_cache_requests_total", "Requests on cached routes, by route and X-Cache-Status.", &["route", "status"]),
            plan_requests: counter(&r, "tollgate_plan_requests_total", "Requests of consumers with a usage plan, by plan and result (admitted, refused: over a quota).", &["plan", "result"]),
            api_violations: counter(&r, "tollgate_openapi_violations_total", "Requests refused by the route's OpenAPI operation (request: parameters or body; media_type: a body it does not take) and upstream answers that do not match it (response, report-only), by route.", &["route", "kind"]),
            connections: gauge(&r, "tollgate_open_client_connections", "Client connections open now."),
            build_info: gauge_vec(&r, "tollgate_build_info", "Always 1; the labels say which build runs.", &["version", "pingora_version"]),
            last_reload_successful: gauge(&r, "tollgate_config_last_reload_successful", "1 when the last configuration load or reload succeeded, 0 when it was refused."),
            last_reload_success_time: gauge(&r, "tollgate_config_last_reload_success_timestamp_seconds", "When the configuration was last loaded or reloaded successfully (Unix time)."),
            config_reloads: counter(&r, "tollgate_config_reloads_total", "Configuration reloads, by result.", &["result"]),
            access_log_dropped: single_counter(&r, "tollgate_access_log_dropped_total", "Access log lines dropped: the writer fell behind (a slow disk) or a write failed (a full disk)."),
            spans: {
                let dropped = counter(&r, "tollgate_trace_spans_dropped_total", "Spans not exported, by reason: queue_full (the export queue was full), export_failed (the collector did not take them).", &["reason"]);
                crate::observe::otlp::ExportCounters {
                    exported: single_counter(&r, "tollgate_trace_spans_exported_total", "Spans the OTLP collector accepted."),
                    dropped_full: dropped.with_label_values(&["queue_full"]),
                    failed: dropped.with_label_values(&["export_failed"]),
                }
            },
            front_door_refusals: counter(&r, "tollgate_front_door_refusals_total", "Requests and connections refused at the front door, before routing, by reason.", &["reason"]),
            peer_healthy: gauge_vec(&r, "tollgate_upstream_peer_healthy", "1 when a peer is in its pool (healthy and not cooling down), else 0.", &["upstream", "peer"]),
            peer_in_flight: gauge_vec(&r, "tollgate_upstream_peer_in_flight", "Requests in flight to a peer.", &["upstream", "peer"]),
            cache_bytes: gauge(&r, "tollgate_cache_bytes", "Bytes held by the response cache."),
            cache_entries: gauge(&r, "tollgate_cache_entries", "Responses held by the response cache."),
            redis_fallbacks: single_counter(&r, "tollgate_ratelimit_redis_fallbacks_total", "Global rate-limit decisions taken locally because Redis did not answer in time."),
            ejections: counter(&r, "tollgate_upstream_ejections_total", "Peers ejected by outlier detection (failures in a row), by upstream.", &["upstream"]),
            dns_failures: counter(&r, "tollgate_upstream_dns_failures_total", "Lookups of a pool's peer names that failed (the pool keeps the names' last addresses), by upstream.", &["upstream"]),
            jwks_keys: gauge_vec(&r, "tollgate_jwt_issuer_keys", "Keys held for a JWT issuer whose keys are fetched (jwks_url or discovery_url), by issuer.", &["issuer"]),
            jwks_fetches: counter(&r, "tollgate_jwt_key_fetches_total", "Fetches of a JWT issuer's key set, by issuer and result (success, failure); a failure keeps the last good keys.", &["issuer", "result"]),
            redis_circuit_open: gauge(&r, "tollgate_ratelimit_redis_circuit_open", "1 while global rate-limit decisions skip Redis after a failure (counted locally until a probe finds it back), else 0."),
            rate_limit_keys: gauge(&r, "tollgate_ratelimit_keys", "Keys held by local rate limits (idle ones not yet forgotten included)."),
            rate_limit_evictions: single_counter(&r, "tollgate_ratelimit_key_evictions_total", "Keys of local rate limits forgotten while still counting, because rate_limit_max_keys was reached."),
            registry: r,
        };
        for result in ["success", "failure"] {
            m.config_reloads.with_label_values(&[result]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), PINGORA_VERSION])
            .set(1);
        m.config_loaded(true);
        Arc::new(m)
    }

    /// The admitted and refused request counters of usage plan `plan` (there from the start,
    /// so dashboards see zeros).
    pub fn plan_requests(&self, plan: &str) -> [IntCounter; 2] {
        ["admitted", "refused"].map(|r| self.plan_requests.with_label_values(&[plan, r]))
    }

    /// The series of route `name` (at `slot` in snapshot `generation`), sending to `upstream`.
    pub fn route(
        &self,
        slot: usize,
        generation: u64,
        name: Arc<str>,
        upstream: &str,
    ) -> RouteMetrics {
        RouteMetrics {
            slot,
            generation,
            // Every route's refusal count is there from the start, so dashboards see zeros.
            ratelimit_rejected: ["rate", "concurrency"]
                .map(|kind| self.ratelimit_rejected.with_label_values(&[&name, kind])),
            upstream: Arc::from(upstream),
            name,
            families: Families {
                request_duration: self.request_duration.clone(),
                upstream_duration: self.upstream_duration.clone(),
                upstream_errors: self.upstream_errors.clone(),
                retries: self.retries.clone(),
                retry_budget_exhausted: self.retry_budget_exhausted.clone(),
                mirror_requests: self.mirror_requests.clone(),
                compressed: self.compressed.clone(),
                forward_auth: self.forward_auth.clone(),
                compression_bytes: self.compression_bytes.clone(),
                auth_failures: self.auth_failures.clone(),
                cache_requests: self.cache_requests.clone(),
                api_violations: self.api_violations.clone(),
            },
            request_duration: OnceLock::new(),
            upstream_duration: OnceLock::new(),
            auth_failures: Default::default(),
            cache: Default::default(),
            upstream_errors: Default::default(),
            retries: Default::default(),
            retry_budget_exhausted: OnceLock::new(),
            api_violations: Default::default(),
        }
    }

    /// Run `f` on this thread's cached handles (reset when the registry or `generation`
    /// changes; `generation` 0 keeps whatever snapshot the handles are for).
    fn with_handles<R>(&self, generation: u64, f: impl FnOnce(&mut ThreadHandles) -> R) -> R {
        HANDLES.with(|h| {
            let mut h = h.borrow_mut();
            let registry = self as *const Metrics as usize;
            if h.registry != registry {
                *h = ThreadHandles {
                    registry,
                    generation,
                    ..ThreadHandles::default()
                };
            } else if generation != 0 && h.generation != generation {
                h.generation = generation;
                h.routes.clear();
            }
            f(&mut h)
        })
    }

    /// Count one answered request and its duration, on its route (`None`: no route matched).
    pub fn record_request(
        &self,
        route: Option<&RouteMetrics>,
        method: &'static str,
        status: u16,
        seconds: f64,
    ) {
        match route {
            Some(r) => {
                r.request_duration
                    .get_or_init(|| r.families.request_duration.with_label_values(&[&r.name]))
                    .observe(seconds);
                self.with_handles(r.generation, |h| {
                    count(
                        &mut slot(&mut h.routes, r.slot).requests,
                        &self.requests,
                        &r.name,
                        method,
                        status,
                    )
                });
            }
            None => {
                self.with_handles(0, |h| {
                    count(
                        &mut h.unrouted.requests,
                        &self.requests,
                        "none",
                        method,
                        status,
                    )
                });
                self.unrouted_duration
                    .get_or_init(|| self.request_duration.with_label_values(&["none"]))
                    .observe(seconds);
            }
        }
    }

    /// Record a configuration load or reload: whether it succeeded, and when it last did.
    pub fn config_loaded(&self, ok: bool) {
        self.last_reload_successful.set(i64::from(ok));
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            self.last_reload_success_time.set(now);
        }
    }

    /// Count a connection or request refused at the front door.
    pub fn front_door_refusal(&self, reason: &'static str) {
        self.with_handles(0, |h| match h.refusals.iter().find(|(r, _)| *r == reason) {
            Some((_, c)) => c.inc(),
            None => {
                let c = self.front_door_refusals.with_label_values(&[reason]);
                c.inc();
                h.refusals.push((reason, c));
            }
        });
    }

    /// The per-route families the status page's history is made of, now (only these: the
    /// whole registry includes the process collector, which reads `/proc`).
    pub fn gather_routes(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector;
        let mut out = self.requests.collect();
        out.extend(self.request_duration.collect());
        out.extend(self.cache_requests.collect());
        out.extend(self.ratelimit_rejected.collect());
        out
    }

    /// The Prometheus text exposition, with scrape-time values from `stats`.
    pub fn render(&self, stats: &Stats) -> String {
        self.peer_healthy.reset();
        self.peer_in_flight.reset();
        for p in &stats.peers {
            let labels = [p.upstream.as_str(), p.peer.as_str()];
            self.peer_healthy
                .with_label_values(&labels)
                .set(i64::from(p.available));
            self.peer_in_flight
                .with_label_values(&labels)
                .set(p.in_flight as i64);
        }
        self.cache_bytes.set(stats.cache_bytes as i64);
        self.cache_entries.set(stats.cache_entries as i64);
        catch_up(&self.redis_fallbacks, stats.redis_fallbacks);
        catch_up(&self.rate_limit_evictions, stats.rate_limit_evictions);
        self.rate_limit_keys.set(stats.rate_limit_keys as i64);
        for (upstream, failures) in &stats.dns_failures {
            catch_up(&self.dns_failures.with_label_values(&[upstream]), *failures);
        }
        for (upstream, ejections) in &stats.ejections {
            catch_up(&self.ejections.with_label_values(&[upstream]), *ejections);
        }
        self.redis_circuit_open
            .set(i64::from(stats.redis_circuit_open));
        self.jwks_keys.reset();
        for j in &stats.jwks {
            self.jwks_keys
                .with_label_values(&[j.issuer.as_str()])
                .set(j.keys as i64);
            for (result, n) in [("success", j.fetched), ("failure", j.failed)] {
                catch_up(
                    &self
                        .jwks_fetches
                        .with_label_values(&[j.issuer.as_str(), result]),
                    n,
                );
            }
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Count one in the child of `family` labelled `first` and `label`, one of `labels` (an unknown
/// one counts as the last, the catch-all), made once in its slot of `slots`.
fn count_labelled(
    slots: &[OnceLock<IntCounter>],
    family: &IntCounterVec,
    first: &str,
    labels: &[&'static str],
    label: &str,
) {
    let i = labels
        .iter()
        .position(|l| *l == label)
        .unwrap_or(labels.len() - 1);
    if let Some(slot) = slots.get(i) {
        slot.get_or_init(|| family.with_label_values(&[first, labels[i]]))
            .inc();
    }
}

/// Bring a counter kept elsewhere up to `total`.
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// Count one request in `handles` (the child of `family` for `route`, `method`, `status`).
fn count(
    handles: &mut Vec<(&'static str, u16, IntCounter)>,
    family: &IntCounterVec,
    route: &str,
    method: &'static str,
    status: u16,
) {
    match handles
        .iter()
        .find(|(m, s, _)| *s == status && *m == method)
    {
        Some((_, _, c)) => c.inc(),
        None => {
            let code = http::StatusCode::from_u16(status).ok();
            let label = code.as_ref().map(|c| c.as_str()).unwrap_or("0");
            let c = family.with_label_values(&[route, method, label]);
            c.inc();
            handles.push((method, status, c));
        }
    }
}
