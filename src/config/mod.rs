//! The configuration: one YAML file, read into serde types ([`raw`]), then validated into the
//! checked model below. Validation never stops at the first mistake: every problem is reported
//! as a [`ConfigError`] with its place in the file (`routes[0].upstream`), and nothing starts
//! unless the list is empty.

mod front;
mod jwt;
mod raw;
pub mod units;

pub use front::ClientTimeouts;
use http::{HeaderName, HeaderValue, Method};
use pingora_core::server::configuration::ServerConf;
use raw::*;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One problem in a configuration file: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The place in the file, e.g. `routes[0].match.path_prefix`; empty for the whole file.
    pub path: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Pingora's process settings, with Tollgate's defaults applied.
    pub server: ServerConf,
    /// Addresses the traffic listeners bind.
    pub listeners: Vec<Listener>,
    /// Upstream pools, in file order; routes refer to them by index.
    pub upstreams: Vec<Upstream>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
    /// Requests whose header section is larger than this are refused with 431.
    pub max_request_header_size: usize,
    /// How long a kept-alive client connection may wait for its next request (whole seconds).
    pub client_keepalive_timeout: std::time::Duration,
    /// How slowly a client may send a request.
    pub client_timeouts: ClientTimeouts,
    /// How request paths are normalised before routing and forwarding.
    pub path_normalization: crate::canonical::PathOptions,
    /// Known callers, in file order.
    pub consumers: Vec<Consumer>,
    /// The header API keys are read from (besides `Authorization: Bearer`).
    pub api_key_header: HeaderName,
    /// Trusted JWT issuers.
    pub jwt: Vec<JwtIssuer>,
    /// Shared state for global limits.
    pub redis: Option<RedisConfig>,
    /// The response cache (defaults apply when absent).
    pub cache: CacheConfig,
    /// The admin listener, when configured.
    pub admin: Option<AdminConfig>,
    /// Where access log lines go (a file path or `stdout`), when enabled.
    pub access_log: Option<String>,
    /// Settings that are valid but probably not what was meant.
    pub warnings: Vec<ConfigError>,
    /// SHA-256 of the file's text, in hex.
    pub checksum: String,
}

/// A traffic listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    /// Terminate TLS with these certificates (chosen by SNI).
    pub tls: Vec<Certificate>,
    /// Offer HTTP/2 through ALPN (TLS listeners).
    pub http2: bool,
    /// Answer every request with a redirect to HTTPS on this port.
    pub redirect_https: Option<u16>,
    /// Peers whose forwarding headers (`forwarded_header`) are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header trusted proxies name the client in.
    pub forwarded_header: ForwardedHeader,
    /// Every connection starts with a PROXY protocol header (version 1 or 2).
    pub proxy_protocol: bool,
    /// At most this many open connections from one client address.
    pub max_connections_per_ip: Option<u32>,
}

/// The header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// A certificate chain and its key, with the DNS names it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub cert: String,
    pub key: String,
    /// From the certificate's subject alternative names (`*.example.org` included).
    pub names: Vec<String>,
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
    /// How many times a failed connection is retried on another peer.
    pub retries: usize,
    /// How long a peer that refused a connection is kept out; zero disables passive health.
    pub passive_cooldown: Duration,
    /// Reach the peers over TLS.
    pub tls: Option<UpstreamTls>,
    /// The HTTP version spoken to the peers.
    pub protocol: Protocol,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent in SNI and checked against the peer's certificate.
    pub sni: String,
    /// Verify the peer's certificate chain and name (default on).
    pub verify: bool,
    /// Trust these CA certificates (DER) instead of the system's.
    pub ca: Option<Vec<Vec<u8>>>,
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
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    pub priority: i32,
    pub rewrite: PathRewrite,
    pub request_headers: HeaderTransform,
    pub response_headers: HeaderTransform,
    pub max_body_size: Option<u64>,
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

/// The shared response cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Memory for all cached bodies and headers together.
    pub max_size: u64,
    /// Larger responses pass through uncached.
    pub max_object_size: u64,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// The bearer token every call but `/healthz` must carry, when set.
    pub token: Option<String>,
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
    pub url: String,
    /// The longest a request waits for a decision before falling back to the local limit.
    pub timeout: Duration,
}

/// A way a caller proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A key in `X-API-Key` (or the configured header) or `Authorization: Bearer`.
    ApiKey,
    /// `Authorization: Basic` checked against a bcrypt hash.
    Basic,
    /// `Authorization: Bearer <JWT>` from a configured issuer.
    Jwt,
}

/// A JWT issuer and the keys that verify its tokens.
#[derive(Clone)]
pub struct JwtIssuer {
    pub issuer: String,
    pub keys: Vec<JwtKey>,
    /// Accepted `aud` values; empty means `aud` is not checked.
    pub audience: Vec<String>,
    /// The claim naming the consumer (`sub` by default).
    pub consumer_claim: String,
    /// The claim listing groups, if any.
    pub groups_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

impl fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("JwtIssuer")
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// One verification key of an issuer.
#[derive(Clone)]
pub struct JwtKey {
    /// The JWKS `kid`, when the key came from a JWKS document.
    pub kid: Option<String>,
    pub key: jsonwebtoken::DecodingKey,
    /// The configured algorithms that fit this key's type.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
}

/// A known caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    pub groups: Vec<String>,
    /// SHA-256 digests of the consumer's API keys (keys given in clear are hashed at load).
    pub api_key_digests: Vec<[u8; 32]>,
    /// Basic-auth user name and bcrypt hash.
    pub basic_auth: Option<(String, String)>,
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

/// Keys the gateway owns at the top level; everything else belongs to Pingora's `ServerConf`.
const GATEWAY_KEYS: &[&str] = &[
    "listeners",
    "upstreams",
    "routes",
    "max_request_header_size",
    "client_keepalive_timeout",
    "client_header_timeout",
    "client_body_timeout",
    "client_body_min_rate",
    "client_send_timeout",
    "path_normalization",
    "consumers",
    "api_key_header",
    "jwt",
    "redis",
    "cache",
    "admin",
    "access_log",
];

/// Pingora refuses header sections at or over this size itself (with a bare 400).
const PINGORA_MAX_HEADER_SIZE: u64 = 1_048_575;

/// Read and validate a configuration file; relative paths in it are relative to the current
/// directory.
pub fn load_file(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    load_file_in(path, &base)
}

/// Read and validate a configuration file; relative paths in it are relative to `base` (a
/// reload uses the directory the process started in, whatever its current directory is now).
pub fn load_file_in(path: &Path, base: &Path) -> Result<Config, Vec<ConfigError>> {
    let path = base.join(path);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        vec![ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        }]
    })?;
    parse_in(&text, base)
}

/// Validate configuration text, relative paths being relative to the current directory.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    parse_in(text, &base)
}

/// Validate configuration text, relative paths being relative to `base`.
pub fn parse_in(text: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| {
        vec![ConfigError {
            path: String::new(),
            message: format!("invalid YAML: {e}"),
        }]
    })?;
    let mut v = Validator {
        base: base.to_path_buf(),
        ..Validator::default()
    };
    let config = v.document(doc);
    match config {
        Some(mut c) if v.errors.is_empty() => {
            c.warnings = v.warnings;
            c.checksum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
            Ok(c)
        }
        _ => Err(v.errors),
    }
}

/// What route validation needs from the rest of the file.
struct RouteContext<'a> {
    upstreams: &'a [Upstream],
    consumers: &'a [Consumer],
    have_jwt: bool,
    have_redis: bool,
    /// Routes are matched on canonical paths: their own paths must be written so.
    paths: crate::canonical::PathOptions,
}

#[derive(Default)]
struct Validator {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    /// What relative paths are relative to.
    base: PathBuf,
}

fn index_path(section: &str, i: usize) -> String {
    format!("{section}[{i}]")
}

fn join(base: &str, rest: &str) -> String {
    if base.is_empty() {
        if rest == "." {
            String::new()
        } else {
            rest.to_string()
        }
    } else if rest.is_empty() || rest == "." {
        base.to_string()
    } else if rest.starts_with('[') {
        format!("{base}{rest}")
    } else {
        format!("{base}.{rest}")
    }
}

fn server_conf_keys() -> Vec<String> {
    match serde_yaml::to_value(ServerConf::default()) {
        Ok(Value::Mapping(m)) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!(" (did you mean \"{c}\"?)"),
        None => String::new(),
    }
}

impl Validator {
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Deserialize one item, reporting a failure at `base` plus the path inside the item. serde
    /// stops at the first problem, so the offending entry is removed and the item tried again,
    /// until it passes or no entry can be removed: every problem in the item is reported.
    fn item<T: DeserializeOwned>(&mut self, base: &str, mut value: Value) -> Option<T> {
        let mut failed = false;
        for _ in 0..50 {
            match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(t) => return if failed { None } else { Some(t) },
                Err(e) => {
                    failed = true;
                    let inner = e.path().to_string();
                    self.error(join(base, &inner), e.inner().to_string());
                    if !remove_path(&mut value, e.path()) {
                        return None;
                    }
                }
            }
        }
        None
    }

    fn document(&mut self, doc: Value) -> Option<Config> {
        let map = match doc {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            _ => {
                self.error(
                    "",
                    "the configuration must be a YAML mapping of keys to values",
                );
                return None;
            }
        };
        let server_keys = server_conf_keys();
        let mut server_map = Mapping::new();
        let mut listeners = None;
        let mut upstreams = None;
        let mut routes = None;
        let mut max_header = None;
        let mut keepalive = None;
        let mut header_timeout = None;
        let mut body_timeout = None;
        let mut body_min_rate = None;
        let mut send_timeout = None;
        let mut path_normalization = None;
        let mut consumers = None;
        let mut api_key_header = None;
        let mut jwt = None;
        let mut redis = None;
        let mut cache = None;
        let mut admin = None;
        let mut access_log = None;
        for (k, v) in map {
            let Some(key) = k.as_str().map(str::to_string) else {
                self.error("", format!("top-level key {k:?} is not a string"));
                continue;
            };
            match key.as_str() {
                "listeners" => listeners = Some(v),
                "upstreams" => upstreams = Some(v),
                "routes" => routes = Some(v),
                "max_request_header_size" => max_header = Some(v),
                "client_keepalive_timeout" => keepalive = Some(v),
                "client_header_timeout" => header_timeout = Some(v),
                "client_body_timeout" => body_timeout = Some(v),
                "client_body_min_rate" => body_min_rate = Some(v),
                "client_send_timeout" => send_timeout = Some(v),
                "path_normalization" => path_normalization = Some(v),
                "consumers" => consumers = Some(v),
                "api_key_header" => api_key_header = Some(v),
                "jwt" => jwt = Some(v),
                "redis" => redis = Some(v),
                "cache" => cache = Some(v),
                "admin" => admin = Some(v),
                "access_log" => access_log = Some(v),
                _ if server_keys.iter().any(|s| s == &key) => {
                    server_map.insert(Value::String(key), v);
                }
                _ => {
                    let hint = did_you_mean(
                        &key,
                        GATEWAY_KEYS
                            .iter()
                            .copied()
                            .chain(server_keys.iter().map(String::as_str)),
                    );
                    self.error(key.clone(), format!("unknown key{hint}"));
                }
            }
        }

        let server = self.server_conf(server_map);
        let listeners = self.listeners(listeners);
        let upstreams = self.upstreams(upstreams);
        let max_request_header_size = self.max_header(max_header);
        let client_keepalive_timeout = self.client_keepalive(keepalive);
        let client_timeouts =
            self.client_timeouts(header_timeout, body_timeout, body_min_rate, send_timeout);
        let path_normalization = self.path_normalization(path_normalization);
        let consumers = self.consumers(consumers);
        let api_key_header = self.api_key_header(api_key_header);
        let jwt = self.jwt(jwt);
        let redis = redis.and_then(|v| self.redis(v));
        let cache = self.cache(cache);
        let admin = admin.and_then(|v| self.admin(v, &listeners));
        let access_log = access_log.and_then(|v| self.access_log(v));
        let ctx = RouteContext {
            upstreams: &upstreams,
            consumers: &consumers,
            have_jwt: !jwt.is_empty(),
            have_redis: redis.is_some(),
            paths: path_normalization,
        };
        let routes = self.routes(routes, &ctx);

        Some(Config {
            server: server?,
            listeners,
            upstreams,
            routes,
            max_request_header_size,
            client_keepalive_timeout,
            client_timeouts,
            path_normalization,
            consumers,
            api_key_header,
            jwt,
            redis,
            cache,
            admin,
            access_log,
            warnings: Vec::new(),
            checksum: String::new(),
        })
    }

    fn server_conf(&mut self, mut map: Mapping) -> Option<ServerConf> {
        let mut set_default = |key: &str, value: Value| {
            let k = Value::String(key.to_string());
            if !map.contains_key(&k) {
                map.insert(k, value);
            }
        };
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        set_default("version", Value::from(1));
        set_default("threads", Value::from(cpus as u64));
        set_default("work_stealing", Value::from(false));
        set_default("grace_period_seconds", Value::from(5));
        set_default("graceful_shutdown_timeout_seconds", Value::from(10));
        set_default("pid_file", Value::from("/tmp/tollgate.pid"));
        set_default("upgrade_sock", Value::from("/tmp/tollgate-upgrade.sock"));
        let mut conf: ServerConf = self.item("", Value::Mapping(map))?;
        if conf.version != 1 {
            self.error(
                "version",
                format!(
                    "unsupported configuration version {} (this build reads version 1)",
                    conf.version
                ),
            );
        }
        if conf.threads == 0 {
            self.error("threads", "must be at least 1");
        }
        for (key, value) in [
            ("pid_file", &mut conf.pid_file),
            ("upgrade_sock", &mut conf.upgrade_sock),
        ] {
            if value.is_empty() {
                self.error(key, "must not be empty");
            } else if Path::new(value.as_str()).is_relative() {
                // Pingora changes directory when it daemonizes: pin relative paths now.
                *value = self
                    .base
                    .join(value.as_str())
                    .to_string_lossy()
                    .into_owned();
            }
        }
        Some(conf)
    }

    fn client_keepalive(&mut self, value: Option<Value>) -> std::time::Duration {
        const DEFAULT: std::time::Duration = std::time::Duration::from_secs(60);
        const KEY: &str = "client_keepalive_timeout";
        let Some(v) = value else { return DEFAULT };
        let Some(units::ConfDuration(d)) = self.item::<units::ConfDuration>(KEY, v) else {
            return DEFAULT;
        };
        // Pingora counts keep-alive time in whole seconds, and reads 0 as "forever".
        if d < std::time::Duration::from_secs(1) {
            self.error(KEY, "must be at least 1s");
        } else if d.subsec_nanos() != 0 {
            self.error(KEY, "must be a whole number of seconds");
        } else if d > std::time::Duration::from_secs(3600) {
            self.error(KEY, "must be at most 1h");
        }
        d
    }

    fn max_header(&mut self, value: Option<Value>) -> usize {
        const DEFAULT: usize = 64 * 1024;
        let Some(v) = value else { return DEFAULT };
        let Some(units::ConfSize(n)) = self.item::<units::ConfSize>("max_request_header_size", v)
        else {
            return DEFAULT;
        };
        if n < 1024 {
            self.error("max_request_header_size", "must be at least 1KiB");
        } else if n >= PINGORA_MAX_HEADER_SIZE {
            self.error(
                "max_request_header_size",
                "must be below 1MiB (the HTTP parser's own limit)",
            );
        }
        n as usize
    }

    fn sequence(&mut self, section: &str, value: Option<Value>, required: bool) -> Vec<Value> {
        match value {
            Some(Value::Sequence(items)) => items,
            Some(Value::Null) | None => {
                if required {
                    self.error(section, "is required and must list at least one entry");
                }
                Vec::new()
            }
            Some(_) => {
                self.error(section, "must be a list");
                Vec::new()
            }
        }
    }

    fn listeners(&mut self, value: Option<Value>) -> Vec<Listener> {
        let items = self.sequence("listeners", value, true);
        let mut out: Vec<Listener> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let base = index_path("listeners", i);
            let Some(raw) = self.item::<RawListener>(&base, item) else {
                continue;
            };
            let front = self.listener_front(&base, &raw);
            let mut tls = Vec::new();
            if let Some(t) = raw.tls {
                let mut pairs: Vec<(String, String)> = Vec::new();
                match (t.cert, t.key) {
                    (Some(c), Some(k)) => pairs.push((c, k)),
                    (None, None) => {}
                    _ => self.error(format!("{base}.tls"), "give both cert and key"),
                }
                for p in t.certificates.unwrap_or_default() {
                    pairs.push((p.cert, p.key));
                }
                if pairs.is_empty() {
                    self.error(format!("{base}.tls"), "needs cert and key, or certificates");
                }
                for (j, (cert, key)) in pairs.into_iter().enumerate() {
                    let cert = self.base.join(&cert).to_string_lossy().into_owned();
                    let key = self.base.join(&key).to_string_lossy().into_owned();
                    match tls_names(&cert, &key) {
                        Ok(names) => tls.push(Certificate { cert, key, names }),
                        Err(m) => self.error(format!("{base}.tls.certificates[{j}]"), m),
                    }
                }
            }
            if raw.redirect_https.is_some() && !tls.is_empty() {
                self.error(
                    format!("{base}.redirect_https"),
                    "a TLS listener cannot redirect to HTTPS",
                );
            }
            match raw.address.parse::<SocketAddr>() {
                Ok(address) => {
                    if out.iter().any(|l| l.address == address) {
                        self.error(
                            format!("{base}.address"),
                            format!("{address} is listed twice"),
                        );
                    }
                    out.push(Listener {
                        address,
                        // TLS listeners offer HTTP/2 through ALPN unless told not to; plain
                        // ones accept cleartext HTTP/2 (h2c, prior knowledge) only when asked.
                        http2: raw.http2.unwrap_or(!tls.is_empty()),
                        tls,
                        redirect_https: raw.redirect_https,
                        trusted_proxies: front.trusted_proxies,
                        forwarded_header: front.forwarded_header,
                        proxy_protocol: front.proxy_protocol,
                        max_connections_per_ip: front.max_connections_per_ip,
                    });
                }
                Err(_) => self.error(
                    format!("{base}.address"),
                    format!(
                        "\"{}\" is not an IP address and port such as 0.0.0.0:8080 or [::]:8080",
                        raw.address
                    ),
                ),
            }
        }
        out
    }

    fn upstreams(&mut self, value: Option<Value>) -> Vec<Upstream> {
        let map = match value {
            Some(Value::Mapping(m)) => m,
            None | Some(Value::Null) => {
                self.error(
                    "upstreams",
                    "is required: define at least one upstream pool",
                );
                return Vec::new();
            }
            Some(_) => {
                self.error("upstreams", "must be a mapping of pool names to pools");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (k, v) in map {
            let Some(name) = k.as_str().map(str::to_string) else {
                self.error("upstreams", format!("pool name {k:?} is not a string"));
                continue;
            };
            let base = format!("upstreams.{name}");
            if !valid_name(&name) {
                self.error(
                    &base,
                    "pool names use letters, digits, '_', '-' and '.' only",
                );
            }
            if let Some(raw) = self.item::<RawUpstream>(&base, v) {
                if let Some(up) = self.upstream(&base, name, raw) {
                    out.push(up);
                }
            }
        }
        out
    }

    fn upstream(&mut self, base: &str, name: String, raw: RawUpstream) -> Option<Upstream> {
        let before = self.errors.len();
        let mut peers: Vec<Peer> = Vec::new();
        if raw.peers.is_empty() {
            self.error(format!("{base}.peers"), "must list at least one peer");
        }
        for (i, p) in raw.peers.into_iter().enumerate() {
            let (addr_text, weight, path) = match p {
                RawPeer::Address(a) => (a, None, format!("{base}.peers[{i}]")),
                RawPeer::Detailed(d) => (d.address, d.weight, format!("{base}.peers[{i}].address")),
            };
            let weight = match weight {
                None => 1,
                Some(0) => {
                    self.error(format!("{base}.peers[{i}].weight"), "must be at least 1");
                    1
                }
                Some(w) if w > 1000 => {
                    self.error(format!("{base}.peers[{i}].weight"), "must be at most 1000");
                    1
                }
                Some(w) => w as usize,
            };
            match resolve(&addr_text) {
                Ok(address) => {
                    if peers.iter().any(|p| p.address == address) {
                        self.error(path, format!("peer {address} is listed twice"));
                    } else {
                        peers.push(Peer { address, weight });
                    }
                }
                Err(msg) => self.error(path, msg),
            }
        }

        let balance_kind = raw.balance.unwrap_or(RawBalance::RoundRobin);
        let balance = match balance_kind {
            RawBalance::RoundRobin => Balance::RoundRobin,
            RawBalance::Random => Balance::Random,
            RawBalance::LeastConn => Balance::LeastConn,
            RawBalance::ConsistentHash => {
                let key = match raw.hash_key.as_deref() {
                    None => HashKey::ClientIp,
                    Some(text) => match parse_hash_key(text) {
                        Ok(k) => k,
                        Err(msg) => {
                            self.error(format!("{base}.hash_key"), msg);
                            HashKey::ClientIp
                        }
                    },
                };
                Balance::ConsistentHash(key)
            }
        };
        if let (Some(text), false) = (
            raw.hash_key.as_deref(),
            balance_kind == RawBalance::ConsistentHash,
        ) {
            if let Err(msg) = parse_hash_key(text) {
                self.error(format!("{base}.hash_key"), msg);
            } else {
                self.warn(
                    format!("{base}.hash_key"),
                    "has no effect unless `balance: consistent_hash`",
                );
            }
        }

        let health_check = raw
            .health_check
            .and_then(|hc| self.health_check(&format!("{base}.health_check"), hc));

        let positive =
            |v: &mut Self, key: &str, d: Option<units::ConfDuration>, default: u64| match d {
                None => Duration::from_secs(default),
                Some(units::ConfDuration(d)) if d.is_zero() => {
                    v.error(format!("{base}.{key}"), "must be greater than zero");
                    Duration::from_secs(default)
                }
                Some(units::ConfDuration(d)) => d,
            };
        let connect_timeout = positive(self, "connect_timeout", raw.connect_timeout, 5);
        let read_timeout = positive(self, "read_timeout", raw.read_timeout, 60);
        let write_timeout = positive(self, "write_timeout", raw.write_timeout, 60);
        let idle_timeout = positive(self, "idle_timeout", raw.idle_timeout, 60);
        let retries = match raw.retries {
            None => 1,
            Some(r) if r > 10 => {
                self.error(format!("{base}.retries"), "must be at most 10");
                10
            }
            Some(r) => r as usize,
        };
        let passive_cooldown = raw
            .passive_cooldown
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10));
        let tls = raw.tls.map(|t| {
            let place = format!("{base}.tls");
            if t.sni.is_empty() || parse_host(&t.sni).is_err() {
                self.error(
                    format!("{place}.sni"),
                    format!("\"{}\" is not a host name", t.sni),
                );
            }
            let ca = match t.ca_file {
                None => None,
                Some(path) => {
                    let path = self.base.join(path);
                    match std::fs::read(&path) {
                        Ok(bytes) => {
                            let mut reader = std::io::BufReader::new(bytes.as_slice());
                            let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut reader)
                                .filter_map(|c| c.ok())
                                .map(|c| c.as_ref().to_vec())
                                .collect();
                            if certs.is_empty() {
                                self.error(
                                    format!("{place}.ca_file"),
                                    format!("{} holds no PEM certificate", path.display()),
                                );
                            }
                            Some(certs)
                        }
                        Err(e) => {
                            self.error(
                                format!("{place}.ca_file"),
                                format!("cannot read {}: {e}", path.display()),
                            );
                            None
                        }
                    }
                }
            };
            let verify = t.verify.unwrap_or(true);
            if !verify {
                self.warn(
                    format!("{place}.verify"),
                    "peer certificates are not verified: anyone on the path can impersonate them",
                );
            }
            UpstreamTls {
                sni: t.sni.to_ascii_lowercase(),
                verify,
                ca,
            }
        });

        let protocol = match (raw.protocol, &tls) {
            (None | Some(RawProtocol::Http1), _) => Protocol::Http1,
            (Some(RawProtocol::H2), Some(_)) | (Some(RawProtocol::H2c), None) => Protocol::H2,
            (Some(RawProtocol::H2), None) => {
                self.error(
                    format!("{base}.protocol"),
                    "h2 is HTTP/2 over TLS and this upstream has no tls: \
                     use h2c for cleartext HTTP/2, or add tls",
                );
                Protocol::H2
            }
            (Some(RawProtocol::H2c), Some(_)) => {
                self.error(
                    format!("{base}.protocol"),
                    "h2c is cleartext HTTP/2 and this upstream has tls: use h2",
                );
                Protocol::H2
            }
            (Some(RawProtocol::Auto), Some(_)) => Protocol::Auto,
            (Some(RawProtocol::Auto), None) => {
                self.error(
                    format!("{base}.protocol"),
                    "auto lets TLS (ALPN) pick the HTTP version and this upstream has no tls: \
                     use http1 or h2c",
                );
                Protocol::Http1
            }
        };

        if self.errors.len() > before {
            return None;
        }
        Some(Upstream {
            name,
            peers,
            balance,
            health_check,
            connect_timeout,
            read_timeout,
            write_timeout,
            idle_timeout,
            retries,
            passive_cooldown,
            tls,
            protocol,
        })
    }

    fn health_check(&mut self, base: &str, raw: RawHealthCheck) -> Option<HealthCheck> {
        let kind = match raw.kind {
            RawHealthKind::Tcp => {
                if raw.path.is_some() {
                    self.error(format!("{base}.path"), "applies only to `kind: http`");
                }
                if raw.host.is_some() {
                    self.error(format!("{base}.host"), "applies only to `kind: http`");
                }
                HealthCheckKind::Tcp
            }
            RawHealthKind::Http => {
                let path = raw.path.unwrap_or_else(|| "/".to_string());
                if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    self.error(
                        format!("{base}.path"),
                        format!("\"{path}\" must start with '/' and contain no spaces"),
                    );
                }
                let host = raw.host.unwrap_or_else(|| "localhost".to_string());
                if HeaderValue::from_str(&host).is_err() || host.is_empty() {
                    self.error(format!("{base}.host"), "is not a valid Host header value");
                }
                HealthCheckKind::Http { path, host }
            }
        };
        let interval = raw.interval.map(|d| d.0).unwrap_or(Duration::from_secs(5));
        let timeout = raw.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(1));
        if interval < Duration::from_millis(10) {
            self.error(format!("{base}.interval"), "must be at least 10ms");
        }
        if timeout.is_zero() {
            self.error(format!("{base}.timeout"), "must be greater than zero");
        } else if timeout > interval {
            self.error(
                format!("{base}.timeout"),
                "must not be longer than the interval",
            );
        }
        let count = |v: &mut Self, key: &str, n: Option<u64>, default: usize| match n {
            None => default,
            Some(0) => {
                v.error(format!("{base}.{key}"), "must be at least 1");
                default
            }
            Some(n) if n > 100 => {
                v.error(format!("{base}.{key}"), "must be at most 100");
                default
            }
            Some(n) => n as usize,
        };
        let unhealthy_after = count(self, "unhealthy_after", raw.unhealthy_after, 3);
        let healthy_after = count(self, "healthy_after", raw.healthy_after, 2);
        Some(HealthCheck {
            kind,
            interval,
            timeout,
            unhealthy_after,
            healthy_after,
        })
    }

    fn api_key_header(&mut self, value: Option<Value>) -> HeaderName {
        let default = HeaderName::from_static("x-api-key");
        let Some(v) = value else { return default };
        let Some(text) = self.item::<String>("api_key_header", v) else {
            return default;
        };
        match HeaderName::from_bytes(text.as_bytes()) {
            Ok(h) if !crate::proxy::headers::is_framing_or_hop(&h) => h,
            _ => {
                self.error(
                    "api_key_header",
                    format!("\"{text}\" is not a usable header name"),
                );
                default
            }
        }
    }

    fn consumers(&mut self, value: Option<Value>) -> Vec<Consumer> {
        let items = self.sequence("consumers", value, false);
        let mut out: Vec<Consumer> = Vec::new();
        let mut keys: std::collections::HashMap<[u8; 32], String> = Default::default();
        let mut users: Vec<String> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let base = index_path("consumers", i);
            let Some(raw) = self.item::<RawConsumer>(&base, item) else {
                continue;
            };
            if !valid_name(&raw.name) {
                self.error(
                    format!("{base}.name"),
                    "consumer names are non-empty and use letters, digits, '_', '-' and '.' only",
                );
            }
            if out.iter().any(|c| c.name == raw.name) {
                self.error(
                    format!("{base}.name"),
                    format!("consumer \"{}\" is defined twice", raw.name),
                );
            }
            for (j, g) in raw.groups.iter().enumerate() {
                if !valid_name(g) {
                    self.error(
                        format!("{base}.groups[{j}]"),
                        "group names use letters, digits, '_', '-' and '.' only",
                    );
                }
            }
            let mut digests = Vec::new();
            for (j, key) in raw.api_keys.iter().enumerate() {
                let place = format!("{base}.api_keys[{j}]");
                let digest = match key.strip_prefix("sha256:") {
                    Some(h) => match hex::decode(h) {
                        Ok(bytes) if bytes.len() == 32 => {
                            let mut d = [0u8; 32];
                            d.copy_from_slice(&bytes);
                            Some(d)
                        }
                        _ => {
                            self.error(
                                place.clone(),
                                "a sha256: key must be 64 hexadecimal digits",
                            );
                            None
                        }
                    },
                    None if key.len() < 8 => {
                        self.error(place.clone(), "an API key must be at least 8 characters");
                        None
                    }
                    None => Some(crate::policy::key_digest(key.as_bytes())),
                };
                if let Some(d) = digest {
                    if let Some(owner) = keys.get(&d) {
                        self.error(
                            place,
                            format!("this key is already given to consumer \"{owner}\""),
                        );
                    } else {
                        keys.insert(d, raw.name.clone());
                        digests.push(d);
                    }
                }
            }
            let basic_auth = raw.basic_auth.and_then(|b| {
                let place = format!("{base}.basic_auth");
                let mut ok = true;
                if b.username.is_empty() || b.username.contains(':') {
                    self.error(
                        format!("{place}.username"),
                        "must be non-empty and contain no ':'",
                    );
                    ok = false;
                } else if users.contains(&b.username) {
                    self.error(
                        format!("{place}.username"),
                        format!(
                            "user name \"{}\" is already used by another consumer",
                            b.username
                        ),
                    );
                    ok = false;
                }
                if b.password_hash.parse::<bcrypt::HashParts>().is_err() {
                    self.error(
                        format!("{place}.password_hash"),
                        "is not a bcrypt hash ($2b$12$...); `tollgate hash-password` prints one",
                    );
                    ok = false;
                }
                users.push(b.username.clone());
                ok.then_some((b.username, b.password_hash))
            });
            out.push(Consumer {
                name: raw.name,
                groups: raw.groups,
                api_key_digests: digests,
                basic_auth,
            });
        }
        out
    }

    fn jwt(&mut self, value: Option<Value>) -> Vec<JwtIssuer> {
        let items = self.sequence("jwt", value, false);
        let mut out: Vec<JwtIssuer> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let base = index_path("jwt", i);
            let Some(raw) = self.item::<RawJwt>(&base, item) else {
                continue;
            };
            if let Some(iss) =
                jwt::issuer(&base, raw, &self.base, &mut self.errors, &mut self.warnings)
            {
                if out.iter().any(|o| o.issuer == iss.issuer) {
                    self.error(
                        format!("{base}.issuer"),
                        format!("issuer \"{}\" is listed twice", iss.issuer),
                    );
                } else {
                    out.push(iss);
                }
            }
        }
        out
    }

    fn redis(&mut self, value: Value) -> Option<RedisConfig> {
        let raw = self.item::<RawRedis>("redis", value)?;
        if let Err(e) = redis::Client::open(raw.url.as_str()) {
            self.error(
                "redis.url",
                format!("\"{}\" is not a Redis URL: {e}", raw.url),
            );
            return None;
        }
        let timeout = raw
            .timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_millis(50));
        if timeout.is_zero() || timeout > Duration::from_secs(5) {
            self.error("redis.timeout", "must be greater than zero and at most 5s");
        }
        Some(RedisConfig {
            url: raw.url,
            timeout,
        })
    }

    fn cache(&mut self, value: Option<Value>) -> CacheConfig {
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
        } else if out.max_object_size > out.max_size / 4 {
            self.error(
                "cache.max_object_size",
                "must be at most a quarter of max_size, or one object could evict most of the cache",
            );
        }
        out
    }

    fn access_log(&mut self, value: Value) -> Option<String> {
        let raw = self.item::<RawAccessLog>("access_log", value)?;
        // JSON is the one format there is; the key exists so that others can be added.
        match raw.format.unwrap_or(RawLogFormat::Json) {
            RawLogFormat::Json => {}
        }
        if raw.path.is_empty() {
            self.error("access_log.path", "must be a file path or \"stdout\"");
            return None;
        }
        if raw.path != "stdout" {
            let joined = self.base.join(&raw.path);
            let path = joined.as_path();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    self.error(
                        "access_log.path",
                        format!("directory {} does not exist", dir.display()),
                    );
                    return None;
                }
            }
            // Pingora changes directory when it daemonizes: the path is pinned now.
            return Some(path.to_string_lossy().into_owned());
        }
        Some(raw.path)
    }

    fn admin(&mut self, value: Value, listeners: &[Listener]) -> Option<AdminConfig> {
        let raw = self.item::<RawAdmin>("admin", value)?;
        let text = raw.address.unwrap_or_else(|| "127.0.0.1:9901".to_string());
        let Ok(address) = text.parse::<SocketAddr>() else {
            self.error(
                "admin.address",
                format!("\"{text}\" is not an IP address and port such as 127.0.0.1:9901"),
            );
            return None;
        };
        if listeners.iter().any(|l| {
            l.address.port() == address.port()
                && (l.address.ip() == address.ip()
                    || l.address.ip().is_unspecified()
                    || address.ip().is_unspecified())
        }) {
            self.error(
                "admin.address",
                "must not share a port with a traffic listener",
            );
        }
        let token = match raw.token_env {
            None => None,
            Some(var) => match std::env::var(&var) {
                Ok(t) if t.len() >= 16 => Some(t),
                Ok(_) => {
                    self.error(
                        "admin.token_env",
                        format!("the token in {var} must be at least 16 characters"),
                    );
                    None
                }
                Err(_) => {
                    self.error(
                        "admin.token_env",
                        format!("environment variable {var} is not set"),
                    );
                    None
                }
            },
        };
        if token.is_none() && !address.ip().is_loopback() {
            self.warn(
                "admin.address",
                "the admin listener is reachable from other hosts and has no token",
            );
        }
        Some(AdminConfig { address, token })
    }

    fn route_cache(
        &mut self,
        place: &str,
        raw: RawRouteCache,
        has_auth: bool,
    ) -> Option<RouteCache> {
        let before = self.errors.len();
        let mut key = Vec::new();
        for (j, part) in raw
            .key
            .unwrap_or_else(|| vec!["host".into(), "path".into(), "query".into()])
            .iter()
            .enumerate()
        {
            let p = match part.as_str() {
                "host" => Some(CacheKeyPart::Host),
                "path" => Some(CacheKeyPart::Path),
                "query" => Some(CacheKeyPart::Query),
                "consumer" => {
                    if !has_auth {
                        self.error(
                            format!("{place}.key[{j}]"),
                            "`consumer` needs `auth` on the route: who the caller is must be known",
                        );
                    }
                    Some(CacheKeyPart::Consumer)
                }
                other => match other
                    .strip_prefix("header:")
                    .map(|n| HeaderName::from_bytes(n.as_bytes()))
                {
                    Some(Ok(h)) => Some(CacheKeyPart::Header(h)),
                    _ => {
                        self.error(
                            format!("{place}.key[{j}]"),
                            format!("\"{other}\" is not a cache key part: use host, path, query, header:NAME or consumer"),
                        );
                        None
                    }
                },
            };
            if let Some(p) = p {
                if !key.contains(&p) {
                    key.push(p);
                }
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

    fn limit_key(&mut self, place: String, text: &str, has_auth: bool) -> Option<LimitKey> {
        let key = match text {
            "consumer" => LimitKey::Consumer,
            "client_ip" => LimitKey::ClientIp,
            "route" => LimitKey::Route,
            _ => match text
                .strip_prefix("header:")
                .map(|n| HeaderName::from_bytes(n.as_bytes()))
            {
                Some(Ok(h)) => LimitKey::Header(h),
                _ => {
                    self.error(
                        place,
                        format!("\"{text}\" is not a limit key: use consumer, client_ip, route or header:NAME"),
                    );
                    return None;
                }
            },
        };
        if key == LimitKey::Consumer && !has_auth {
            self.error(
                place,
                "`key: consumer` needs `auth` on the route: who the caller is must be known",
            );
            return None;
        }
        Some(key)
    }

    fn routes(&mut self, value: Option<Value>, rc: &RouteContext) -> Vec<Route> {
        let items = self.sequence("routes", value, true);
        let mut out: Vec<Route> = Vec::new();
        let mut names: std::collections::HashMap<String, usize> = Default::default();
        let mut signatures: std::collections::HashMap<String, usize> = Default::default();
        for (i, item) in items.into_iter().enumerate() {
            let base = index_path("routes", i);
            let Some(raw) = self.item::<RawRoute>(&base, item) else {
                continue;
            };
            if let Some(j) = names.get(&raw.name) {
                self.error(
                    format!("{base}.name"),
                    format!("route name \"{}\" is already used by routes[{j}]", raw.name),
                );
            } else {
                names.insert(raw.name.clone(), i);
            }
            if let Some(route) = self.route(&base, raw, rc) {
                let signature = route_signature(&route);
                if let Some(j) = signatures.get(&signature) {
                    self.error(
                        format!("{base}.match"),
                        format!(
                            "matches exactly what routes[{j}] matches, with the same priority: it could never be chosen"
                        ),
                    );
                } else {
                    signatures.insert(signature, i);
                }
                out.push(route);
            }
        }
        out
    }

    fn route(&mut self, base: &str, raw: RawRoute, rc: &RouteContext) -> Option<Route> {
        let (upstreams, consumers, have_jwt) = (rc.upstreams, rc.consumers, rc.have_jwt);
        let before = self.errors.len();
        if raw.name.is_empty() || !valid_name(&raw.name) {
            self.error(
                format!("{base}.name"),
                "route names are non-empty and use letters, digits, '_', '-' and '.' only",
            );
        }
        let m = raw.matcher;
        let mbase = format!("{base}.match");

        let mut hosts = Vec::new();
        for (j, h) in m.hosts.unwrap_or_default().into_iter().enumerate() {
            match parse_host(&h) {
                Ok(p) => hosts.push(p),
                Err(msg) => self.error(format!("{mbase}.hosts[{j}]"), msg),
            }
        }
        hosts.sort();
        hosts.dedup();

        let path = match (m.path_prefix, m.path_exact) {
            (Some(_), Some(_)) => {
                self.error(
                    mbase.clone(),
                    "give either path_prefix or path_exact, not both",
                );
                PathMatch::Any
            }
            (Some(p), None) => match check_match_path(&p, &rc.paths) {
                Ok(()) => {
                    let trimmed = p.trim_end_matches('/');
                    if trimmed.is_empty() {
                        PathMatch::Prefix("/".to_string())
                    } else {
                        PathMatch::Prefix(trimmed.to_string())
                    }
                }
                Err(msg) => {
                    self.error(format!("{mbase}.path_prefix"), msg);
                    PathMatch::Any
                }
            },
            (None, Some(p)) => match check_match_path(&p, &rc.paths) {
                Ok(()) => PathMatch::Exact(p),
                Err(msg) => {
                    self.error(format!("{mbase}.path_exact"), msg);
                    PathMatch::Any
                }
            },
            (None, None) => PathMatch::Any,
        };

        let mut methods = Vec::new();
        for (j, name) in m.methods.unwrap_or_default().into_iter().enumerate() {
            let upper = name.to_ascii_uppercase();
            match Method::from_bytes(upper.as_bytes()) {
                Ok(method) if !name.is_empty() => {
                    if !methods.contains(&method) {
                        methods.push(method)
                    }
                }
                _ => self.error(
                    format!("{mbase}.methods[{j}]"),
                    format!("\"{name}\" is not an HTTP method"),
                ),
            }
        }

        let mut headers = Vec::new();
        for (name, value) in m.headers.unwrap_or_default() {
            let place = format!("{mbase}.headers.{name}");
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                (Err(_), _) => self.error(place, "is not a valid header name"),
                (_, Err(_)) => {
                    self.error(place, format!("\"{value}\" is not a valid header value"))
                }
            }
        }

        let upstream = match upstreams.iter().position(|u| u.name == raw.upstream) {
            Some(i) => i,
            None => {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                self.error(
                    format!("{base}.upstream"),
                    format!(
                        "unknown upstream \"{}\" (known: {})",
                        raw.upstream,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                0
            }
        };

        let matched_path = match &path {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => Some(p.clone()),
            PathMatch::Any => None,
        };
        let rewrite = match (raw.strip_prefix, raw.rewrite) {
            (Some(_), Some(_)) => {
                self.error(base, "give either strip_prefix or rewrite, not both");
                PathRewrite::None
            }
            (Some(strip), None) => {
                let strip_trimmed = strip.trim_end_matches('/').to_string();
                match &matched_path {
                    _ if check_path(&strip).is_err() => {
                        self.error(format!("{base}.strip_prefix"), "must start with '/'");
                        PathRewrite::None
                    }
                    None => {
                        self.error(
                            format!("{base}.strip_prefix"),
                            "needs match.path_prefix or match.path_exact to strip from",
                        );
                        PathRewrite::None
                    }
                    Some(mp) if !segment_prefix(mp, &strip_trimmed) => {
                        self.error(
                            format!("{base}.strip_prefix"),
                            format!("\"{strip}\" is not a leading part of the matched path \"{mp}\", so it would never apply"),
                        );
                        PathRewrite::None
                    }
                    Some(_) => PathRewrite::Strip(strip_trimmed),
                }
            }
            (None, Some(to)) => match &matched_path {
                _ if check_path(&to).is_err() => {
                    self.error(format!("{base}.rewrite"), "must start with '/'");
                    PathRewrite::None
                }
                None => {
                    self.error(
                        format!("{base}.rewrite"),
                        "needs match.path_prefix or match.path_exact to replace",
                    );
                    PathRewrite::None
                }
                Some(from) => PathRewrite::Replace {
                    from: from.clone(),
                    to,
                },
            },
            (None, None) => PathRewrite::None,
        };

        let request_headers = self.transform(
            &format!("{base}.request_headers"),
            raw.request_headers.unwrap_or_default(),
        );
        let response_headers = self.transform(
            &format!("{base}.response_headers"),
            raw.response_headers.unwrap_or_default(),
        );

        let mut auth = Vec::new();
        for m in raw.auth.unwrap_or_default() {
            let m = match m {
                RawAuthMethod::ApiKey => AuthMethod::ApiKey,
                RawAuthMethod::Basic => AuthMethod::Basic,
                RawAuthMethod::Jwt => {
                    if !have_jwt {
                        self.error(
                            format!("{base}.auth"),
                            "jwt needs at least one issuer in the top-level `jwt` section",
                        );
                    }
                    AuthMethod::Jwt
                }
            };
            if !auth.contains(&m) {
                auth.push(m);
            }
        }
        let allow_groups = raw.allow_groups.unwrap_or_default();
        let known_groups: Vec<&str> = consumers
            .iter()
            .flat_map(|c| c.groups.iter().map(String::as_str))
            .collect();
        for (j, g) in allow_groups.iter().enumerate() {
            if !known_groups.contains(&g.as_str()) {
                self.warn(
                    format!("{base}.allow_groups[{j}]"),
                    format!("no consumer is in group \"{g}\""),
                );
            }
        }
        let mut allow_consumers = Vec::new();
        for (j, name) in raw.allow_consumers.unwrap_or_default().iter().enumerate() {
            match consumers.iter().position(|c| &c.name == name) {
                Some(i) => allow_consumers.push(i),
                None => self.error(
                    format!("{base}.allow_consumers[{j}]"),
                    format!("unknown consumer \"{name}\""),
                ),
            }
        }
        if auth.is_empty() && !(allow_groups.is_empty() && allow_consumers.is_empty()) {
            self.error(
                format!("{base}.auth"),
                "allow_groups and allow_consumers need `auth` on the route: who the caller is must be known",
            );
        }
        let mut rate_limits = Vec::new();
        for (j, rl) in raw.rate_limit.unwrap_or_default().into_iter().enumerate() {
            let place = format!("{base}.rate_limit[{j}]");
            let key = self.limit_key(format!("{place}.key"), &rl.key, !auth.is_empty());
            if rl.requests == 0 {
                self.error(format!("{place}.requests"), "must be at least 1");
            }
            if rl.per.0 < Duration::from_secs(1) || rl.per.0 > Duration::from_secs(86400) {
                self.error(format!("{place}.per"), "must be between 1s and 24h");
            }
            let global = rl.scope == Some(RawScope::Global);
            if global && !rc.have_redis {
                self.error(
                    format!("{place}.scope"),
                    "global limits are counted in Redis: add a top-level `redis` section",
                );
            }
            if let Some(key) = key {
                let limit = RateLimit {
                    requests: rl.requests,
                    per: rl.per.0,
                    key,
                    global,
                };
                if rate_limits.contains(&limit) {
                    self.error(place, "is the same as an earlier limit of this route");
                } else {
                    rate_limits.push(limit);
                }
            }
        }
        let cache = raw
            .cache
            .and_then(|c| self.route_cache(&format!("{base}.cache"), c, !auth.is_empty()));
        let concurrency_limit = raw.concurrency_limit.and_then(|cl| {
            let place = format!("{base}.concurrency_limit");
            let key = self.limit_key(format!("{place}.key"), &cl.key, !auth.is_empty());
            if cl.max == 0 {
                self.error(format!("{place}.max"), "must be at least 1");
            }
            key.map(|key| ConcurrencyLimit { max: cl.max, key })
        });
        let ip_allow = self.cidrs(
            &format!("{base}.ip_allow"),
            raw.ip_allow.unwrap_or_default(),
        );
        let ip_deny = self.cidrs(&format!("{base}.ip_deny"), raw.ip_deny.unwrap_or_default());

        if self.errors.len() > before {
            return None;
        }
        Some(Route {
            auth,
            allow_groups,
            allow_consumers,
            ip_allow,
            ip_deny,
            rate_limits,
            concurrency_limit,
            cache,
            name: raw.name,
            hosts,
            path,
            methods,
            headers,
            upstream,
            priority: raw.priority.unwrap_or(0),
            rewrite,
            request_headers,
            response_headers,
            max_body_size: raw.max_body_size.map(|s| s.0),
        })
    }

    fn cidrs(&mut self, base: &str, list: Vec<String>) -> Vec<ipnet::IpNet> {
        let mut out = Vec::new();
        for (j, text) in list.into_iter().enumerate() {
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => out.push(net.trunc()),
                Err(_) => self.error(
                    format!("{base}[{j}]"),
                    format!(
                        "\"{text}\" is not an address or CIDR range such as 10.0.0.0/8 or ::1/128"
                    ),
                ),
            }
        }
        out
    }

    fn transform(&mut self, base: &str, raw: RawHeaderTransform) -> HeaderTransform {
        let mut out = HeaderTransform::default();
        let pairs = |v: &mut Self, key: &str, map: std::collections::BTreeMap<String, String>| {
            let mut list = Vec::new();
            for (name, value) in map {
                let place = format!("{base}.{key}.{name}");
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    (Ok(n), Ok(val)) => {
                        if crate::proxy::headers::is_framing_or_hop(&n) {
                            v.error(
                                place,
                                "is a hop-by-hop or framing header the gateway manages itself",
                            );
                        } else {
                            list.push((n, val));
                        }
                    }
                    (Err(_), _) => v.error(place, "is not a valid header name"),
                    (_, Err(_)) => {
                        v.error(place, format!("\"{value}\" is not a valid header value"))
                    }
                }
            }
            list
        };
        out.set = pairs(self, "set", raw.set);
        out.add = pairs(self, "add", raw.add);
        for (j, name) in raw.remove.into_iter().enumerate() {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => out.remove.push(n),
                Err(_) => self.error(
                    format!("{base}.remove[{j}]"),
                    format!("\"{name}\" is not a valid header name"),
                ),
            }
        }
        out
    }
}

/// Remove the entry at `path` from `value`; false when there is nothing to remove.
fn remove_path(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = value;
    for seg in parents {
        let next = match (seg, cur) {
            (Segment::Map { key }, Value::Mapping(m)) => m.get_mut(key.as_str()),
            (Segment::Seq { index }, Value::Sequence(s)) => s.get_mut(*index),
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => return false,
        }
    }
    match (last, cur) {
        (Segment::Map { key }, Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        // Removing a list element would shift the places of the ones after it: stop here.
        _ => false,
    }
}

/// Check a certificate and key pair and return the DNS names the certificate is for.
fn tls_names(cert: &str, key: &str) -> Result<Vec<String>, String> {
    let (certs, _key) = match pingora_rustls::load_certs_and_key_files(cert, key) {
        Ok(Some(pair)) => pair,
        Ok(None) => return Err(format!("no certificate in {cert} or no key in {key}")),
        Err(e) => return Err(format!("cannot read {cert} or {key}: {e}")),
    };
    let Some(leaf) = certs.first() else {
        return Err(format!("{cert} holds no certificate"));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("{cert} is not a valid X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        return Err(format!(
            "{cert} names no DNS host (subject alternative names)"
        ));
    }
    Ok(names)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !text.contains(':') {
        return Err(format!("\"{text}\" needs a port, e.g. {text}:80"));
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("\"{text}\" resolves to no address")),
        Err(e) => Err(format!("cannot resolve \"{text}\": {e}")),
    }
}

fn parse_hash_key(text: &str) -> Result<HashKey, String> {
    let bad = || {
        format!(
            "\"{text}\" is not a hash key: use client_ip, path, header:NAME, cookie:NAME or query:NAME"
        )
    };
    match text {
        "client_ip" => return Ok(HashKey::ClientIp),
        "path" => return Ok(HashKey::Path),
        _ => {}
    }
    let (kind, name) = text.split_once(':').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    match kind {
        "header" => HeaderName::from_bytes(name.as_bytes())
            .map(HashKey::Header)
            .map_err(|_| format!("\"{name}\" is not a valid header name")),
        "cookie" => Ok(HashKey::Cookie(name.to_string())),
        "query" => Ok(HashKey::Query(name.to_string())),
        _ => Err(bad()),
    }
}

fn parse_host(text: &str) -> Result<HostPattern, String> {
    let lower = text.to_ascii_lowercase();
    let (wild, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !rest.starts_with('.')
        && !rest.ends_with('.');
    if !ok {
        return Err(format!(
            "\"{text}\" is not a host name; use e.g. api.example.com or *.example.org (no port)"
        ));
    }
    Ok(if wild {
        HostPattern::Suffix(format!(".{rest}"))
    } else {
        HostPattern::Exact(rest.to_string())
    })
}

fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("\"{p}\" must start with '/'"));
    }
    if p.bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
    {
        return Err(format!(
            "\"{p}\" must not contain spaces, control characters, '?' or '#'"
        ));
    }
    Ok(())
}

/// A route's match path: a valid path, written in the canonical form requests are matched in
/// (otherwise it could never match).
fn check_match_path(p: &str, opts: &crate::canonical::PathOptions) -> Result<(), String> {
    check_path(p)?;
    match crate::canonical::path(p, opts) {
        Ok(c) if c == p => Ok(()),
        Ok(c) => Err(format!(
            "\"{p}\" is not in canonical form, so no request would match it: requests are matched after their path is normalised (see path_normalization); write \"{c}\""
        )),
        Err(e) => Err(format!("\"{p}\" can never match a request: {}", e.describe())),
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

fn route_signature(r: &Route) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{}",
        r.hosts, r.path, r.methods, r.headers, r.priority
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../conf/tollgate.yaml");

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn example_loads() {
        let c = match parse(EXAMPLE) {
            Ok(c) => c,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(c.server.threads, 2);
        assert!(!c.server.work_stealing);
        assert_eq!(c.server.grace_period_seconds, Some(1));
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(c.upstreams[0].peers[1].weight, 2);
        assert_eq!(c.upstreams[0].retries, 2);
        assert_eq!(c.routes[0].rewrite, PathRewrite::Strip("/api".into()));
        assert_eq!(
            c.routes[0].hosts,
            vec![
                HostPattern::Exact("api.example.com".into()),
                HostPattern::Suffix(".example.org".into())
            ]
        );
        assert_eq!(c.routes[0].max_body_size, Some(1 << 20));
        assert_eq!(
            c.client_keepalive_timeout,
            std::time::Duration::from_secs(60)
        );
    }

    #[test]
    fn defaults_differ_from_pingora() {
        let c = parse("listeners: [{address: 127.0.0.1:1}]\nupstreams: {a: {peers: [127.0.0.1:2]}}\nroutes: [{name: r, match: {}, upstream: a}]\n")
            .expect("valid");
        assert!(!c.server.work_stealing);
        assert!(c.server.threads >= 1);
        assert_eq!(c.server.grace_period_seconds, Some(5));
        assert_eq!(c.server.graceful_shutdown_timeout_seconds, Some(10));
    }

    #[test]
    fn client_keepalive_timeout() {
        let base = "listeners: [{address: 127.0.0.1:1}]\nupstreams: {a: {peers: [127.0.0.1:2]}}\nroutes: [{name: r, match: {}, upstream: a}]\n";
        let c = parse(base).expect("valid");
        assert_eq!(
            c.client_keepalive_timeout,
            std::time::Duration::from_secs(60)
        );
        let c = parse(&format!("{base}client_keepalive_timeout: 2m\n")).expect("valid");
        assert_eq!(
            c.client_keepalive_timeout,
            std::time::Duration::from_secs(120)
        );
        for (value, message) in [
            ("0s", "must be at least 1s"),
            ("1500ms", "must be a whole number of seconds"),
            ("2h", "must be at most 1h"),
        ] {
            let e = errors(&format!("{base}client_keepalive_timeout: {value}\n"));
            assert_eq!(
                e,
                vec![format!("client_keepalive_timeout: {message}")],
                "{value}"
            );
        }
        let e = errors(&format!("{base}client_keepalive_timeout: soon\n"));
        assert!(
            e.len() == 1 && e[0].starts_with("client_keepalive_timeout:"),
            "{e:?}"
        );
    }

    #[test]
    fn reports_every_problem() {
        let e = errors(
            "listeners: [{address: nope}]\nthreds: 2\nupstreams: {a: {peers: []}}\nroutes:\n  - {name: r, match: {path_prefix: x}, upstream: b}\n  - {name: s, match: {pathprefix: /x}, upstream: a}\n",
        );
        assert!(
            e.iter().any(|m| m.starts_with("listeners[0].address:")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("threds: unknown key (did you mean \"threads\"?)")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("upstreams.a.peers: must list")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("routes[0].match.path_prefix:")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("routes[0].upstream: unknown upstream \"b\"")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("routes[1].match.pathprefix: unknown field")),
            "{e:?}"
        );
    }

    #[test]
    fn segment_prefixes() {
        assert!(segment_prefix("/api/users", "/api"));
        assert!(segment_prefix("/api", "/api"));
        assert!(!segment_prefix("/apix", "/api"));
        assert!(segment_prefix("/x", "/"));
    }
}
