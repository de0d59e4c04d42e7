//! What a finished request leaves behind: its metrics and its access-log line.

use super::ctx::Ctx;
use crate::observe::access_log::{AccessLog, Entry, RequestText};
use crate::observe::metrics::{method_label, Metrics};
use crate::observe::otlp::{unix_nanos, RequestSpans, SpanExporter};
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Count the request, log its line and export its spans.
pub(super) fn report(
    metrics: &Metrics,
    access_log: Option<&AccessLog>,
    spans: Option<&SpanExporter>,
    session: &Session,
    e: Option<&Error>,
    ctx: &mut Ctx,
) {
    if session.as_downstream().is_subrequest() {
        return;
    }
    let req = session.req_header();
    // The gateway's own refusal counts with its HTTP status even when a gRPC client got it as a
    // gRPC status in an HTTP 200.
    let status = ctx
        .request
        .error_status
        .or_else(|| session.response_written().map(|r| r.status.as_u16()))
        .unwrap_or(0);
    let route = ctx.route();
    let elapsed = ctx.request.start.elapsed();
    metrics.record_request(
        route.map(|r| &r.metrics),
        method_label(&req.method),
        status,
        elapsed.as_secs_f64(),
    );
    let cache_status = route
        .filter(|r| r.cache.is_some())
        .map(|_| crate::cache::status_label(&session.cache.phase()));
    if let (Some(route), Some(label)) = (route, cache_status) {
        route.metrics.cache_status(label);
    }
    if let (Some(e), Some(route)) = (e, route) {
        if let Some(kind) = upstream_error_kind(e) {
            route.target(ctx.upstream.pool).1.upstream_error(kind);
        }
    }
    if let Some(exporter) = spans {
        if let Some(record) = request_spans(session, e, ctx, status) {
            exporter.submit(record);
        }
    }
    let Some(log) = access_log else {
        return;
    };
    let target = &ctx.request.target;
    let body_bytes_sent = session.body_bytes_sent() as u64;
    let header_bytes = session.response_written().map_or(0, header_bytes);
    let tls = super::tls_of(session);
    let (host, raw_host) = target.hosts(req);
    let trace = ctx.request.trace.as_ref();
    let (trace_id, span_id) = (
        trace.map(|t| t.trace_id_hex()),
        trace.map(|t| t.span_id_hex()),
    );
    log.write(&Entry {
        time: ctx.request.started_at,
        request_id: ctx.request.id.as_bytes(),
        client_ip: ctx.request.client.ip,
        method: Some(&req.method),
        protocol: protocol(req.version),
        text: RequestText {
            host,
            path: target.path(req),
            raw_path: target.path_changed().then(|| req.uri.path()),
            raw_host,
            query: req.uri.query().filter(|_| log.logs_query()),
            user_agent: req
                .headers
                .get(http::header::USER_AGENT)
                .map(http::HeaderValue::as_bytes),
        },
        status,
        bytes_received: session.body_bytes_read() as u64,
        bytes_sent: header_bytes + body_bytes_sent,
        body_bytes_sent,
        duration: elapsed,
        route: route.map(|r| &*r.name),
        upstream: route.map(|r| &**r.target(ctx.upstream.pool).1.upstream()),
        tried: &ctx.upstream.tried,
        upstream_status: ctx.upstream.status,
        upstream_connect: ctx.upstream.connect,
        upstream_response: ctx.upstream.response,
        tls_version: tls.map(crate::tls::version),
        tls_server_name: tls.and_then(crate::tls::server_name),
        trace_id: trace_id.as_deref(),
        span_id: span_id.as_deref(),
        consumer: ctx
            .caller
            .identity
            .as_ref()
            .and_then(|i| ctx.gateway.policies.name_of(i)),
        cache_status,
        error: e.map(|e| e.etype().as_str()),
    });
}

/// A sampled request's spans, as the exporter takes them.
fn request_spans(
    session: &Session,
    e: Option<&Error>,
    ctx: &Ctx,
    status: u16,
) -> Option<RequestSpans> {
    let trace = ctx.request.trace.as_ref().filter(|t| t.recording)?;
    let req = session.req_header();
    let target = &ctx.request.target;
    let tls = super::tls_of(session).is_some();
    Some(RequestSpans {
        trace_id: trace.trace_id,
        span_id: trace.span_id,
        parent_id: trace.parent_id,
        trace_state: trace
            .state
            .as_ref()
            .and_then(|s| s.to_str().ok())
            .map(str::to_string),
        start_ns: unix_nanos(ctx.request.started_at),
        end_ns: unix_nanos(std::time::SystemTime::now()),
        method: req.method.as_str().to_string(),
        scheme: if tls { "https" } else { "http" },
        host: target.host(req).map(str::to_string),
        path: target.path(req).to_string(),
        upstream_target: trace.upstream_target.clone(),
        query: req.uri.query().map(str::to_string),
        route: ctx.route().map(|r| r.name.clone()),
        status,
        client: ctx.request.client.ip,
        user_agent: req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        protocol: match req.version {
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            _ => "1.1",
        },
        error: e.map(|e| e.etype().as_str()),
        attempts: trace.attempts.clone(),
    })
}

/// The protocol as logged.
fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

/// The size of a response's header section as HTTP/1.1 writes it: status line, fields, blank
/// line (on HTTP/2 the same fields travel compressed).
fn header_bytes(resp: &ResponseHeader) -> u64 {
    let reason = resp.status.canonical_reason().map_or(0, str::len);
    let status_line = "HTTP/1.1 200 ".len() + reason + 2;
    let fields: usize = resp
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    (status_line + fields + 2) as u64
}

/// How an upstream failure is counted (connection failures are counted when they happen, see
/// `forward::connect_failed`); `None` for errors that are not the upstream's.
pub(super) fn upstream_error_kind(e: &Error) -> Option<&'static str> {
    if e.esource() != &ErrorSource::Upstream {
        return None;
    }
    match e.etype() {
        ErrorType::ConnectRefused
        | ErrorType::ConnectTimedout
        | ErrorType::ConnectError
        | ErrorType::ConnectNoRoute => None,
        ErrorType::ReadTimedout => Some("read_timeout"),
        ErrorType::WriteTimedout => Some("write_timeout"),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => Some("reset"),
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::H2Error => Some("protocol"),
        _ => Some("other"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_are_counted_by_kind() {
        let up = |t: ErrorType| {
            let e = Error::new(t).into_up();
            upstream_error_kind(&e)
        };
        assert_eq!(up(ErrorType::ReadTimedout), Some("read_timeout"));
        assert_eq!(up(ErrorType::ConnectionClosed), Some("reset"));
        assert_eq!(up(ErrorType::H1Error), Some("protocol"));
        assert_eq!(up(ErrorType::ConnectRefused), None);
        assert_eq!(up(ErrorType::InternalError), Some("other"));
        let down = Error::new(ErrorType::ReadTimedout).into_down();
        assert_eq!(upstream_error_kind(&down), None);
    }
}
