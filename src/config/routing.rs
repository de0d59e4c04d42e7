//! The validated routing settings: upstream pools, routes, consumers, JWT issuers, Redis and
//! the request-reading limits that a reload swaps in one atomic step.

use super::identity::{AuthMethod, Consumer, JwtIssuer};
use super::pattern::{PathRegex, PathTemplate, RewriteTemplate};
use http::{HeaderName, HeaderValue, Method};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// How many keys local rate limits hold at most, unless `rate_limit_max_keys` says otherwise.
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: usize = 1_000_000;

/// Settings a reload replaces.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Upstream pools, in file order; routes refer to them by index.
    pub upstreams: Vec<Upstream>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
    /// Requests whose header section is larger than this are refused with 431.
    pub max_request_header_size: usize,
    /// How request paths are normalised before routing and forwarding.
    pub path_normalization: crate::canonical::PathOptions,
    /// Known callers, in file order.
    pub consumers: Vec<Consumer>,
    /// Usage plans, by name; consumers refer to them by index.
    pub plans: Vec<super::Plan>,
    /// The zone the plans' calendar periods are counted in.
    pub time_zone: super::TimeZone,
    /// The header API keys are read from (besides `Authorization: Bearer`).
    pub api_key_header: HeaderName,
    /// Trusted JWT issuers.
    pub jwt: Vec<JwtIssuer>,
    /// Shared state for global limits.
    pub redis: Option<RedisConfig>,
    /// Which rate-limit headers responses carry.
    pub rate_limit_headers: HeaderStyle,
    /// How many keys local rate limits hold at most.
    pub rate_limit_max_keys: usize,
    /// Which cache status headers responses of cached routes carry.
    pub cache_status_headers: HeaderStyle,
    /// W3C trace context: the share of new traces sampled (`None`: `traceparent` passes
    /// through untouched and no ids are logged).
    pub tracing: Option<f64>,
}

/// Which of two header conventions responses follow: the standard one, the older one most
/// software still reads, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderStyle {
    /// Rate limits: `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers);
    /// caching: `Cache-Status` (RFC 9211).
    #[default]
    Standard,
    /// Rate limits: `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`, as earlier
    /// drafts had; caching: `X-Cache-Status`.
    Legacy,
    /// Both.
    Both,
}

impl HeaderStyle {
    /// Whether the standard headers are sent.
    pub fn standard(self) -> bool {
        self != HeaderStyle::Legacy
    }

    /// Whether the older headers are sent.
    pub fn legacy(self) -> bool {
        self != HeaderStyle::Standard
    }
}

/// An upstream pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub peers: Vec<Peer>,
    pub balance: Balance,
    pub health_check: Option<HealthCheck>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    /// How many times a failed attempt is retried on another peer.
    pub retries: usize,
    /// Which failures are retried.
    pub retry_on: RetryOn,
    /// How many retries the pool allows beside its requests.
    pub retry_budget: RetryBudget,
    /// Ejecting peers that keep failing (`None`: off).
    pub outlier_detection: Option<OutlierDetection>,
    /// How long a peer that refused a connection is kept out; zero disables passive health.
    pub passive_cooldown: Duration,
    /// Reach the peers over TLS.
    pub tls: Option<UpstreamTls>,
    /// The HTTP version spoken to the peers.
    pub protocol: Protocol,
    /// Peer names looked up again in the background (`None`: addresses only).
    pub discovery: Option<Discovery>,
}

/// The failures of an attempt that are retried on another peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    /// The connection could not be made (the request was not sent).
    pub connect_failure: bool,
    /// The connection failed after the request was sent (reset, closed, broken).
    pub reset: bool,
    /// The peer did not answer within `read_timeout`.
    pub timeout: bool,
    /// The peer answered with one of these statuses.
    pub statuses: Vec<u16>,
}

impl RetryOn {
    /// Whether failures after the request was sent are retried (its body must be kept).
    pub fn after_sent(&self) -> bool {
        self.reset || self.timeout || !self.statuses.is_empty()
    }
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn {
            connect_failure: true,
            reset: false,
            timeout: false,
            statuses: Vec::new(),
        }
    }
}

/// A peer whose attempts fail `consecutive_failures` times in a row (5xx answers, broken
/// connections, timeouts, refused connections) is ejected for `base_ejection` times the number
/// of its recent ejections (at most `max_ejection`), while no more than `max_ejection_percent`
/// of the pool is out at once (at least one peer may be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejection_percent: u32,
}

/// At most `ratio` retries per request over `window`, and `min_retries` in any window.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudget {
    pub ratio: f64,
    pub window: Duration,
    pub min_retries: u64,
}

impl Eq for RetryBudget {}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: 0.2,
            window: Duration::from_secs(10),
            min_retries: 3,
        }
    }
}

/// A pool's peer names in DNS and how often they are looked up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The peers written as addresses.
    pub fixed: Vec<Peer>,
    pub names: Vec<NamedPeers>,
    /// Bounds on the wait between lookups (the records' TTL, within these).
    pub min_interval: Duration,
    pub max_interval: Duration,
    /// The name servers asked (empty: the system's).
    pub servers: Vec<SocketAddr>,
}

/// A name whose addresses are peers, each with `weight` (SRV records give their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPeers {
    pub name: crate::dns::Name,
    pub weight: usize,
    /// What it resolved to with the configuration.
    pub resolved: Vec<Peer>,
}

/// The HTTP version a pool speaks to its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 only (the default).
    Http1,
    /// HTTP/2 only: over TLS (ALPN `h2`), or cleartext with prior knowledge (h2c).
    H2,
    /// Over TLS, whichever of HTTP/2 and HTTP/1.1 the peer picks through ALPN.
    Auto,
}

/// TLS towards a pool's peers.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent in SNI and checked against the peer's certificate.
    pub sni: String,
    /// Verify the peer's certificate chain and name (default on).
    pub verify: bool,
    /// Trust these CA certificates (DER) instead of the system's.
    pub ca: Option<Vec<Vec<u8>>>,
    /// The certificate chain (DER, leaf first) and private key (DER) shown to peers that ask.
    pub client_cert: Option<(Vec<Vec<u8>>, Vec<u8>)>,
}

impl fmt::Debug for UpstreamTls {
    /// The client key never printed: the certificate chain stands for it by its digest.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        use sha2::Digest;
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field(
                "ca",
                &self
                    .ca
                    .as_ref()
                    .map(|c| hex::encode(sha2::Sha256::digest(c.concat()))),
            )
            .field(
                "client_cert",
                &self
                    .client_cert
                    .as_ref()
                    .map(|(chain, _)| hex::encode(sha2::Sha256::digest(chain.concat()))),
            )
            .finish()
    }
}

/// One peer of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub address: SocketAddr,
    pub weight: usize,
}

/// The balancing policy of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
    LeastConn,
    ConsistentHash(HashKey),
}

/// What a consistent-hash pool hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Path,
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

/// Active health checking of a pool's peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: usize,
    pub healthy_after: usize,
}

/// How a peer is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A TCP connection must be accepted.
    Tcp,
    /// `GET path` must answer 2xx.
    Http { path: String, host: String },
}

/// A route: what it matches and where it sends.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub path: PathMatch,
    /// Empty means any method.
    pub methods: Vec<Method>,
    /// Exact values the request must carry.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Query parameters the request must carry with exactly these (decoded) values.
    pub query: Vec<(String, String)>,
    /// An authorization service asked about every request first.
    pub forward_auth: Option<super::ForwardAuth>,
    /// Response compression (`None`: answers go as the upstream sent them).
    pub compression: Option<super::Compression>,
    /// Cross-origin rules for browsers (`None`: the gateway adds no CORS headers).
    pub cors: Option<super::Cors>,
    /// Index into [`Config::upstreams`]: the pool, or the first pool of a split.
    pub upstream: usize,
    /// Several pools by weight, and canary rules (`None`: `upstream` alone).
    pub split: Option<Split>,
    pub priority: i32,
    pub rewrite: PathRewrite,
    pub request_headers: HeaderTransform,
    pub response_headers: HeaderTransform,
    pub max_body_size: Option<u64>,
    /// Retry requests with non-idempotent methods after they were sent too.
    pub retry_non_idempotent: bool,
    /// Copy a share of the requests to a shadow pool.
    pub mirror: Option<Mirror>,
    /// Accepted authentication methods; empty means a public route.
    pub auth: Vec<AuthMethod>,
    /// Consumers in one of these groups may call (empty: no group rule).
    pub allow_groups: Vec<String>,
    /// These consumers (indexes into [`Config::consumers`]) may call (empty: no consumer rule).
    pub allow_consumers: Vec<usize>,
    /// Client addresses allowed (empty: any).
    pub ip_allow: Vec<ipnet::IpNet>,
    /// Client addresses refused.
    pub ip_deny: Vec<ipnet::IpNet>,
    /// Request-rate limits, all of which must admit a request.
    pub rate_limits: Vec<RateLimit>,
    /// A bound on in-flight requests per key.
    pub concurrency_limit: Option<ConcurrencyLimit>,
    /// Response caching for this route.
    pub cache: Option<RouteCache>,
    /// The OpenAPI operation the route serves, and its request checks.
    pub api: Option<ApiRoute>,
}

/// A route's OpenAPI operation: the document (as written in the file), the operation, and
/// the compiled checks of its requests (`None`: `validate: false`).
#[derive(Debug, Clone)]
pub struct ApiRoute {
    pub spec: String,
    pub operation: String,
    pub rules: Option<std::sync::Arc<crate::openapi::RequestRules>>,
    /// Bodies the checks read whole before any upstream is asked; larger ones get 413.
    pub max_body_size: u64,
    /// Upstream answers compared with the document, report-only (`responses: report`).
    pub responses: Option<std::sync::Arc<crate::openapi::answer::ResponseRules>>,
}

/// A route's traffic split: pools by weight (a request's pool drawn at random, or from its
/// sticky key), and canary rules checked first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Pool indexes and weights (a weight of 0 takes only canary traffic).
    pub pools: Vec<(usize, u32)>,
    pub sticky: Option<StickyKey>,
    pub canary: Vec<CanaryRule>,
}

/// A route's mirroring: `percent` of its requests (with bodies up to `max_body_size`) are also
/// sent to `pool`, whose answers are dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub pool: usize,
    pub percent: f64,
    pub max_body_size: u64,
}

impl Eq for Mirror {}

/// What keeps a client on one pool of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    Consumer,
    ClientIp,
    Header(HeaderName),
    Cookie(String),
}

/// Requests carrying this header or cookie value go to `pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryRule {
    pub when: CanaryWhen,
    pub pool: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryWhen {
    Header(HeaderName, HeaderValue),
    Cookie(String, String),
}

/// A part of a route's cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheKeyPart {
    Host,
    Path,
    Query,
    Header(HeaderName),
    Consumer,
}

/// Caching on one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCache {
    /// Freshness when the upstream gives none.
    pub ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub key: Vec<CacheKeyPart>,
    pub methods: Vec<Method>,
}

impl RouteCache {
    /// Whether responses are kept apart per consumer.
    pub fn per_consumer(&self) -> bool {
        self.key.contains(&CacheKeyPart::Consumer)
    }
}

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// The authenticated caller's name.
    Consumer,
    ClientIp,
    /// Everyone together.
    Route,
    /// The value of a request header (absent counts as empty).
    Header(HeaderName),
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            LimitKey::Consumer => f.write_str("consumer"),
            LimitKey::ClientIp => f.write_str("client_ip"),
            LimitKey::Route => f.write_str("route"),
            LimitKey::Header(h) => write!(f, "header:{h}"),
        }
    }
}

/// At most `requests` per `per`, per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u64,
    pub per: Duration,
    pub key: LimitKey,
    /// Counted in Redis, shared by every gateway using it.
    pub global: bool,
}

/// At most `max` requests in flight per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    pub max: u64,
    pub key: LimitKey,
}

/// The Redis server that holds global limit counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// One server, or the nodes of a Redis Cluster.
    pub target: RedisTarget,
    /// The longest a request waits for a decision before falling back to the local limit.
    pub timeout: Duration,
    /// After a failure, how long decisions skip Redis before one request probes it; doubled
    /// while probes fail, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

/// A host a route answers for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostPattern {
    /// `api.example.com`
    Exact(String),
    /// `*.example.org`, stored as `.example.org`
    Suffix(String),
}

/// The path part of a route's match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// No path given: every path.
    Any,
    /// A prefix on segment boundaries (stored without a trailing slash, except `/`).
    Prefix(String),
    Exact(String),
    /// `/users/{id}/orders`: whole paths, with named parameters.
    Template(PathTemplate),
    /// A regular expression over the whole path.
    Regex(PathRegex),
}

/// How the upstream path is derived from the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    None,
    /// Remove this leading part (`/api` turns `/api/users/7` into `/users/7`).
    Strip(String),
    /// Replace the matched part (`from`) with `to`.
    Replace {
        from: String,
        to: String,
    },
    /// The whole path rebuilt from a template or regex match's parameters.
    Template(RewriteTemplate),
}

/// Header changes applied to a request or a response.
#[derive(Debug, Clone, Default)]
pub struct HeaderTransform {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderTransform {
    /// True when the transform changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// True when `prefix` is `path` or a leading run of whole segments of it.
pub fn segment_prefix(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() || prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Where global counters live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedisTarget {
    /// One Redis server (`redis.url`).
    Server(String),
    /// A Redis Cluster, reached through any of these nodes (`redis.cluster`).
    Cluster(Vec<String>),
}
