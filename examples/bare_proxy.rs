//! Bare Pingora for the load bench's reference scenario `pingora-bare`: a proxy whose only logic
//! is one fixed upstream peer (no routing, policies, headers, metrics or logs), on the same
//! Pingora build, allocator and release profile as Tollgate. The gap between it and the `proxy`
//! scenario is the gateway's own cost; the gap between it and nginx is Pingora's.
//!
//! `bare_proxy LISTEN UPSTREAM [THREADS [CERT KEY]]`: with a PEM certificate and key, the
//! listener terminates TLS (rustls, Pingora's defaults) and offers HTTP/2 through ALPN, for the
//! `pingora-bare-tls`, `-tls-handshake` and `-h2` scenarios.

use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bare_proxy LISTEN UPSTREAM [THREADS]");
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
    let mut proxy = pingora_proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: upstream.clone(),
        },
    );
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
