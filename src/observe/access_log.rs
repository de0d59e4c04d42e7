//! The JSON access log: one line per request. Each worker thread formats its lines into a
//! buffer of its own, and a writer thread swaps the buffers out and writes them (so a slow disk
//! never stalls a worker thread, and nothing a request owns crosses threads): see [`writer`].
//! The file is opened in append mode, so `logrotate`'s `copytruncate` works.

use http::Method;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::Serialize;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

mod line;
mod writer;
use line::key;
pub use writer::AccessLog;

/// One access log line, borrowing what it names from the request: it is formatted on the
/// request's own thread, into that thread's buffer ([`AccessLog::write`]), and copies nothing
/// else.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// When the request started.
    pub time: SystemTime,
    /// The request id header's value (logged as `-` when it is not visible ASCII).
    pub request_id: &'a [u8],
    pub client_ip: Option<IpAddr>,
    /// `None` when the request line could not be read (logged as `-`).
    pub method: Option<&'a Method>,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: &'static str,
    /// The canonical host and path the request was routed on, what the client sent, the query
    /// string and the user agent.
    pub text: RequestText<'a>,
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_received: u64,
    /// Response bytes sent: the header section and the body (nginx's `$bytes_sent`).
    pub bytes_sent: u64,
    /// Response body bytes sent.
    pub body_bytes_sent: u64,
    pub duration: Duration,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    /// Every peer tried, in order: the last one answered (or failed last).
    pub tried: &'a [SocketAddr],
    pub upstream_status: Option<u16>,
    /// Time to connect to the peer (zero on a reused connection).
    pub upstream_connect: Option<Duration>,
    /// Time from choosing the peer to its response header.
    pub upstream_response: Option<Duration>,
    /// The client connection's TLS version, on TLS.
    pub tls_version: Option<Cow<'a, str>>,
    /// The SNI name the client sent, on TLS.
    pub tls_server_name: Option<&'a str>,
    /// The W3C trace id and the gateway's span id (hex), when tracing is on.
    pub trace_id: Option<&'a str>,
    pub span_id: Option<&'a str>,
    pub consumer: Option<&'a str>,
    pub cache_status: Option<&'static str>,
    pub error: Option<&'static str>,
}

/// A request's strings as a line names them.
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
    /// The `User-Agent` header's value (logged as `null` when it is not visible ASCII).
    pub user_agent: Option<&'a [u8]>,
}

impl Serialize for Entry<'_> {
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

impl Entry<'_> {
    /// The entry's fields in order, to serde's struct serializer or to the line writer.
    fn fields(&self, m: &mut impl line::Fields) {
        let t = &self.text;
        m.time(key!("time"), self.time);
        m.header(key!("request_id"), Some(self.request_id), Some("-"));
        m.ip(key!("client_ip"), self.client_ip);
        m.plain(
            key!("method"),
            Some(self.method.map_or("-", Method::as_str)),
        );
        m.plain(key!("protocol"), Some(self.protocol));
        m.plain(key!("host"), t.host);
        m.text(key!("path"), Some(t.path));
        m.text(key!("query"), t.query);
        m.text(key!("raw_path"), t.raw_path);
        m.text(key!("raw_host"), t.raw_host);
        m.number(key!("status"), Some(self.status.into()));
        m.number(key!("bytes_received"), Some(self.bytes_received));
        m.number(key!("bytes_sent"), Some(self.bytes_sent));
        m.number(key!("body_bytes_sent"), Some(self.body_bytes_sent));
        m.millis(key!("duration_ms"), Some(self.duration));
        m.header(key!("user_agent"), t.user_agent, None);
        m.text(key!("route"), self.route);
        m.text(key!("upstream"), self.upstream);
        m.peers([key!("peer"), key!("attempts"), key!("tried")], self.tried);
        m.number(key!("upstream_status"), self.upstream_status.map(u64::from));
        m.millis(key!("upstream_connect_ms"), self.upstream_connect);
        m.millis(key!("upstream_response_ms"), self.upstream_response);
        m.text(key!("tls_version"), self.tls_version.as_deref());
        m.text(key!("tls_server_name"), self.tls_server_name);
        m.plain(key!("trace_id"), self.trace_id);
        m.plain(key!("span_id"), self.span_id);
        m.text(key!("consumer"), self.consumer);
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
pub struct Ecs<'a>(pub &'a Entry<'a>);

impl Serialize for Ecs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let t = &e.text;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("@timestamp", &line::time_text(e.time))?;
        m.serialize_entry("ecs.version", "8.11.0")?;
        m.serialize_entry("event.dataset", "tollgate.access")?;
        m.serialize_entry("event.duration", &(e.duration.as_nanos() as u64))?;
        m.serialize_entry(
            "http.request.id",
            line::header_text(e.request_id).unwrap_or("-"),
        )?;
        m.serialize_entry("http.request.method", e.method.map_or("-", Method::as_str))?;
        m.serialize_entry("http.request.body.bytes", &e.bytes_received)?;
        m.serialize_entry("http.version", e.protocol.trim_start_matches("HTTP/"))?;
        m.serialize_entry("http.response.status_code", &e.status)?;
        m.serialize_entry("http.response.bytes", &e.bytes_sent)?;
        m.serialize_entry("http.response.body.bytes", &e.body_bytes_sent)?;
        m.serialize_entry("client.ip", &e.client_ip.map(IpText))?;
        m.serialize_entry("url.domain", &t.host)?;
        m.serialize_entry("url.path", t.path)?;
        m.serialize_entry("url.query", &t.query)?;
        m.serialize_entry("url.original", &t.raw_path)?;
        m.serialize_entry(
            "user_agent.original",
            &t.user_agent.and_then(line::header_text),
        )?;
        // ECS splits `TLSv1.3` into a protocol and a version.
        if let Some(v) = e.tls_version.as_deref() {
            m.serialize_entry("tls.version_protocol", "tls")?;
            m.serialize_entry("tls.version", v.trim_start_matches("TLSv"))?;
        }
        m.serialize_entry("tls.client.server_name", &e.tls_server_name)?;
        m.serialize_entry("trace.id", &e.trace_id)?;
        m.serialize_entry("span.id", &e.span_id)?;
        m.serialize_entry(
            "destination.address",
            &e.tried.last().copied().map(AddrText),
        )?;
        m.serialize_entry("tollgate.attempts", &e.tried.len())?;
        m.serialize_entry("tollgate.tried", &Tried(e.tried))?;
        m.serialize_entry("user.name", &e.consumer)?;
        m.serialize_entry("error.type", &e.error)?;
        m.serialize_entry("tollgate.route", &e.route)?;
        m.serialize_entry("tollgate.upstream", &e.upstream)?;
        m.serialize_entry("tollgate.upstream_status", &e.upstream_status)?;
        m.serialize_entry(
            "tollgate.upstream_connect_ms",
            &e.upstream_connect.map(line::millis),
        )?;
        m.serialize_entry(
            "tollgate.upstream_response_ms",
            &e.upstream_response.map(line::millis),
        )?;
        m.serialize_entry("tollgate.raw_host", &t.raw_host)?;
        m.serialize_entry("tollgate.cache_status", &e.cache_status)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two peers, the second of which answered.
    static TRIED: std::sync::LazyLock<[SocketAddr; 2]> = std::sync::LazyLock::new(|| {
        [
            "127.0.0.1:8081".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
        ]
    });

    pub(super) fn entry() -> Entry<'static> {
        Entry {
            time: SystemTime::UNIX_EPOCH,
            request_id: b"abc",
            client_ip: Some("192.0.2.1".parse().unwrap()),
            method: Some(&Method::GET),
            protocol: "HTTP/1.1",
            text: RequestText {
                host: Some("api.test"),
                path: "/a/b",
                raw_path: Some("/a//b"),
                raw_host: None,
                query: Some("q=1"),
                user_agent: Some(b"curl/8"),
            },
            status: 200,
            bytes_received: 3,
            bytes_sent: 112,
            body_bytes_sent: 12,
            duration: Duration::from_nanos(122_723_456),
            route: Some("r"),
            upstream: Some("u"),
            tried: &TRIED[..],
            upstream_status: Some(200),
            upstream_connect: Some(Duration::ZERO),
            upstream_response: Some(Duration::from_micros(1500)),
            tls_version: Some(Cow::Borrowed("TLSv1.3")),
            tls_server_name: Some("api.test"),
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
