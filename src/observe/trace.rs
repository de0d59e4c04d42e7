//! W3C Trace Context (`traceparent`, `tracestate`): a request's trace is the one its client
//! sent, when its `traceparent` is valid, or a new one (sampled at the configured ratio); the
//! gateway's own span gets a new id, which becomes the parent the upstream sees. The ids are in
//! the access log, so log lines and traces meet.

use super::otlp::AttemptSpan;
use http::header::{HeaderMap, HeaderValue};
use std::net::SocketAddr;
use std::time::SystemTime;

/// The trace a request belongs to, and the gateway's span in it.
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The span the client's `traceparent` named, if any.
    pub parent_id: Option<[u8; 8]>,
    pub sampled: bool,
    /// The client's `tracestate`, passed on with a trace it continued.
    pub state: Option<HeaderValue>,
    /// The tries at the upstream, each a client span (the upstream's parent); kept only while
    /// `recording` (the request is sampled and its spans exported).
    pub attempts: Vec<AttemptSpan>,
    pub recording: bool,
    /// The target the upstream was sent (path and query, after rewrites), when recording.
    pub upstream_target: Option<String>,
}

impl TraceContext {
    /// Continue the client's trace, or start one sampled at `ratio` (0 to 1).
    pub fn from_request(headers: &HeaderMap, ratio: f64) -> TraceContext {
        let span_id = nonzero8();
        let mut parents = headers.get_all("traceparent").iter();
        let parsed = match (parents.next(), parents.next()) {
            (Some(v), None) => parse(v.as_bytes()),
            _ => None,
        };
        match parsed {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id,
                parent_id: Some(parent),
                sampled: flags & 1 == 1,
                state: headers.get("tracestate").cloned(),
                attempts: Vec::new(),
                recording: false,
                upstream_target: None,
            },
            None => {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&nonzero8());
                trace_id[8..].copy_from_slice(&fastrand::u64(..).to_be_bytes());
                TraceContext {
                    trace_id,
                    span_id,
                    parent_id: None,
                    sampled: fastrand::f64() < ratio,
                    state: None,
                    attempts: Vec::new(),
                    recording: false,
                    upstream_target: None,
                }
            }
        }
    }

    /// A try at `peer` starts: a new client span, the previous try's ended.
    pub fn begin_attempt(&mut self, peer: SocketAddr, tls: bool) {
        if !self.recording {
            return;
        }
        let now = super::otlp::unix_nanos(SystemTime::now());
        if let Some(last) = self.attempts.last_mut() {
            last.end_ns.get_or_insert(now);
            last.error.get_or_insert("retried");
        }
        self.attempts.push(AttemptSpan {
            span_id: nonzero8(),
            start_ns: now,
            end_ns: None,
            peer,
            tls,
            status: None,
            error: None,
        });
    }

    /// The current try failed (`kind`: how; `None` when its answer's status says it).
    pub fn attempt_failed(&mut self, kind: Option<&'static str>) {
        if let Some(last) = self.attempts.last_mut() {
            last.end_ns
                .get_or_insert(super::otlp::unix_nanos(SystemTime::now()));
            if let Some(kind) = kind {
                last.error.get_or_insert(kind);
            }
        }
    }

    /// The current try's upstream answered with `status`.
    pub fn attempt_answered(&mut self, status: u16) {
        if let Some(last) = self.attempts.last_mut() {
            last.status = Some(status);
        }
    }

    /// The `traceparent` for the upstream: this trace, the current try's client span as the
    /// parent when spans are recorded, else the gateway's span (the one in the access log).
    pub fn traceparent(&self) -> HeaderValue {
        let parent = self.attempts.last().map_or(self.span_id, |a| a.span_id);
        let text = format!(
            "00-{}-{}-{}",
            hex::encode(self.trace_id),
            hex::encode(parent),
            if self.sampled { "01" } else { "00" }
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex::encode(self.span_id)
    }
}

fn nonzero8() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

/// `00-<32 hex>-<16 hex>-<2 hex>` (lower-case hex, ids not all zero); later versions are read
/// by their first four fields, as the standard asks.
fn parse(v: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let text = std::str::from_utf8(v).ok()?.trim();
    let mut parts = text.split('-');
    let version = parts.next()?;
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !lower_hex(trace, 32) || !lower_hex(parent, 16) || !lower_hex(flags, 2) {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut parent_id = [0u8; 8];
    hex::decode_to_slice(trace, &mut trace_id).ok()?;
    hex::decode_to_slice(parent, &mut parent_id).ok()?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    let mut f = [0u8; 1];
    hex::decode_to_slice(flags, &mut f).ok()?;
    Some((trace_id, parent_id, f[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(tp: &[&str]) -> TraceContext {
        let mut h = HeaderMap::new();
        for v in tp {
            h.append("traceparent", HeaderValue::from_str(v).unwrap());
        }
        h.insert("tracestate", HeaderValue::from_static("vendor=1"));
        TraceContext::from_request(&h, 0.0)
    }

    #[test]
    fn a_valid_parent_is_continued_and_anything_else_starts_a_trace() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = ctx(&[good]);
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            c.parent_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert!(c.sampled);
        assert_ne!(c.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(c.state.as_ref().unwrap(), "vendor=1");
        let tp = c.traceparent();
        let tp = tp.to_str().unwrap();
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(tp.ends_with("-01"));
        // A later version with more fields is read by its first four.
        assert!(
            ctx(&["01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x"])
                .parent_id
                .is_some()
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let c = ctx(&[bad]);
            assert!(c.parent_id.is_none() && c.state.is_none(), "{bad}");
            assert!(!c.sampled, "ratio 0 samples nothing");
        }
        // Two parents: none.
        assert!(ctx(&[good, good]).parent_id.is_none());
        let started = TraceContext::from_request(&HeaderMap::new(), 1.0);
        assert!(started.sampled && started.trace_id != [0; 16]);
    }
}
