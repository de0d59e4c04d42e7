//! The `ProxyHttp` implementation: each Pingora phase calls into the module that owns the work.
//! Per-request state lives in [`Ctx`].

pub mod drain;
pub mod headers;
mod target;

use crate::config::HashKey;
use crate::errors;
use crate::gateway::Gateway;
use crate::observe::access_log::{AccessLog, Entry};
use crate::observe::metrics::{method_label, Metrics};
use crate::policy::limits::{KeyInput, Outcome, RateState};
use crate::policy::{Decision, X_CONSUMER, X_CONSUMER_GROUPS};
use crate::router::{self, RequestView, RouteId};
use crate::upstream::InFlight;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// `X-Cache-Status`, on every response of a route with caching.
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

/// The gateway's proxy: holds the current snapshot, swapped atomically on reload, and the
/// long-lived reporting handles.
pub struct Tollgate {
    state: Arc<ArcSwap<Gateway>>,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
    /// Set when a shutdown or upgrade starts: answers then close their connection.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// Requests in flight, for the drain.
    in_flight: Arc<drain::InFlight>,
    /// The listeners' settings: which proxies are trusted to name the client.
    door: Arc<crate::front::FrontDoor>,
}

impl Tollgate {
    pub fn new(
        state: Arc<ArcSwap<Gateway>>,
        metrics: Arc<Metrics>,
        access_log: Option<Arc<AccessLog>>,
        draining: Arc<std::sync::atomic::AtomicBool>,
        in_flight: Arc<drain::InFlight>,
        door: Arc<crate::front::FrontDoor>,
    ) -> Self {
        Tollgate {
            state,
            metrics,
            access_log,
            draining,
            in_flight,
            door,
        }
    }
}

/// Counts an open client connection; the count drops when the last holder does.
struct ConnectionGuard(prometheus::IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Per-request state.
pub struct Ctx {
    /// The snapshot this request uses from start to end.
    gateway: Arc<Gateway>,
    route: Option<RouteId>,
    request_id: http::HeaderValue,
    /// The canonical host and path every decision is made on.
    target: target::Target,
    /// Who sent the request.
    client: Client,
    /// The request carries `Expect`, which the gateway answers and does not forward.
    expect: bool,
    /// Peers already tried by this request (for retries).
    tried: Vec<SocketAddr>,
    /// Counts this request against the chosen peer while it runs.
    in_flight: Option<InFlight>,
    /// Connection retries used so far.
    retries: usize,
    /// Who the caller is, once authenticated.
    identity: Option<crate::policy::Identity>,
    /// The tightest rate limit's state, for the `RateLimit-*` headers.
    rate: Option<RateState>,
    /// Holds this request's concurrency slot until the request ends.
    concurrency: Option<pingora_limits::inflight::Guard>,
    /// When the request started.
    start: Instant,
    /// When the current upstream attempt chose its peer.
    upstream_start: Option<Instant>,
    /// The upstream's response status.
    upstream_status: Option<u16>,
    /// The status of an answer the gateway wrote itself (errors).
    error_status: Option<u16>,
    /// Keeps the client connection counted while it lives.
    connection: Option<Arc<ConnectionGuard>>,
    /// Counts this request as in flight while it lives.
    _in_flight: drain::RequestGuard,
    /// Request body bytes sent towards the current upstream attempt.
    body_bytes: u64,
}

/// Who sent a request.
#[derive(Debug, Default, Clone, Copy)]
struct Client {
    /// The client's address: the connection's peer, or whom trusted proxies name.
    ip: Option<IpAddr>,
    /// The connection's peer (after any PROXY header).
    peer: Option<IpAddr>,
    /// The peer is one of the listener's trusted proxies.
    peer_trusted: bool,
}

fn status_error(code: u16, why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(code), why)
}

impl Tollgate {
    /// Who the client is: the connection's peer, unless that is a trusted proxy naming
    /// another address.
    fn identify_client(&self, session: &Session, ctx: &mut Ctx) {
        let Some(peer) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        else {
            return;
        };
        let local = || session.server_addr().and_then(|a| a.as_inet()).copied();
        let (client, trusted) =
            self.door
                .client_address(local, peer, &session.req_header().headers);
        ctx.client = Client {
            ip: Some(client),
            peer: Some(peer.to_canonical()),
            peer_trusted: trusted,
        };
    }

    /// Read the canonical host and path (refusing requests that have none), then find the
    /// route on them.
    fn route_request(&self, session: &Session, ctx: &mut Ctx) -> Result<()> {
        let req = session.req_header();
        // (Two `Host` headers never get here: refused at the front door on HTTP/1, and by
        // Pingora's own check on HTTP/2.)
        if req.version == http::Version::HTTP_2 {
            // HTTP/1 requests are checked at the front door; these are HTTP/2's equivalents.
            if req.method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
                return Err(status_error(400, "a method with lower-case letters"));
            }
            if req.headers.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
                // Equal values pass the HTTP/2 library; an HTTP/1 upstream would get both.
                return Err(status_error(400, "more than one Content-Length"));
            }
        }
        ctx.target = target::Target::of(req, &ctx.gateway.path_normalization)
            .map_err(|why| status_error(400, why))?;
        let view = RequestView {
            host: ctx.target.host(req).unwrap_or(""),
            path: ctx.target.path(req),
            method: &req.method,
            headers: &req.headers,
        };
        ctx.route = ctx.gateway.router.lookup(&view);
        Ok(())
    }

    /// Read the start of a chunked body before any upstream is contacted, so that malformed
    /// chunk framing or an oversized body is refused while the upstream has seen nothing.
    /// Exactly one read: its bytes stay in Pingora's retry buffer (64 KiB), which the proxy
    /// replays to the upstream first, so nothing read here can be lost.
    async fn read_ahead(&self, session: &mut Session, max: Option<u64>) -> Result<()> {
        let req = session.req_header();
        let chunked = req.headers.contains_key(header::TRANSFER_ENCODING);
        if !chunked || session.as_downstream().as_http1().is_none() {
            return Ok(());
        }
        session.as_downstream_mut().enable_retry_buffering();
        match session.as_downstream_mut().read_request_body().await {
            Ok(Some(chunk)) => {
                // Not added to `ctx.body_bytes`: the bytes are counted when they are replayed
                // to the upstream through `request_body_filter`.
                if max.is_some_and(|m| chunk.len() as u64 > m) {
                    return Err(status_error(413, "request body over max_body_size"));
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => match e.etype() {
                // The client's doing (a refused framing, a stall, a close): mapped by
                // `errors::status_for` as the client's.
                ErrorType::ReadError | ErrorType::ConnectionClosed | ErrorType::ReadTimedout => {
                    Err(e.into_down())
                }
                _ => Err(status_error(400, "malformed request body")),
            },
        }
    }

    /// Answer `Expect: 100-continue` here, once the request has passed every policy (so a
    /// refused client is not invited to send its body); the upstream then gets the request
    /// without `Expect`, as nginx does. An upstream that is asked to expect could answer before
    /// the body and then read the body that follows anyway as a request of its own.
    /// Returns whether the request had an `Expect` header (of any value), which is not sent
    /// on.
    async fn continue_if_expected(session: &mut Session) -> Result<bool> {
        let req = session.req_header();
        let Some(expect) = req.headers.get(header::EXPECT) else {
            return Ok(false);
        };
        let continues = req.version == http::Version::HTTP_11
            && expect.as_bytes().eq_ignore_ascii_case(b"100-continue");
        if !continues {
            return Ok(true);
        }
        let downstream = session.as_downstream_mut();
        // Pingora closes a connection whose response starts before the request body is read;
        // a 100 is not that response, so keep-alive stays as it was.
        let keepalive = downstream.get_keepalive();
        downstream.write_continue_response().await?;
        downstream.set_keepalive(keepalive);
        Ok(true)
    }

    /// The bytes a consistent-hash pool hashes on for this request.
    fn hash_key<'a>(
        session: &'a Session,
        target: &'a target::Target,
        client: Option<IpAddr>,
        key: &HashKey,
        ip_buf: &'a mut [u8; 16],
    ) -> &'a [u8] {
        let req = session.req_header();
        match key {
            HashKey::ClientIp => match client {
                Some(IpAddr::V4(v4)) => {
                    ip_buf[..4].copy_from_slice(&v4.octets());
                    &ip_buf[..4]
                }
                Some(IpAddr::V6(v6)) => {
                    *ip_buf = v6.octets();
                    &ip_buf[..]
                }
                None => b"",
            },
            HashKey::Path => target.path(req).as_bytes(),
            HashKey::Header(name) => req.headers.get(name).map(|v| v.as_bytes()).unwrap_or(b""),
            HashKey::Cookie(name) => headers::cookie(&req.headers, name).unwrap_or(b""),
            HashKey::Query(name) => req
                .uri
                .query()
                .and_then(|q| headers::query_param(q, name))
                .unwrap_or(b""),
        }
    }

    /// Metrics and the access log line for a finished request.
    fn report(&self, session: &Session, e: Option<&Error>, ctx: &Ctx) {
        if session.as_downstream().is_subrequest() {
            return;
        }
        let gw = &ctx.gateway;
        let req = session.req_header();
        // The gateway's own refusal counts with its HTTP status even when a gRPC client got it
        // as a gRPC status in an HTTP 200.
        let status = ctx
            .error_status
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let route = ctx.route.map(|r| &gw.routes[r]);
        let route_name = route.map(|r| r.name.as_str()).unwrap_or("none");
        let elapsed = ctx.start.elapsed();
        self.metrics.record_request(
            gw,
            ctx.route,
            method_label(&req.method),
            status,
            elapsed.as_secs_f64(),
        );
        let upstream = route.map(|r| gw.pools[r.upstream].config.name.as_str());
        let cache_status = ctx
            .route
            .and_then(|r| gw.route_cache[r].as_ref())
            .map(|_| crate::cache::status_label(&session.cache.phase()));
        if let Some(label) = cache_status {
            self.metrics
                .cache_requests
                .with_label_values(&[route_name, label])
                .inc();
        }
        if let (Some(e), Some(upstream)) = (e, upstream) {
            if e.esource() == &pingora_error::ErrorSource::Upstream {
                let kind = match e.etype() {
                    ErrorType::ConnectRefused
                    | ErrorType::ConnectTimedout
                    | ErrorType::ConnectError
                    | ErrorType::ConnectNoRoute => None,
                    ErrorType::ReadTimedout => Some("read_timeout"),
                    ErrorType::WriteTimedout => Some("write_timeout"),
                    ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
                        Some("reset")
                    }
                    ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::H2Error => {
                        Some("protocol")
                    }
                    _ => Some("other"),
                };
                if let Some(kind) = kind {
                    self.metrics
                        .upstream_errors
                        .with_label_values(&[upstream, kind])
                        .inc();
                }
            }
        }
        let Some(log) = &self.access_log else {
            return;
        };
        log.write(Entry {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            request_id: ctx.request_id.to_str().unwrap_or("-").to_string(),
            client_ip: ctx.client.ip.map(|ip| ip.to_string()),
            method: req.method.as_str().to_string(),
            host: ctx.target.host(req).map(str::to_string),
            path: ctx.target.path(req).to_string(),
            raw_path: ctx
                .target
                .path_changed()
                .then(|| req.uri.path().to_string()),
            raw_host: ctx.target.raw_host(req).map(str::to_string),
            status,
            bytes_sent: session.body_bytes_sent() as u64,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            route: route.map(|r| r.name.clone()),
            upstream: upstream.map(str::to_string),
            peer: ctx.tried.last().map(|p| p.to_string()),
            upstream_status: ctx.upstream_status,
            consumer: ctx.identity.as_ref().and_then(|i| {
                gw.policies
                    .identity_headers(i)
                    .0
                    .to_str()
                    .ok()
                    .map(str::to_string)
            }),
            cache_status,
            error: e.map(|e| e.etype().as_str().to_string()),
        });
    }

    /// Answer `308` to the same host and path over HTTPS.
    async fn redirect_to_https(&self, session: &mut Session, port: u16, ctx: &Ctx) -> Result<()> {
        let req = session.req_header();
        let host = ctx.target.host(req).unwrap_or("localhost");
        let path = ctx.target.path(req);
        let query = req.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let location = if port == 443 {
            format!("https://{host}{path}{query}")
        } else {
            format!("https://{host}:{port}{path}{query}")
        };
        let mut resp = ResponseHeader::build(308, Some(4))?;
        resp.insert_header(header::LOCATION, location)?;
        resp.insert_header(header::CONTENT_LENGTH, 0)?;
        resp.insert_header(headers::wire::X_REQUEST_ID, ctx.request_id.clone())?;
        session.write_response_header(Box::new(resp), true).await
    }

    /// The headers that explain a refusal, in JSON and gRPC answers alike: the route's
    /// authentication challenges on a 401, the rate-limit state on a 429.
    fn refusal_headers(resp: &mut ResponseHeader, status: u16, ctx: &Ctx) -> Result<()> {
        if let (401, Some(route)) = (status, ctx.route) {
            for method in &ctx.gateway.routes[route].auth {
                resp.append_header(header::WWW_AUTHENTICATE, crate::policy::challenge(*method))?;
            }
        }
        if let (429, Some(rate)) = (status, &ctx.rate) {
            resp.insert_header(header::RETRY_AFTER, rate.reset)?;
            for (name, value) in rate.header_values() {
                resp.insert_header(name, value)?;
            }
        }
        Ok(())
    }

    /// A gRPC client is answered in gRPC terms: HTTP 200 carrying only headers, with
    /// `grpc-status` and `grpc-message` ("trailers-only"), so it sees e.g. `UNAUTHENTICATED`
    /// rather than a transport error about an unexpected content type.
    async fn write_grpc_error(&self, session: &mut Session, status: u16, ctx: &Ctx) -> Result<()> {
        let mut resp = ResponseHeader::build(200, Some(6))?;
        resp.insert_header(header::CONTENT_TYPE, "application/grpc")?;
        resp.insert_header(&GRPC_STATUS, errors::grpc_code(status) as u32)?;
        resp.insert_header(&GRPC_MESSAGE, errors::message_for(status))?;
        resp.insert_header(headers::wire::X_REQUEST_ID, ctx.request_id.clone())?;
        Self::refusal_headers(&mut resp, status, ctx)?;
        if session.req_header().version != http::Version::HTTP_2 {
            resp.insert_header(header::CONTENT_LENGTH, 0)?;
        }
        session.write_response_header(Box::new(resp), true).await
    }

    async fn write_error(&self, session: &mut Session, status: u16, ctx: &Ctx) -> Result<()> {
        let request_id = &ctx.request_id;
        if errors::is_grpc(session.req_header().headers.get(header::CONTENT_TYPE)) {
            return self.write_grpc_error(session, status, ctx).await;
        }
        let body = errors::body(status, request_id.to_str().unwrap_or("-"));
        let mut resp = ResponseHeader::build(status, Some(6))?;
        resp.insert_header(header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(header::CONTENT_LENGTH, body.len())?;
        resp.insert_header(headers::wire::X_REQUEST_ID, request_id.clone())?;
        Self::refusal_headers(&mut resp, status, ctx)?;
        if status == 503 || (status == 429 && ctx.rate.is_none()) {
            resp.insert_header(header::RETRY_AFTER, "1")?;
        }
        let body = if session.req_header().method == http::Method::HEAD {
            // The same header, no body (on HTTP/2 a body would be a protocol error).
            Bytes::new()
        } else {
            body
        };
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

#[async_trait]
impl ProxyHttp for Tollgate {
    type CTX = Ctx;

    /// No downstream modules: Pingora adds a (disabled) response compression module by default,
    /// which still runs on every response header and body chunk; Tollgate does not compress.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            gateway: self.state.load_full(),
            route: None,
            request_id: http::HeaderValue::from_static("-"),
            target: target::Target::default(),
            client: Client::default(),
            expect: false,
            tried: Vec::new(),
            in_flight: None,
            retries: 0,
            identity: None,
            rate: None,
            concurrency: None,
            start: Instant::now(),
            upstream_start: None,
            upstream_status: None,
            error_status: None,
            connection: None,
            _in_flight: self.in_flight.enter(),
            body_bytes: 0,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if self.draining.load(std::sync::atomic::Ordering::Acquire) {
            // Answer, then close: the client reconnects (to the new process after an upgrade).
            session.set_keepalive(None);
        }
        if ctx.connection.is_none() && !session.as_downstream().is_subrequest() {
            self.metrics.connections.inc();
            ctx.connection = Some(Arc::new(ConnectionGuard(self.metrics.connections.clone())));
        }
        ctx.request_id =
            headers::request_id(session.req_header().headers.get(&headers::X_REQUEST_ID));
        // A client that stops reading its answer holds nothing longer than this per write.
        session
            .as_downstream_mut()
            .set_write_timeout(Some(self.door.send_timeout()));
        self.identify_client(session, ctx);
        self.route_request(session, ctx)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if !ctx.gateway.redirects.is_empty() {
            let port = session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port());
            if let Some((_, https)) = ctx.gateway.redirects.iter().find(|(p, _)| Some(*p) == port) {
                self.redirect_to_https(session, *https, ctx).await?;
                return Ok(true);
            }
        }
        let Some(route_id) = ctx.route else {
            return Err(status_error(404, "no route"));
        };
        let gateway = ctx.gateway.clone();
        let route = &gateway.routes[route_id];
        let decision = gateway
            .policies
            .check(route, ctx.client.ip, &session.req_header().headers)
            .await;
        let (status, reason) = match decision {
            Decision::Allow(identity) => {
                ctx.identity = identity;
                (0, "")
            }
            Decision::Unauthorized => (401, "unauthenticated"),
            Decision::Forbidden => (403, "forbidden"),
        };
        if status != 0 {
            self.metrics
                .auth_failures
                .with_label_values(&[&route.name, reason])
                .inc();
            return Err(status_error(status, "refused by the route's policies"));
        }
        let limits = &gateway.route_limits[route_id];
        // Background revalidations of the cache are not client requests: they count against
        // no limit.
        if !limits.is_empty() && !session.as_downstream().is_subrequest() {
            let input = KeyInput {
                consumer: ctx
                    .identity
                    .as_ref()
                    .map(|i| gateway.policies.identity_headers(i).0.as_bytes()),
                client_ip: ctx.client.ip,
                headers: &session.req_header().headers,
            };
            match limits.check(&gateway.limits, &input).await {
                Outcome::Allowed(rate, guard) => {
                    ctx.rate = rate;
                    ctx.concurrency = guard;
                }
                refused => {
                    if let Outcome::RateLimited(state) = refused {
                        ctx.rate = Some(state);
                    }
                    self.metrics
                        .ratelimit_rejected
                        .with_label_values(&[&route.name])
                        .inc();
                    return Err(status_error(429, "over a rate or concurrency limit"));
                }
            }
        }
        let max = ctx.gateway.routes[route_id].max_body_size;
        if let Some(max) = max {
            let declared = session
                .req_header()
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                return Err(status_error(413, "declared body over max_body_size"));
            }
        }
        ctx.expect = Self::continue_if_expected(session).await?;
        self.read_ahead(session, max).await?;
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(b), Some(route)) = (body.as_ref(), ctx.route) {
            if let Some(max) = ctx.gateway.routes[route].max_body_size {
                ctx.body_bytes += b.len() as u64;
                if ctx.body_bytes > max {
                    return Err(status_error(413, "request body over max_body_size"));
                }
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route_id = ctx.route.ok_or_else(|| status_error(404, "no route"))?;
        let pool = &ctx.gateway.pools[ctx.gateway.routes[route_id].upstream];
        let mut ip_buf = [0u8; 16];
        let key: &[u8] = match &pool.config.balance {
            crate::config::Balance::ConsistentHash(k) => {
                Self::hash_key(session, &ctx.target, ctx.client.ip, k, &mut ip_buf)
            }
            _ => b"",
        };
        // Release the previous attempt's in-flight slot before choosing again.
        ctx.in_flight = None;
        // Each attempt sends the body from its start (retries replay the buffered body).
        ctx.body_bytes = 0;
        match pool.select(key, &ctx.tried) {
            Some((peer, guard)) => {
                ctx.upstream_start = Some(Instant::now());
                ctx.tried.push(guard.peer().address);
                ctx.in_flight = Some(guard);
                Ok(Box::new(peer))
            }
            None if ctx.tried.is_empty() => Err(status_error(503, "no healthy peer")),
            // Every other peer is down too: report the connection failure that brought us here.
            None => Err(status_error(502, "no other peer to retry on")),
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(route) = ctx.route {
            let pool = &ctx.gateway.pools[ctx.gateway.routes[route].upstream];
            if let Some(addr) = peer._address.as_inet() {
                pool.cool_down(addr);
            }
            let kind = match e.etype() {
                ErrorType::ConnectRefused => "connect_refused",
                ErrorType::ConnectTimedout => "connect_timeout",
                _ => "connect_error",
            };
            self.metrics
                .upstream_errors
                .with_label_values(&[&pool.config.name, kind])
                .inc();
            if ctx.retries < pool.config.retries {
                ctx.retries += 1;
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(route_id) = ctx.route else {
            return Ok(());
        };
        let route = &ctx.gateway.routes[route_id];
        headers::strip_request_hop_by_hop(upstream_request);

        // The upstream receives exactly the path the route was matched on (after its rewrite),
        // in origin form towards HTTP/1.
        let req = session.req_header();
        let path = ctx.target.path(req);
        let rewritten = router::rewrite_path(&route.rewrite, path);
        // A downstream HTTP/2 request's `:authority` goes to an HTTP/2 upstream as it came,
        // unless it was not canonical.
        let h2_upstream = upstream_request.version == http::Version::HTTP_2;
        let authority = ctx
            .target
            .upstream_host
            .as_ref()
            .filter(|_| h2_upstream && req.uri.authority().is_some());
        if rewritten.is_some()
            || ctx.target.path_changed()
            || ctx.target.absolute_form
            || authority.is_some()
        {
            let new_path = rewritten.as_deref().unwrap_or(path);
            let pq = match session.req_header().uri.query() {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path.to_string(),
            };
            // Towards an HTTP/2 upstream keep the scheme and authority (a downstream HTTP/2
            // request's `:authority`, which the upstream `:authority` is built from); towards
            // HTTP/1 send origin-form.
            let mut parts = if h2_upstream {
                session.req_header().uri.clone().into_parts()
            } else {
                http::uri::Parts::default()
            };
            parts.path_and_query = Some(
                http::uri::PathAndQuery::try_from(pq)
                    .map_err(|_| status_error(400, "invalid rewritten path"))?,
            );
            if let Some(a) = authority {
                parts.authority = http::uri::Authority::try_from(a.as_bytes()).ok();
            }
            let uri = http::Uri::from_parts(parts)
                .map_err(|_| status_error(400, "invalid rewritten path"))?;
            upstream_request.set_uri(uri);
        }

        if let Some(host) = &ctx.target.upstream_host {
            upstream_request.insert_header(header::HOST, host.clone())?;
        } else if !ctx.target.has_host() {
            // An HTTP/1.0 request without a host goes upstream as HTTP/1.1, which needs one:
            // the peer's address, as nginx sends by default.
            if let Some(peer) = ctx.tried.last() {
                upstream_request.insert_header(header::HOST, peer.to_string())?;
            }
        }
        if ctx.expect {
            // Answered by the gateway (see `continue_if_expected`).
            upstream_request.remove_header(&header::EXPECT);
        }
        let host = ctx.target.forwarded_host(session.req_header());
        let hop = headers::Hop {
            client: ctx.client.ip,
            peer: ctx.client.peer,
            trusted: ctx.client.peer_trusted,
            host: host.as_ref(),
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
        };
        headers::set_forwarding(upstream_request, &hop);
        upstream_request.insert_header(headers::wire::X_REQUEST_ID, ctx.request_id.clone())?;
        // Identity headers come from the gateway only, never from the client.
        if upstream_request.headers.contains_key(&X_CONSUMER) {
            upstream_request.remove_header(&X_CONSUMER);
        }
        if upstream_request.headers.contains_key(&X_CONSUMER_GROUPS) {
            upstream_request.remove_header(&X_CONSUMER_GROUPS);
        }
        if let Some(identity) = &ctx.identity {
            let (name, groups) = ctx.gateway.policies.identity_headers(identity);
            upstream_request.insert_header(headers::wire::X_CONSUMER, name.clone())?;
            if let Some(g) = groups {
                upstream_request.insert_header(headers::wire::X_CONSUMER_GROUPS, g.clone())?;
            }
        }
        if !route.request_headers.is_empty() {
            headers::apply_request(&route.request_headers, upstream_request);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        headers::strip_response_hop_by_hop(upstream_response);
        if upstream_response.status != http::StatusCode::SWITCHING_PROTOCOLS
            && session.as_downstream().is_upgrade_req()
        {
            // A declined upgrade: what the client sent after its request may be meant for the
            // other protocol, so the connection is not read as HTTP again; say so.
            session.set_keepalive(None);
        }
        if self.draining.load(std::sync::atomic::Ordering::Acquire) {
            // A response that started before the drain still closes its connection.
            session.set_keepalive(None);
        }
        if let Some(route_id) = ctx.route {
            let t = &ctx.gateway.routes[route_id].response_headers;
            if !t.is_empty() {
                headers::apply_response(t, upstream_response);
            }
        }
        upstream_response.insert_header(headers::wire::X_REQUEST_ID, ctx.request_id.clone())?;
        if ctx
            .route
            .is_some_and(|r| ctx.gateway.route_cache[r].is_some())
        {
            let label = crate::cache::status_label(&session.cache.phase());
            upstream_response.insert_header(headers::wire::X_CACHE_STATUS, label)?;
        }
        if let Some(rate) = &ctx.rate {
            for (name, value) in rate.header_values() {
                upstream_response.insert_header(name, value)?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let status = errors::status_for(e);
        let started = session
            .response_written()
            .is_some_and(|r| !r.status.is_informational());
        if status == 0 || started {
            return FailToProxy {
                error_code: status,
                can_reuse_downstream: false,
            };
        }
        // Only an answer that left no unread body and no doubt about framing keeps the
        // connection open.
        let reusable = matches!(status, 404 | 502 | 503 | 504)
            && !session.as_downstream().is_upgrade_req()
            && session.as_downstream_mut().is_body_empty();
        if !reusable {
            session.set_keepalive(None);
        }
        if let Err(err) = self.write_error(session, status, ctx).await {
            log::debug!("could not write the error response: {err}");
        }
        if !reusable && session.as_downstream().as_http1().is_some() {
            // Read what the client already sent (briefly) before closing, so the close does not
            // turn into a reset that destroys the answer before the client reads it. (An HTTP/2
            // stream ends on its own; the connection carries on.)
            let downstream = session.as_downstream_mut();
            downstream.set_total_drain_timeout(Some(std::time::Duration::from_secs(1)));
            let _ = downstream.drain_request_body().await;
        }
        ctx.error_status = Some(status);
        FailToProxy {
            error_code: status,
            can_reuse_downstream: reusable,
        }
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS
            && !session.as_downstream().is_upgrade_req()
        {
            // A switch nobody asked for: the bytes that follow are not an answer to the request.
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "101 answer to a request that asked for no upgrade",
            )
            .into_up());
        }
        if let (Some(start), Some(route)) = (ctx.upstream_start, ctx.route) {
            self.metrics.record_upstream(
                &ctx.gateway,
                ctx.gateway.routes[route].upstream,
                start.elapsed().as_secs_f64(),
            );
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if end_of_stream {
            // The peer is done with this request: it stops counting for least_conn before the
            // client can have the answer and send its next request.
            ctx.in_flight = None;
        }
        Ok(None)
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &Ctx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        ctx.connection
            .clone()
            .map(|c| Box::new(c) as Box<dyn std::any::Any + Send + Sync>)
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(c) = prev.downcast::<Arc<ConnectionGuard>>() {
            ctx.connection = Some(*c);
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        self.report(session, e, ctx);
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let Some(route) = ctx.route else {
            return Ok(());
        };
        let gateway = ctx.gateway.clone();
        let Some(rules) = &gateway.route_cache[route] else {
            return Ok(());
        };
        let req = session.req_header();
        if rules.request_cacheable(&req.method, &req.headers, ctx.identity.is_some()) {
            let cache = &gateway.cache;
            session
                .cache
                .enable(cache.store, None, None, Some(cache.lock), None);
            session.cache.set_max_file_size_bytes(cache.max_object_size);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let rules = ctx
            .route
            .and_then(|r| ctx.gateway.route_cache[r].as_ref())
            .ok_or_else(|| status_error(500, "cache without rules"))?;
        let req = session.req_header();
        let host = ctx.target.host(req).unwrap_or("");
        let consumer = ctx
            .identity
            .as_ref()
            .map(|i| ctx.gateway.policies.identity_headers(i).0.as_bytes())
            .unwrap_or(b"");
        let input = crate::cache::KeyInput {
            host: host.as_bytes(),
            path: ctx.target.path(req).as_bytes(),
            query: req.uri.query().unwrap_or("").as_bytes(),
            headers: &req.headers,
            consumer,
        };
        Ok(rules.key(&input))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        match ctx.route.and_then(|r| ctx.gateway.route_cache[r].as_ref()) {
            Some(rules) => Ok(rules.response_cacheable(resp)),
            None => Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled)),
        }
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        crate::cache::RouteCacheRules::variance(meta, &req.headers)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        match error {
            // stale-while-revalidate: the stored response's window decides.
            None => true,
            // stale-if-error: when the upstream failed, timed out or answered 5xx.
            Some(e) => match e.etype() {
                ErrorType::HTTPStatus(code) => *code >= 500,
                _ => e.esource() == &pingora_error::ErrorSource::Upstream,
            },
        }
    }

    /// Client mistakes (4xx: refusals, malformed or too slow bodies) are not the gateway's
    /// errors: they are in the access log and metrics, not the error log.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        match errors::status_for(error) {
            400..=499 => true,
            // The client went away: nothing the operator can act on (counted in metrics).
            0 => error.esource() == &pingora_error::ErrorSource::Downstream,
            _ => false,
        }
    }
}
