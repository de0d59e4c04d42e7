//! Requests checked against the route's OpenAPI operation: the parameters before anything
//! else is read (and before `Expect: 100-continue` is answered), then the body, read whole up
//! to the check's limit into Pingora's retry buffer, from which the proxy sends it on. A
//! refused request never reaches the upstream: it is answered `400` (or `415`, `413`) with a
//! problem listing each violation.

use super::ctx::Ctx;
use crate::errors::{status_error, Problem};
use crate::gateway::CompiledRoute;
use crate::openapi::check::BodyRefusal;
use crate::openapi::Violation;
use bytes::BytesMut;
use http::header;
use pingora_error::Result;
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
    ctx.request.invalid = Some(Box::new(Refusal {
        problem: Problem::REQUEST_INVALID,
        detail,
        errors: Some(serde_json::Value::Array(errors)),
    }));
    status_error(400, "request refused by the API description")
}

/// Check the request's parameters (path, query, headers, cookies).
pub(super) fn check_head(route: &CompiledRoute, session: &Session, ctx: &mut Ctx) -> Result<()> {
    let Some(rules) = route.api.as_ref().and_then(|a| a.rules.as_ref()) else {
        return Ok(());
    };
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
) -> Result<()> {
    let Some((rules, max)) = route
        .api
        .as_ref()
        .and_then(|a| Some((a.rules.as_ref()?, a.max_body_size)))
    else {
        return Ok(());
    };
    if !rules.checks_body() {
        return Ok(());
    }
    let limit = route.max_body_size.map_or(max, |m| m.min(max));
    let declared = session
        .req_header()
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(status_error(
            413,
            "declared body over the API check's limit",
        ));
    }
    let downstream = session.as_downstream_mut();
    // Everything read stays in Pingora's retry buffer (64 KiB, at least the limit), which the
    // proxy sends to the upstream before reading on.
    downstream.enable_retry_buffering();
    let mut body = BytesMut::new();
    while let Some(chunk) = downstream
        .read_request_body()
        .await
        .map_err(super::admission::body_read_failed)?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(status_error(413, "request body over the API check's limit"));
        }
        body.extend_from_slice(&chunk);
    }
    match rules.check_body(&session.req_header().headers, &body) {
        Ok(()) => Ok(()),
        Err(BodyRefusal::Invalid(violations)) => Err(invalid(&violations, ctx)),
        Err(BodyRefusal::UnsupportedMediaType(why)) => {
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
