//! A route's CORS rules (the Fetch standard's cross-origin protocol): which origins may read its
//! answers from a browser, with which methods, request headers and credentials, and which
//! response headers their scripts may see.

use http::{HeaderName, Method};
use std::time::Duration;

/// An origin a route admits: `https://app.example.com`, `https://*.example.org` (any
/// subdomain, at any depth, not the bare domain), or `*` (any origin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// Any origin (not with credentials).
    Any,
    /// Exactly this serialized origin (`scheme://host[:port]`, lower case).
    Exact(String),
    /// `scheme://` + any name ending in `suffix` (which starts with '.') + `port` (`:8443` or
    /// empty).
    Subdomain {
        scheme: String,
        suffix: String,
        port: String,
    },
}

impl OriginPattern {
    /// Whether the request's `Origin` (as sent) is admitted; compared case-insensitively.
    pub fn admits(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginPattern::Subdomain {
                scheme,
                suffix,
                port,
            } => {
                let lower = origin.to_ascii_lowercase();
                let Some(rest) = lower
                    .strip_prefix(scheme.as_str())
                    .and_then(|r| r.strip_prefix("://"))
                else {
                    return false;
                };
                let Some(host) = rest.strip_suffix(port.as_str()) else {
                    return false;
                };
                host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && !host.contains([':', '/'])
                    && host[..host.len() - suffix.len()]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }
        }
    }
}

/// `routes[].cors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<OriginPattern>,
    /// Methods a preflight may ask for.
    pub allow_methods: Vec<Method>,
    /// Request headers a preflight may ask for; `None`: whatever it asks for.
    pub allow_headers: Option<Vec<HeaderName>>,
    /// Response headers scripts may read beyond the safelisted ones.
    pub expose_headers: Vec<HeaderName>,
    /// Whether requests with cookies or HTTP authentication may be read.
    pub allow_credentials: bool,
    /// How long a browser may keep a preflight's answer.
    pub max_age: Option<Duration>,
}
