//! Towards the upstream: choosing a peer of the route's pool (the hash key of a
//! consistent-hash pool, retries on another peer after a failed connection), and shaping the
//! request the upstream receives (the canonical path after the route's rewrite, the host, the
//! forwarding and identity headers, the route's header transforms).

use super::ctx::Ctx;
use super::headers;
use super::target::Target;
use crate::canonical;
use crate::config::{HashKey, PathRewrite};
use crate::errors::status_error;
use crate::gateway::CompiledRoute;
use crate::router;
use crate::wire::{self, written};
use http::header;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::net::IpAddr;
use std::time::Instant;

/// Choose a peer of the route's pool for this attempt, skipping peers already tried.
pub(super) fn choose_peer(
    route: &CompiledRoute,
    session: &Session,
    ctx: &mut Ctx,
) -> Result<Box<HttpPeer>> {
    let (pool, _) = route.target(ctx.upstream.pool);
    let mut ip_buf = [0u8; 16];
    let key: &[u8] = match pool.hash_key() {
        Some(k) => hash_key(
            session,
            &ctx.request.target,
            ctx.request.client.ip,
            k,
            &mut ip_buf,
        ),
        None => b"",
    };
    let attempts = &mut ctx.upstream;
    // Release the previous attempt's in-flight slot before choosing again.
    attempts.in_flight = None;
    // Each attempt sends the body from its start (retries replay the buffered body).
    attempts.body_bytes = 0;
    if attempts.tried.is_empty() {
        pool.note_request();
    }
    match pool.select(key, &attempts.tried) {
        Some((peer, guard)) => {
            attempts.start = Some(Instant::now());
            attempts.tried.push(guard.peer().address);
            if let Some(trace) = &mut ctx.request.trace {
                trace.begin_attempt(guard.peer().address, pool.config.tls.is_some());
            }
            ctx.upstream.in_flight = Some(guard);
            Ok(Box::new(peer))
        }
        None if attempts.tried.is_empty() => Err(status_error(503, "no healthy peer")),
        // Every other peer is down too: report the connection failure that brought us here.
        None => Err(status_error(502, "no other peer to retry on")),
    }
}

/// The bytes a consistent-hash pool hashes on for this request.
fn hash_key<'a>(
    session: &'a Session,
    target: &'a Target,
    client: Option<IpAddr>,
    key: &HashKey,
    ip_buf: &'a mut [u8; 16],
) -> &'a [u8] {
    let req = session.req_header();
    match key {
        HashKey::ClientIp => ip_bytes(client, ip_buf),
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

/// An address as hash input: 4 bytes for IPv4, 16 for IPv6, nothing when unknown.
fn ip_bytes(ip: Option<IpAddr>, buf: &mut [u8; 16]) -> &[u8] {
    match ip {
        Some(IpAddr::V4(v4)) => {
            buf[..4].copy_from_slice(&v4.octets());
            &buf[..4]
        }
        Some(IpAddr::V6(v6)) => {
            *buf = v6.octets();
            &buf[..]
        }
        None => b"",
    }
}

/// After a failed connection: keep the peer out for the pool's cool-down, count the failure,
/// and retry on another peer when the pool retries connection failures (the request was not
/// sent) and its retries and budget allow.
pub(super) fn connect_failed(
    route: &CompiledRoute,
    session: &Session,
    peer: &HttpPeer,
    ctx: &mut Ctx,
    e: &mut Error,
) {
    let (pool, metrics) = route.target(ctx.upstream.pool);
    if let Some(addr) = peer._address.as_inet() {
        pool.cool_down(addr);
    }
    let kind = match e.etype() {
        ErrorType::ConnectRefused => "connect_refused",
        ErrorType::ConnectTimedout => "connect_timeout",
        _ => "connect_error",
    };
    metrics.upstream_error(kind);
    if let Some(trace) = &mut ctx.request.trace {
        trace.attempt_failed(Some(kind));
    }
    if let Some(attempt) = &ctx.upstream.in_flight {
        pool.observe(attempt.peer(), true);
    }
    let retry = pool.config.retry_on.connect_failure
        && may_retry(route, session, ctx, "connect_failure", false);
    e.set_retry(retry);
}

/// Whether this request's failed attempt (`reason`: one of the retry reasons) is retried on
/// another peer: the pool's retries are not used up, the request may be sent again (`sent`: it
/// was; then only idempotent methods, unless the route says otherwise, and only while its body
/// is still in the replay buffer), another peer can take it, and (for a sent request) the pool's
/// retry budget allows. Counted when it is.
pub(super) fn may_retry(
    route: &CompiledRoute,
    session: &Session,
    ctx: &mut Ctx,
    reason: &'static str,
    sent: bool,
) -> bool {
    let (pool, metrics) = route.target(ctx.upstream.pool);
    if ctx.upstream.retries >= pool.retries()
        || (sent
            && ((!session.req_header().method.is_idempotent() && !route.retry_non_idempotent)
                || session.as_ref().retry_buffer_truncated()))
        || !pool.has_other_peer(&ctx.upstream.tried)
    {
        return false;
    }
    // A request that reached no peer adds no load when sent elsewhere: only retries of sent
    // requests are charged to the budget.
    if sent && !pool.try_retry() {
        metrics.retry_budget_exhausted();
        return false;
    }
    ctx.upstream.retries += 1;
    metrics.retry(reason);
    true
}

/// After an attempt failed once the request was sent (the connection broke, the peer did not
/// answer in time, or it answered a status the pool retries): retry it on another peer when the
/// pool retries that failure. Otherwise Pingora's own rule stands: an idempotent request that
/// failed on a reused connection (closed by the peer while idle) is sent again.
pub(super) fn proxy_failed(
    route: &CompiledRoute,
    session: &Session,
    ctx: &mut Ctx,
    mut e: Box<Error>,
    client_reused: bool,
) -> Box<Error> {
    let (pool, _) = route.target(ctx.upstream.pool);
    if e.esource() == &pingora_error::ErrorSource::Upstream {
        if let Some(attempt) = &ctx.upstream.in_flight {
            pool.observe(attempt.peer(), true);
        }
        if let Some(trace) = &mut ctx.request.trace {
            // A status the pool retries on is the span's error, as its status says.
            let kind = match e.etype() {
                ErrorType::CustomCode(RETRY_STATUS, _) => None,
                _ => Some(super::report::upstream_error_kind(&e).unwrap_or("other")),
            };
            trace.attempt_failed(kind);
        }
    }
    // Once the client has the response head, or when the client is what failed, no attempt
    // may start again: a second answer cannot follow the first, and a client that went away
    // needs none.
    if session.as_ref().response_written().is_some()
        || e.esource() == &pingora_error::ErrorSource::Downstream
    {
        e.set_retry(false);
        return e;
    }
    let on = &pool.config.retry_on;
    let reason = match e.etype() {
        ErrorType::CustomCode(RETRY_STATUS, _) => {
            // Decided when the status arrived.
            return e;
        }
        ErrorType::ReadTimedout | ErrorType::WriteTimedout if on.timeout => Some("timeout"),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError if on.reset => {
            Some("reset")
        }
        _ => None,
    };
    if let Some(reason) = reason {
        if may_retry(route, session, ctx, reason, true) {
            e.set_retry(true);
            return e;
        }
        e.set_retry(false);
        return e;
    }
    if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated() {
        e.set_retry(false);
    } else {
        e.retry.decide_reuse(client_reused);
    }
    e
}

/// The error type of an answer that is retried for its status.
pub(super) const RETRY_STATUS: &str = "retried status";

/// When the peer answered a status its pool retries and a retry is possible: the error that
/// makes Pingora try another peer (nothing has been sent to the client yet).
pub(super) fn retry_on_status(
    route: &CompiledRoute,
    session: &Session,
    ctx: &mut Ctx,
    status: u16,
) -> Option<Box<Error>> {
    if !route
        .target(ctx.upstream.pool)
        .0
        .config
        .retry_on
        .statuses
        .contains(&status)
        || !may_retry(route, session, ctx, "status", true)
    {
        return None;
    }
    let mut e = Error::explain(
        ErrorType::CustomCode(RETRY_STATUS, status),
        format!("the peer answered {status}"),
    );
    e.set_retry(true);
    Some(e.into_up())
}

/// Shape the request the upstream receives.
pub(super) fn shape_request(
    route: &CompiledRoute,
    session: &Session,
    upstream_request: &mut RequestHeader,
    ctx: &Ctx,
) -> Result<()> {
    headers::strip_request_hop_by_hop(upstream_request);
    set_target(route, session, upstream_request, ctx)?;
    set_host(upstream_request, ctx)?;
    if ctx.request.expect {
        // Answered by the gateway (see `admission::continue_if_expected`).
        upstream_request.remove_header(&header::EXPECT);
    }
    let host = ctx.request.target.forwarded_host(session.req_header());
    let hop = headers::Hop {
        client: ctx.request.client.ip,
        peer: ctx.request.client.peer,
        trusted: ctx.request.client.peer_trusted,
        host: host.as_ref(),
        tls: super::tls_of(session).is_some(),
    };
    headers::set_forwarding(upstream_request, &hop);
    upstream_request.insert_header(written::X_REQUEST_ID, ctx.request.id.clone())?;
    set_identity(upstream_request, ctx)?;
    set_client_cert(upstream_request, session)?;
    if let Some(trace) = &ctx.request.trace {
        // The upstream's parent is the gateway's span; the client's vendor state goes along
        // with the trace it continued (and not with a trace the gateway started).
        upstream_request.insert_header("traceparent", trace.traceparent())?;
        match &trace.state {
            Some(state) => upstream_request.insert_header("tracestate", state.clone())?,
            None => {
                upstream_request.remove_header("tracestate");
            }
        }
    }
    if let Some(fa) = &route.forward_auth {
        // Only the authorization service says these: a client's own are dropped, also spelt
        // with '_' (which frameworks read as '-').
        let spoofed: Vec<http::HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|k| {
                fa.rules.response_headers.iter().any(|n| {
                    k.as_str().len() == n.as_str().len()
                        && k.as_str()
                            .bytes()
                            .zip(n.as_str().bytes())
                            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
                })
            })
            .cloned()
            .collect();
        for name in &spoofed {
            upstream_request.remove_header(name);
        }
        for (name, value) in &ctx.authorized {
            upstream_request.append_header(name.clone(), value.clone())?;
        }
    }
    if !route.request_headers.is_empty() {
        headers::apply_request(&route.request_headers, upstream_request);
    }
    Ok(())
}

/// The upstream receives exactly the path the route was matched on (after its rewrite), in
/// origin form towards HTTP/1.
fn set_target(
    route: &CompiledRoute,
    session: &Session,
    upstream_request: &mut RequestHeader,
    ctx: &Ctx,
) -> Result<()> {
    let req = session.req_header();
    let target = &ctx.request.target;
    let path = target.path(req);
    let rewritten = router::rewrite_path(&route.path, &route.rewrite, path);
    if let (Some(new), PathRewrite::Template(_)) = (&rewritten, &route.rewrite) {
        // Parameters put together may spell what the upstream would read otherwise ("/{a}{b}"
        // with "." and "."): such a path is refused, never sent.
        if !matches!(canonical::path(new, &ctx.gateway.path_normalization), Ok(c) if c == new.as_str())
        {
            return Err(status_error(
                400,
                "the route's rewrite gives a path that is not canonical",
            ));
        }
    }
    // A downstream HTTP/2 request's `:authority` goes to an HTTP/2 upstream as it came, unless
    // it was not canonical.
    let h2_upstream = upstream_request.version == http::Version::HTTP_2;
    let authority = target
        .upstream_host
        .as_ref()
        .filter(|_| h2_upstream && req.uri.authority().is_some());
    if rewritten.is_none() && !target.path_changed() && !target.absolute_form && authority.is_none()
    {
        return Ok(());
    }
    let new_path = rewritten.as_deref().unwrap_or(path);
    let pq = match req.uri.query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path.to_string(),
    };
    // Towards an HTTP/2 upstream keep the scheme and authority (a downstream HTTP/2 request's
    // `:authority`, which the upstream `:authority` is built from); towards HTTP/1 send
    // origin-form.
    let mut parts = if h2_upstream {
        req.uri.clone().into_parts()
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
    let uri =
        http::Uri::from_parts(parts).map_err(|_| status_error(400, "invalid rewritten path"))?;
    upstream_request.set_uri(uri);
    Ok(())
}

/// `Host`: the canonical host when it differs from what the client sent; for an HTTP/1.0
/// request without one (sent upstream as HTTP/1.1, which needs one) the peer's address, as
/// nginx sends by default.
fn set_host(upstream_request: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
    if let Some(host) = &ctx.request.target.upstream_host {
        upstream_request.insert_header(header::HOST, host.clone())?;
    } else if !ctx.request.target.has_host() {
        if let Some(peer) = ctx.upstream.tried.last() {
            upstream_request.insert_header(header::HOST, peer.to_string())?;
        }
    }
    Ok(())
}

/// Identity headers come from the gateway only, never from the client.
fn set_identity(upstream_request: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
    // A client's own were dropped with the forwarding headers (`headers::set_forwarding`).
    if let Some(identity) = &ctx.caller.identity {
        let (name, groups) = ctx.gateway.policies.identity_headers(identity);
        upstream_request.insert_header(written::X_CONSUMER, name.clone())?;
        if let Some(g) = groups {
            upstream_request.insert_header(written::X_CONSUMER_GROUPS, g.clone())?;
        }
    }
    Ok(())
}

/// `X-Forwarded-Client-Cert` describes the client certificate verified on the connection (and
/// only that: a client's own, in any spelling, is dropped).
fn set_client_cert(upstream_request: &mut RequestHeader, session: &Session) -> Result<()> {
    if let Some(c) = super::client_cert_of(session) {
        upstream_request.insert_header(written::X_FORWARDED_CLIENT_CERT, c.forwarded.clone())?;
    }
    Ok(())
}

/// The request id: the client's `X-Request-Id` when it is usable, else a new one.
pub(super) fn request_id(session: &Session) -> http::HeaderValue {
    headers::request_id(session.req_header().headers.get(&wire::X_REQUEST_ID))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_hash_on_their_octets() {
        let mut buf = [0u8; 16];
        assert_eq!(
            ip_bytes(Some("10.1.2.3".parse().unwrap()), &mut buf),
            &[10, 1, 2, 3]
        );
        assert_eq!(ip_bytes(Some("::1".parse().unwrap()), &mut buf).len(), 16);
        assert_eq!(ip_bytes(None, &mut buf), b"");
    }
}
