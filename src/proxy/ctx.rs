//! Per-request state, grouped by what it is about: the request as read, the caller once known,
//! the upstream attempts, and the guards that count the request and its connection while they
//! live.

use super::target::Target;
use crate::gateway::{CompiledRoute, Gateway};
use crate::policy::limits::RateState;
use crate::policy::Identity;
use crate::router::RouteId;
use crate::server::RequestGuard;
use crate::upstream::InFlight;
use http::HeaderValue;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Per-request state (Pingora's `CTX`).
pub struct Ctx {
    /// The snapshot this request uses from start to end.
    pub(super) gateway: Arc<Gateway>,
    /// The matched route, once looked up.
    pub(super) route: Option<RouteId>,
    pub(super) request: Request,
    pub(super) caller: Caller,
    pub(super) upstream: Attempts,
    pub(super) cache: CacheUse,
    pub(super) guards: Guards,
    /// The copy of a mirrored request.
    pub(super) mirror: Option<super::mirror::Copy>,
    /// Headers the route's authorization service gave for the upstream.
    pub(super) authorized: Vec<(http::HeaderName, HeaderValue)>,
    /// The encoder compressing the answer, and its coding.
    pub(super) compression: Option<(crate::compress::Encoder, crate::config::Coding)>,
    /// The upstream's answer, being read to compare with the route's OpenAPI operation.
    pub(super) answer: Option<Box<super::validation::AnswerCheck>>,
}

/// How the request used the route's cache, for `Cache-Status`.
#[derive(Default)]
pub(super) struct CacheUse {
    /// Why the cache was not used (`method`, `request`).
    pub(super) skipped: Option<&'static str>,
    /// The upstream's response was found storable.
    pub(super) stored: bool,
    /// The cache was looked up.
    pub(super) looked_up: bool,
}

/// The request as the gateway read it.
pub(super) struct Request {
    pub(super) id: HeaderValue,
    /// The canonical host and path every decision is made on.
    pub(super) target: Target,
    /// Who sent it.
    pub(super) client: Client,
    /// It carries `Expect`, which the gateway answers and does not forward.
    pub(super) expect: bool,
    /// A CORS preflight for a route with CORS rules: the gateway answers it.
    pub(super) preflight: bool,
    /// Its trace and the gateway's span, when tracing is on.
    pub(super) trace: Option<crate::observe::trace::TraceContext>,
    /// When it started.
    pub(super) start: Instant,
    /// The same, as wall-clock time (for the access log).
    pub(super) started_at: std::time::SystemTime,
    /// The status of an answer the gateway wrote itself (errors).
    pub(super) error_status: Option<u16>,
    /// Why the route's API description refused it (the answer's detail and `errors`).
    pub(super) invalid: Option<Box<super::validation::Refusal>>,
}

/// Who sent a request.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Client {
    /// The client's address: the connection's peer, or whom trusted proxies name.
    pub(super) ip: Option<IpAddr>,
    /// The connection's peer (after any PROXY header).
    pub(super) peer: Option<IpAddr>,
    /// The peer is one of the listener's trusted proxies.
    pub(super) peer_trusted: bool,
}

/// The caller, as the route's policies and limits saw it.
#[derive(Default)]
pub(super) struct Caller {
    /// Who the caller is, once authenticated.
    pub(super) identity: Option<Identity>,
    /// The tightest rate limit's state, for the `RateLimit-*` headers.
    pub(super) rate: Option<RateState>,
    /// Holds this request's concurrency slot until the request ends.
    pub(super) concurrency: Option<pingora_limits::inflight::Guard>,
    /// Over its plan's quota: the quota's state, for the refusal's `RateLimit` headers.
    pub(super) quota_refused: Option<Box<crate::policy::limits::QuotaState>>,
}

/// The tries at the upstream.
#[derive(Default)]
pub(super) struct Attempts {
    /// Which of the route's pools this request goes to (its split's target; 0 without one).
    pub(super) pool: usize,
    /// Peers already tried (for retries).
    pub(super) tried: Vec<SocketAddr>,
    /// Counts this request against the chosen peer while it runs.
    pub(super) in_flight: Option<InFlight>,
    /// Connection retries used so far.
    pub(super) retries: usize,
    /// When the current attempt chose its peer.
    pub(super) start: Option<Instant>,
    /// The upstream's response status.
    pub(super) status: Option<u16>,
    /// How long the connection to the peer took (zero when one was reused).
    pub(super) connect: Option<std::time::Duration>,
    /// How long the peer took to its response header, from choosing it.
    pub(super) response: Option<std::time::Duration>,
    /// Request body bytes sent towards the current attempt.
    pub(super) body_bytes: u64,
}

/// What the request keeps counted while it lives.
pub(super) struct Guards {
    /// The client connection, counted in `tollgate_connections`.
    pub(super) connection: Option<Arc<ConnectionGuard>>,
    /// The request, counted as in flight for the drain.
    pub(super) _in_flight: RequestGuard,
}

/// Counts an open client connection; the count drops when the last holder does.
pub(super) struct ConnectionGuard(pub(super) prometheus::IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Ctx {
    /// A request's state at its start, on `gateway`.
    pub(super) fn new(gateway: Arc<Gateway>, in_flight: RequestGuard) -> Ctx {
        Ctx {
            gateway,
            route: None,
            request: Request {
                id: HeaderValue::from_static("-"),
                target: Target::default(),
                client: Client::default(),
                expect: false,
                preflight: false,
                trace: None,
                start: Instant::now(),
                started_at: std::time::SystemTime::now(),
                error_status: None,
                invalid: None,
            },
            caller: Caller::default(),
            upstream: Attempts::default(),
            cache: CacheUse::default(),
            guards: Guards {
                connection: None,
                _in_flight: in_flight,
            },
            mirror: None,
            compression: None,
            answer: None,
            authorized: Vec::new(),
        }
    }

    /// The matched route, if any.
    pub fn route(&self) -> Option<&CompiledRoute> {
        self.route.map(|r| self.gateway.route(r))
    }
}
