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

/// A real HTTP server on a loopback port that records every request it serves (health probes
/// to `/health` are answered from `healthy` and counted apart).
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    pub healthy: Arc<AtomicBool>,
    pub probes: Arc<AtomicUsize>,
    server: Arc<tiny_http::Server>,
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
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind upstream"));
        let addr = server.server_addr().to_ip().expect("ip listener");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let healthy = Arc::new(AtomicBool::new(true));
        let probes = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        for _ in 0..16 {
            let server = server.clone();
            let seen = seen.clone();
            let healthy = healthy.clone();
            let probes = probes.clone();
            let handler = handler.clone();
            let name = name.to_string();
            std::thread::spawn(move || {
                while let Ok(mut req) = server.recv() {
                    if req.url() == "/health" {
                        probes.fetch_add(1, Ordering::SeqCst);
                        let status = if healthy.load(Ordering::SeqCst) {
                            200
                        } else {
                            500
                        };
                        let _ = req.respond(
                            tiny_http::Response::from_string("health").with_status_code(status),
                        );
                        continue;
                    }
                    let mut body = Vec::new();
                    if req.as_reader().read_to_end(&mut body).is_err() {
                        // An incomplete body is not a request the upstream received.
                        continue;
                    }
                    let s = Seen {
                        method: req.method().as_str().to_string(),
                        url: req.url().to_string(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|h| {
                                (
                                    h.field.as_str().as_str().to_string(),
                                    h.value.as_str().to_string(),
                                )
                            })
                            .collect(),
                        body,
                        remote: req.remote_addr().copied(),
                    };
                    seen.lock().unwrap().push(s.clone());
                    let reply = handler(&s);
                    if !reply.delay.is_zero() {
                        std::thread::sleep(reply.delay);
                    }
                    let mut resp =
                        tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
                    resp.add_header(
                        tiny_http::Header::from_bytes("x-upstream", name.as_bytes()).unwrap(),
                    );
                    for (k, v) in reply.headers {
                        resp.add_header(
                            tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap(),
                        );
                    }
                    let _ = req.respond(resp);
                }
            });
        }
        Upstream {
            addr,
            seen,
            healthy,
            probes,
            server,
        }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
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

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// A loopback port nobody listens on (connections are refused).
pub fn closed_port() -> SocketAddr {
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
