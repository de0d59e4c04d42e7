//! The runtime snapshot: everything a request needs, built once from a validated configuration
//! and shared immutably. A request loads the snapshot once and uses it to the end.

use crate::cache::{Cache, RouteCacheRules};
use crate::config::{Config, Route};
use crate::policy::limits::{LimitStore, RouteLimits};
use crate::policy::Policies;
use crate::router::Router;
use crate::upstream::Pool;
use std::sync::Arc;

/// One immutable generation of the gateway's routing state.
#[derive(Debug)]
pub struct Gateway {
    pub routes: Vec<Route>,
    pub router: Router,
    /// Pools, indexed like the configuration's upstreams.
    pub pools: Vec<Arc<Pool>>,
    pub max_request_header_size: usize,
    /// How request paths are normalised before routing and forwarding.
    pub path_normalization: crate::canonical::PathOptions,
    /// Consumers and credentials.
    pub policies: Policies,
    /// Each route's limits, indexed like `routes`.
    pub route_limits: Vec<RouteLimits>,
    /// Limit counters, which outlive this snapshot.
    pub limits: Arc<LimitStore>,
    /// Each route's cache rules, indexed like `routes`.
    pub route_cache: Vec<Option<RouteCacheRules>>,
    /// The response cache, which outlives this snapshot.
    pub cache: Arc<Cache>,
    /// SHA-256 of the configuration file this snapshot was built from.
    pub checksum: String,
    /// Listener port → the HTTPS port its requests are redirected to.
    pub redirects: Vec<(u16, u16)>,
    /// Unique per snapshot in this process (what per-thread caches are keyed on).
    pub generation: u64,
}

static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Gateway {
    /// Build the snapshot from a validated configuration; limit counters and the cache are
    /// long-lived and passed in. Pools whose configuration is unchanged from `previous` are
    /// carried over with their health state and in-flight counts.
    pub fn new(
        config: &Config,
        limits: Arc<LimitStore>,
        cache: Arc<Cache>,
        previous: Option<&Gateway>,
    ) -> Gateway {
        Gateway {
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            redirects: config
                .listeners
                .iter()
                .filter_map(|l| l.redirect_https.map(|p| (l.address.port(), p)))
                .collect(),
            checksum: config.checksum.clone(),
            route_cache: config
                .routes
                .iter()
                .map(|r| {
                    r.cache
                        .as_ref()
                        .map(|c| RouteCacheRules::new(&cache, &r.name, c))
                })
                .collect(),
            cache,
            route_limits: config
                .routes
                .iter()
                .map(|r| limits.compile(r, config.redis.as_ref()))
                .collect(),
            limits,
            router: Router::new(&config.routes),
            routes: config.routes.clone(),
            pools: config
                .upstreams
                .iter()
                .map(|u| {
                    previous
                        .and_then(|p| p.pools.iter().find(|pool| pool.config == *u))
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Pool::new(u.clone())))
                })
                .collect(),
            max_request_header_size: config.max_request_header_size,
            path_normalization: config.path_normalization,
            policies: Policies::new(config),
        }
    }
}
