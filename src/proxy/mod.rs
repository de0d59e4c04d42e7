//! The `ProxyHttp` implementation: a request's journey through Pingora's phases, each phase a
//! few calls into the module that owns the work. Per-request state lives in [`Ctx`].
//!
//! ```text
//!  new_ctx ─▶ on_connection_reuse (a kept-alive connection's next request)
//!  early_request_filter   request id, client address, canonical target ─▶ route   (admission)
//!  request_filter         HTTPS redirect, access policy, limits, body size,
//!                         API parameters, Expect, API body, plan quota,
//!                         chunked read-ahead
//!                                                          (admission, validation)
//!  request_cache_filter ─▶ cache_key_callback      the route's cache rule          (cache)
//!        └─ hit ────────────────────────────────────────────────────┐
//!  upstream_peer ─▶ fail_to_connect (retry)   a peer of the route's pool (forward)  │
//!  upstream_request_filter   path, host, forwarding and identity headers (forward)  │
//!  request_body_filter       body size                                 (admission)  │
//!  upstream_response_filter  upstream status and time         (respond, validation)  │
//!  response_cache_filter ─▶ cache_vary_filter   may it be stored          (cache)   │
//!  response_filter           hop-by-hop, transforms, cache and limit headers ◀──────┘
//!  upstream_response_body_filter   the peer is done: release its in-flight slot;
//!                            the answer compared with the API          (validation)
//!  should_serve_stale ─▶ fail_to_proxy   stale answers, error answers     (respond)
//!  suppress_error_log ─▶ logging ─▶ persist_connection_context           (report)
//! ```

mod admission;
mod ctx;
mod forward;
pub mod headers;
mod mirror;
mod report;
mod respond;
mod target;
mod validation;

pub use ctx::Ctx;

use crate::errors::{self, status_error};
use crate::front::FrontDoor;
use crate::gateway::Gateway;
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::Metrics;
use crate::server::Lifecycle;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use ctx::ConnectionGuard;
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::any::Any;
use std::sync::Arc;

/// The TLS facts of the request's connection, when it came over TLS.
fn tls_of(session: &Session) -> Option<&pingora_core::protocols::tls::SslDigest> {
    session.digest().and_then(|d| d.ssl_digest.as_deref())
}

/// The client certificate verified on the request's TLS connection, if any.
fn client_cert_of(session: &Session) -> Option<&crate::tls::ClientCert> {
    tls_of(session).and_then(crate::tls::client_cert)
}

/// The gateway's proxy: holds the current snapshot, swapped atomically on reload, and the
/// long-lived process state and reporting handles.
pub struct Tollgate {
    state: Arc<ArcSwap<Gateway>>,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
    /// Draining and the count of requests in flight.
    lifecycle: Arc<Lifecycle>,
    /// The listeners' settings: which proxies are trusted to name the client.
    door: Arc<FrontDoor>,
    /// Connections to shadow pools (mirroring).
    mirror: mirror::Mirrors,
    /// Where sampled requests' spans go, when exported.
    spans: Option<Arc<crate::observe::otlp::SpanExporter>>,
}

impl Tollgate {
    pub fn new(
        state: Arc<ArcSwap<Gateway>>,
        metrics: Arc<Metrics>,
        access_log: Option<Arc<AccessLog>>,
        lifecycle: Arc<Lifecycle>,
        door: Arc<FrontDoor>,
        spans: Option<Arc<crate::observe::otlp::SpanExporter>>,
    ) -> Self {
        Tollgate {
            state,
            metrics,
            access_log,
            lifecycle,
            door,
            mirror: mirror::Mirrors::new(),
            spans,
        }
    }
}

#[async_trait]
impl ProxyHttp for Tollgate {
    /// Boxed: Pingora keeps the context in each request's future, which it builds on the stack
    /// and copies into its box once per request (13.4 KB, measured); a 700-byte context made
    /// that copy 700 bytes longer, where a box costs one small allocation.
    type CTX = Box<Ctx>;

    /// No downstream modules: Pingora adds a (disabled) response compression module by default,
    /// which still runs on every response header and body chunk; Tollgate does not compress.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    /// Take the current snapshot for the whole request, and count the request as in flight.
    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new(self.state.load_full(), self.lifecycle.enter()))
    }

    /// A kept-alive connection's next request keeps counting the connection.
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
        prev: Box<dyn Any + Send + Sync>,
    ) {
        if let Ok(c) = prev.downcast::<Arc<ConnectionGuard>>() {
            ctx.guards.connection = Some(*c);
        }
    }

    /// Close after answering when draining; count the connection; read the request id, the
    /// client's address and the canonical target, and find the route.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        if self.lifecycle.is_draining() {
            // Answer, then close: the client reconnects (to the new process after an upgrade).
            session.set_keepalive(None);
        }
        if ctx.guards.connection.is_none() && !session.as_downstream().is_subrequest() {
            self.metrics.connections.inc();
            let guard = ConnectionGuard(self.metrics.connections.clone());
            ctx.guards.connection = Some(Arc::new(guard));
        }
        ctx.request.id = forward::request_id(session);
        // A client that stops reading its answer holds nothing longer than this per write.
        session
            .as_downstream_mut()
            .set_write_timeout(Some(self.door.send_timeout()));
        ctx.request.client = admission::identify_client(&self.door, session);
        admission::client_cert_accepted(session)?;
        admission::route_request(session, ctx)?;
        if let Some(trace) = &mut ctx.request.trace {
            trace.recording = trace.sampled && self.spans.is_some();
        }
        Ok(())
    }

    /// Redirect to HTTPS, or admit the request: the route's access policy and limits, the
    /// body size, `Expect`, and the start of a chunked body read before the upstream is asked.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if let Some(port) = admission::redirect_port(session, &ctx.gateway) {
            respond::redirect_to_https(session, port, ctx).await?;
            return Ok(true);
        }
        let gateway = ctx.gateway.clone();
        let route = ctx.route.map(|r| gateway.route(r));
        let route = route.ok_or_else(|| status_error(404, "no route"))?;
        if ctx.request.preflight {
            // Answered here, after the IP rules and before authentication (a browser sends no
            // credentials with a preflight); never forwarded.
            if !route.access.address_allowed(ctx.request.client.ip) {
                return Err(status_error(403, "refused by the route's IP rules"));
            }
            respond::preflight(session, route, ctx).await?;
            return Ok(true);
        }
        admission::check_access(route, &gateway, session, ctx).await?;
        if admission::ask_authorization(route, session, ctx).await? {
            return Ok(true);
        }
        admission::check_limits(route, &gateway, session, ctx).await?;
        admission::check_declared_size(route, session)?;
        validation::check_head(route, session, ctx)?;
        ctx.request.expect = admission::continue_if_expected(session).await?;
        validation::check_body(route, session, ctx, &self.door).await?;
        admission::check_quota(&gateway, session, ctx).await?;
        admission::choose_pool(route, &gateway, session, ctx);
        admission::read_ahead(session, route.max_body_size).await?;
        Ok(false)
    }

    /// Use the cache when the route caches and the request may (method, credentials).
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        let Some(rules) = ctx.route().and_then(|r| r.cache.as_ref()) else {
            return Ok(());
        };
        let req = session.req_header();
        match rules.request_cacheable(&req.method, &req.headers, ctx.caller.identity.is_some()) {
            Ok(()) => {
                ctx.cache.looked_up = true;
                let cache = &ctx.gateway.cache;
                session
                    .cache
                    .enable(cache.store, None, None, Some(cache.lock), None);
                session.cache.set_max_file_size_bytes(cache.max_object_size);
            }
            Err(why) => ctx.cache.skipped = Some(why),
        }
        Ok(())
    }

    /// The route's cache key, from the canonical host and path and its configured parts.
    fn cache_key_callback(&self, session: &Session, ctx: &mut Self::CTX) -> Result<CacheKey> {
        let rules = ctx.route().and_then(|r| r.cache.as_ref());
        let rules = rules.ok_or_else(|| status_error(500, "cache without rules"))?;
        let req = session.req_header();
        let consumer = ctx.caller.identity.as_ref();
        let input = crate::cache::KeyInput {
            host: ctx.request.target.host(req).unwrap_or("").as_bytes(),
            path: ctx.request.target.path(req).as_bytes(),
            query: req.uri.query().unwrap_or("").as_bytes(),
            headers: &req.headers,
            consumer: consumer
                .map(|i| ctx.gateway.policies.identity_headers(i).0.as_bytes())
                .unwrap_or(b""),
        };
        Ok(rules.key(&input))
    }

    /// A peer of the route's pool, other than those this request already tried.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let gateway = ctx.gateway.clone();
        let route = ctx.route.map(|r| gateway.route(r));
        let route = route.ok_or_else(|| status_error(404, "no route"))?;
        forward::choose_peer(route, session, ctx)
    }

    /// Keep a peer that refused the connection out for a while, and retry on another.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let gateway = ctx.gateway.clone();
        if let Some(route) = ctx.route.map(|r| gateway.route(r)) {
            forward::connect_failed(route, session, peer, ctx, &mut e);
        }
        e
    }

    /// Retries are counted (metrics, access log), not logged one by one.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &Self::CTX,
        error: &Error,
        context: pingora_proxy::ProxyWarnLogContext,
    ) -> bool {
        let retry = matches!(context, pingora_proxy::ProxyWarnLogContext::UpstreamRetry);
        if retry {
            log::debug!("retrying on another peer: {error}");
        }
        retry
    }

    /// After the request was sent: retry on another peer when the pool retries the failure.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let e = e.more_context(format!("Peer: {peer}"));
        let gateway = ctx.gateway.clone();
        match ctx.route.map(|r| gateway.route(r)) {
            Some(route) => forward::proxy_failed(route, session, ctx, e, client_reused),
            None => e,
        }
    }

    /// Note how long connecting to the peer took (zero for a reused connection).
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.upstream.connect = match (reused, ctx.upstream.start) {
            (true, _) => Some(std::time::Duration::ZERO),
            (false, Some(start)) => Some(start.elapsed()),
            (false, None) => None,
        };
        Ok(())
    }

    /// Shape the request the upstream receives.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        match ctx.route() {
            Some(route) => {
                forward::shape_request(route, session, upstream_request, ctx)?;
                if let Some(t) = ctx.request.trace.as_mut().filter(|t| t.recording) {
                    t.upstream_target = Some(upstream_request.uri.to_string());
                }
                if ctx.mirror.is_some() {
                    let has_body = !session.as_mut().is_body_empty();
                    mirror::keep_head(ctx, upstream_request, has_body);
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Count the body sent to this attempt against the route's `max_body_size`.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let gateway = ctx.gateway.clone();
        let Some(route) = ctx.route.map(|r| gateway.route(r)) else {
            return Ok(());
        };
        let chunk = body.as_deref().unwrap_or_default();
        // Counted first: a body refused as too large is never a complete copy.
        admission::count_body(route, chunk.len(), &mut ctx.upstream.body_bytes)?;
        mirror::keep_body(route, ctx, chunk, end_of_stream);
        Ok(())
    }

    /// Note the upstream's status and time to its response header.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        validation::answer_started(session, upstream_response, ctx);
        respond::upstream_answered(session, upstream_response, ctx)
    }

    /// Whether the route's cache may store this response, and for how long.
    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<RespCacheable> {
        let verdict = match ctx.route().and_then(|r| r.cache.as_ref()) {
            Some(rules) => rules.response_cacheable(resp),
            None => RespCacheable::Uncacheable(NoCacheReason::NeverEnabled),
        };
        ctx.cache.stored = matches!(verdict, RespCacheable::Cacheable(_));
        Ok(verdict)
    }

    /// A stored response's variant: the request headers its `Vary` names.
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Self::CTX,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        crate::cache::RouteCacheRules::variance(meta, &req.headers)
    }

    /// Shape the response the client receives (from the upstream or the cache).
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let draining = self.lifecycle.is_draining();
        respond::shape_response(session, upstream_response, ctx, draining)
    }

    /// Compress the answer's body when its head said so.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        if let Some((encoder, coding)) = ctx.compression.as_mut() {
            let input = body.take().unwrap_or_default();
            let out = encoder.encode(&input, end_of_stream)?;
            // An empty chunk would end a chunked body: nothing is written until there is output.
            *body = (!out.is_empty()).then_some(out);
            if end_of_stream {
                let (_, bytes_in, bytes_out, _) = encoder.stat();
                let coding = coding.token();
                let gateway = ctx.gateway.clone();
                if let Some(route) = ctx.route.map(|r| gateway.route(r)) {
                    route.metrics.compressed(coding, bytes_in, bytes_out);
                }
            }
        }
        Ok(None)
    }

    /// The peer is done with this request: it stops counting for `least_conn` before the
    /// client can have the answer and send its next request. The answer's body is compared
    /// with the route's OpenAPI operation when it reports answers.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.answer.is_some() {
            validation::answer_chunk(ctx, body.as_ref(), end_of_stream);
        }
        if end_of_stream {
            ctx.upstream.in_flight = None;
        }
        Ok(None)
    }

    /// Serve a stale copy while revalidating, or when the upstream failed (stale-if-error).
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
        error: Option<&Error>,
    ) -> bool {
        match error {
            // stale-while-revalidate: the stored response's window decides.
            None => true,
            // stale-if-error: when the upstream failed, timed out or answered 5xx.
            Some(e) => match e.etype() {
                ErrorType::HTTPStatus(code) => *code >= 500,
                _ => e.esource() == &ErrorSource::Upstream,
            },
        }
    }

    /// Answer a failed request with its status and the JSON (or gRPC) error.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        respond::fail(session, e, ctx).await
    }

    /// Client mistakes (4xx: refusals, malformed or too slow bodies) are not the gateway's
    /// errors: they are in the access log and metrics, not the error log.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, error: &Error) -> bool {
        match errors::status_for(error) {
            400..=499 => true,
            // The client went away: nothing the operator can act on (counted in metrics).
            0 => error.esource() == &ErrorSource::Downstream,
            _ => false,
        }
    }

    /// Metrics and the access-log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        if ctx.mirror.is_some() {
            let gateway = ctx.gateway.clone();
            if let Some(route) = ctx.route.map(|r| gateway.route(r)) {
                mirror::send(&self.mirror, route, ctx);
            }
        }
        report::report(
            &self.metrics,
            self.access_log.as_deref(),
            self.spans.as_deref(),
            session,
            e,
            ctx,
        );
    }

    /// The connection's count carries over to its next request.
    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &Self::CTX,
    ) -> Option<Box<dyn Any + Send + Sync>> {
        ctx.guards
            .connection
            .clone()
            .map(|c| Box::new(c) as Box<dyn Any + Send + Sync>)
    }
}
