//! Whether a request may go on, phase by phase before the upstream: who the client is, the
//! canonical target and its route, HTTPS redirects, the route's access policy and limits, the
//! body size, `Expect` and the read-ahead of chunked bodies. Each check returns an error with
//! the status to answer; the answer itself is written by [`super::respond`].

use super::ctx::{Client, Ctx};
use super::target::Target;
use crate::errors::status_error;
use crate::front::FrontDoor;
use crate::gateway::{CompiledRoute, Gateway};
use crate::observe::metrics::AuthFailure;
use crate::observe::trace::TraceContext;
use crate::policy::cors::CorsPolicy;
use crate::policy::forward_auth::{Asked, Verdict};
use crate::policy::limits::{KeyInput, Outcome, QuotaOutcome};
use crate::policy::Decision;
use crate::router::RequestView;
use http::header;
use pingora_error::{ErrorType, Result};
use pingora_proxy::Session;

/// Who the client is: the connection's peer, unless that is a trusted proxy naming another
/// address.
pub(super) fn identify_client(door: &FrontDoor, session: &Session) -> Client {
    let Some(peer) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    else {
        return Client::default();
    };
    let local = || session.server_addr().and_then(|a| a.as_inet()).copied();
    let (client, trusted) = door.client_address(local, peer, &session.req_header().headers);
    Client {
        ip: Some(client),
        peer: Some(peer.to_canonical()),
        peer_trusted: trusted,
    }
}

/// Read the canonical host and path (refusing requests that have none), then find the route
/// on them.
/// A TLS connection whose client certificate the listener no longer accepts (or that has none
/// where one is now required) gets no request through; it is closed after the answer.
pub(super) fn client_cert_accepted(session: &mut Session) -> Result<()> {
    let refused = super::tls_of(session).is_some_and(crate::tls::refuses_client);
    if refused {
        session.set_keepalive(None);
        return Err(status_error(403, "the client certificate is not accepted"));
    }
    Ok(())
}

pub(super) fn route_request(session: &Session, ctx: &mut Ctx) -> Result<()> {
    let req = session.req_header();
    // (Two `Host` headers never get here: refused at the front door on HTTP/1, and by Pingora's
    // own check on HTTP/2.)
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
    let target =
        Target::of(req, &ctx.gateway.path_normalization).map_err(|why| status_error(400, why))?;
    if ctx.gateway.router.ambiguous_query(req.uri.query()) {
        return Err(status_error(
            400,
            "a query parameter that routes match on reads differently when ';' separates parameters",
        ));
    }
    let view = RequestView {
        host: target.host(req).unwrap_or(""),
        path: target.path(req),
        method: &req.method,
        headers: &req.headers,
        query: req.uri.query(),
    };
    // A CORS preflight asks about the request the browser wants to send: it goes to the route
    // that request would take, when that route has CORS rules (its `methods` need not list
    // OPTIONS); otherwise it is an OPTIONS request like any other.
    let router = &ctx.gateway.router;
    let preflight = CorsPolicy::requested_method(&req.method, &req.headers).and_then(|wanted| {
        let id = router.lookup_preflight(
            &RequestView {
                method: &wanted,
                ..view
            },
            |id| ctx.gateway.route(id).cors.is_some(),
        )?;
        ctx.gateway.route(id).cors.is_some().then_some(id)
    });
    ctx.request.preflight = preflight.is_some();
    // A subrequest (a background revalidation) is no request of the client's: no span of its
    // own, the client's trace context passes as it came.
    ctx.request.trace = ctx
        .gateway
        .tracing
        .filter(|_| !session.as_downstream().is_subrequest())
        .map(|ratio| TraceContext::from_request(&req.headers, ratio));
    ctx.route = preflight.or_else(|| router.lookup(&view));
    ctx.request.target = target;
    Ok(())
}

/// The HTTPS port to redirect to, when the request came in on a listener that redirects.
pub(super) fn redirect_port(session: &Session, gateway: &Gateway) -> Option<u16> {
    if gateway.redirects.is_empty() {
        return None;
    }
    let port = session.server_addr()?.as_inet()?.port();
    gateway
        .redirects
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, https)| *https)
}

/// Run the route's IP rules, authentication and authorization; remember who the caller is.
pub(super) async fn check_access(
    route: &CompiledRoute,
    gateway: &Gateway,
    session: &Session,
    ctx: &mut Ctx,
) -> Result<()> {
    let headers = &session.req_header().headers;
    let cert = super::client_cert_of(session);
    let failure = match gateway
        .policies
        .check(&route.access, ctx.request.client.ip, headers, cert)
        .await
    {
        Decision::Allow(identity) => {
            ctx.caller.identity = identity;
            return Ok(());
        }
        Decision::Unauthorized => (401, AuthFailure::Unauthenticated),
        Decision::Forbidden => (403, AuthFailure::Forbidden),
    };
    route.metrics.auth_failure(failure.1);
    Err(status_error(failure.0, "refused by the route's policies"))
}

/// Ask the route's authorization service, if it has one: `Ok(true)` when its refusal was
/// written to the client; admitted, its headers wait in `ctx` for the upstream request.
pub(super) async fn ask_authorization(
    route: &CompiledRoute,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<bool> {
    let Some(fa) = &route.forward_auth else {
        return Ok(false);
    };
    let req = session.req_header();
    let path = ctx.request.target.path(req);
    let uri = match req.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let asked = Asked {
        method: req.method.as_str(),
        scheme: if super::tls_of(session).is_some() {
            "https"
        } else {
            "http"
        },
        host: ctx.request.target.host(req).unwrap_or(""),
        uri: &uri,
        client: ctx.request.client.ip,
        headers: &req.headers,
    };
    // Boxed: the call's future (a connection to the service) is large, and only routes with
    // forward auth should carry it.
    let (verdict, cached) = Box::pin(fa.check(&asked)).await;
    match verdict {
        Verdict::Admit(headers) => {
            route
                .metrics
                .forward_auth(if cached { "cached" } else { "allowed" });
            ctx.authorized = headers;
            Ok(false)
        }
        Verdict::Refuse {
            status,
            headers,
            body,
        } => {
            route.metrics.forward_auth("refused");
            super::respond::passed_on(session, status, headers, body, ctx).await?;
            Ok(true)
        }
        Verdict::Failed(why) => {
            log::warn!(
                "route {}: the authorization service could not be asked ({why}); {}",
                route.name,
                if fa.rules.failure_allow {
                    "admitted (failure: allow)"
                } else {
                    "refused"
                }
            );
            if fa.rules.failure_allow {
                route.metrics.forward_auth("failed_allowed");
                return Ok(false);
            }
            route.metrics.forward_auth("failed_denied");
            Err(status_error(
                403,
                "the authorization service could not be asked",
            ))
        }
    }
}

/// Count the request against the route's rate and concurrency limits; hold its slot.
pub(super) async fn check_limits(
    route: &CompiledRoute,
    gateway: &Gateway,
    session: &Session,
    ctx: &mut Ctx,
) -> Result<()> {
    // Background revalidations of the cache are not client requests: they count against no
    // limit.
    if route.limits.is_empty() || session.as_downstream().is_subrequest() {
        return Ok(());
    }
    let input = KeyInput {
        consumer: ctx
            .caller
            .identity
            .as_ref()
            .map(|i| gateway.policies.identity_headers(i).0.as_bytes()),
        client_ip: ctx.request.client.ip,
        headers: &session.req_header().headers,
    };
    match route.limits.check(&gateway.limits, &input).await {
        Outcome::Allowed(rate, guard) => {
            ctx.caller.rate = rate;
            ctx.caller.concurrency = guard;
            Ok(())
        }
        refused => {
            let concurrency = match refused {
                Outcome::RateLimited(state) => {
                    ctx.caller.rate = Some(state);
                    false
                }
                _ => true,
            };
            route.metrics.rate_limited(concurrency);
            Err(status_error(429, "over a rate or concurrency limit"))
        }
    }
}

/// Count the request against the caller's usage plan, if it has one: 429 over a quota. Last of
/// the checks, so that only requests the gateway would pass on are counted.
pub(super) async fn check_quota(gateway: &Gateway, session: &Session, ctx: &mut Ctx) -> Result<()> {
    if session.as_downstream().is_subrequest() {
        return Ok(());
    }
    let Some(((plan, counters), name)) = ctx
        .caller
        .identity
        .as_ref()
        .and_then(|i| gateway.plan_of(i))
    else {
        return Ok(());
    };
    match plan.check(&gateway.limits, name).await {
        QuotaOutcome::Allowed(_) => {
            counters[0].inc();
            Ok(())
        }
        QuotaOutcome::Refused(state) => {
            counters[1].inc();
            ctx.caller.quota_refused = Some(Box::new(state));
            Err(status_error(429, "over the plan's quota"))
        }
    }
}

/// Refuse a request whose declared body is over the route's `max_body_size`.
pub(super) fn check_declared_size(route: &CompiledRoute, session: &Session) -> Result<()> {
    let Some(max) = route.max_body_size else {
        return Ok(());
    };
    if declared_length(session).is_some_and(|n| n > max) {
        return Err(status_error(413, "declared body over max_body_size"));
    }
    Ok(())
}

/// The body length the request's `Content-Length` declares, if any.
pub(super) fn declared_length(session: &Session) -> Option<u64> {
    session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
}

/// Count body bytes towards the current upstream attempt against `max_body_size`.
pub(super) fn count_body(route: &CompiledRoute, len: usize, sent: &mut u64) -> Result<()> {
    if let Some(max) = route.max_body_size {
        *sent += len as u64;
        if *sent > max {
            return Err(status_error(413, "request body over max_body_size"));
        }
    }
    Ok(())
}

/// Answer `Expect: 100-continue` here, once the request has passed every policy (so a refused
/// client is not invited to send its body); the upstream then gets the request without
/// `Expect`, as nginx does. An upstream that is asked to expect could answer before the body
/// and then read the body that follows anyway as a request of its own. Returns whether the
/// request had an `Expect` header (of any value), which is not sent on.
pub(super) async fn continue_if_expected(session: &mut Session) -> Result<bool> {
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
    // Pingora closes a connection whose response starts before the request body is read; a
    // 100 is not that response, so keep-alive stays as it was.
    let keepalive = downstream.get_keepalive();
    downstream.write_continue_response().await?;
    downstream.set_keepalive(keepalive);
    Ok(true)
}

/// The pool this request goes to (the route's split: canary rules, sticky key or weights),
/// whether it is mirrored, and whether its body is kept for retries.
pub(super) fn choose_pool(
    route: &CompiledRoute,
    gateway: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
) {
    if let Some(split) = &route.split {
        let consumer = ctx
            .caller
            .identity
            .as_ref()
            .and_then(|i| gateway.policies.name_of(i));
        ctx.upstream.pool = split.choose(&crate::gateway::split::Chooser {
            headers: &session.req_header().headers,
            client_ip: ctx.request.client.ip,
            consumer,
        });
    }
    ctx.mirror = super::mirror::sample(route);
    if route
        .target(ctx.upstream.pool)
        .0
        .config
        .retry_on
        .after_sent()
    {
        // Keep the body (up to 64 KiB) to send it again on a retry.
        session.as_downstream_mut().enable_retry_buffering();
    }
}

/// Read the start of a chunked body before any upstream is contacted, so that malformed chunk
/// framing or an oversized body is refused while the upstream has seen nothing. Exactly one
/// read: its bytes stay in Pingora's retry buffer (64 KiB), which the proxy replays to the
/// upstream first, so nothing read here can be lost.
pub(super) async fn read_ahead(session: &mut Session, max: Option<u64>) -> Result<()> {
    let req = session.req_header();
    let chunked = req.headers.contains_key(header::TRANSFER_ENCODING);
    if !chunked || session.as_downstream().as_http1().is_none() {
        return Ok(());
    }
    session.as_downstream_mut().enable_retry_buffering();
    match session.as_downstream_mut().read_request_body().await {
        Ok(Some(chunk)) => {
            // Not counted towards the body size here: the bytes are counted when they are
            // replayed to the upstream through `request_body_filter`.
            if max.is_some_and(|m| chunk.len() as u64 > m) {
                return Err(status_error(413, "request body over max_body_size"));
            }
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(body_read_failed(e)),
    }
}

/// A failed read of the request body, as the client's doing (a refused framing, a stall, a
/// close: mapped by `errors::status_for` as the client's) or a malformed body (400).
pub(super) fn body_read_failed(e: Box<pingora_error::Error>) -> Box<pingora_error::Error> {
    match e.etype() {
        ErrorType::ReadError | ErrorType::ConnectionClosed | ErrorType::ReadTimedout => {
            e.into_down()
        }
        _ => status_error(400, "malformed request body"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::observe::metrics::Metrics;
    use crate::policy::limits::LimitStore;
    use std::sync::Arc;

    fn gateway(routes: &str) -> Gateway {
        let text = format!(
            "listeners: [{{address: 127.0.0.1:1}}]\nupstreams: {{a: {{peers: [127.0.0.1:2]}}}}\nroutes:\n{routes}"
        );
        let config = crate::config::parse(&text).expect("valid");
        Gateway::new(
            &config,
            Arc::new(LimitStore::default()),
            Arc::new(Cache::new(&config.process.cache)),
            &Metrics::new(),
            None,
        )
    }

    #[test]
    fn bodies_count_against_the_routes_limit_per_attempt() {
        let gw = gateway("  - {name: small, match: {path_prefix: /s}, upstream: a, max_body_size: 10}\n  - {name: any, match: {}, upstream: a}\n");
        let (small, any) = (gw.route(0), gw.route(1));
        let mut sent = 0;
        assert!(count_body(small, 6, &mut sent).is_ok());
        assert!(count_body(small, 4, &mut sent).is_ok());
        let e = count_body(small, 1, &mut sent).expect_err("over the limit");
        assert_eq!(crate::errors::status_for(&e), 413);
        // A route without a limit does not count.
        let mut unlimited = 0;
        assert!(count_body(any, 1 << 30, &mut unlimited).is_ok());
        assert_eq!(unlimited, 0);
    }

    #[test]
    fn the_snapshot_hands_each_route_its_compiled_parts() {
        let gw = gateway("  - {name: r, match: {path_prefix: /r}, upstream: a, auth: [api_key], cache: {ttl: 1s}}\n");
        let r = gw.route(0);
        assert_eq!(&*r.name, "r");
        assert_eq!(r.pool.config.name, "a");
        assert!(Arc::ptr_eq(&r.pool, &gw.pools[0]));
        assert!(r.access.authenticates());
        assert_eq!(
            r.access.challenges().collect::<Vec<_>>(),
            vec!["ApiKey realm=\"tollgate\""]
        );
        assert!(r.cache.is_some() && r.limits.is_empty());
    }
}
