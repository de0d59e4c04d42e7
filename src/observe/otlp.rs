//! Export of sampled requests' spans over OTLP/HTTP (protobuf, the official
//! `opentelemetry-proto` messages): a server span per request and a client span per upstream
//! attempt, with the HTTP semantic-convention attributes. The request path only hands a small
//! record to a bounded queue (full: dropped and counted); a thread of its own turns records into
//! spans and posts them in batches, so a slow or dead collector never slows a request.

use crate::config::OtlpExport;
use crate::fetch::{self, Call};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prometheus::IntCounter;
use prost::Message;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One try at the upstream, as its client span will say.
#[derive(Debug, Clone)]
pub struct AttemptSpan {
    pub span_id: [u8; 8],
    pub start_ns: u64,
    /// Set when the attempt failed, else when the request ended.
    pub end_ns: Option<u64>,
    pub peer: SocketAddr,
    pub tls: bool,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// Why it failed (`connect_refused`, `read_timeout`, ...).
    pub error: Option<&'static str>,
}

/// A finished, sampled request: its server span and attempts.
#[derive(Debug)]
pub struct RequestSpans {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub trace_state: Option<String>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub method: String,
    pub scheme: &'static str,
    pub host: Option<String>,
    pub path: String,
    /// The path and query the upstream was sent (after rewrites).
    pub upstream_target: Option<String>,
    pub query: Option<String>,
    pub route: Option<Arc<str>>,
    pub status: u16,
    pub client: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub protocol: &'static str,
    pub error: Option<&'static str>,
    pub attempts: Vec<AttemptSpan>,
}

/// The queue to the exporter, and its counters. The exporter runs as a background service
/// ([`SpanExport`]), started after Pingora has daemonized (a thread started before the fork
/// would not survive it).
pub struct SpanExporter {
    tx: tokio::sync::mpsc::UnboundedSender<RequestSpans>,
    /// Spans waiting in the queue (a request's server span and its attempts).
    queued: Arc<AtomicUsize>,
    queue_size: usize,
    dropped_full: IntCounter,
}

/// The exporter counters, kept by the metrics registry.
#[derive(Clone)]
pub struct ExportCounters {
    pub exported: IntCounter,
    pub dropped_full: IntCounter,
    pub failed: IntCounter,
}

/// The background service that sends the queued spans.
pub struct SpanExport {
    worker: Worker,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<RequestSpans>>>,
}

impl SpanExporter {
    /// The queue for `config`, and the service that empties it.
    pub fn new(config: &OtlpExport, counters: ExportCounters) -> (SpanExporter, SpanExport) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            config: config.clone(),
            queued: queued.clone(),
            counters: counters.clone(),
            resource: resource(&config.service_name),
        };
        (
            SpanExporter {
                tx,
                queued,
                queue_size: config.queue_size,
                dropped_full: counters.dropped_full,
            },
            SpanExport {
                worker,
                rx: std::sync::Mutex::new(Some(rx)),
            },
        )
    }

    /// Queue a request's spans; dropped (and counted) when the queue is full.
    pub fn submit(&self, spans: RequestSpans) {
        let n = 1 + spans.attempts.len();
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.queue_size {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.dropped_full.inc_by(n as u64);
            return;
        }
        if self.tx.send(spans).is_err() {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.dropped_full.inc_by(n as u64);
        }
    }
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for SpanExport {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let rx = self.rx.lock().ok().and_then(|mut r| r.take());
        let Some(mut rx) = rx else { return };
        let connector = pingora_core::connectors::http::Connector::new(None);
        tokio::select! {
            _ = self.worker.run(&connector, &mut rx) => {}
            _ = shutdown.changed() => {}
        }
        // Shutting down: what is queued goes out once, within the export timeout.
        let mut spans = Vec::new();
        while let Ok(r) = rx.try_recv() {
            self.worker.take(r, &mut spans);
        }
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(self.worker.config.batch_size));
            self.worker
                .export(&connector, std::mem::replace(&mut spans, rest))
                .await;
        }
    }
}

struct Worker {
    config: OtlpExport,
    queued: Arc<AtomicUsize>,
    counters: ExportCounters,
    resource: Resource,
}

impl Worker {
    async fn run(
        &self,
        connector: &pingora_core::connectors::http::Connector,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<RequestSpans>,
    ) {
        loop {
            // Wait for a first record, then for the batch to fill or the interval to pass.
            let Some(first) = rx.recv().await else { return };
            let deadline = tokio::time::Instant::now() + self.config.interval;
            let mut spans = Vec::new();
            self.take(first, &mut spans);
            while spans.len() < self.config.batch_size {
                tokio::select! {
                    next = rx.recv() => match next {
                        Some(r) => self.take(r, &mut spans),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            // A batch may overshoot by a request's attempts; it goes out in pieces.
            while !spans.is_empty() {
                let rest = spans.split_off(spans.len().min(self.config.batch_size));
                self.export(connector, std::mem::replace(&mut spans, rest))
                    .await;
            }
        }
    }

    fn take(&self, r: RequestSpans, into: &mut Vec<Span>) {
        let n = 1 + r.attempts.len();
        self.queued.fetch_sub(n, Ordering::AcqRel);
        into.extend(spans_of(r));
    }

    async fn export(
        &self,
        connector: &pingora_core::connectors::http::Connector,
        spans: Vec<Span>,
    ) {
        let n = spans.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "tollgate".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut headers = self.config.headers.clone();
        headers.push((
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        ));
        let sent = fetch::send(
            connector,
            Call {
                method: http::Method::POST,
                url: &self.config.endpoint,
                headers: &headers,
                body: Some(Bytes::from(request.encode_to_vec())),
                ca: self.config.ca.as_deref(),
                timeout: self.config.timeout,
                max_body: 1 << 20,
            },
        );
        let outcome =
            match tokio::time::timeout(self.config.timeout + Duration::from_secs(1), sent).await {
                Ok(Ok(a)) if a.status().is_success() => Ok(()),
                Ok(Ok(a)) => Err(format!("the collector answered {}", a.status())),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("no answer in time".to_string()),
            };
        match outcome {
            Ok(()) => self.counters.exported.inc_by(n),
            Err(e) => {
                self.counters.failed.inc_by(n);
                log::warn!(
                    "span export to {}: {n} span(s) dropped: {e}",
                    self.config.endpoint
                );
            }
        }
    }
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            text("service.name", service),
            text("service.version", env!("CARGO_PKG_VERSION")),
            text("telemetry.sdk.name", "tollgate"),
            text("telemetry.sdk.language", "rust"),
        ],
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn error_status(message: &str) -> Option<Status> {
    Some(Status {
        code: status::StatusCode::Error as i32,
        message: message.into(),
    })
}

/// Attribute values from the request are cut at this many bytes (a 64 KiB query would make
/// one span a batch's worth).
const MAX_VALUE: usize = 1024;

/// `v`, cut at [`MAX_VALUE`] bytes (on a character boundary).
fn clip(v: &str) -> &str {
    if v.len() <= MAX_VALUE {
        return v;
    }
    let mut end = MAX_VALUE;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

/// The method as the conventions name it: the known ones, else `_OTHER`.
fn method_name(m: &str) -> &str {
    match m {
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH" => m,
        _ => "_OTHER",
    }
}

/// The server span and client spans of a request (semantic conventions for HTTP, v1.26+).
fn spans_of(r: RequestSpans) -> Vec<Span> {
    let method = method_name(&r.method);
    let mut attributes = vec![
        text("http.request.method", method),
        text("url.scheme", r.scheme),
        text("url.path", clip(&r.path)),
        text("network.protocol.version", r.protocol),
    ];
    if method == "_OTHER" {
        attributes.push(text("http.request.method_original", clip(&r.method)));
    }
    if r.status != 0 {
        attributes.push(int("http.response.status_code", i64::from(r.status)));
    }
    if let Some(q) = &r.query {
        attributes.push(text("url.query", clip(q)));
    }
    if let Some(h) = &r.host {
        let (name, port) = split_host(h);
        attributes.push(text("server.address", name));
        if let Some(p) = port {
            attributes.push(int("server.port", i64::from(p)));
        }
    }
    if let Some(ip) = r.client {
        attributes.push(text("client.address", &ip.to_string()));
    }
    if let Some(ua) = &r.user_agent {
        attributes.push(text("user_agent.original", clip(ua)));
    }
    if let Some(route) = &r.route {
        attributes.push(text("tollgate.route", route));
    }
    let server_error = r.status >= 500 || r.status == 0;
    if let Some(e) = r.error {
        attributes.push(text("error.type", e));
    } else if server_error {
        attributes.push(text("error.type", &r.status.to_string()));
    }
    let mut out = Vec::with_capacity(1 + r.attempts.len());
    out.push(Span {
        trace_id: r.trace_id.to_vec(),
        span_id: r.span_id.to_vec(),
        trace_state: r.trace_state.clone().unwrap_or_default(),
        parent_span_id: r.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 0x01 | if r.parent_id.is_some() { 0x300 } else { 0x100 },
        name: match &r.route {
            Some(route) => format!("{method} {route}"),
            None => method.to_string(),
        },
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: r.start_ns,
        end_time_unix_nano: r.end_ns.max(r.start_ns),
        attributes,
        status: if server_error {
            error_status(r.error.unwrap_or("server error"))
        } else {
            None
        },
        ..Default::default()
    });
    for (i, a) in r.attempts.iter().enumerate() {
        let scheme = if a.tls { "https" } else { "http" };
        let target = r.upstream_target.as_deref().unwrap_or(&r.path);
        let mut attributes = vec![
            text("http.request.method", method),
            text("server.address", &a.peer.ip().to_string()),
            int("server.port", i64::from(a.peer.port())),
            text("url.full", clip(&format!("{scheme}://{}{target}", a.peer))),
            text("network.peer.address", &a.peer.ip().to_string()),
            int("network.peer.port", i64::from(a.peer.port())),
        ];
        if i > 0 {
            attributes.push(int("http.request.resend_count", i as i64));
        }
        if let Some(s) = a.status {
            attributes.push(int("http.response.status_code", i64::from(s)));
        }
        let failed = a
            .error
            .or(a.status.filter(|s| *s >= 400).map(|_| "http error"));
        if let Some(e) = a.error {
            attributes.push(text("error.type", e));
        } else if let Some(s) = a.status.filter(|s| *s >= 400) {
            attributes.push(text("error.type", &s.to_string()));
        }
        out.push(Span {
            trace_id: r.trace_id.to_vec(),
            span_id: a.span_id.to_vec(),
            trace_state: r.trace_state.clone().unwrap_or_default(),
            parent_span_id: r.span_id.to_vec(),
            flags: 0x101,
            name: method.to_string(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: a.start_ns,
            end_time_unix_nano: a.end_ns.unwrap_or(r.end_ns).max(a.start_ns),
            attributes,
            status: failed.and_then(error_status),
            ..Default::default()
        });
    }
    out
}

/// A host header's name and port (`[::1]:8080`, `example.com`).
fn split_host(h: &str) -> (&str, Option<u16>) {
    if let Some(rest) = h.strip_prefix('[') {
        if let Some((name, after)) = rest.split_once(']') {
            return (name, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (h, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_into_name_and_port() {
        assert_eq!(split_host("a.test:8080"), ("a.test", Some(8080)));
        assert_eq!(split_host("a.test"), ("a.test", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
    }
}
