//! One route's series: resolved once each when first used, so the request path counts through
//! them without hashing labels or taking a vector's lock.

use super::{count_labelled, AuthFailure, CACHE_LABELS, UPSTREAM_ERROR_KINDS};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use std::sync::{Arc, OnceLock};

/// One route's series, made when the snapshot is built and resolved at most once each: the
/// request path counts through them without hashing labels or taking a vector's lock.
pub struct RouteMetrics {
    /// The route's index in its snapshot, and the snapshot's generation.
    pub(super) slot: usize,
    pub(super) generation: u64,
    pub(super) name: Arc<str>,
    pub(super) upstream: Arc<str>,
    pub(super) families: Families,
    /// Refusals by a rate limit and by the concurrency limit.
    pub(super) ratelimit_rejected: [IntCounter; 2],
    pub(super) request_duration: OnceLock<Histogram>,
    pub(super) upstream_duration: OnceLock<Histogram>,
    pub(super) auth_failures: [OnceLock<IntCounter>; 2],
    pub(super) cache: [OnceLock<IntCounter>; 6],
    pub(super) upstream_errors: [OnceLock<IntCounter>; 8],
    pub(super) retries: [OnceLock<IntCounter>; 4],
    pub(super) retry_budget_exhausted: OnceLock<IntCounter>,
    pub(super) api_violations: [OnceLock<IntCounter>; 3],
}

/// Why an attempt was retried: the `reason` label of `tollgate_upstream_retries_total`.
pub const RETRY_REASONS: [&str; 4] = ["connect_failure", "reset", "timeout", "status"];

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.name)
            .finish()
    }
}

/// The `kind` label of `tollgate_openapi_violations_total`: requests refused by the route's
/// OpenAPI operation (`request`: parameters or body; `media_type`: a body it does not take) and
/// upstream answers that do not match it (`response`, report-only).
pub const API_VIOLATION_KINDS: [&str; 3] = ["request", "media_type", "response"];

/// The labelled families a route's series are children of.
#[derive(Clone)]
pub(super) struct Families {
    pub(super) request_duration: HistogramVec,
    pub(super) upstream_duration: HistogramVec,
    pub(super) upstream_errors: IntCounterVec,
    pub(super) retries: IntCounterVec,
    pub(super) retry_budget_exhausted: IntCounterVec,
    pub(super) mirror_requests: IntCounterVec,
    pub(super) compressed: IntCounterVec,
    pub(super) compression_bytes: IntCounterVec,
    pub(super) forward_auth: IntCounterVec,
    pub(super) auth_failures: IntCounterVec,
    pub(super) cache_requests: IntCounterVec,
    pub(super) api_violations: IntCounterVec,
}

impl RouteMetrics {
    /// The route's name, as labelled.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The route's pool's name, as labelled.
    pub fn upstream(&self) -> &Arc<str> {
        &self.upstream
    }

    /// Count a request refused by the route's access policy.
    pub fn auth_failure(&self, why: AuthFailure) {
        let (i, label) = match why {
            AuthFailure::Unauthenticated => (0, "unauthenticated"),
            AuthFailure::Forbidden => (1, "forbidden"),
        };
        self.auth_failures[i]
            .get_or_init(|| {
                self.families
                    .auth_failures
                    .with_label_values(&[&self.name, label])
            })
            .inc();
    }

    /// Count a request refused by a rate limit (`concurrency`: by the concurrency limit).
    pub fn rate_limited(&self, concurrency: bool) {
        self.ratelimit_rejected[usize::from(concurrency)].inc();
    }

    /// Count a request on a cached route by its `X-Cache-Status` (one of [`CACHE_LABELS`]).
    pub fn cache_status(&self, label: &'static str) {
        let f = &self.families.cache_requests;
        count_labelled(&self.cache, f, &self.name, &CACHE_LABELS, label);
    }

    /// Count a failure talking to the route's pool (`kind`: one of [`UPSTREAM_ERROR_KINDS`]).
    pub fn upstream_error(&self, kind: &'static str) {
        let f = &self.families.upstream_errors;
        count_labelled(
            &self.upstream_errors,
            f,
            &self.upstream,
            &UPSTREAM_ERROR_KINDS,
            kind,
        );
    }

    /// Count a retry on the route's pool (`reason`: one of [`RETRY_REASONS`]).
    pub fn retry(&self, reason: &'static str) {
        let f = &self.families.retries;
        count_labelled(&self.retries, f, &self.upstream, &RETRY_REASONS, reason);
    }

    /// Count a retry the pool's budget did not allow.
    pub fn retry_budget_exhausted(&self) {
        self.retry_budget_exhausted
            .get_or_init(|| {
                self.families
                    .retry_budget_exhausted
                    .with_label_values(&[&self.upstream])
            })
            .inc();
    }

    /// Observe the pool's time to a response header.
    pub fn upstream_time(&self, seconds: f64) {
        self.upstream_duration
            .get_or_init(|| {
                self.families
                    .upstream_duration
                    .with_label_values(&[&self.upstream])
            })
            .observe(seconds);
    }

    /// Count a request refused by, or an answer that does not match, the route's OpenAPI
    /// operation (`kind`: one of [`API_VIOLATION_KINDS`]).
    pub fn api_violation(&self, kind: &'static str) {
        let f = &self.families.api_violations;
        count_labelled(
            &self.api_violations,
            f,
            &self.name,
            &API_VIOLATION_KINDS,
            kind,
        );
    }
}
