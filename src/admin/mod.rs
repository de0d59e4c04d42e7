//! The admin listener: a separate Pingora service on its own address (loopback by default),
//! optionally protected by a bearer token. Endpoints: `GET /healthz`, `GET /readyz`,
//! `GET /metrics`, `GET /status`, `GET /` (the status page), `GET /routes`, `GET /upstreams`,
//! `GET /status/history` (the status page's charts), `GET /config`,
//! `POST /upstreams/{pool}/peers/{address}/drain` (and `/undrain`),
//! `GET /cache`, `POST /cache/purge` and `POST /reload`.

mod resources;
mod usage;

use crate::cache::KeyInput;
use crate::config::AdminConfig;
use crate::errors::{Problem, PROBLEM_JSON};
use crate::gateway::Gateway;
use crate::observe::metrics::Metrics;
use crate::server::Lifecycle;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The status page: one self-contained HTML file (no external assets).
const STATUS_PAGE: &str = include_str!("status.html");

/// The admin HTTP application.
pub struct Admin {
    state: Arc<ArcSwap<Gateway>>,
    token: Option<String>,
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
    reloader: Arc<crate::reload::Reloader>,
    /// The last minutes of traffic, sampled by the admin thread.
    history: crate::observe::history::History,
}

/// The admin listener. It is bound when the configuration is loaded (so a taken port stops the
/// start with a clear error) and served from a thread of its own, outside Pingora's services:
/// it keeps answering, `/readyz` with 503, while a shutdown drains the traffic listeners.
pub struct AdminServer {
    app: Arc<Admin>,
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

impl AdminServer {
    /// Bind the admin address. `upgrade`: this process takes over from a running one, which
    /// still listens on the address until it has drained (`SO_REUSEPORT` lets both bind it
    /// then). Outside an upgrade an address something already answers on is refused, so two
    /// gateways never share an admin port.
    pub fn bind(
        config: &AdminConfig,
        state: Arc<ArcSwap<Gateway>>,
        metrics: Arc<Metrics>,
        reloader: Arc<crate::reload::Reloader>,
        lifecycle: Arc<Lifecycle>,
        upgrade: bool,
    ) -> std::io::Result<AdminServer> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(config.address),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if !upgrade && admin_answers(config.address) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process listens there (only an upgrade may share it)",
            ));
        }
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&config.address.into())?;
        socket.listen(128)?;
        socket.set_nonblocking(true)?;
        let listener: std::net::TcpListener = socket.into();
        Ok(AdminServer {
            app: Arc::new(Admin {
                state,
                token: config.token.clone(),
                metrics,
                lifecycle,
                reloader,
                history: Default::default(),
            }),
            listener: std::sync::Mutex::new(Some(listener)),
        })
    }
}

/// Whether something accepts connections on `address` (a wildcard address is probed on
/// loopback).
fn admin_answers(address: std::net::SocketAddr) -> bool {
    let mut probe = address;
    if probe.ip().is_unspecified() {
        probe.set_ip(if probe.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(300)).is_ok()
}

async fn serve_connection(app: Arc<Admin>, tcp: tokio::net::TcpStream) {
    let stream: pingora_core::protocols::l4::stream::Stream = tcp.into();
    let mut http = ServerSession::new_http1(Box::new(stream));
    if !matches!(http.read_request().await, Ok(true)) {
        return;
    }
    http.set_keepalive(None);
    let (parts, body) = app.response(&mut http).await.into_parts();
    let header: pingora_http::ResponseHeader = parts.into();
    if http.write_response_header(Box::new(header)).await.is_err() {
        return;
    }
    if !body.is_empty() {
        let _ = http.write_response_body(body.into(), true).await;
    }
    let _ = http.finish().await;
}

#[async_trait]
impl BackgroundService for AdminServer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Started here, after Pingora has daemonized: a thread started before would not
        // survive the fork.
        let listener = self.listener.lock().ok().and_then(|mut l| l.take());
        if let Some(listener) = listener {
            let app = self.app.clone();
            let spawned = std::thread::Builder::new()
                .name("admin".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            log::error!("admin: cannot start its runtime: {e}");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        tokio::spawn(sample_history(app.clone()));
                        let listener = match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => l,
                            Err(e) => {
                                log::error!("admin: cannot use its listener: {e}");
                                return;
                            }
                        };
                        loop {
                            match listener.accept().await {
                                Ok((tcp, _)) => {
                                    tokio::spawn(serve_connection(app.clone(), tcp));
                                }
                                Err(e) => {
                                    log::warn!("admin: accept failed: {e}");
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                            }
                        }
                    });
                });
            if let Err(e) = spawned {
                log::error!("admin: cannot start its thread: {e}");
            }
        }
        let _ = shutdown.changed().await;
    }
}

/// Sample the traffic for the status page's charts, once a step, for as long as the thread
/// runs.
async fn sample_history(app: Arc<Admin>) {
    let step = Duration::from_secs(crate::observe::history::STEP_SECONDS);
    let mut tick = tokio::time::interval(step);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let peers = app
            .state
            .load()
            .stats()
            .peers
            .into_iter()
            .map(|p| (format!("{}/{}", p.upstream, p.peer), p.available))
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        app.history.record(now, &app.metrics.gather_routes(), peers);
    }
}

/// Body of `POST /cache/purge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    route: String,
    /// With `path`: purge one object (all its `Vary` variants); without: the whole route.
    path: Option<String>,
    #[serde(default)]
    host: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    consumer: String,
}

const MAX_BODY: usize = 64 * 1024;

pub(crate) fn json(status: u16, value: serde_json::Value) -> Response<Vec<u8>> {
    let body = value.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// A problem details answer (RFC 9457), as the gateway's own errors are.
fn problem(
    kind: Problem,
    detail: &str,
    extra: Option<(&str, serde_json::Value)>,
) -> Response<Vec<u8>> {
    let body = kind.body(None, None, Some(detail), extra).to_vec();
    Response::builder()
        .status(kind.status)
        .header(header::CONTENT_TYPE, PROBLEM_JSON)
        .header(header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// An admin error with `status` and what went wrong.
pub(crate) fn error(status: u16, message: &str) -> Response<Vec<u8>> {
    let kind = match status {
        400 => Problem::ADMIN_INVALID,
        404 => Problem::ADMIN_NOT_FOUND,
        409 => Problem::ADMIN_CONFLICT,
        _ => Problem::for_status(status),
    };
    problem(kind, message, None)
}

impl Admin {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        bool::from(presented.as_bytes().ct_eq(token.as_bytes()))
    }

    /// `/readyz`: 200 once the listeners accept, 503 while starting and once draining.
    fn readiness(&self) -> Response<Vec<u8>> {
        match (self.lifecycle.is_ready(), self.lifecycle.is_draining()) {
            (_, true) => json(503, serde_json::json!({ "status": "draining" })),
            (false, _) => json(503, serde_json::json!({ "status": "starting" })),
            (true, false) => json(200, serde_json::json!({ "status": "ready" })),
        }
    }

    fn status(&self) -> serde_json::Value {
        let gw = self.state.load();
        let routes = resources::routes(&gw);
        let upstreams = resources::upstreams(&gw);
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.lifecycle.uptime(),
            "config_checksum": gw.checksum,
            "ready": self.lifecycle.is_ready(),
            "draining": self.lifecycle.is_draining(),
            "routes": routes,
            "upstreams": upstreams,
            "cache": {
                "max_size": gw.cache.store.budget(),
                "held_bytes": gw.cache.store.held_bytes(),
                "entries": gw.cache.store.entries(),
            },
            "rate_limits": {
                "keys": gw.limits.keys_held(),
                "max_keys": gw.limits.max_keys(),
                "key_evictions": gw.limits.keys_evicted(),
                "redis": gw.has_redis.then(|| serde_json::json!({
                    "circuit_open": gw.limits.redis_circuit_open(),
                    "fallbacks": gw.limits.redis_fallbacks.load(std::sync::atomic::Ordering::Relaxed),
                })),
            },
            "plans": usage::plans(&gw),
        })
    }

    fn purge(&self, body: &[u8]) -> Response<Vec<u8>> {
        let req: PurgeRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return error(400, &format!("invalid purge request: {e}")),
        };
        let gateway = self.state.load();
        let Some(route) = gateway.routes.iter().find(|r| *r.name == *req.route) else {
            return error(404, &format!("no route named \"{}\"", req.route));
        };
        let Some(rules) = &route.cache else {
            return error(409, &format!("route \"{}\" has no cache", req.route));
        };
        let Some(path) = req.path else {
            let generation = gateway.cache.purge_route(&req.route);
            return json(
                200,
                serde_json::json!({ "route": req.route, "purged": "all", "generation": generation }),
            );
        };
        let (path, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(k), Ok(v)) => {
                    headers.insert(k, v);
                }
                _ => return error(400, &format!("invalid header {k}")),
            }
        }
        // The key is made of the canonical host and path, as requests' keys are.
        let host = match crate::canonical::host(&req.host) {
            Ok(h) => h.name,
            Err(e) => return error(400, &format!("host: {}", e.describe())),
        };
        let path = match crate::canonical::path(path, &gateway.path_normalization) {
            Ok(p) => p,
            Err(e) => return error(400, &format!("path: {}", e.describe())),
        };
        let primary = rules.primary_of(&KeyInput {
            host: host.as_bytes(),
            path: path.as_bytes(),
            query: query.as_bytes(),
            headers: &headers,
            consumer: req.consumer.as_bytes(),
        });
        let n = gateway.cache.store.remove_primary(&primary);
        json(200, serde_json::json!({ "route": req.route, "purged": n }))
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return error(413, "request body too large");
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => return error(400, "malformed request body"),
            }
        }
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        // Liveness and readiness answer without the token: load balancers and Kubernetes
        // probes cannot send one, and the answers say nothing an attacker could use.
        if path == "/healthz" {
            return json(200, serde_json::json!({ "status": "ok" }));
        }
        if path == "/readyz" && method == http::Method::GET {
            return self.readiness();
        }
        if path == "/" && method == http::Method::GET {
            // The page holds no data; it asks for the token (if any) and sends it with its calls.
            let body = STATUS_PAGE.as_bytes().to_vec();
            return Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                .header(header::CONTENT_LENGTH, body.len())
                .header(
                    "content-security-policy",
                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                )
                .body(body)
                .unwrap_or_else(|_| Response::new(Vec::new()));
        }
        if !self.authorized(&req.headers) {
            let mut r = error(401, "admin token required");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tollgate-admin\""),
            );
            return r;
        }
        match (method.as_str(), path.as_str()) {
            ("GET", "/metrics") => {
                let body = self.metrics.render(&self.state.load().stats()).into_bytes();
                Response::builder()
                    .status(200)
                    .header(header::CONTENT_TYPE, crate::observe::metrics::CONTENT_TYPE)
                    .header(header::CONTENT_LENGTH, body.len())
                    .body(body)
                    .unwrap_or_else(|_| Response::new(Vec::new()))
            }
            ("GET", "/status") => json(200, self.status()),
            ("GET", "/status/history") => json(200, self.history.series()),
            ("GET", "/routes") => json(200, resources::routes(&self.state.load())),
            ("GET", "/upstreams") => json(200, resources::upstreams(&self.state.load())),
            ("GET", "/config") => json(200, resources::config(&self.state.load())),
            ("GET", p) if p.starts_with("/consumers/") => {
                usage::consumer(&self.state.load_full(), p).await
            }
            ("GET", p) if p.starts_with("/plans/") => {
                let query = req.uri.query().map(str::to_string);
                usage::plan(&self.state.load_full(), p, query.as_deref()).await
            }
            ("POST", p) if p.starts_with("/upstreams/") => resources::drain(&self.state.load(), p),
            ("POST", "/reload") => match self.reloader.reload() {
                crate::reload::Outcome::Applied { needs_upgrade } => json(
                    200,
                    serde_json::json!({ "result": "applied", "needs_upgrade": needs_upgrade }),
                ),
                crate::reload::Outcome::Refused(errors) => problem(
                    Problem::CONFIG_REFUSED,
                    Problem::CONFIG_REFUSED.detail,
                    Some(("errors", errors.iter().map(|e| e.to_string()).collect())),
                ),
            },
            ("POST", "/cache/purge") => self.purge(&body),
            ("GET", "/cache") => {
                let cache = &self.state.load().cache;
                json(
                    200,
                    serde_json::json!({
                        "max_size": cache.store.budget(),
                        "held_bytes": cache.store.held_bytes(),
                        "entries": cache.store.entries(),
                    }),
                )
            }
            (_, "/cache/purge") => error(405, "use POST"),
            _ => error(404, "no such admin endpoint"),
        }
    }
}
