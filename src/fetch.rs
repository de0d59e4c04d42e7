//! One HTTP request from the gateway itself (not a client's): fetching a JWT key set, exporting
//! trace spans. Pingora's connector over HTTP/1.1, plain or TLS (verified against the system's
//! roots or the given CAs); a new connection each time, since these calls are rare and may run
//! on any thread's runtime.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// CA certificates (DER) as a peer's trust list.
pub fn ca_type(ders: &[Vec<u8>]) -> Arc<pingora_core::protocols::tls::CaType> {
    let certs: Vec<pingora_core::utils::tls::WrappedX509> = ders
        .iter()
        .map(|d| {
            pingora_core::utils::tls::WrappedX509::new(
                d.clone(),
                pingora_core::utils::tls::parse_x509,
            )
        })
        .collect();
    Arc::from(certs.into_boxed_slice())
}

/// Where and how to send a request.
pub struct Call<'a> {
    pub method: Method,
    pub url: &'a Uri,
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub body: Option<Bytes>,
    /// Trust these CAs (DER) for an https URL instead of the system's.
    pub ca: Option<&'a [Vec<u8>]>,
    /// Connect, write and read timeout.
    pub timeout: Duration,
    /// The largest answer body read; a longer one fails the call.
    pub max_body: usize,
}

/// The answer's head, past interim answers (100, 103; at most a few are read past); `None`
/// when none came.
pub async fn final_head(
    session: &mut pingora_core::protocols::http::client::HttpSession,
) -> pingora_error::Result<Option<ResponseHeader>> {
    for _ in 0..4 {
        session.read_response_header().await?;
        match session.response_header() {
            Some(h) if h.status.is_informational() => continue,
            Some(h) => return Ok(Some(h.clone())),
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// An answer: its head and body.
pub struct Answer {
    pub head: ResponseHeader,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        self.head.status
    }
}

/// Send `call` through `connector`.
pub async fn send(connector: &Connector, call: Call<'_>) -> Result<Answer, String> {
    let url = call.url;
    let tls = match url.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url}: not an http(s) URL")),
    };
    let host = url.host().ok_or_else(|| format!("{url}: no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let address = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("cannot resolve {bare}: {e}"))?
            .next()
            .ok_or_else(|| format!("{bare} has no address"))?,
    };
    let mut peer = HttpPeer::new(
        address,
        tls,
        if tls { bare.to_string() } else { String::new() },
    );
    peer.options.ca = call.ca.map(ca_type);
    peer.options.connection_timeout = Some(call.timeout);
    peer.options.total_connection_timeout = Some(call.timeout);
    peer.options.read_timeout = Some(call.timeout);
    peer.options.write_timeout = Some(call.timeout);
    peer.options.set_http_version(1, 1);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let mut head = RequestHeader::build(call.method.clone(), path.as_bytes(), None)
        .map_err(|e| e.to_string())?;
    let authority = url.authority().map_or(bare, |a| a.as_str());
    let _ = head.insert_header(header::HOST, authority);
    let _ = head.insert_header(header::USER_AGENT, "tollgate");
    for (name, value) in call.headers {
        let _ = head.insert_header(name.clone(), value.clone());
    }
    if let Some(body) = &call.body {
        let _ = head.insert_header(header::CONTENT_LENGTH, body.len());
    }
    let broken = |e: Box<pingora_error::Error>| format!("{url}: {e}");
    let (mut session, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| format!("{url}: cannot connect: {e}"))?;
    session
        .write_request_header(Box::new(head))
        .await
        .map_err(broken)?;
    if let Some(body) = call.body {
        session
            .write_request_body(body, true)
            .await
            .map_err(broken)?;
    }
    session.finish_request_body().await.map_err(broken)?;
    let head = final_head(&mut session)
        .await
        .map_err(broken)?
        .ok_or_else(|| format!("{url}: no answer"))?;
    let mut body = Vec::new();
    while let Some(chunk) = session.read_response_body().await.map_err(broken)? {
        if body.len() + chunk.len() > call.max_body {
            return Err(format!("{url}: answer longer than {} bytes", call.max_body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { head, body })
}
