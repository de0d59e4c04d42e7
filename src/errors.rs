//! How failures become answers: the status code for each kind of error, and the body: an RFC 9457
//! problem details object (`application/problem+json`) with `type`, `title`, `status`, `detail`,
//! `instance` and the `request_id` extension. Each kind of problem has a short, stable `type`
//! URI ([`Problem::type_uri`]); titles and details are fixed per kind, so no address, file name
//! or stack trace can leak to a client.

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType};

/// An error that the gateway answers with `code` (`why` is for the error log).
pub fn status_error(code: u16, why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(code), why)
}

/// The status a client should see for `e`; 0 when the client is gone and nothing can be sent.
pub fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => *code,
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
            match e.esource() {
                ErrorSource::Downstream => 408,
                _ => 504,
            }
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match (e.etype(), client_read_failure(e)) {
                // The front door refused the body's framing, or the client sent it too slowly.
                (ReadError, Some(BodyRefused::Framing(_))) => 400,
                (ReadError, Some(BodyRefused::TooSlow)) => 408,
                (WriteError | ReadError | ConnectionClosed, _) => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => match e.etype() {
                ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
                | TLSHandshakeFailure => 502,
                _ => 500,
            },
        },
    }
}

/// A request body the front door refused while it was being read: its framing was malformed,
/// or it arrived too slowly. Carried inside the `io::Error` the read fails with, so that the
/// failure is told apart from a client that went away (TLS errors are `InvalidData` too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRefused {
    /// Malformed framing; the reason label.
    Framing(&'static str),
    /// Too slow for `client_body_timeout` / `client_body_min_rate`.
    TooSlow,
}

impl std::fmt::Display for BodyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyRefused::Framing(reason) => write!(f, "malformed request body framing ({reason})"),
            BodyRefused::TooSlow => f.write_str("the client sent its request body too slowly"),
        }
    }
}

impl std::error::Error for BodyRefused {}

impl BodyRefused {
    /// The I/O error a read fails with.
    pub fn into_io(self) -> std::io::Error {
        let kind = match self {
            BodyRefused::Framing(_) => std::io::ErrorKind::InvalidData,
            BodyRefused::TooSlow => std::io::ErrorKind::TimedOut,
        };
        std::io::Error::new(kind, self)
    }
}

/// The front door's refusal under a failed read from the client, if that is what `e` is.
fn client_read_failure(e: &Error) -> Option<BodyRefused> {
    e.root_cause()
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<BodyRefused>())
        .copied()
}

/// The media type of problem details (RFC 9457 section 3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What every problem `type` URI starts with: a tag URI (RFC 4151), a stable identifier that is
/// not meant to be dereferenced. The README lists every kind.
pub const PROBLEM_TYPE_PREFIX: &str = "tag:tollgate,2026:";

/// A kind of problem the gateway (or its admin API) answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    /// The last part of the `type` URI.
    pub slug: &'static str,
    pub status: u16,
    /// The same for every occurrence of the kind.
    pub title: &'static str,
    /// What happened, in words a client can act on.
    pub detail: &'static str,
}

macro_rules! problems {
    ($($name:ident = $slug:literal, $status:literal, $title:literal, $detail:literal;)*) => {
        impl Problem {
            $(pub const $name: Problem = Problem {
                slug: $slug,
                status: $status,
                title: $title,
                detail: $detail,
            };)*
            /// Every kind, for the documentation and tests.
            pub const ALL: &'static [Problem] = &[$(Problem::$name),*];
        }
    };
}

problems! {
    BAD_REQUEST = "bad-request", 400, "Bad request", "malformed request";
    UNAUTHENTICATED = "unauthenticated", 401, "Authentication required", "authentication required";
    FORBIDDEN = "forbidden", 403, "Forbidden", "forbidden";
    CORS_REFUSED = "cors-refused", 403, "CORS preflight refused", "the origin, method or a request header is not allowed by the route's CORS rules";
    NO_ROUTE = "no-route", 404, "No route", "no route matches this request";
    METHOD_NOT_ALLOWED = "method-not-allowed", 405, "Method not allowed", "method not allowed";
    REQUEST_TIMEOUT = "request-timeout", 408, "Request timeout", "request timed out";
    BODY_TOO_LARGE = "body-too-large", 413, "Request body too large", "request body too large";
    REQUEST_INVALID = "request-invalid", 400, "Request validation failed", "the request does not match the route's API description";
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type", 415, "Unsupported media type", "the route's API description takes no body of this media type";
    RATE_LIMITED = "rate-limited", 429, "Rate limit exceeded", "too many requests";
    QUOTA_EXCEEDED = "quota-exceeded", 429, "Quota exceeded", "the plan's quota for this period is used up";
    CONCURRENCY_LIMITED = "concurrency-limited", 429, "Concurrency limit exceeded", "too many requests in flight";
    HEADER_TOO_LARGE = "header-too-large", 431, "Request header fields too large", "request header fields too large";
    INTERNAL = "internal-error", 500, "Internal gateway error", "internal gateway error";
    NOT_IMPLEMENTED = "not-implemented", 501, "Not implemented", "not implemented";
    UPSTREAM_FAILED = "upstream-failed", 502, "Upstream connection failed", "upstream connection failed";
    NO_HEALTHY_UPSTREAM = "no-healthy-upstream", 503, "No healthy upstream", "no healthy upstream peer";
    UPSTREAM_TIMEOUT = "upstream-timeout", 504, "Upstream timed out", "upstream timed out";
    VERSION_NOT_SUPPORTED = "version-not-supported", 505, "HTTP version not supported", "HTTP version not supported";
    REQUEST_FAILED = "request-failed", 0, "Request failed", "request failed";
    ADMIN_NOT_FOUND = "admin-not-found", 404, "Not found", "no such admin endpoint";
    ADMIN_INVALID = "admin-invalid-request", 400, "Invalid admin request", "the request could not be read";
    ADMIN_CONFLICT = "admin-conflict", 409, "Conflict", "the request does not apply to this resource";
    CONFIG_REFUSED = "config-refused", 422, "Configuration refused", "the configuration file is invalid; the running configuration keeps serving";
}

impl Problem {
    /// The kind of problem a gateway answer with `status` reports.
    pub fn for_status(status: u16) -> Problem {
        match status {
            400 => Problem::BAD_REQUEST,
            401 => Problem::UNAUTHENTICATED,
            403 => Problem::FORBIDDEN,
            404 => Problem::NO_ROUTE,
            405 => Problem::METHOD_NOT_ALLOWED,
            408 => Problem::REQUEST_TIMEOUT,
            413 => Problem::BODY_TOO_LARGE,
            429 => Problem::RATE_LIMITED,
            431 => Problem::HEADER_TOO_LARGE,
            500 => Problem::INTERNAL,
            501 => Problem::NOT_IMPLEMENTED,
            502 => Problem::UPSTREAM_FAILED,
            503 => Problem::NO_HEALTHY_UPSTREAM,
            504 => Problem::UPSTREAM_TIMEOUT,
            505 => Problem::VERSION_NOT_SUPPORTED,
            _ => Problem {
                status,
                ..Problem::REQUEST_FAILED
            },
        }
    }

    /// The `type` member: the prefix and the kind's slug.
    pub fn type_uri(&self) -> String {
        format!("{PROBLEM_TYPE_PREFIX}{}", self.slug)
    }

    /// The problem details body. `instance` is the request's path when it is known, `detail`
    /// replaces the kind's own, and `extra` members (e.g. a list of errors) are added.
    pub fn body(
        &self,
        request_id: Option<&str>,
        instance: Option<&str>,
        detail: Option<&str>,
        extra: Option<(&str, serde_json::Value)>,
    ) -> Bytes {
        let mut v = serde_json::json!({
            "type": self.type_uri(),
            "title": self.title,
            "status": self.status,
            "detail": detail.unwrap_or(self.detail),
        });
        if let Some(m) = v.as_object_mut() {
            if let Some(i) = instance {
                m.insert("instance".into(), i.into());
            }
            if let Some(id) = request_id {
                m.insert("request_id".into(), id.into());
            }
            if let Some((k, x)) = extra {
                m.insert(k.into(), x);
            }
        }
        Bytes::from(v.to_string())
    }
}

/// The fixed, client-safe message for a status (what a gRPC client gets as `grpc-message`).
pub fn message_for(status: u16) -> &'static str {
    Problem::for_status(status).detail
}

/// The gRPC status code a gRPC client gets for a gateway answer with HTTP `status`: the gRPC
/// project's HTTP-to-gRPC mapping, except that the gateway's own size and rate refusals say
/// `RESOURCE_EXHAUSTED` and a client that stalled says `DEADLINE_EXCEEDED`.
pub fn grpc_code(status: u16) -> u8 {
    match status {
        400 | 500 => 13,      // INTERNAL
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 => 12,            // UNIMPLEMENTED
        408 => 4,             // DEADLINE_EXCEEDED
        413 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
        502..=504 => 14,      // UNAVAILABLE
        _ => 2,               // UNKNOWN
    }
}

/// True for a gRPC request (`application/grpc`, `application/grpc+proto`, gRPC-Web, ...): its
/// errors are answered the gRPC way, as status and message in a trailers-only response.
pub fn is_grpc(content_type: Option<&http::HeaderValue>) -> bool {
    content_type.is_some_and(|v| {
        let b = v.as_bytes();
        b.len() >= 16
            && b[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(b.get(16), None | Some(b'+' | b';' | b'-'))
    })
}

/// The problem details body of a gateway answer with `status`.
pub fn body(status: u16, request_id: &str, instance: Option<&str>) -> Bytes {
    Problem::for_status(status).body(Some(request_id), instance, None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let e = Error::new(ErrorType::HTTPStatus(404));
        assert_eq!(status_for(&e), 404);
        let mut e = Error::new(ErrorType::ConnectRefused);
        e.esource = ErrorSource::Upstream;
        assert_eq!(status_for(&e), 502);
        let mut e = Error::new(ErrorType::ReadTimedout);
        e.esource = ErrorSource::Upstream;
        assert_eq!(status_for(&e), 504);
        let mut e = Error::new(ErrorType::ConnectionClosed);
        e.esource = ErrorSource::Downstream;
        assert_eq!(status_for(&e), 0);
        let io = BodyRefused::Framing("chunk_size_line").into_io();
        let mut e = Error::because(ErrorType::ReadError, "reading body", io);
        e.esource = ErrorSource::Downstream;
        assert_eq!(status_for(&e), 400);
        let io = BodyRefused::TooSlow.into_io();
        let mut e = Error::because(ErrorType::ReadError, "reading body", io);
        e.esource = ErrorSource::Downstream;
        assert_eq!(status_for(&e), 408);
        // A TLS failure is InvalidData too: the client is gone, not refused.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad record mac");
        let mut e = Error::because(ErrorType::ReadError, "reading body", io);
        e.esource = ErrorSource::Downstream;
        assert_eq!(status_for(&e), 0);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "gone");
        let mut e = Error::because(ErrorType::ReadError, "reading body", io);
        e.esource = ErrorSource::Downstream;
        assert_eq!(status_for(&e), 0);
    }

    #[test]
    fn grpc() {
        assert_eq!(grpc_code(401), 16);
        assert_eq!(grpc_code(429), 8);
        assert_eq!(grpc_code(503), 14);
        assert_eq!(grpc_code(404), 12);
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/gRPC-web",
        ] {
            assert!(is_grpc(Some(&http::HeaderValue::from_static(yes))), "{yes}");
        }
        for no in ["application/json", "application/grpcx", "text/grpc"] {
            assert!(!is_grpc(Some(&http::HeaderValue::from_static(no))), "{no}");
        }
        assert!(!is_grpc(None));
    }

    #[test]
    fn bodies_are_problem_details() {
        let b = body(503, "id-1", Some("/api/x"));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["type"], "tag:tollgate,2026:no-healthy-upstream");
        assert_eq!(v["title"], "No healthy upstream");
        assert_eq!(v["status"], 503);
        assert_eq!(v["detail"], "no healthy upstream peer");
        assert_eq!(v["instance"], "/api/x");
        assert_eq!(v["request_id"], "id-1");
        let v: serde_json::Value =
            serde_json::from_slice(&Problem::for_status(418).body(None, None, None, None)).unwrap();
        assert_eq!(v["status"], 418);
        assert_eq!(v["type"], "tag:tollgate,2026:request-failed");
        assert!(v.get("instance").is_none() && v.get("request_id").is_none());
    }

    #[test]
    fn every_kind_has_its_own_type() {
        let mut slugs: Vec<&str> = Problem::ALL.iter().map(|p| p.slug).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), Problem::ALL.len());
    }
}
