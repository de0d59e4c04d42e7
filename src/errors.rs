//! How failures become answers: the status code for each kind of error, and the JSON body
//! `{"error": "...", "status": N, "request_id": "..."}`. Messages are fixed per status, so no
//! address, file name or stack trace can leak to a client.

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

/// The fixed, client-safe message for a status.
pub fn message_for(status: u16) -> &'static str {
    match status {
        400 => "malformed request",
        401 => "authentication required",
        403 => "forbidden",
        404 => "no route matches this request",
        405 => "method not allowed",
        408 => "request timed out",
        413 => "request body too large",
        429 => "too many requests",
        431 => "request header fields too large",
        500 => "internal gateway error",
        501 => "not implemented",
        502 => "upstream connection failed",
        503 => "no healthy upstream peer",
        504 => "upstream timed out",
        505 => "HTTP version not supported",
        _ => "request failed",
    }
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

/// The JSON error body.
pub fn body(status: u16, request_id: &str) -> Bytes {
    let v = serde_json::json!({
        "error": message_for(status),
        "status": status,
        "request_id": request_id,
    });
    Bytes::from(v.to_string())
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
    fn body_is_json() {
        let b = body(503, "id-1");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["status"], 503);
        assert_eq!(v["request_id"], "id-1");
        assert_eq!(v["error"], "no healthy upstream peer");
    }
}
