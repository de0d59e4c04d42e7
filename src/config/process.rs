//! The validated process settings: what needs new sockets or a new process to change (an
//! upgrade, `tollgate -u`). A reload compares this half as a whole and reports what differs.

use pingora_core::server::configuration::ServerConf;
use std::net::SocketAddr;
use std::time::Duration;

/// Settings fixed for the life of a process.
#[derive(Debug)]
pub struct Process {
    /// Pingora's process settings, with Tollgate's defaults applied.
    pub server: ServerConf,
    /// Addresses the traffic listeners bind.
    pub listeners: Vec<Listener>,
    /// The admin listener, when configured.
    pub admin: Option<AdminConfig>,
    /// The response cache's memory (defaults apply when absent).
    pub cache: CacheConfig,
    /// The access log, when enabled.
    pub access_log: Option<AccessLogConfig>,
    /// How long a kept-alive client connection may wait for its next request (whole seconds).
    pub client_keepalive_timeout: Duration,
    /// How slowly a client may send a request.
    pub client_timeouts: ClientTimeouts,
    /// Where sampled traces' spans are exported (`tracing.otlp`).
    pub otlp: Option<OtlpExport>,
}

/// Span export over OTLP/HTTP (protobuf), in batches.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpExport {
    /// The collector's traces URL (`http(s)://collector:4318/v1/traces`).
    pub endpoint: http::Uri,
    /// Sent with each export (an API key, say).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Trust these CA certificates (DER) for an https endpoint instead of the system's.
    pub ca: Option<Vec<Vec<u8>>>,
    /// The time one export may take.
    pub timeout: Duration,
    /// Spans per export request, at most.
    pub batch_size: usize,
    /// Spans waiting for export, at most; more are dropped and counted.
    pub queue_size: usize,
    /// How long spans wait for a batch to fill before they are sent.
    pub interval: Duration,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl std::fmt::Debug for OtlpExport {
    /// Header values (credentials) never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExport")
            .field("endpoint", &self.endpoint)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("batch_size", &self.batch_size)
            .field("queue_size", &self.queue_size)
            .finish()
    }
}

impl Process {
    /// The settings of `other` that differ from these, by the names the file gives them: what a
    /// reload to `other` cannot apply. Every field is compared (the destructuring makes a new
    /// field a compile error here until it is decided).
    pub fn differences(&self, other: &Process) -> Vec<&'static str> {
        let Process {
            server,
            listeners,
            admin,
            cache,
            access_log,
            client_keepalive_timeout,
            client_timeouts,
            otlp,
        } = self;
        let mut out = Vec::new();
        let mut differ = |changed: bool, name: &'static str| {
            if changed {
                out.push(name);
            }
        };
        // Certificates are reloaded in place; everything else about a listener needs its socket
        // made again.
        differ(
            !listeners
                .iter()
                .map(Listener::socket)
                .eq(other.listeners.iter().map(Listener::socket)),
            "listeners",
        );
        differ(*admin != other.admin, "admin");
        differ(*cache != other.cache, "cache");
        differ(*access_log != other.access_log, "access_log");
        differ(*server != other.server, "process settings");
        differ(*otlp != other.otlp, "tracing.otlp");
        differ(
            *client_keepalive_timeout != other.client_keepalive_timeout,
            "client_keepalive_timeout",
        );
        differ(
            *client_timeouts != other.client_timeouts,
            "client_header_timeout, client_body_timeout, client_body_min_rate, client_send_timeout",
        );
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    /// Terminate TLS with these certificates (chosen by SNI).
    pub tls: Vec<Certificate>,
    /// Offer HTTP/2 through ALPN (TLS listeners).
    pub http2: bool,
    /// Answer every request with a redirect to HTTPS on this port.
    pub redirect_https: Option<u16>,
    /// Peers whose forwarding headers (`forwarded_header`) are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header trusted proxies name the client in.
    pub forwarded_header: ForwardedHeader,
    /// Every connection starts with a PROXY protocol header (version 1 or 2).
    pub proxy_protocol: bool,
    /// At most this many open connections from one client address.
    pub max_connections_per_ip: Option<u32>,
    /// Ask TLS clients for certificates (reloaded in place).
    pub client_auth: Option<ClientAuth>,
}

/// Client certificates on a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// The CA certificates (DER) client certificates must chain to.
    pub ca: Vec<Vec<u8>>,
    /// Refuse the handshake without a valid certificate (else a certificate is optional, but
    /// one that is sent must be valid).
    pub required: bool,
}

impl Listener {
    /// The listener with its certificates reduced to whether it has any: what an upgrade is
    /// needed to change (certificates are reloaded in place).
    fn socket(&self) -> Listener {
        let mut l = self.clone();
        l.client_auth = None;
        l.tls.truncate(1);
        if let Some(c) = l.tls.first_mut() {
            *c = Certificate {
                cert: String::new(),
                key: String::new(),
                names: Vec::new(),
            };
        }
        l
    }
}

/// The header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// A certificate chain and its key, with the DNS names it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub cert: String,
    pub key: String,
    /// From the certificate's subject alternative names (`*.example.org` included).
    pub names: Vec<String>,
}

/// How slowly a client may send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// A request head must arrive within this, from its first byte (from the connect, for a
    /// connection's first request).
    pub header: Duration,
    /// The longest wait for more request body bytes.
    pub body: Duration,
    /// After `body`'s allowance, a body must arrive at least this fast on average (bytes per
    /// second); 0 turns the check off.
    pub body_min_rate: u64,
    /// The longest a write of the response to the client may wait (a client that stops
    /// reading).
    pub send: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            body_min_rate: 500,
            send: Duration::from_secs(60),
        }
    }
}

/// The shared response cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Memory for all cached bodies and headers together.
    pub max_size: u64,
    /// Larger responses pass through uncached.
    pub max_object_size: u64,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// The bearer token every call but `/healthz`, `/readyz` and the status page must carry,
    /// when set.
    pub token: Option<String>,
}

/// The access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// A file path (absolute) or `stdout`.
    pub path: String,
    /// How each line names its fields.
    pub format: LogFormat,
    /// Log the query string (it may carry tokens an operator must not keep).
    pub query: bool,
}

/// How access-log lines name their fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Tollgate's own flat names (`method`, `path`, `status`, ...).
    Json,
    /// Elastic Common Schema names (`http.request.method`, `url.path`, ...).
    Ecs,
}
