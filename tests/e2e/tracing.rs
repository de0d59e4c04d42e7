//! W3C trace context: a client's trace is continued with the gateway's span as the upstream's
//! parent, a new one is started when the client sent none (or a malformed one), and the ids are
//! in the access log; without `tracing`, `traceparent` passes through untouched. Spans exported
//! over OTLP/HTTP to a receiver that decodes them with the official protobuf definitions.

use crate::common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost::Message;
use std::sync::{Arc, Mutex};
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
        "the upstream's parent is the gateway's (client) span"
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
    // (Found by path: lines of different worker threads may be written in either order.)
    let lines = log_lines(&log, 3);
    let line = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("no line for {path}: {lines:?}"))
            .clone()
    };
    assert_eq!(
        line("/continued")["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    // Spans not exported: the upstream's parent is the gateway's span, the one logged.
    assert_eq!(line("/continued")["span_id"], parts[2]);
    assert_eq!(line("/new")["trace_id"], fresh.split('-').nth(1).unwrap());
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

/// An OTLP/HTTP receiver on loopback: every span it was sent, decoded, and the requests' heads.
struct Collector {
    server: HttpServer,
    spans: Arc<Mutex<Vec<Span>>>,
    service: Arc<Mutex<Option<String>>>,
    heads: Arc<Mutex<Vec<Seen>>>,
}

impl Collector {
    fn start(delay: Duration) -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service = Arc::new(Mutex::new(None));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (s, svc, h) = (spans.clone(), service.clone(), heads.clone());
        let server = HttpServer::start(None, move |seen| {
            let Ok(req) = ExportTraceServiceRequest::decode(&seen.body[..]) else {
                return Reply {
                    status: 400,
                    ..Reply::ok("not OTLP")
                };
            };
            for rs in req.resource_spans {
                for kv in rs.resource.map(|r| r.attributes).unwrap_or_default() {
                    if kv.key == "service.name" {
                        if let Some(Any::StringValue(v)) = kv.value.and_then(|v| v.value) {
                            *svc.lock().unwrap() = Some(v);
                        }
                    }
                }
                for ss in rs.scope_spans {
                    s.lock().unwrap().extend(ss.spans);
                }
            }
            h.lock().unwrap().push(Seen {
                body: Vec::new(),
                ..seen
            });
            Reply::ok("").delay(delay)
        });
        Collector {
            server,
            spans,
            service,
            heads,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Any> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    match attr(s, key) {
        Some(Any::StringValue(v)) => Some(v),
        _ => None,
    }
}

fn int(s: &Span, key: &str) -> Option<i64> {
    match attr(s, key) {
        Some(Any::IntValue(v)) => Some(*v),
        _ => None,
    }
}

#[test]
fn spans_are_exported_with_their_parents_and_attributes() {
    let collector = Collector::start(Duration::ZERO);
    let up = Upstream::start("a");
    let dead = closed_port();
    let gw = Gateway::start(&format!(
        "tracing: {{sample_ratio: 1, otlp: {{endpoint: \"http://{}/v1/traces\", headers: {{x-api-key: collector-key}}, interval: 50ms, service_name: edge}}}}\nupstreams:\n  u: {{peers: [\"{}\"]}}\n  flaky: {{peers: [\"{}\", \"{}\"], balance: round_robin, retries: 1}}\nroutes:\n  - {{name: flaky, match: {{path_prefix: /flaky}}, upstream: flaky}}\n  - {{name: r, match: {{path_prefix: /orders}}, upstream: u, rewrite: /v2/orders}}\n",
        collector.server.addr, up.addr, dead, up.addr
    ));
    let r = gw.get(
        "/orders/7?x=1",
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("user-agent", "probe/1"),
        ],
    );
    assert_eq!(r.status, 200);
    let upstream_parent = up
        .last()
        .header("traceparent")
        .unwrap()
        .split('-')
        .nth(2)
        .unwrap()
        .to_string();
    assert!(wait_until(Duration::from_secs(10), || collector
        .spans()
        .len()
        >= 2));
    let spans = collector.spans();
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    let trace = hex::decode("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    assert_eq!((&server.trace_id, &client.trace_id), (&trace, &trace));
    // The client's span is the server span's parent; the server span is the client span's; the
    // client span is the upstream's parent.
    assert_eq!(
        server.parent_span_id,
        hex::decode("00f067aa0ba902b7").unwrap()
    );
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(hex::encode(&client.span_id), upstream_parent);
    assert_eq!(server.name, "GET r");
    assert_eq!(text(server, "http.request.method"), Some("GET"));
    assert_eq!(text(server, "url.path"), Some("/orders/7"));
    assert_eq!(text(server, "url.query"), Some("x=1"));
    assert_eq!(text(server, "url.scheme"), Some("http"));
    assert_eq!(text(server, "server.address"), Some("test.local"));
    assert_eq!(text(server, "user_agent.original"), Some("probe/1"));
    assert_eq!(text(server, "client.address"), Some("127.0.0.1"));
    assert_eq!(int(server, "http.response.status_code"), Some(200));
    assert_eq!(text(client, "server.address"), Some("127.0.0.1"));
    assert_eq!(int(client, "server.port"), Some(i64::from(up.addr.port())));
    assert_eq!(int(client, "http.response.status_code"), Some(200));
    // What the upstream was sent: the rewritten path and the query.
    assert_eq!(up.last().url, "/v2/orders/7?x=1");
    assert_eq!(
        text(client, "url.full"),
        Some(format!("http://{}/v2/orders/7?x=1", up.addr).as_str())
    );
    assert!(server.start_time_unix_nano <= client.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);
    assert_eq!(collector.service.lock().unwrap().as_deref(), Some("edge"));
    let head = collector.heads.lock().unwrap()[0].clone();
    assert_eq!(head.url, "/v1/traces");
    assert_eq!(head.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(head.header("x-api-key"), Some("collector-key"));

    // A retried request: one client span per attempt, the failed one marked with its error.
    assert!(wait_until(Duration::from_secs(10), || {
        gw.get("/flaky", &[]);
        let spans = collector.spans();
        spans
            .iter()
            .any(|s| int(s, "http.request.resend_count") == Some(1))
    }));
    let spans = collector.spans();
    let second = spans
        .iter()
        .find(|s| int(s, "http.request.resend_count") == Some(1))
        .unwrap();
    let first = spans
        .iter()
        .find(|s| {
            s.kind == SpanKind::Client as i32
                && s.trace_id == second.trace_id
                && s.span_id != second.span_id
        })
        .unwrap();
    assert_eq!(text(first, "error.type"), Some("connect_refused"));
    assert_eq!(int(first, "server.port"), Some(i64::from(dead.port())));
    assert_eq!(first.parent_span_id, second.parent_span_id);
}

#[test]
fn a_slow_or_dead_collector_costs_spans_not_requests() {
    let up = Upstream::start("a");
    let admin = closed_port().port();
    let dead = closed_port();
    let gw = Gateway::start(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\ntracing: {{sample_ratio: 1, otlp: {{endpoint: \"http://{dead}/v1/traces\", interval: 20ms, timeout: 1s}}}}\nupstreams:\n  u: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n",
        up.addr
    ));
    for _ in 0..3 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    let metrics = || {
        send_raw(
            admin,
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .text()
    };
    assert!(wait_until(Duration::from_secs(10), || metrics().contains(
        "tollgate_trace_spans_dropped_total{reason=\"export_failed\"} 6"
    )));
    drop(gw);

    // A collector that takes its time: the bounded queue fills and the rest is dropped.
    let slow = Collector::start(Duration::from_secs(3));
    let admin = closed_port().port();
    let gw = Gateway::start(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\ntracing: {{sample_ratio: 1, otlp: {{endpoint: \"http://{}/v1/traces\", interval: 10ms, batch_size: 2, queue_size: 4, timeout: 10s}}}}\nupstreams:\n  u: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n",
        slow.server.addr, up.addr
    ));
    for _ in 0..12 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    let m = send_raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .text();
    let dropped: u64 = m
        .lines()
        .find(|l| l.starts_with("tollgate_trace_spans_dropped_total{reason=\"queue_full\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(dropped >= 8, "{m}");
}

#[test]
fn a_daemonized_gateway_exports_its_spans() {
    let collector = Collector::start(Duration::ZERO);
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port().port();
    let d = dir.path().display();
    let conf = dir.path().join("t.yaml");
    std::fs::write(
        &conf,
        format!(
            "pid_file: {d}/t.pid\nupgrade_sock: {d}/t.sock\nerror_log: {d}/error.log\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\nlisteners: [{{address: 127.0.0.1:{port}}}]\ntracing: {{otlp: {{endpoint: \"http://{}/v1/traces\", interval: 20ms}}}}\nupstreams: {{u: {{peers: [\"{}\"]}}}}\nroutes: [{{name: r, match: {{}}, upstream: u}}]\n",
            collector.server.addr, up.addr
        ),
    )
    .unwrap();
    let status = std::process::Command::new(bin())
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .status()
        .unwrap();
    assert!(status.success());
    let pid_file = dir.path().join("t.pid");
    let pid = || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
    };
    assert!(wait_until(Duration::from_secs(20), || pid().is_some()
        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()));
    let sent = send_raw(
        port,
        b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let exported = wait_until(Duration::from_secs(10), || collector.spans().len() >= 2);
    if let Some(pid) = pid() {
        signal(pid, libc::SIGKILL);
    }
    assert_eq!(sent.status, 200);
    assert!(exported, "no span from the daemon");
}
