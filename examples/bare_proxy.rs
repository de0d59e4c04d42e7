//! Bare Pingora for the load bench's reference scenario `pingora-bare`: a proxy whose only logic
//! is one fixed upstream peer (no routing, policies, headers, metrics or logs), on the same
//! Pingora build, allocator and release profile as Tollgate. The gap between it and the `proxy`
//! scenario is the gateway's own cost; the gap between it and nginx is Pingora's.
//!
//! `bare_proxy LISTEN UPSTREAM [THREADS [CERT KEY]] [--forwarding]`: with a PEM certificate and
//! key, the listener terminates TLS (rustls, Pingora's defaults) and offers HTTP/2 through ALPN,
//! for the `pingora-bare-tls`, `-tls-handshake` and `-h2` scenarios. `--forwarding` adds only
//! what every peer in the bench is configured to do besides proxying, through Pingora's own
//! API: `X-Forwarded-For`, `-Proto`, `-Host` and an `X-Request-Id` upstream, the id on the
//! answer, and the upstream read/write/idle and client send timeouts
//! (`pingora-bare-forwarding`): what that work costs in Pingora itself, apart from a gateway's
//! routing and policies.

use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};
use std::cell::Cell;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Nothing but the fixed peer: exactly Pingora's default phases.
struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

/// `--forwarding`: the fixed peer, plus the forwarding headers and timeouts.
struct Forwarding {
    upstream: String,
}

const TIMEOUT: Duration = Duration::from_secs(60);

thread_local! {
    static COUNTER: Cell<u64> = const { Cell::new(0) };
}

/// A 32-hex-digit id: this thread's counter's address as a prefix, then the counter.
fn request_id() -> http::HeaderValue {
    let (prefix, n) = COUNTER.with(|c| {
        c.set(c.get() + 1);
        (c as *const Cell<u64> as u64, c.get())
    });
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { n };
        let nibble = (word >> (60 - 4 * (i % 16))) & 0xf;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    http::HeaderValue::from_bytes(&id).unwrap_or(http::HeaderValue::from_static("-"))
}

#[async_trait]
impl ProxyHttp for Forwarding {
    /// The request's id.
    type CTX = Option<http::HeaderValue>;

    fn new_ctx(&self) -> Self::CTX {
        None
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> pingora_core::Result<()> {
        session.set_write_timeout(Some(TIMEOUT));
        *ctx = Some(request_id());
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora_core::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(TIMEOUT);
        o.read_timeout = Some(TIMEOUT);
        o.write_timeout = Some(TIMEOUT);
        o.idle_timeout = Some(TIMEOUT);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> pingora_core::Result<()> {
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        upstream_request.insert_header("X-Forwarded-For", client)?;
        upstream_request.insert_header("X-Forwarded-Proto", "http")?;
        if let Some(host) = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned()
        {
            upstream_request.insert_header("X-Forwarded-Host", host)?;
        }
        if let Some(id) = ctx {
            upstream_request.insert_header("X-Request-Id", id.clone())?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> pingora_core::Result<()> {
        if let Some(id) = ctx {
            upstream_response.insert_header("X-Request-Id", id.clone())?;
        }
        Ok(())
    }
}

fn main() {
    let forwarding = std::env::args().any(|a| a == "--forwarding");
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bare_proxy LISTEN UPSTREAM [THREADS [CERT KEY]] [--forwarding]");
        std::process::exit(2);
    };
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    if forwarding {
        let proxy = pingora_proxy::http_proxy_service(
            &server.configuration,
            Forwarding {
                upstream: upstream.clone(),
            },
        );
        serve(server, proxy, listen, &args);
    } else {
        let proxy = pingora_proxy::http_proxy_service(
            &server.configuration,
            Bare {
                upstream: upstream.clone(),
            },
        );
        serve(server, proxy, listen, &args);
    }
}

/// Listen (TLS when `args` name a certificate and key) and serve until stopped.
fn serve<A>(mut server: Server, mut proxy: Service<A>, listen: &str, args: &[String])
where
    A: pingora_core::apps::ServerApp + Send + Sync + 'static,
{
    match (args.get(4), args.get(5)) {
        (Some(cert), Some(key)) => {
            let mut tls = match TlsSettings::intermediate(cert, key) {
                Ok(tls) => tls,
                Err(e) => {
                    eprintln!("bare_proxy: {cert}, {key}: {e}");
                    std::process::exit(2);
                }
            };
            tls.enable_h2();
            proxy.add_tls_with_settings(listen, None, tls);
        }
        _ => proxy.add_tcp(listen),
    }
    server.add_service(proxy);
    server.run_forever();
}
