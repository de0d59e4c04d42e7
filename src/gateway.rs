//! The runtime snapshot: everything a request needs, built once from a validated configuration
//! and shared immutably. A request loads the snapshot once and uses it to the end, so a reload
//! never mixes old and new. Its routes are compiled values ([`CompiledRoute`]): each holds its
//! pool, access policy, limits, cache rule, rewrites and transforms, so the request path asks
//! its route for everything and never reads the configuration model.
//!
//! State that outlives a reload (pool health and in-flight counts, limit counters, the cache)
//! lives outside the snapshot and is handed to the next one when its configuration is
//! unchanged.

use crate::cache::{Cache, RouteCacheRules};
use crate::config::{Config, HeaderTransform, HostPattern, PathMatch, PathRewrite};
use crate::observe::metrics::{JwksStat, Metrics, PeerStat, RouteMetrics, Stats};
use crate::policy::limits::{LimitStore, PlanQuotas, RouteLimits};
use crate::policy::{Access, Policies};
use crate::router::{RouteId, Router};
use crate::upstream::Pool;
use http::Method;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub mod split;

/// One route, compiled for the request path.
#[derive(Debug)]
pub struct CompiledRoute {
    /// Its place in the snapshot's route list (and the router's answers).
    pub id: RouteId,
    pub name: Arc<str>,
    /// What it matches, as configured (for the admin API and status page).
    pub hosts: Vec<HostPattern>,
    pub path: PathMatch,
    pub methods: Vec<Method>,
    /// The pool it sends to.
    pub pool: Arc<Pool>,
    /// IP rules, authentication methods and who may call.
    pub access: Access,
    /// Rate and concurrency limits.
    pub limits: RouteLimits,
    /// Caching, when the route caches.
    pub cache: Option<RouteCacheRules>,
    pub rewrite: PathRewrite,
    pub request_headers: HeaderTransform,
    pub response_headers: HeaderTransform,
    /// Larger request bodies are refused with 413.
    pub max_body_size: Option<u64>,
    /// Requests with non-idempotent methods are retried after they were sent too.
    pub retry_non_idempotent: bool,
    /// This route's metric series.
    pub metrics: RouteMetrics,
    /// Several pools by weight, with canary rules (`None`: `pool` alone).
    pub split: Option<split::RouteSplit>,
    /// Mirroring: its settings and its shadow pool.
    pub mirror: Option<crate::config::Mirror>,
    pub mirror_pool: Option<Arc<Pool>>,
    /// CORS rules, compiled.
    pub cors: Option<crate::policy::cors::CorsPolicy>,
    /// Response compression rules.
    pub compression: Option<crate::compress::RouteCompression>,
    /// The authorization service asked first.
    pub forward_auth: Option<crate::policy::forward_auth::ForwardAuth>,
    /// The OpenAPI operation it serves, and the checks of its requests.
    pub api: Option<crate::config::ApiRoute>,
}

impl CompiledRoute {
    /// The pool of target `i` (see [`split::RouteSplit::choose`]; 0 without a split) and the
    /// route's series labelled with it.
    pub fn target(&self, i: usize) -> (&Arc<Pool>, &RouteMetrics) {
        match self.split.as_ref().and_then(|s| s.targets.get(i)) {
            Some(t) => (&t.pool, &t.metrics),
            None => (&self.pool, &self.metrics),
        }
    }
}

/// One immutable generation of the gateway's routing state.
#[derive(Debug)]
pub struct Gateway {
    /// Compiled routes, in file order (indexed by [`RouteId`]).
    pub routes: Vec<Arc<CompiledRoute>>,
    pub router: Router,
    /// Every pool, in file order (routes hold theirs).
    pub pools: Vec<Arc<Pool>>,
    pub max_request_header_size: usize,
    /// How request paths are normalised before routing and forwarding.
    pub path_normalization: crate::canonical::PathOptions,
    /// Consumers and credentials.
    pub policies: Policies,
    /// Limit counters, which outlive this snapshot.
    pub limits: Arc<LimitStore>,
    /// The response cache, which outlives this snapshot.
    pub cache: Arc<Cache>,
    /// SHA-256 of the configuration file this snapshot was built from.
    pub checksum: String,
    /// That file's text (for the admin API, which redacts its secrets).
    pub config_text: Arc<str>,
    /// Listener port → the HTTPS port its requests are redirected to.
    pub redirects: Vec<(u16, u16)>,
    /// Unique per snapshot in this process (what per-thread caches are keyed on).
    pub generation: u64,
    /// `Cache-Status` and/or `X-Cache-Status` on cached routes.
    pub cache_status_headers: crate::config::HeaderStyle,
    /// The share of new traces sampled; `None`: no trace context.
    pub tracing: Option<f64>,
    /// Whether global limits have a Redis server.
    pub has_redis: bool,
    /// Usage plans' quotas, in the file's order of plans, with their request counters
    /// (admitted, refused).
    pub plans: Vec<(PlanQuotas, [prometheus::IntCounter; 2])>,
    /// Each consumer's name and plan (an index into `plans`), by consumer id.
    pub consumers: Vec<(Arc<str>, Option<usize>)>,
}

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Gateway {
    /// Build the snapshot from a validated configuration; limit counters and the cache are
    /// long-lived and passed in, and route metrics are registered in `metrics`. Pools whose
    /// configuration is unchanged from `previous` are carried over with their health state and
    /// in-flight counts.
    pub fn new(
        config: &Config,
        limits: Arc<LimitStore>,
        cache: Arc<Cache>,
        metrics: &Metrics,
        previous: Option<&Gateway>,
    ) -> Gateway {
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        let routing = &config.routing;
        let pools: Vec<Arc<Pool>> = routing
            .upstreams
            .iter()
            .map(|u| {
                let same_name =
                    previous.and_then(|p| p.pools.iter().find(|pool| pool.config.name == u.name));
                match same_name {
                    Some(pool) if pool.config == *u => pool.clone(),
                    _ => {
                        let pool = Arc::new(Pool::new(u.clone()));
                        if let Some(old) = same_name {
                            pool.continue_counters(old);
                        }
                        pool
                    }
                }
            })
            .collect();
        limits.set_max_keys(routing.rate_limit_max_keys);
        let routes = routing
            .routes
            .iter()
            .enumerate()
            .map(|(id, r)| {
                let pool = pools[r.upstream].clone();
                let name: Arc<str> = Arc::from(r.name.as_str());
                Arc::new(CompiledRoute {
                    id,
                    metrics: metrics.route(id, generation, name.clone(), &pool.config.name),
                    name: name.clone(),
                    hosts: r.hosts.clone(),
                    path: r.path.clone(),
                    methods: r.methods.clone(),
                    access: Access::new(r),
                    limits: limits.compile(r, routing.redis.as_ref(), routing.rate_limit_headers),
                    cache: r
                        .cache
                        .as_ref()
                        .map(|c| RouteCacheRules::new(&cache, &r.name, c)),
                    rewrite: r.rewrite.clone(),
                    request_headers: r.request_headers.clone(),
                    response_headers: r.response_headers.clone(),
                    max_body_size: r.max_body_size,
                    retry_non_idempotent: r.retry_non_idempotent,
                    mirror: r.mirror.clone(),
                    mirror_pool: r.mirror.as_ref().and_then(|m| pools.get(m.pool).cloned()),
                    cors: r.cors.as_ref().map(crate::policy::cors::CorsPolicy::new),
                    compression: r
                        .compression
                        .as_ref()
                        .map(crate::compress::RouteCompression::new),
                    forward_auth: r.forward_auth.as_ref().and_then(|f| {
                        let pool = pools.get(f.pool)?.clone();
                        Some(crate::policy::forward_auth::ForwardAuth::new(
                            f.clone(),
                            pool,
                        ))
                    }),
                    split: r.split.as_ref().map(|s| {
                        split::RouteSplit::new(s, &pools, |pool: &Pool| {
                            metrics.route(id, generation, name.clone(), &pool.config.name)
                        })
                    }),
                    api: r.api.clone(),
                    pool,
                })
            })
            .collect();
        let plans = routing
            .plans
            .iter()
            .map(|p| {
                let quotas = limits.plan(p, routing.redis.as_ref(), &routing.time_zone.zone);
                (quotas, metrics.plan_requests(&p.name))
            })
            .collect();
        Gateway {
            generation,
            redirects: config
                .process
                .listeners
                .iter()
                .filter_map(|l| l.redirect_https.map(|p| (l.address.port(), p)))
                .collect(),
            checksum: config.checksum.clone(),
            config_text: config.text.clone(),
            router: Router::new(&routing.routes),
            routes,
            pools,
            cache,
            limits,
            max_request_header_size: routing.max_request_header_size,
            path_normalization: routing.path_normalization,
            cache_status_headers: routing.cache_status_headers,
            tracing: routing.tracing,
            has_redis: routing.redis.is_some(),
            plans,
            consumers: routing
                .consumers
                .iter()
                .map(|c| (Arc::from(c.name.as_str()), c.plan))
                .collect(),
            policies: Policies::new(routing, previous.map(|p| &p.policies)),
        }
    }

    /// The plan of an authenticated caller that is a consumer with one, and its name.
    pub fn plan_of(
        &self,
        identity: &crate::policy::Identity,
    ) -> Option<(&(PlanQuotas, [prometheus::IntCounter; 2]), &str)> {
        let id = match identity {
            crate::policy::Identity::Consumer(id) => *id,
            crate::policy::Identity::Token(t) => t.consumer?,
        };
        let (name, plan) = self.consumers.get(id)?;
        Some((self.plans.get((*plan)?)?, name))
    }

    /// The compiled route behind an id the router returned.
    pub fn route(&self, id: RouteId) -> &CompiledRoute {
        &self.routes[id]
    }

    /// What the metrics render at scrape time: peers' health and load, the cache's size, the
    /// limits' Redis fallbacks.
    pub fn stats(&self) -> Stats {
        Stats {
            peers: self
                .pools
                .iter()
                .flat_map(|pool| {
                    pool.peers()
                        .iter()
                        .map(|peer| PeerStat {
                            upstream: pool.config.name.clone(),
                            peer: peer.address.to_string(),
                            available: pool.is_available(&peer.address),
                            in_flight: peer.in_flight.load(Ordering::Relaxed),
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
            cache_bytes: self.cache.store.held_bytes(),
            cache_entries: self.cache.store.entries(),
            redis_fallbacks: self.limits.redis_fallbacks.load(Ordering::Relaxed),
            redis_circuit_open: self.limits.redis_circuit_open(),
            dns_failures: self
                .pools
                .iter()
                .filter_map(|p| Some((p.config.name.clone(), p.dns_failures()?)))
                .collect(),
            ejections: self
                .pools
                .iter()
                .filter(|p| p.config.outlier_detection.is_some())
                .map(|p| (p.config.name.clone(), p.ejections()))
                .collect(),
            rate_limit_keys: self.limits.keys_held() as u64,
            rate_limit_evictions: self.limits.keys_evicted(),
            jwks: self
                .policies
                .remote_key_sets()
                .map(|r| JwksStat {
                    issuer: r.issuer.clone(),
                    keys: r.keys().len(),
                    fetched: r.fetched.load(Ordering::Relaxed),
                    failed: r.failed.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}
