//! A route's forward authentication (as Traefik's ForwardAuth, Envoy's ext_authz or nginx's
//! `auth_request`): a pool of the file answers whether each request may pass.

use http::HeaderName;
use std::time::Duration;

/// `routes[].forward_auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    /// Index into the pools: the authorization service.
    pub pool: usize,
    /// Path (and query) asked on it.
    pub path: String,
    /// Request headers passed to it.
    pub request_headers: Vec<HeaderName>,
    /// Headers of its `2xx` answer added to the request sent upstream (and never taken from
    /// the client).
    pub response_headers: Vec<HeaderName>,
    /// Longest wait for its whole answer.
    pub timeout: Duration,
    /// When it cannot be asked (down, too slow): let requests pass (`failure: allow`) or not.
    pub failure_allow: bool,
    /// How long an admitting answer is reused for the same credentials (`None`: asked every
    /// time).
    pub cache: Option<Duration>,
}
