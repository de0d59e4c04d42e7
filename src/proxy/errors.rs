//! How failures become answers: the status code for each kind of error, and the JSON body
//! `{"error": "...", "status": N, "request_id": "..."}`. Messages are fixed per status, so no
//! address, file name or stack trace can leak to a client.

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType};

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
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
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

/// The fixed, client-safe message for a status.
pub fn message_for(status: u16) -> &'static str {
    match status {
        400 => "malformed request",
        401 => "authentication required",
        403 => "forbidden",
        404 => "no route matches this request",
        408 => "request timed out",
        413 => "request body too large",
        429 => "too many requests",
        431 => "request header fields too large",
        500 => "internal gateway error",
        502 => "upstream connection failed",
        503 => "no healthy upstream peer",
        504 => "upstream timed out",
        _ => "request failed",
    }
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
