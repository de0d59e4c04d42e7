//! Towards the client: the upstream's answer shaped on its way (hop-by-hop headers, the
//! route's transforms, request id, cache status, rate-limit state, closing while draining), and
//! the answers the gateway writes itself: HTTPS redirects and errors (JSON, or gRPC statuses
//! for gRPC clients), with the headers that explain a refusal.

use super::ctx::Ctx;
use super::headers;
use crate::errors::{self, Problem};
use crate::policy::cors::{CorsPolicy, Preflight};
use crate::wire::written;
use bytes::Bytes;
use http::header;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, Session};

static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

/// Note the upstream's answer: its status, and its time to a response header. A `101` nobody
/// asked for is refused: the bytes that follow are not an answer to the request.
pub(super) fn upstream_answered(
    session: &Session,
    upstream_response: &ResponseHeader,
    ctx: &mut Ctx,
) -> Result<()> {
    ctx.upstream.status = Some(upstream_response.status.as_u16());
    if let Some(trace) = &mut ctx.request.trace {
        trace.attempt_answered(upstream_response.status.as_u16());
    }
    if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS
        && !session.as_downstream().is_upgrade_req()
    {
        return Err(Error::explain(
            ErrorType::InvalidHTTPHeader,
            "101 answer to a request that asked for no upgrade",
        )
        .into_up());
    }
    if let Some(start) = ctx.upstream.start {
        let took = start.elapsed();
        ctx.upstream.response = Some(took);
        if let Some(route) = ctx.route() {
            route
                .target(ctx.upstream.pool)
                .1
                .upstream_time(took.as_secs_f64());
        }
    }
    let gateway = ctx.gateway.clone();
    if let Some(route) = ctx.route.map(|r| gateway.route(r)) {
        let status = upstream_response.status.as_u16();
        if let Some(attempt) = &ctx.upstream.in_flight {
            route
                .target(ctx.upstream.pool)
                .0
                .observe(attempt.peer(), status >= 500);
        }
        if let Some(e) = super::forward::retry_on_status(route, session, ctx, status) {
            return Err(e);
        }
    }
    Ok(())
}

/// Shape the response the client receives (from the upstream or the cache).
pub(super) fn shape_response(
    session: &mut Session,
    resp: &mut ResponseHeader,
    ctx: &mut Ctx,
    draining: bool,
) -> Result<()> {
    headers::strip_response_hop_by_hop(resp);
    if resp.status != http::StatusCode::SWITCHING_PROTOCOLS
        && session.as_downstream().is_upgrade_req()
    {
        // A declined upgrade: what the client sent after its request may be meant for the other
        // protocol, so the connection is not read as HTTP again; say so.
        session.set_keepalive(None);
    }
    if draining {
        // A response that started before the drain still closes its connection.
        session.set_keepalive(None);
    }
    let route = ctx.route();
    if let Some(t) = route.map(|r| &r.response_headers).filter(|t| !t.is_empty()) {
        headers::apply_response(t, resp);
    }
    resp.insert_header(written::X_REQUEST_ID, ctx.request.id.clone())?;
    if let Some(cors) = route.and_then(|r| r.cors.as_ref()) {
        cors.apply(&session.req_header().headers, resp);
    }
    if route.is_some_and(|r| r.cache.is_some()) {
        cache_status(session, resp, ctx)?;
    }
    if let (Some(rate), Some(route)) = (&ctx.caller.rate, route) {
        for (name, value) in route.limits.headers(rate).into_iter().flatten() {
            resp.insert_header(name, value)?;
        }
    }
    compress_if_accepted(session, resp, ctx);
    Ok(())
}

/// Compress the answer when the route compresses, the answer may be, and the client accepts a
/// coding the route uses (not for HTTP/1.0, which cannot stream it in chunks; a `HEAD` gets the
/// head of the compressed answer).
fn compress_if_accepted(session: &Session, resp: &mut ResponseHeader, ctx: &mut Ctx) {
    // Nothing for routes that do not compress (the snapshot is not even cloned).
    if ctx.route().is_none_or(|r| r.compression.is_none()) {
        return;
    }
    let gateway = ctx.gateway.clone();
    let Some(rules) = ctx
        .route
        .map(|r| gateway.route(r))
        .and_then(|r| r.compression.as_ref())
    else {
        return;
    };
    let req = session.req_header();
    if resp.status == http::StatusCode::NOT_MODIFIED {
        if rules.negotiate(&req.headers).is_some() {
            crate::compress::not_modified(resp);
        }
        return;
    }
    if !rules.applies(resp) {
        return;
    }
    crate::compress::vary(resp);
    if req.version == http::Version::HTTP_10 {
        return;
    }
    if let Some(coding) = rules.negotiate(&req.headers) {
        let chunked = req.version == http::Version::HTTP_11;
        let encoder = crate::compress::start(coding, resp, chunked);
        // A HEAD gets the head its GET would get, and no body to compress.
        if req.method != http::Method::HEAD {
            ctx.compression = encoder.map(|e| (e, coding));
        }
    }
}

/// `Cache-Status` (RFC 9211) and/or `X-Cache-Status`, as `cache_status_headers` says.
fn cache_status(session: &Session, resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    let style = ctx.gateway.cache_status_headers;
    let phase = session.cache.phase();
    if style.standard() {
        let value = crate::cache::cache_status(&crate::cache::Outcome {
            phase,
            meta: session.cache.maybe_cache_meta(),
            upstream_status: ctx.upstream.status,
            stored: ctx.cache.stored,
            skipped: ctx.cache.skipped,
            looked_up: ctx.cache.looked_up,
        });
        resp.insert_header(written::CACHE_STATUS, value)?;
    }
    if style.legacy() {
        let label = crate::cache::status_label(&phase);
        resp.insert_header(written::X_CACHE_STATUS, label)?;
    }
    Ok(())
}

/// Answer a failed request with its status, unless an answer has started or the client is
/// gone; close the connection unless the answer leaves no doubt about what follows.
pub(super) async fn fail(session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
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
    // Only an answer that left no unread body and no doubt about framing keeps the connection
    // open.
    let reusable = matches!(status, 404 | 502 | 503 | 504)
        && !session.as_downstream().is_upgrade_req()
        && session.as_downstream_mut().is_body_empty();
    if !reusable {
        session.set_keepalive(None);
    }
    if let Err(err) = write_error(session, status, ctx).await {
        log::debug!("could not write the error response: {err}");
    }
    if !reusable {
        // Read what the client already sent (briefly) before closing, so the close does not
        // turn into a reset that destroys the answer before the client reads it. On HTTP/2 the
        // stream's unread body would otherwise end it with a reset the client takes for a
        // failure (curl: "stream error"), the answer unread; the connection carries on.
        let downstream = session.as_downstream_mut();
        downstream.set_total_drain_timeout(Some(std::time::Duration::from_secs(1)));
        let _ = downstream.drain_request_body().await;
    }
    ctx.request.error_status = Some(status);
    FailToProxy {
        error_code: status,
        can_reuse_downstream: reusable,
    }
}

/// Answer a CORS preflight: `204` with the route's `Access-Control-*` headers, or `403` (a
/// problem saying what is not allowed) without them.
pub(super) async fn preflight(
    session: &mut Session,
    route: &crate::gateway::CompiledRoute,
    ctx: &mut Ctx,
) -> Result<()> {
    let Some(cors) = &route.cors else {
        return Err(crate::errors::status_error(
            500,
            "preflight without CORS rules",
        ));
    };
    let req = session.req_header();
    let wanted = CorsPolicy::requested_method(&req.method, &req.headers);
    let verdict = match wanted {
        Some(m) => cors.preflight(&m, &req.headers),
        None => Preflight::Refused("not a CORS preflight"),
    };
    let (mut resp, body) = match verdict {
        Preflight::Allowed(headers) => {
            let mut resp = ResponseHeader::build(204, Some(headers.len() + 2))?;
            for (name, value) in headers {
                resp.append_header(name, value)?;
            }
            (resp, Bytes::new())
        }
        Preflight::Refused(why) => {
            let instance = ctx.request.target.path(req);
            let body = Problem::CORS_REFUSED.body(
                ctx.request.id.to_str().ok(),
                Some(instance),
                Some(why),
                None,
            );
            let mut resp = ResponseHeader::build(403, Some(4))?;
            resp.insert_header(header::CONTENT_TYPE, errors::PROBLEM_JSON)?;
            resp.insert_header(header::CONTENT_LENGTH, body.len())?;
            resp.insert_header(header::VARY, "Origin")?;
            ctx.request.error_status = Some(403);
            (resp, body)
        }
    };
    resp.insert_header(written::X_REQUEST_ID, ctx.request.id.clone())?;
    let end = body.is_empty();
    session.write_response_header(Box::new(resp), end).await?;
    if !end {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Pass on an answer another service wrote (a forward-authentication refusal), with the
/// request id and, for an allowed origin, the route's CORS headers.
pub(super) async fn passed_on(
    session: &mut Session,
    status: u16,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: Bytes,
    ctx: &mut Ctx,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 3))?;
    for (name, value) in headers {
        resp.append_header(name, value)?;
    }
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(written::X_REQUEST_ID, ctx.request.id.clone())?;
    if let Some(cors) = ctx.route().and_then(|r| r.cors.as_ref()) {
        cors.apply(&session.req_header().headers, &mut resp);
    }
    ctx.request.error_status = Some(status);
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Answer `308` to the same host and path over HTTPS.
pub(super) async fn redirect_to_https(session: &mut Session, port: u16, ctx: &Ctx) -> Result<()> {
    let req = session.req_header();
    let host = ctx.request.target.host(req).unwrap_or("localhost");
    let path = ctx.request.target.path(req);
    let query = req.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let location = if port == 443 {
        format!("https://{host}{path}{query}")
    } else {
        format!("https://{host}:{port}{path}{query}")
    };
    let mut resp = ResponseHeader::build(308, Some(4))?;
    resp.insert_header(header::LOCATION, location)?;
    resp.insert_header(header::CONTENT_LENGTH, 0)?;
    resp.insert_header(written::X_REQUEST_ID, ctx.request.id.clone())?;
    session.write_response_header(Box::new(resp), true).await
}

/// The headers that explain a refusal, in JSON and gRPC answers alike: the route's
/// authentication challenges on a 401, the rate-limit state on a 429.
fn refusal_headers(resp: &mut ResponseHeader, status: u16, ctx: &Ctx) -> Result<()> {
    if let (401, Some(route)) = (status, ctx.route()) {
        for challenge in route.access.challenges() {
            resp.append_header(header::WWW_AUTHENTICATE, challenge)?;
        }
    }
    if let (429, Some(q)) = (status, &ctx.caller.quota_refused) {
        // The plan's quotas and the one used up, until the period turns.
        let value = format!("\"quota-{}\";r=0;t={}", q.period.as_str(), q.reset);
        resp.insert_header(header::RETRY_AFTER, q.reset)?;
        resp.insert_header("RateLimit-Policy", q.policy.clone())?;
        resp.insert_header("RateLimit", value)?;
        return Ok(());
    }
    if let (429, Some(rate), Some(route)) = (status, &ctx.caller.rate, ctx.route()) {
        resp.insert_header(header::RETRY_AFTER, rate.reset)?;
        for (name, value) in route.limits.headers(rate).into_iter().flatten() {
            resp.insert_header(name, value)?;
        }
    }
    Ok(())
}

/// A gRPC client is answered in gRPC terms: HTTP 200 carrying only headers, with
/// `grpc-status` and `grpc-message` ("trailers-only"), so it sees e.g. `UNAUTHENTICATED`
/// rather than a transport error about an unexpected content type.
async fn write_grpc_error(session: &mut Session, status: u16, ctx: &Ctx) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(6))?;
    resp.insert_header(header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header(&GRPC_STATUS, errors::grpc_code(status) as u32)?;
    resp.insert_header(&GRPC_MESSAGE, errors::message_for(status))?;
    resp.insert_header(written::X_REQUEST_ID, ctx.request.id.clone())?;
    refusal_headers(&mut resp, status, ctx)?;
    if session.req_header().version != http::Version::HTTP_2 {
        resp.insert_header(header::CONTENT_LENGTH, 0)?;
    }
    session.write_response_header(Box::new(resp), true).await
}

/// The gateway's own error answer: problem details with the request id.
async fn write_error(session: &mut Session, status: u16, ctx: &Ctx) -> Result<()> {
    if errors::is_grpc(session.req_header().headers.get(header::CONTENT_TYPE)) {
        return write_grpc_error(session, status, ctx).await;
    }
    let request_id = &ctx.request.id;
    let kind = match status {
        // Over a limit without a rate state: the concurrency limit.
        429 if ctx.caller.quota_refused.is_some() => Problem::QUOTA_EXCEEDED,
        429 if ctx.caller.rate.is_none() => Problem::CONCURRENCY_LIMITED,
        _ => Problem::for_status(status),
    };
    let instance = ctx.request.target.path(session.req_header());
    let body = match ctx.request.invalid.as_deref() {
        // Refused by the route's API description: what is wrong, item by item.
        Some(r) if r.problem.status == status => r.problem.body(
            request_id.to_str().ok(),
            Some(instance),
            Some(&r.detail),
            r.errors.clone().map(|e| ("errors", e)),
        ),
        _ => kind.body(request_id.to_str().ok(), Some(instance), None, None),
    };
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header(header::CONTENT_TYPE, errors::PROBLEM_JSON)?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(written::X_REQUEST_ID, request_id.clone())?;
    refusal_headers(&mut resp, status, ctx)?;
    // An allowed origin's script may read why it was refused.
    if let Some(cors) = ctx.route().and_then(|r| r.cors.as_ref()) {
        cors.apply(&session.req_header().headers, &mut resp);
    }
    let concurrency =
        status == 429 && ctx.caller.rate.is_none() && ctx.caller.quota_refused.is_none();
    if status == 503 || concurrency {
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
