//! Real servers on loopback: upstreams that record what they receive, and test-started
//! nginx and HAProxy processes.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// A request as an upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub remote: Option<SocketAddr>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What an upstream answers.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// What a test server does with each complete request it receives.
type Serve = dyn Fn(Seen) -> Reply + Send + Sync;

/// A real HTTP/1.1 server (hyper, on a runtime of its own), plain or over TLS, answering each
/// request with `serve`; it stops when dropped. A request whose body does not arrive whole is
/// not served (the connection is closed).
pub struct HttpServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl HttpServer {
    /// Serve on a new loopback port; over TLS when `tls` is given.
    pub fn start(
        tls: Option<Arc<rustls::ServerConfig>>,
        serve: impl Fn(Seen) -> Reply + Send + Sync + 'static,
    ) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        HttpServer::serve_on(listener, tls, serve)
    }

    /// Serve on `listener`.
    pub fn serve_on(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        serve: impl Fn(Seen) -> Reply + Send + Sync + 'static,
    ) -> HttpServer {
        let addr = listener.local_addr().expect("address");
        listener.set_nonblocking(true).expect("non-blocking");
        let serve: Arc<Serve> = Arc::new(serve);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("test server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
                loop {
                    let (tcp, remote) = tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                    };
                    let (serve, acceptor) = (serve.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            answer(serve.clone(), req, remote)
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        match acceptor {
                            Some(a) => {
                                if let Ok(s) = a.accept(tcp).await {
                                    let io = hyper_util::rt::TokioIo::new(s);
                                    let _ = http.serve_connection(io, service).await;
                                }
                            }
                            None => {
                                let io = hyper_util::rt::TokioIo::new(tcp);
                                let _ = http.serve_connection(io, service).await;
                            }
                        }
                    });
                }
            });
        });
        HttpServer {
            addr,
            stop: Some(stop),
        }
    }
}

/// Read a whole request, record it through `serve`, and answer with its reply (after its
/// delay).
async fn answer(
    serve: Arc<Serve>,
    req: hyper::Request<hyper::body::Incoming>,
    remote: SocketAddr,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::io::Error> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .to_bytes();
    let seen = Seen {
        method: parts.method.as_str().to_string(),
        url: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.to_string(), |p| p.as_str().to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        remote: Some(remote),
    };
    let reply = serve(seen);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = hyper::Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        resp = resp.header(k.as_str(), v.as_str());
    }
    resp.body(http_body_util::Full::new(bytes::Bytes::from(reply.body)))
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// A real HTTP server on a loopback port that records every request it serves (health probes
/// to `/health` are answered from `healthy` and counted apart).
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    pub healthy: Arc<AtomicBool>,
    pub probes: Arc<AtomicUsize>,
    _server: HttpServer,
}

impl Upstream {
    /// An upstream that answers `200 <name>` to everything.
    pub fn start(name: &str) -> Upstream {
        let n = name.to_string();
        Upstream::with_handler(name, move |_| Reply::ok(&n))
    }

    pub fn with_handler(
        name: &str,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        Upstream::on(listener, name, handler)
    }

    /// An upstream serving on `listener`.
    pub fn on(
        listener: TcpListener,
        name: &str,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let healthy = Arc::new(AtomicBool::new(true));
        let probes = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (recorded, health, probed, name) = (
            seen.clone(),
            healthy.clone(),
            probes.clone(),
            name.to_string(),
        );
        let server = HttpServer::serve_on(listener, None, move |s: Seen| {
            if s.url == "/health" {
                probed.fetch_add(1, Ordering::SeqCst);
                let status = if health.load(Ordering::SeqCst) {
                    200
                } else {
                    500
                };
                return Reply {
                    status,
                    ..Reply::ok("health")
                };
            }
            recorded.lock().unwrap().push(s.clone());
            handler(&s).header("x-upstream", &name)
        });
        Upstream {
            addr: server.addr,
            seen,
            healthy,
            probes,
            _server: server,
        }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Whether a request for `path` has arrived.
    pub fn seen_path(&self, path: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|s| s.url == path)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw a request")
    }

    pub fn set_healthy(&self, h: bool) {
        self.healthy.store(h, Ordering::SeqCst);
    }
}

/// A TLS server configuration with a new self-signed certificate for `names` (IP addresses
/// become IP SANs), and the certificate's PEM file, to be trusted as its own CA.
pub fn tls_server_config(
    dir: &std::path::Path,
    names: &[&str],
) -> (Arc<rustls::ServerConfig>, String) {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("certificate");
    let cert_path = dir.join(format!("{}-{}.pem", names[0], std::process::id()));
    std::fs::write(&cert_path, c.cert.pem()).expect("write certificate");
    let key = rustls::pki_types::PrivateKeyDer::try_from(c.key_pair.serialize_der()).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![c.cert.der().clone()], key)
        .expect("server config");
    (Arc::new(config), cert_path.display().to_string())
}

/// A loopback port nobody listens on (connections are refused), for a server a test starts
/// later or for a peer that must refuse.
///
/// Ports come from outside the kernel's ephemeral range, each at most once per test process:
/// a port the kernel handed out for `bind(0)` and freed could be handed to another test's
/// server (or used as the source port of an outgoing connection) before the process this port
/// was picked for binds it. Falls back to `bind(0)` when the ephemeral range leaves no room.
pub fn closed_port() -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
    const SPAN: usize = 10_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|n| n.parse::<usize>().ok());
            Some((it.next()??, it.next()??))
        });
    let base = match range {
        Some((low, _)) if low >= 1_024 + SPAN => Some(low - SPAN),
        Some((_, high)) if high + SPAN < 65_536 => Some(high + 1),
        _ => None,
    };
    if let Some(base) = base {
        // Start at a place of this process's own (processes with neighbouring ids far apart),
        // so two test processes rarely meet.
        let _ = NEXT.compare_exchange(
            usize::MAX,
            (std::process::id() as usize).wrapping_mul(2_654_435_761) % SPAN,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        for _ in 0..SPAN {
            let port = base + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
                if let Ok(addr) = l.local_addr() {
                    return addr;
                }
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A server process started by a test (nginx, HAProxy), stopped when dropped.
pub struct Server {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start `program` with `args` (where `{conf}` stands for the configuration file, written
    /// from `conf` with `{port}` and `{dir}` filled in) and wait until it listens on its port.
    fn start(program: &str, conf: &str, args: &[&str]) -> Server {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = closed_port().port();
            let path = dir.path().join("server.conf");
            let text = conf
                .replace("{port}", &port.to_string())
                .replace("{dir}", &dir.path().display().to_string());
            std::fs::write(&path, text).unwrap();
            let args: Vec<String> = args
                .iter()
                .map(|a| a.replace("{conf}", &path.display().to_string()))
                .collect();
            let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
            let mut child = Command::new(program)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{program} must be installed (scripts/setup.sh): {e}"));
            let up = wait_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(None)) && listens(child.id(), port)
            });
            if up {
                return Server { port, child, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            if !log.contains("Address already in use") && !log.contains("cannot bind") {
                panic!("{program} did not start:\n{log}");
            }
        }
        panic!("{program} did not start");
    }

    /// A real nginx serving `http` (the inside of its `http` block, where `{port}` is the port
    /// to listen on).
    pub fn nginx(http: &str) -> Server {
        let program = if std::path::Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        };
        let conf = format!(
            "{user}worker_processes 1;\ndaemon off;\npid {{dir}}/nginx.pid;\nerror_log {{dir}}/error.log warn;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log {{dir}}/access.log;\n  client_body_temp_path {{dir}}/body; proxy_temp_path {{dir}}/proxy; fastcgi_temp_path {{dir}}/fcgi;\n  uwsgi_temp_path {{dir}}/uwsgi; scgi_temp_path {{dir}}/scgi;\n{http}\n}}\n"
        );
        Server::start(program, &conf, &["-c", "{conf}", "-e", "stderr"])
    }

    /// A real HAProxy in TCP mode in front of `backend` (a port on 127.0.0.1), with the
    /// server options `options` (e.g. `send-proxy`, `send-proxy-v2`).
    pub fn haproxy(backend: u16, options: &str) -> Server {
        let conf = format!(
            "global\n  maxconn 1024\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\nfrontend f\n  bind 127.0.0.1:{{port}}\n  default_backend b\nbackend b\n  server gw 127.0.0.1:{backend} {options}\n"
        );
        let program = if std::path::Path::new("/usr/sbin/haproxy").exists() {
            "/usr/sbin/haproxy"
        } else {
            "haproxy"
        };
        Server::start(program, &conf, &["-db", "-f", "{conf}"])
    }

    /// Lines of a file the server writes in its directory (e.g. nginx's `access.log`).
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}
