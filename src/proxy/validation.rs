//! Requests checked against the route's OpenAPI operation: the parameters before anything
//! else is read (and before `Expect: 100-continue` is answered), then the body, read whole up
//! to the check's limit into Pingora's retry buffer, from which the proxy sends it on. A
//! refused request never reaches the upstream: it is answered `400` (or `415`, `413`) with a
//! problem listing each violation. Upstream answers are compared with the operation when the
//! route reports them (`responses: report`): counted and logged, never blocked.

use super::ctx::Ctx;
use crate::errors::{status_error, Problem};
use crate::gateway::CompiledRoute;
use crate::openapi::answer::{Expect, MAX_CHECKED_ANSWER};
use crate::openapi::check::BodyRefusal;
use crate::openapi::Violation;
use bytes::BytesMut;
use http::header;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Why a request was refused: the problem's kind, its detail and its `errors` member.
pub(crate) struct Refusal {
    pub(super) problem: Problem,
    pub(super) detail: String,
    pub(super) errors: Option<serde_json::Value>,
}

/// A `400` refusal listing `violations`.
fn invalid(violations: &[Violation], ctx: &mut Ctx) -> Box<pingora_error::Error> {
    let detail = match violations.len() {
        1 => "1 violation of the API description".to_string(),
        n => format!("{n} violations of the API description"),
    };
    let errors = violations.iter().map(Violation::to_json).collect();
    if let Some(route) = ctx.route() {
        route.metrics.api_violation("request");
    }
    ctx.request.invalid = Some(Box::new(Refusal {
        problem: Problem::REQUEST_INVALID,
        detail,
        errors: Some(serde_json::Value::Array(errors)),
    }));
    status_error(400, "request refused by the API description")
}

/// The route's request checks, and the largest body they read.
fn checks_of(route: &CompiledRoute) -> Option<(&crate::openapi::RequestRules, u64)> {
    let api = route.api.as_ref()?;
    let max = api.max_body_size;
    Some((
        api.rules.as_ref()?,
        route.max_body_size.map_or(max, |m| m.min(max)),
    ))
}

/// Check the request's parameters (path, query, headers, cookies), and its declared body
/// size, before `Expect: 100-continue` is answered.
pub(super) fn check_head(route: &CompiledRoute, session: &Session, ctx: &mut Ctx) -> Result<()> {
    let Some((rules, limit)) = checks_of(route) else {
        return Ok(());
    };
    let declared = super::admission::declared_length(session);
    if rules.checks_body() && declared.is_some_and(|n| n > limit) {
        return Err(status_error(
            413,
            "declared body over the API check's limit",
        ));
    }
    let req = session.req_header();
    let path = ctx.request.target.path(req);
    let violations = rules.check_head(path, req.uri.query(), &req.headers);
    if violations.is_empty() {
        return Ok(());
    }
    Err(invalid(&violations, ctx))
}

/// Read the body whole and check it (after `Expect` was answered).
pub(super) async fn check_body(
    route: &CompiledRoute,
    session: &mut Session,
    ctx: &mut Ctx,
    door: &crate::front::FrontDoor,
) -> Result<()> {
    let Some((rules, limit)) = checks_of(route).filter(|(r, _)| r.checks_body()) else {
        return Ok(());
    };
    let (each, total) = door.body_read_limits(limit);
    let deadline = tokio::time::Instant::now().checked_add(total);
    let downstream = session.as_downstream_mut();
    // Everything read stays in Pingora's retry buffer (64 KiB, at least the limit), which the
    // proxy sends to the upstream before reading on.
    downstream.enable_retry_buffering();
    let mut body = BytesMut::new();
    loop {
        let wait = deadline.map_or(each, |d| {
            each.min(d.saturating_duration_since(tokio::time::Instant::now()))
        });
        let read = tokio::time::timeout(wait, downstream.read_request_body()).await;
        let Ok(read) = read else {
            return Err(status_error(408, "request body too slow"));
        };
        let Some(chunk) = read.map_err(super::admission::body_read_failed)? else {
            break;
        };
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(status_error(413, "request body over the API check's limit"));
        }
        body.extend_from_slice(&chunk);
    }
    match rules.check_body(&session.req_header().headers, &body) {
        Ok(()) => Ok(()),
        Err(BodyRefusal::Invalid(violations)) => Err(invalid(&violations, ctx)),
        Err(BodyRefusal::UnsupportedMediaType(why)) => {
            route.metrics.api_violation("media_type");
            ctx.request.invalid = Some(Box::new(Refusal {
                problem: Problem::UNSUPPORTED_MEDIA_TYPE,
                detail: why,
                errors: None,
            }));
            Err(status_error(
                415,
                "media type refused by the API description",
            ))
        }
    }
}

/// An upstream answer being read for the comparison.
pub(crate) struct AnswerCheck {
    status: u16,
    described: usize,
    body: BytesMut,
    /// Longer than the comparison reads: passed on unchecked.
    too_long: bool,
}

/// Compare an upstream answer's head with the route's operation; when its body is to be
/// compared too, start keeping it.
pub(super) fn answer_started(session: &Session, resp: &ResponseHeader, ctx: &mut Ctx) {
    let Some(rules) = ctx.route().and_then(|r| r.api.as_ref()?.responses.as_ref()) else {
        return;
    };
    let headers = &resp.headers;
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|c| !c.as_bytes().eq_ignore_ascii_case(b"identity"));
    let has_body = session.req_header().method != http::Method::HEAD
        && !matches!(resp.status.as_u16(), 204 | 304)
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() != b"0");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let status = resp.status.as_u16();
    match rules.expect(status, content_type, has_body) {
        // An encoded body cannot be read without decoding it: only its head is compared.
        Expect::Body(_) if encoded => {}
        Expect::Body(described) => {
            ctx.answer = Some(Box::new(AnswerCheck {
                status,
                described,
                body: BytesMut::new(),
                too_long: false,
            }))
        }
        Expect::Mismatch(why) => report(ctx, status, &why),
        Expect::Nothing => {}
    }
}

/// Keep a chunk of the answer being compared; compare it once it has all come.
pub(super) fn answer_chunk(ctx: &mut Ctx, chunk: Option<&bytes::Bytes>, end: bool) {
    let Some(check) = ctx.answer.as_mut() else {
        return;
    };
    if let Some(chunk) = chunk {
        if check.body.len() + chunk.len() > MAX_CHECKED_ANSWER {
            check.too_long = true;
            check.body = BytesMut::new();
        } else if !check.too_long {
            check.body.extend_from_slice(chunk);
        }
    }
    if !end {
        return;
    }
    let Some(check) = ctx.answer.take() else {
        return;
    };
    if check.too_long {
        return;
    }
    let Some(rules) = ctx.route().and_then(|r| r.api.as_ref()?.responses.as_ref()) else {
        return;
    };
    let violations = rules.check(check.described, &check.body);
    if let Some(first) = violations.first() {
        let more = match violations.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        let why = format!("{}: {}{more}", first.pointer, first.detail);
        report(ctx, check.status, &why);
    }
}

/// Count an answer that does not match the route's operation, and say why (at most once per
/// route every 10 seconds).
fn report(ctx: &Ctx, status: u16, why: &str) {
    let Some(route) = ctx.route() else { return };
    route.metrics.api_violation("response");
    let logs = route
        .api
        .as_ref()
        .and_then(|a| a.responses.as_ref())
        .is_some_and(|r| r.should_log());
    if logs {
        log::warn!(
            "route \"{}\": the upstream's {status} answer does not match the OpenAPI document: {why}",
            route.name
        );
    }
}
