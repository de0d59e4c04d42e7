//! Forward authentication: before a request is admitted, a pool of the file (the
//! authorization service) is asked `GET <path>` with the request's method, scheme, host, URI and
//! client in `X-Forwarded-*` headers and the credentials headers the route names. A `2xx`
//! admits, and the headers it names (a user id, groups; the first value of each) go on to the
//! upstream; any other answer
//! goes back to the client as the service wrote it (status, its body up to 64 KiB, and its
//! `Content-Type`, `WWW-Authenticate`, `Location`, `Set-Cookie`). A service that cannot be asked
//! in time refuses (`403`), or admits with `failure: allow`. An admitting answer may be reused
//! for `cache` for the same request as the service saw it (method, host, URI, client,
//! credentials; at most 10,000 of them).

use crate::config::ForwardAuth as Rules;
use crate::upstream::Pool;
use crate::wire::key_digest;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora_core::connectors::http::Connector;
use pingora_http::RequestHeader;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Verdicts kept at most.
const CACHE_ENTRIES: usize = 10_000;
/// Body of a refusal passed on, at most.
const MAX_BODY: usize = 64 * 1024;

/// Admitting answers by the digest of their credentials: when, and the headers.
type Verdicts = HashMap<[u8; 32], (Instant, Vec<(HeaderName, HeaderValue)>)>;

/// What the authorization service said.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Admitted, with these headers for the upstream.
    Admit(Vec<(HeaderName, HeaderValue)>),
    /// Refused: its answer, for the client.
    Refuse {
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
    /// It could not be asked (down, too slow, not HTTP).
    Failed(&'static str),
}

/// What the service is told about a request.
pub struct Asked<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub host: &'a str,
    pub uri: &'a str,
    pub client: Option<std::net::IpAddr>,
    pub headers: &'a HeaderMap,
}

/// A route's forward authentication.
pub struct ForwardAuth {
    pub rules: Rules,
    pool: Arc<Pool>,
    connector: Connector,
    cache: Mutex<Verdicts>,
}

impl std::fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuth")
            .field("pool", &self.pool.config.name)
            .field("path", &self.rules.path)
            .finish()
    }
}

/// Headers of a refusal passed on to the client.
const PASSED_ON: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::WWW_AUTHENTICATE,
    header::LOCATION,
    header::SET_COOKIE,
];

impl ForwardAuth {
    pub fn new(rules: Rules, pool: Arc<Pool>) -> ForwardAuth {
        ForwardAuth {
            rules,
            pool,
            connector: Connector::new(None),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Ask about a request (or reuse an admitting answer for the same credentials); `bool`:
    /// whether the answer came from the cache.
    pub async fn check(&self, asked: &Asked<'_>) -> (Verdict, bool) {
        let key = self.rules.cache.map(|_| self.credentials_key(asked));
        if let (Some(ttl), Some(key)) = (self.rules.cache, key) {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, headers)) = cache.get(&key) {
                if at.elapsed() < ttl {
                    return (Verdict::Admit(headers.clone()), true);
                }
            }
        }
        let verdict = tokio::time::timeout(self.rules.timeout, self.ask(asked))
            .await
            .unwrap_or(Verdict::Failed("timed out"));
        if let (Verdict::Admit(headers), Some(key)) = (&verdict, key) {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_ENTRIES {
                let ttl = self.rules.cache.unwrap_or_default();
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(key, (Instant::now(), headers.clone()));
        }
        (verdict, false)
    }

    /// The digest of everything the service is told about a request: method, scheme, host,
    /// URI, client and the credentials headers (names and values, in the route's order); the
    /// service may decide on any of them.
    fn credentials_key(&self, asked: &Asked<'_>) -> [u8; 32] {
        let mut text = Vec::new();
        let client = asked.client.map(|ip| ip.to_string()).unwrap_or_default();
        for part in [asked.method, asked.scheme, asked.host, asked.uri, &client] {
            text.extend_from_slice(part.as_bytes());
            text.push(0);
        }
        for name in &self.rules.request_headers {
            for v in asked.headers.get_all(name) {
                text.extend_from_slice(name.as_str().as_bytes());
                text.push(0);
                text.extend_from_slice(v.as_bytes());
                text.push(0);
            }
            text.push(1);
        }
        key_digest(&text)
    }

    async fn ask(&self, asked: &Asked<'_>) -> Verdict {
        let Some((peer, _in_flight)) = self.pool.select(b"", &[]) else {
            return Verdict::Failed("no healthy peer");
        };
        let Ok(mut head) = RequestHeader::build("GET", self.rules.path.as_bytes(), None) else {
            return Verdict::Failed("bad path");
        };
        let host = self
            .pool
            .config
            .tls
            .as_ref()
            .map_or_else(|| peer._address.to_string(), |t| t.sni.clone());
        let _ = head.insert_header(header::HOST, host);
        let _ = head.insert_header("x-forwarded-method", asked.method);
        let _ = head.insert_header("x-forwarded-proto", asked.scheme);
        let _ = head.insert_header("x-forwarded-host", asked.host);
        let _ = head.insert_header("x-forwarded-uri", asked.uri);
        if let Some(ip) = asked.client {
            let _ = head.insert_header("x-forwarded-for", ip.to_string());
        }
        for name in &self.rules.request_headers {
            for v in asked.headers.get_all(name) {
                let _ = head.append_header(name.clone(), v.clone());
            }
        }
        let Ok((mut session, _)) = self.connector.get_http_session(&peer).await else {
            return Verdict::Failed("cannot connect");
        };
        if session.write_request_header(Box::new(head)).await.is_err()
            || session.finish_request_body().await.is_err()
        {
            return Verdict::Failed("broken exchange");
        }
        let Ok(resp) = crate::fetch::final_head(&mut session).await else {
            return Verdict::Failed("broken exchange");
        };
        let Some(resp) = resp else {
            return Verdict::Failed("no final answer");
        };
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            return Verdict::Failed("no final answer");
        }
        let status = resp.status.as_u16();
        let mut body = Vec::new();
        loop {
            match session.read_response_body().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(_) => return Verdict::Failed("broken answer"),
            }
        }
        self.connector
            .release_http_session(session, &peer, Some(self.pool.config.idle_timeout))
            .await;
        if (200..300).contains(&status) {
            // One value per identity header: the first the service sent.
            let first = self
                .rules
                .response_headers
                .iter()
                .filter_map(|n| Some((n.clone(), resp.headers.get(n)?.clone())))
                .collect();
            return Verdict::Admit(first);
        }
        let headers = pick(&PASSED_ON, &resp.headers);
        Verdict::Refuse {
            status,
            headers,
            body: Bytes::from(body),
        }
    }
}

/// Every value of the headers `names` in `headers`.
fn pick(names: &[HeaderName], headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    names
        .iter()
        .flat_map(|n| {
            headers
                .get_all(n)
                .iter()
                .map(move |v| (n.clone(), v.clone()))
        })
        .collect()
}
