//! The JSON access log: one line per request, handed over a bounded channel to a writer thread
//! (so a slow disk never stalls a worker thread). When the writer falls behind by more than the
//! channel holds, lines are dropped and counted (`tollgate_access_log_dropped_total`), never
//! waited for. The file is opened in append mode, so `logrotate`'s `copytruncate` works.

use crate::config::{AccessLogConfig, LogFormat};
use http::{HeaderValue, Method};
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::Serialize;
use std::borrow::Cow;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

mod line;
use line::key;

/// One access log line. It borrows nothing from the request and allocates once per request
/// at most: names of routes, pools and consumers are shared (`Arc<str>`), addresses, method,
/// times and sizes are plain values, and the request's own strings share one buffer
/// ([`Strings`]). The line is formatted by the writer thread.
#[derive(Debug)]
pub struct Entry {
    /// When the request started.
    pub time: SystemTime,
    pub request_id: HeaderValue,
    pub client_ip: Option<IpAddr>,
    /// `None` when the request line could not be read (logged as `-`).
    pub method: Option<Method>,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: &'static str,
    /// The canonical host and path the request was routed on, what the client sent, the query
    /// string and the user agent.
    pub strings: Strings,
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_received: u64,
    /// Response bytes sent: the header section and the body (nginx's `$bytes_sent`).
    pub bytes_sent: u64,
    /// Response body bytes sent.
    pub body_bytes_sent: u64,
    pub duration: Duration,
    pub route: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    /// Every peer tried, in order: the last one answered (or failed last).
    pub tried: Vec<SocketAddr>,
    pub upstream_status: Option<u16>,
    /// Time to connect to the peer (zero on a reused connection).
    pub upstream_connect: Option<Duration>,
    /// Time from choosing the peer to its response header.
    pub upstream_response: Option<Duration>,
    /// The client connection's TLS version, on TLS.
    pub tls_version: Option<Cow<'static, str>>,
    /// The SNI name the client sent, on TLS.
    pub tls_server_name: Option<Arc<str>>,
    /// The W3C trace id and the gateway's span id (hex), when tracing is on.
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub consumer: Option<Arc<str>>,
    pub cache_status: Option<&'static str>,
    pub error: Option<&'static str>,
}

/// A request's strings, in one buffer: the host and path in canonical form, the raw ones when
/// they differ, the query string and the user agent.
#[derive(Debug, Default)]
pub struct Strings {
    buf: String,
    /// Byte ranges of host, path, raw path, raw host, query and user agent in `buf`.
    spans: [Option<(u32, u32)>; 6],
}

/// A request's strings as [`Strings`] keeps them.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestText<'a> {
    /// The canonical host.
    pub host: Option<&'a str>,
    /// The canonical path (the request target, for a request refused before it could be read).
    pub path: &'a str,
    /// The path as the client sent it, when it differs.
    pub raw_path: Option<&'a str>,
    /// The host as the client sent it, when it differs.
    pub raw_host: Option<&'a str>,
    pub query: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

impl Strings {
    /// Copy a request's strings into one buffer.
    pub fn new(t: RequestText) -> Strings {
        let parts = [
            t.host,
            Some(t.path),
            t.raw_path,
            t.raw_host,
            t.query,
            t.user_agent,
        ];
        let len = parts.iter().flatten().map(|p| p.len()).sum();
        let mut out = Strings {
            buf: String::with_capacity(len),
            spans: [None; 6],
        };
        for (i, part) in parts.iter().enumerate() {
            if let Some(p) = part {
                let start = out.buf.len() as u32;
                out.buf.push_str(p);
                out.spans[i] = Some((start, out.buf.len() as u32));
            }
        }
        out
    }

    fn get(&self, i: usize) -> Option<&str> {
        self.spans[i].map(|(a, b)| &self.buf[a as usize..b as usize])
    }

    /// The canonical host.
    pub fn host(&self) -> Option<&str> {
        self.get(0)
    }

    /// The canonical path.
    pub fn path(&self) -> &str {
        self.get(1).unwrap_or("")
    }
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut f = line::Serde {
            m: s.serialize_struct("Entry", 31)?,
            failed: None,
        };
        self.fields(&mut f);
        match f.failed {
            Some(e) => Err(e),
            None => f.m.end(),
        }
    }
}

impl Entry {
    /// The entry's fields in order, to serde's struct serializer or to the line writer.
    fn fields(&self, m: &mut impl line::Fields) {
        let t = &self.strings;
        let mut ip = [0u8; 48];
        let mut peer = [0u8; 64];
        m.time(key!("time"), self.time);
        m.text(
            key!("request_id"),
            Some(self.request_id.to_str().unwrap_or("-")),
        );
        m.plain(
            key!("client_ip"),
            self.client_ip.map(|a| ip_text(a, &mut ip)),
        );
        m.plain(
            key!("method"),
            Some(self.method.as_ref().map_or("-", Method::as_str)),
        );
        m.plain(key!("protocol"), Some(self.protocol));
        m.plain(key!("host"), t.host());
        m.text(key!("path"), Some(t.path()));
        m.text(key!("query"), t.get(4));
        m.text(key!("raw_path"), t.get(2));
        m.text(key!("raw_host"), t.get(3));
        m.number(key!("status"), Some(self.status.into()));
        m.number(key!("bytes_received"), Some(self.bytes_received));
        m.number(key!("bytes_sent"), Some(self.bytes_sent));
        m.number(key!("body_bytes_sent"), Some(self.body_bytes_sent));
        m.millis(key!("duration_ms"), Some(self.duration));
        m.text(key!("user_agent"), t.get(5));
        m.text(key!("route"), self.route.as_deref());
        m.text(key!("upstream"), self.upstream.as_deref());
        let last = self.tried.last().map(|a| addr_text(*a, &mut peer));
        m.plain(key!("peer"), last);
        m.number(key!("attempts"), Some(self.tried.len() as u64));
        m.addresses(key!("tried"), &self.tried);
        m.number(key!("upstream_status"), self.upstream_status.map(u64::from));
        m.millis(key!("upstream_connect_ms"), self.upstream_connect);
        m.millis(key!("upstream_response_ms"), self.upstream_response);
        m.text(key!("tls_version"), self.tls_version.as_deref());
        m.text(key!("tls_server_name"), self.tls_server_name.as_deref());
        m.plain(key!("trace_id"), self.trace_id.as_deref());
        m.plain(key!("span_id"), self.span_id.as_deref());
        m.text(key!("consumer"), self.consumer.as_deref());
        m.plain(key!("cache_status"), self.cache_status);
        m.text(key!("error"), self.error);
    }

    /// The entry as one JSON object (the same text as serializing it with serde_json), written
    /// to `out`; `clock` keeps the time's text between the writer's lines.
    fn write_line(&self, out: &mut Vec<u8>, clock: &mut line::Clock) {
        line::write(out, clock, |l| self.fields(l));
    }
}

/// Peers as a list of `address:port` strings.
struct Tried<'a>(&'a [SocketAddr]);

impl Serialize for Tried<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().copied().map(AddrText))
    }
}

/// An address as text in `buf`, written without the formatting machinery (which cost the
/// writer thread about 6,000 instructions per line for the client and peer addresses).
fn ip_text(a: IpAddr, buf: &mut [u8; 48]) -> &str {
    let n = crate::wire::write_ip(a, buf);
    std::str::from_utf8(&buf[..n]).unwrap_or("-")
}

/// A socket address as text in `buf` (`1.2.3.4:80`, `[::1]:80`).
fn addr_text(a: SocketAddr, buf: &mut [u8; 64]) -> &str {
    let n = crate::wire::write_socket_addr(a, buf);
    std::str::from_utf8(&buf[..n]).unwrap_or("-")
}

/// An address, serialized as text.
struct IpText(IpAddr);

impl Serialize for IpText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(ip_text(self.0, &mut [0u8; 48]))
    }
}

/// A socket address, serialized as text.
struct AddrText(SocketAddr);

impl Serialize for AddrText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(addr_text(self.0, &mut [0u8; 64]))
    }
}

/// An entry with Elastic Common Schema field names (dotted keys, as ECS logging libraries write
/// them; Tollgate's own fields under `tollgate.`).
pub struct Ecs<'a>(pub &'a Entry);

impl Serialize for Ecs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let t = &e.strings;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("@timestamp", &line::time_text(e.time))?;
        m.serialize_entry("ecs.version", "8.11.0")?;
        m.serialize_entry("event.dataset", "tollgate.access")?;
        m.serialize_entry("event.duration", &(e.duration.as_nanos() as u64))?;
        m.serialize_entry("http.request.id", e.request_id.to_str().unwrap_or("-"))?;
        m.serialize_entry(
            "http.request.method",
            e.method.as_ref().map_or("-", Method::as_str),
        )?;
        m.serialize_entry("http.request.body.bytes", &e.bytes_received)?;
        m.serialize_entry("http.version", e.protocol.trim_start_matches("HTTP/"))?;
        m.serialize_entry("http.response.status_code", &e.status)?;
        m.serialize_entry("http.response.bytes", &e.bytes_sent)?;
        m.serialize_entry("http.response.body.bytes", &e.body_bytes_sent)?;
        m.serialize_entry("client.ip", &e.client_ip.map(IpText))?;
        m.serialize_entry("url.domain", &t.host())?;
        m.serialize_entry("url.path", t.path())?;
        m.serialize_entry("url.query", &t.get(4))?;
        m.serialize_entry("url.original", &t.get(2))?;
        m.serialize_entry("user_agent.original", &t.get(5))?;
        // ECS splits `TLSv1.3` into a protocol and a version.
        if let Some(v) = e.tls_version.as_deref() {
            m.serialize_entry("tls.version_protocol", "tls")?;
            m.serialize_entry("tls.version", v.trim_start_matches("TLSv"))?;
        }
        m.serialize_entry("tls.client.server_name", &e.tls_server_name.as_deref())?;
        m.serialize_entry("trace.id", &e.trace_id)?;
        m.serialize_entry("span.id", &e.span_id)?;
        m.serialize_entry(
            "destination.address",
            &e.tried.last().copied().map(AddrText),
        )?;
        m.serialize_entry("tollgate.attempts", &e.tried.len())?;
        m.serialize_entry("tollgate.tried", &Tried(&e.tried))?;
        m.serialize_entry("user.name", &e.consumer.as_deref())?;
        m.serialize_entry("error.type", &e.error)?;
        m.serialize_entry("tollgate.route", &e.route.as_deref())?;
        m.serialize_entry("tollgate.upstream", &e.upstream.as_deref())?;
        m.serialize_entry("tollgate.upstream_status", &e.upstream_status)?;
        m.serialize_entry(
            "tollgate.upstream_connect_ms",
            &e.upstream_connect.map(line::millis),
        )?;
        m.serialize_entry(
            "tollgate.upstream_response_ms",
            &e.upstream_response.map(line::millis),
        )?;
        m.serialize_entry("tollgate.raw_host", &t.get(3))?;
        m.serialize_entry("tollgate.cache_status", &e.cache_status)?;
        m.end()
    }
}

/// Where lines go.
pub struct AccessLog {
    /// The destination, until the writer thread takes it.
    out: Mutex<Option<Box<dyn Write + Send>>>,
    /// The writer thread's queue, started on first use: a thread started before Pingora
    /// daemonizes would not survive the fork.
    tx: OnceLock<Option<SyncSender<Entry>>>,
    dropped: prometheus::IntCounter,
    /// Lines queued and not yet written.
    pending: Arc<AtomicUsize>,
    /// The file (`None`: standard output).
    path: Option<std::path::PathBuf>,
    /// Set to reopen the file before the next write.
    reopen: Arc<AtomicBool>,
    /// How lines name their fields.
    format: LogFormat,
    /// Lines carry the query string.
    query: bool,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

const QUEUE: usize = 65_536;

/// How long the writer lets lines gather after a write while lines keep coming: under load it
/// wakes this often instead of once per request (each wake-up of a sleeping thread is a system
/// call on the request path and a context switch); when the log goes quiet it waits on the
/// queue, so a lone line is written at once. As nginx's `access_log ... flush=`, but short.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

impl AccessLog {
    /// Open the configured file (or `stdout`); the writer thread starts with the first line.
    pub fn open(
        config: &AccessLogConfig,
        dropped: prometheus::IntCounter,
    ) -> std::io::Result<Arc<AccessLog>> {
        let path = config.path.as_str();
        let out: Box<dyn Write + Send> = if path == "stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        Ok(Arc::new(AccessLog {
            out: Mutex::new(Some(out)),
            tx: OnceLock::new(),
            dropped,
            pending: Arc::new(AtomicUsize::new(0)),
            path: (path != "stdout").then(|| path.into()),
            reopen: Arc::new(AtomicBool::new(false)),
            format: config.format,
            query: config.query,
        }))
    }

    /// Whether lines carry the query string.
    pub fn logs_query(&self) -> bool {
        self.query
    }

    /// Reopen the file before the next line is written (`SIGUSR1`, after `logrotate` moved it
    /// away): lines go to a new file of the same name.
    pub fn reopen(&self) {
        if self.path.is_some() {
            self.reopen.store(true, Ordering::Release);
        }
    }

    fn start(&self) -> Option<SyncSender<Entry>> {
        let mut out = self.out.lock().ok()?.take()?;
        let (tx, rx) = sync_channel::<Entry>(QUEUE);
        let pending = self.pending.clone();
        let (path, reopen, format) = (self.path.clone(), self.reopen.clone(), self.format);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                let mut clock = line::Clock::default();
                let mut busy = false;
                let mut full = false;
                loop {
                    // Busy (the last round wrote lines): let the next ones gather without being
                    // woken per line (at once when the last round stopped at the buffer's
                    // size: more are waiting). Quiet: wait for a line.
                    let first = if busy {
                        if !full {
                            std::thread::sleep(GATHER);
                        }
                        match rx.try_recv() {
                            Ok(e) => e,
                            Err(std::sync::mpsc::TryRecvError::Empty) => {
                                busy = false;
                                continue;
                            }
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                        }
                    } else {
                        match rx.recv() {
                            Ok(e) => e,
                            Err(_) => break,
                        }
                    };
                    busy = true;
                    // Write what is queued in one go.
                    let mut next = Some(first);
                    let mut lines = 0;
                    while let Some(e) = next {
                        lines += 1;
                        let written = match format {
                            LogFormat::Json => {
                                e.write_line(&mut buf, &mut clock);
                                Ok(())
                            }
                            LogFormat::Ecs => serde_json::to_writer(&mut buf, &Ecs(&e)),
                        };
                        if written.is_ok() {
                            buf.push(b'\n');
                        }
                        next = if buf.len() < 60 * 1024 {
                            rx.try_recv().ok()
                        } else {
                            None
                        };
                    }
                    if let (Some(p), true) = (&path, reopen.swap(false, Ordering::AcqRel)) {
                        match std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(p)
                        {
                            Ok(f) => out = Box::new(f),
                            Err(e) => log::error!(
                                "access log: cannot reopen {}: {e}; writing on to the old file",
                                p.display()
                            ),
                        }
                    }
                    if let Err(e) = out.write_all(&buf).and_then(|_| out.flush()) {
                        log::error!("access log: write failed: {e}");
                    }
                    full = buf.len() >= 60 * 1024;
                    buf.clear();
                    pending.fetch_sub(lines, Ordering::AcqRel);
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                log::error!("access log: cannot start the writer thread: {e}");
                None
            }
        }
    }

    /// Queue a line; never blocks.
    pub fn write(&self, e: Entry) {
        let Some(tx) = self.tx.get_or_init(|| self.start()) else {
            self.dropped.inc();
            return;
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        match tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.dropped.inc();
            }
        }
    }

    /// Wait (at most `limit`) until every queued line is written.
    pub fn flush(&self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.pending.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH,
            request_id: HeaderValue::from_static("abc"),
            client_ip: Some("192.0.2.1".parse().unwrap()),
            method: Some(Method::GET),
            protocol: "HTTP/1.1",
            strings: Strings::new(RequestText {
                host: Some("api.test"),
                path: "/a/b",
                raw_path: Some("/a//b"),
                raw_host: None,
                query: Some("q=1"),
                user_agent: Some("curl/8"),
            }),
            status: 200,
            bytes_received: 3,
            bytes_sent: 112,
            body_bytes_sent: 12,
            duration: Duration::from_nanos(122_723_456),
            route: Some(Arc::from("r")),
            upstream: Some(Arc::from("u")),
            tried: vec![
                "127.0.0.1:8081".parse().unwrap(),
                "127.0.0.1:8080".parse().unwrap(),
            ],
            upstream_status: Some(200),
            upstream_connect: Some(Duration::ZERO),
            upstream_response: Some(Duration::from_micros(1500)),
            tls_version: Some(Cow::Borrowed("TLSv1.3")),
            tls_server_name: Some(Arc::from("api.test")),
            trace_id: None,
            span_id: None,
            consumer: None,
            cache_status: Some("HIT"),
            error: None,
        }
    }

    #[test]
    fn an_entry_is_one_json_object_with_every_field() {
        let v: serde_json::Value = serde_json::to_value(entry()).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["client_ip"], "192.0.2.1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["host"], "api.test");
        assert_eq!(v["path"], "/a/b");
        assert_eq!(v["query"], "q=1");
        assert_eq!(v["raw_path"], "/a//b");
        assert!(v["raw_host"].is_null() && v["consumer"].is_null() && v["error"].is_null());
        assert_eq!(v["bytes_received"], 3);
        assert_eq!(v["bytes_sent"], 112);
        assert_eq!(v["body_bytes_sent"], 12);
        // Milliseconds to the microsecond.
        assert_eq!(v["duration_ms"].to_string(), "122.723");
        assert_eq!(v["user_agent"], "curl/8");
        assert_eq!(v["peer"], "127.0.0.1:8080");
        assert_eq!(v["attempts"], 2);
        assert_eq!(
            v["tried"],
            serde_json::json!(["127.0.0.1:8081", "127.0.0.1:8080"])
        );
        assert_eq!(v["upstream_connect_ms"].to_string(), "0.0");
        assert_eq!(v["upstream_response_ms"].to_string(), "1.5");
        assert_eq!(v["tls_version"], "TLSv1.3");
        assert_eq!(v["tls_server_name"], "api.test");
        assert_eq!(v["route"], "r");
        assert_eq!(v["cache_status"], "HIT");
        assert_eq!(v.as_object().unwrap().len(), 31);
    }

    #[test]
    fn ecs_names() {
        let e = entry();
        let v: serde_json::Value = serde_json::to_value(Ecs(&e)).unwrap();
        assert_eq!(v["@timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["http.request.method"], "GET");
        assert_eq!(v["http.response.status_code"], 200);
        assert_eq!(v["http.version"], "1.1");
        assert_eq!(v["url.path"], "/a/b");
        assert_eq!(v["url.query"], "q=1");
        assert_eq!(v["event.duration"], 122_723_456);
        assert_eq!(v["client.ip"], "192.0.2.1");
        assert_eq!(v["user_agent.original"], "curl/8");
        assert_eq!(v["tollgate.route"], "r");
        assert_eq!(v["tls.version_protocol"], "tls");
        assert_eq!(v["tls.version"], "1.3");
        assert_eq!(v["tls.client.server_name"], "api.test");
    }
}
