//! The file format: serde types that mirror the YAML exactly. Nothing here is used at run time;
//! the validators ([`super::validate`]) turn these into the checked model. Settings written as
//! `kind:NAME` strings (hash keys, limit keys, cache key parts) are read into typed enums here,
//! in one place, with the message a person sees when one is wrong; a wrong one is kept as its
//! message ([`Parsed`]) so that its validator reports it at its place and goes on checking the
//! rest of the item.

use super::units::{ConfDuration, ConfSize};
use http::HeaderName;
use serde::{Deserialize, Deserializer};
use serde_yaml::Value;
use std::collections::BTreeMap;

mod identity;
pub use identity::*;

/// One entry of `listeners`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    pub tls: Option<RawTls>,
    pub http2: Option<bool>,
    pub redirect_https: Option<u16>,
    pub trusted_proxies: Option<Vec<String>>,
    pub forwarded_header: Option<RawForwardedHeader>,
    pub proxy_protocol: Option<bool>,
    pub max_connections_per_ip: Option<u32>,
}

/// The names of `listeners[].forwarded_header`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawForwardedHeader {
    XForwardedFor,
    Forwarded,
}

/// `path_normalization: { merge_slashes, escaped_slashes }`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPathNormalization {
    pub merge_slashes: Option<bool>,
    pub escaped_slashes: Option<RawEscapedSlashes>,
    pub semicolons: Option<RawSemicolons>,
}

/// The actions of `path_normalization.semicolons`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawSemicolons {
    Reject,
    Keep,
}

/// The actions of `path_normalization.escaped_slashes`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawEscapedSlashes {
    Reject,
    Keep,
    Decode,
}

/// `tls: { cert, key }`, or `tls: { certificates: [{ cert, key }, ...] }` for several.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub certificates: Option<Vec<RawCertPair>>,
    pub client_auth: Option<RawClientAuth>,
}

/// `listeners[].tls.client_auth`: ask clients for certificates issued by a CA.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    pub ca_file: String,
    pub required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    pub cert: String,
    pub key: String,
}

/// A peer written either as `"127.0.0.1:8001"` (or `host:port`) or
/// `{ address: ..., weight: 2 }`, or an SRV name: `{ srv: _http._tcp.users.internal }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPeer {
    Address(String),
    Detailed(RawPeerDetailed),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeerDetailed {
    pub address: Option<String>,
    pub srv: Option<String>,
    #[serde(default)]
    pub weight: Option<u64>,
}

/// `upstreams.NAME.retry_budget`: how many retries a pool allows beside its requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryBudget {
    pub ratio: Option<f64>,
    pub window: Option<ConfDuration>,
    pub min_retries: Option<u64>,
}

/// `upstreams.NAME.outlier_detection`: ejecting peers that keep failing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlierDetection {
    pub consecutive_failures: Option<u64>,
    pub base_ejection: Option<ConfDuration>,
    pub max_ejection: Option<ConfDuration>,
    pub max_ejection_percent: Option<u64>,
}

/// `upstreams.NAME.resolve`: how often peer names are looked up again.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolve {
    pub min_interval: Option<ConfDuration>,
    pub max_interval: Option<ConfDuration>,
}

/// `dns`: the name servers peer names are resolved with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub servers: Vec<String>,
}

/// The balancing policy names of `upstreams.NAME.balance`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawBalance {
    RoundRobin,
    Random,
    LeastConn,
    ConsistentHash,
}

/// The protocol names of `upstreams.NAME.protocol`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawProtocol {
    Http1,
    H2,
    H2c,
    Auto,
}

/// The probe kinds of `upstreams.NAME.health_check.kind`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawHealthKind {
    Tcp,
    Http,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub kind: RawHealthKind,
    pub path: Option<String>,
    pub host: Option<String>,
    pub interval: Option<ConfDuration>,
    pub timeout: Option<ConfDuration>,
    pub unhealthy_after: Option<u64>,
    pub healthy_after: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub peers: Vec<RawPeer>,
    pub resolve: Option<RawResolve>,
    pub balance: Option<RawBalance>,
    pub hash_key: Option<Parsed<RawHashKey>>,
    pub health_check: Option<RawHealthCheck>,
    pub connect_timeout: Option<ConfDuration>,
    pub read_timeout: Option<ConfDuration>,
    pub write_timeout: Option<ConfDuration>,
    pub idle_timeout: Option<ConfDuration>,
    pub retries: Option<u64>,
    pub retry_on: Option<Vec<Value>>,
    pub retry_budget: Option<RawRetryBudget>,
    pub outlier_detection: Option<RawOutlierDetection>,
    pub passive_cooldown: Option<ConfDuration>,
    pub tls: Option<RawUpstreamTls>,
    pub protocol: Option<RawProtocol>,
}

/// `upstreams.NAME.tls`: reach the peers over TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub sni: String,
    pub verify: Option<bool>,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub hosts: Option<Vec<String>>,
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    pub path_template: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub query: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderTransform {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    /// Required unless the route takes its match from an OpenAPI operation.
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub upstream: Option<String>,
    pub upstreams: Option<Vec<RawWeightedPool>>,
    pub sticky: Option<String>,
    pub canary: Option<Vec<RawCanary>>,
    pub priority: Option<i32>,
    pub strip_prefix: Option<String>,
    pub rewrite: Option<String>,
    pub request_headers: Option<RawHeaderTransform>,
    pub response_headers: Option<RawHeaderTransform>,
    pub max_body_size: Option<ConfSize>,
    pub retry_non_idempotent: Option<bool>,
    pub mirror: Option<RawMirror>,
    pub auth: Option<Vec<RawAuthMethod>>,
    pub allow_groups: Option<Vec<String>>,
    pub allow_consumers: Option<Vec<String>>,
    pub ip_allow: Option<Vec<String>>,
    pub ip_deny: Option<Vec<String>>,
    pub rate_limit: Option<Vec<RawRateLimit>>,
    pub concurrency_limit: Option<RawConcurrencyLimit>,
    pub cache: Option<RawRouteCache>,
    pub cors: Option<RawCors>,
    pub compression: Option<RawCompression>,
    pub forward_auth: Option<RawForwardAuth>,
    pub openapi: Option<RawOpenapi>,
}

/// `routes[].openapi`: the route is an operation of an OpenAPI document (or, without
/// `operation`, one route per operation of it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpenapi {
    pub spec: String,
    pub operation: Option<String>,
    pub prefix: Option<String>,
    pub validate: Option<bool>,
    pub max_body_size: Option<ConfSize>,
    pub responses: Option<RawResponseCheck>,
}

/// `routes[].openapi.responses`: whether upstream answers are compared with the document.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawResponseCheck {
    Off,
    Report,
}

/// `routes[].forward_auth`: ask an authorization service whether a request may pass.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardAuth {
    pub pool: String,
    pub path: Option<String>,
    pub request_headers: Option<Vec<String>>,
    pub response_headers: Option<Vec<String>>,
    pub timeout: Option<ConfDuration>,
    pub failure: Option<String>,
    pub cache: Option<ConfDuration>,
}

/// `routes[].compression`: compress answers for clients that accept it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    pub algorithms: Option<Vec<String>>,
    pub min_size: Option<ConfSize>,
    pub content_types: Option<Vec<String>>,
}

/// `routes[].cors`: who may read the route's answers from a browser.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    pub max_age: Option<ConfDuration>,
}

/// `routes[].mirror`: copy a share of the route's requests to a shadow pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    pub pool: String,
    pub percent: Option<f64>,
    pub max_body_size: Option<ConfSize>,
}

/// One pool of a route's traffic split: `{pool: v2, weight: 5}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedPool {
    pub pool: String,
    pub weight: Option<u64>,
}

/// A canary rule: requests with this header or cookie value go to `pool`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCanary {
    pub header: Option<String>,
    pub cookie: Option<String>,
    pub value: String,
    pub pool: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub ttl: Option<ConfDuration>,
    pub stale_while_revalidate: Option<ConfDuration>,
    pub stale_if_error: Option<ConfDuration>,
    pub key: Option<Vec<Parsed<RawCacheKeyPart>>>,
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_size: Option<ConfSize>,
    pub max_object_size: Option<ConfSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<String>,
    pub token_env: Option<String>,
}

/// Where a rate limit is counted.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawScope {
    Local,
    Global,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests: u64,
    pub per: ConfDuration,
    pub key: Parsed<RawLimitKey>,
    pub scope: Option<RawScope>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConcurrencyLimit {
    pub max: u64,
    pub key: Parsed<RawLimitKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Option<String>,
    pub cluster: Option<Vec<String>>,
    pub timeout: Option<ConfDuration>,
    pub backoff: Option<ConfDuration>,
    pub max_backoff: Option<ConfDuration>,
}

/// One entry of `plans`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    pub quotas: Vec<RawQuota>,
}

/// `plans.NAME.quotas[]`: at most `requests` per calendar `per`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    pub requests: u64,
    pub per: RawPeriod,
}

/// The calendar periods of quotas.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawPeriod {
    Day,
    Week,
    Month,
}

/// The access log's line format.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawLogFormat {
    Json,
    Ecs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub path: String,
    pub format: Option<RawLogFormat>,
    pub query: Option<bool>,
}

/// A setting read from a string into `T`: the value, or the message saying why the string is
/// not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<T>(pub Result<T, String>);

impl<'de, T: TryFrom<String, Error = String>> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Parsed(T::try_from(s)))
    }
}

/// A request header named in a `header:NAME` setting.
fn header_name(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(name.as_bytes()).ok()
}

/// `upstreams.NAME.hash_key`: `client_ip`, `path`, `header:NAME`, `cookie:NAME` or `query:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawHashKey {
    ClientIp,
    Path,
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

impl TryFrom<String> for RawHashKey {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bad = || {
            format!(
                "\"{text}\" is not a hash key: use client_ip, path, header:NAME, cookie:NAME or query:NAME"
            )
        };
        match text.as_str() {
            "client_ip" => return Ok(RawHashKey::ClientIp),
            "path" => return Ok(RawHashKey::Path),
            _ => {}
        }
        let (kind, name) = text.split_once(':').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        match kind {
            "header" => header_name(name)
                .map(RawHashKey::Header)
                .ok_or_else(|| format!("\"{name}\" is not a valid header name")),
            "cookie" => Ok(RawHashKey::Cookie(name.to_string())),
            "query" => Ok(RawHashKey::Query(name.to_string())),
            _ => Err(bad()),
        }
    }
}

/// What a rate or concurrency limit counts by: `consumer`, `client_ip`, `route` or
/// `header:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawLimitKey {
    Consumer,
    ClientIp,
    Route,
    Header(HeaderName),
}

impl TryFrom<String> for RawLimitKey {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "consumer" => Ok(RawLimitKey::Consumer),
            "client_ip" => Ok(RawLimitKey::ClientIp),
            "route" => Ok(RawLimitKey::Route),
            _ => text
                .strip_prefix("header:")
                .and_then(header_name)
                .map(RawLimitKey::Header)
                .ok_or_else(|| {
                    format!("\"{text}\" is not a limit key: use consumer, client_ip, route or header:NAME")
                }),
        }
    }
}

/// A part of a route's cache key: `host`, `path`, `query`, `header:NAME` or `consumer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawCacheKeyPart {
    Host,
    Path,
    Query,
    Consumer,
    Header(HeaderName),
}

impl TryFrom<String> for RawCacheKeyPart {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "host" => Ok(RawCacheKeyPart::Host),
            "path" => Ok(RawCacheKeyPart::Path),
            "query" => Ok(RawCacheKeyPart::Query),
            "consumer" => Ok(RawCacheKeyPart::Consumer),
            _ => text
                .strip_prefix("header:")
                .and_then(header_name)
                .map(RawCacheKeyPart::Header)
                .ok_or_else(|| {
                    format!("\"{text}\" is not a cache key part: use host, path, query, header:NAME or consumer")
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_keys_read_their_strings() {
        let h = |t: &str| RawHashKey::try_from(t.to_string());
        assert_eq!(h("client_ip"), Ok(RawHashKey::ClientIp));
        assert_eq!(h("cookie:sid"), Ok(RawHashKey::Cookie("sid".into())));
        assert_eq!(
            h("header:X-User"),
            Ok(RawHashKey::Header(HeaderName::from_static("x-user")))
        );
        assert!(h("cookie:").unwrap_err().contains("is not a hash key"));
        assert!(h("header:bad name")
            .unwrap_err()
            .contains("not a valid header name"));
        assert!(h("ip").unwrap_err().contains("is not a hash key"));
        let l = |t: &str| RawLimitKey::try_from(t.to_string());
        assert_eq!(l("route"), Ok(RawLimitKey::Route));
        assert!(l("header:").unwrap_err().contains("is not a limit key"));
        let c = |t: &str| RawCacheKeyPart::try_from(t.to_string());
        assert_eq!(c("query"), Ok(RawCacheKeyPart::Query));
        assert!(c("cookie:x")
            .unwrap_err()
            .contains("is not a cache key part"));
    }
}

/// `rate_limit_headers` and `cache_status_headers`: which convention responses follow.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawHeaderStyle {
    Standard,
    Legacy,
    Both,
}
