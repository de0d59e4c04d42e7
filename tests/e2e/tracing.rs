//! W3C trace context: a client's trace is continued with the gateway's span as the upstream's
//! parent, a new one is started when the client sent none (or a malformed one), and the ids are
//! in the access log; without `tracing`, `traceparent` passes through untouched.

use crate::common::*;
use std::time::Duration;

fn log_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    assert!(wait_until(Duration::from_secs(5), || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        lines.len() >= n
    }));
    lines
}

#[test]
fn traces_are_continued_or_started_and_logged() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = Gateway::start(&format!(
        "tracing: {{sample_ratio: 0}}\naccess_log: {{path: \"{}\"}}\nupstreams:\n  u: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n",
        log.display(),
        up.addr
    ));
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(
        gw.get(
            "/continued",
            &[("traceparent", parent), ("tracestate", "vendor=1")]
        )
        .status,
        200
    );
    let seen = up.last();
    let tp = seen.header("traceparent").unwrap().to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the upstream's parent is the gateway's span"
    );
    assert_eq!(parts[3], "01", "the client's sampling decision stands");
    assert_eq!(seen.header("tracestate"), Some("vendor=1"));
    // None sent, or a malformed one: a new trace (not sampled at ratio 0), no vendor state.
    gw.get("/new", &[]);
    let fresh = up.last().header("traceparent").unwrap().to_string();
    gw.get(
        "/bad",
        &[("traceparent", "00-zz-yy-01"), ("tracestate", "vendor=1")],
    );
    let replaced = up.last();
    assert_ne!(replaced.header("traceparent"), Some("00-zz-yy-01"));
    assert_eq!(replaced.header("tracestate"), None);
    assert!(
        fresh.starts_with("00-") && fresh.ends_with("-00"),
        "{fresh}"
    );
    // The access log carries the trace id and the gateway's span id.
    let lines = log_lines(&log, 3);
    assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(lines[0]["span_id"], parts[2]);
    assert_eq!(lines[1]["trace_id"], fresh.split('-').nth(1).unwrap());
    drop(gw);
    // Without `tracing`: untouched, nothing logged.
    let log2 = dir.path().join("access2.log");
    let gw = Gateway::start(&format!(
        "access_log: {{path: \"{}\"}}\nupstreams:\n  u: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n",
        log2.display(),
        up.addr
    ));
    gw.get("/plain", &[("traceparent", parent)]);
    assert_eq!(up.last().header("traceparent"), Some(parent));
    assert!(log_lines(&log2, 1)[0]["trace_id"].is_null());
}
