//! The admin listener: a separate Pingora service on its own address (loopback by default),
//! optionally protected by a bearer token. Endpoints: `GET /healthz`, `GET /cache` (fill) and
//! `POST /cache/purge`.

use crate::cache::KeyInput;
use crate::config::AdminConfig;
use crate::gateway::Gateway;
use crate::router;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The admin HTTP application.
pub struct Admin {
    state: Arc<ArcSwap<Gateway>>,
    token: Option<String>,
}

/// Build the admin service for the server.
pub fn service(config: &AdminConfig, state: Arc<ArcSwap<Gateway>>) -> Service<Admin> {
    let mut s = Service::new(
        "tollgate admin".to_string(),
        Admin {
            state,
            token: config.token.clone(),
        },
    );
    s.add_tcp(&config.address.to_string());
    s
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

fn json(status: u16, value: serde_json::Value) -> Response<Vec<u8>> {
    let body = value.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn error(status: u16, message: &str) -> Response<Vec<u8>> {
    json(
        status,
        serde_json::json!({ "error": message, "status": status }),
    )
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

    fn purge(&self, body: &[u8]) -> Response<Vec<u8>> {
        let req: PurgeRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return error(400, &format!("invalid purge request: {e}")),
        };
        let gateway = self.state.load();
        let Some(route_id) = gateway.routes.iter().position(|r| r.name == req.route) else {
            return error(404, &format!("no route named \"{}\"", req.route));
        };
        let Some(rules) = &gateway.route_cache[route_id] else {
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
        let host = router::normalize_host(&req.host);
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
        if path == "/healthz" {
            return json(200, serde_json::json!({ "status": "ok" }));
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
