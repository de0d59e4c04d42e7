//! Test harness: real upstream servers on loopback that record what they receive, the real
//! `tollgate` binary started on a generated configuration, and a raw HTTP/1.1 client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    pub name: String,
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
            name: name.to_string(),
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

/// The path of the built gateway binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

/// Whether process `pid` holds a socket listening on TCP `port` (from `/proc/net/tcp{,6}` and
/// the process's file descriptors).
pub fn listens(pid: u32, port: u16) -> bool {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|l| inodes.iter().any(|i| l.to_string_lossy() == *i))
            .unwrap_or(false)
    })
}

/// The real gateway binary running on a generated configuration.
pub struct Gateway {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
    /// The configuration's first part (process settings and the listener), kept for rewrites.
    head: String,
}

impl Gateway {
    /// Start the gateway with `body` (upstreams, routes, ...) under a generated process
    /// section and one listener, and wait until it accepts connections.
    pub fn start(body: &str) -> Gateway {
        Gateway::start_with_env(body, &[])
    }

    /// [`Gateway::start`] with extra environment variables for the gateway process.
    pub fn start_with_env(body: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_full(
            "grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n",
            body,
            env,
        )
    }

    /// Start with explicit shutdown settings (`process`), the body and environment.
    pub fn start_full(process: &str, body: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_listener(process, "", body, env)
    }

    /// [`Gateway::start_full`] with more settings for the listener (`listener`: YAML lines
    /// indented by four spaces, each ending in a newline).
    pub fn start_listener(
        process: &str,
        listener: &str,
        body: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        // Retry on the rare race where another test takes the port between probe and bind.
        for _ in 0..5 {
            let port = closed_port().port();
            let head = format!(
                "threads: 2\npid_file: {d}/t.pid\nupgrade_sock: {d}/t.sock\n{process}listeners:\n  - address: 127.0.0.1:{port}\n{listener}",
                d = dir.path().display()
            );
            let conf = format!("{head}{body}");
            let path = dir.path().join("tollgate.yaml");
            std::fs::write(&path, &conf).unwrap();
            let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
            let mut child = Command::new(bin())
                .arg("-c")
                .arg(&path)
                .env("RUST_LOG", "info")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start gateway");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    let log =
                        std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
                    if log.contains("Address already in use") {
                        break;
                    }
                    panic!("gateway exited with {status}:\n{log}");
                }
                // The socket must be this child's: a port free when probed can be taken by
                // another test's server meanwhile, which would answer a plain connect.
                if listens(child.id(), port) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Gateway {
                        port,
                        child,
                        dir,
                        head,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("gateway did not start");
    }

    /// Replace the configuration file's body (everything after the listener), keeping the
    /// process settings and listener; the gateway is not told.
    pub fn rewrite(&self, body: &str) {
        std::fs::write(
            self.dir.path().join("tollgate.yaml"),
            format!("{}{body}", self.head),
        )
        .unwrap();
    }

    /// Write a whole configuration file as given.
    pub fn rewrite_raw(&self, text: &str) {
        std::fs::write(self.dir.path().join("tollgate.yaml"), text).unwrap();
    }

    /// The configuration's process settings and listener, as written.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// The gateway process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal to the gateway process.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Wait for the process to exit, up to `limit`; its exit status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Send a GET for `path` with extra header lines.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        self.raw(req.as_bytes())
    }

    /// Send raw bytes on a new connection and read one response.
    pub fn raw(&self, bytes: &[u8]) -> Response {
        send_raw(self.port, bytes)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// Whether the server closed the connection after this response.
    pub closed: bool,
}

impl Response {
    /// A response whose `closed` is what it announced (`Connection: close`), without waiting
    /// to see whether the server closes.
    fn announced(status: u16, headers: HashMap<String, String>, body: Vec<u8>) -> Response {
        let closed = headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        Response {
            status,
            headers,
            body,
            closed,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Send `bytes` on a new connection to the gateway and read one response (no body is read
/// when the request is a HEAD).
pub fn send_raw(port: u16, bytes: &[u8]) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to gateway");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).expect("send");
    read_response_to(&mut s, bytes.starts_with(b"HEAD "))
}

/// Read one response from `s`; `closed` tells whether the server then closed the connection.
pub fn read_response(s: &mut TcpStream) -> Response {
    read_response_to(s, false)
}

/// Read one response from a kept-alive connection, without waiting to see whether it closes
/// (`closed` reports only a `Connection: close` answer).
pub fn read_keepalive_response(s: &mut TcpStream) -> Response {
    read_response_inner(s, false, false)
}

fn read_response_to(s: &mut TcpStream, head: bool) -> Response {
    read_response_inner(s, head, true)
}

/// The status, headers (names in lower case) and length of a complete response head at the
/// start of `buf`.
fn parse_head(buf: &[u8]) -> Option<(u16, HashMap<String, String>, usize)> {
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut hdrs);
    let Ok(httparse::Status::Complete(n)) = resp.parse(buf) else {
        return None;
    };
    let headers = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Some((resp.code.unwrap_or(0), headers, n))
}

fn read_response_inner(s: &mut TcpStream, head: bool, check_closed: bool) -> Response {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (status, headers, head_len) = loop {
        if let Some(head) = parse_head(&buf) {
            break head;
        }
        let n = s.read(&mut chunk).expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut rest = buf[head_len..].to_vec();
    let body = if head {
        Vec::new()
    } else if let Some(len) = headers.get("content-length") {
        let len: usize = len.trim().parse().expect("content-length");
        while rest.len() < len {
            let n = s.read(&mut chunk).expect("read body");
            assert!(n > 0, "connection closed mid-body");
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        let mut body = Vec::new();
        loop {
            while !rest.windows(2).any(|w| w == b"\r\n") {
                let n = s.read(&mut chunk).expect("read chunk");
                assert!(n > 0);
                rest.extend_from_slice(&chunk[..n]);
            }
            let pos = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..pos]).unwrap().trim(), 16)
                .unwrap();
            rest.drain(..pos + 2);
            while rest.len() < size + 2 {
                let n = s.read(&mut chunk).expect("read chunk data");
                assert!(n > 0);
                rest.extend_from_slice(&chunk[..n]);
            }
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
            if size == 0 {
                break body;
            }
        }
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else {
        let _ = s.read_to_end(&mut rest);
        rest
    };
    if !check_closed {
        return Response::announced(status, headers, body);
    }
    // Did the server close? A closed socket reads 0 (or is reset); an open one times out.
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let closed = match s.read(&mut chunk) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    Response {
        status,
        headers,
        body,
        closed,
    }
}

/// Poll `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A real `redis-server` on a loopback port, stopped when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = closed_port().port();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/setup.sh installs it)");
            let mut r = Redis {
                port,
                child: Some(child),
                _dir: tempfile::tempdir().unwrap(),
            };
            if wait_until(Duration::from_secs(10), || r.ping()) {
                r._dir = dir;
                return r;
            }
            r.stop();
        }
        panic!("redis-server did not start");
    }

    /// True when the server answers PING.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stop the server (as a crash would: no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP connection to the gateway's `port` on 127.0.0.1, made from the loopback address
/// `from` (any of 127.0.0.0/8), so that tests can play clients and proxies at other addresses.
pub fn connect_from(from: &str, port: u16) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("source address");
    sock.bind(&local.into()).expect("bind the source address");
    let remote = SocketAddr::from(([127, 0, 0, 1], port));
    sock.connect(&remote.into()).expect("connect to gateway");
    sock.into()
}

/// [`send_raw`] from the loopback address `from`.
pub fn send_raw_from(from: &str, port: u16, bytes: &[u8]) -> Response {
    let mut s = connect_from(from, port);
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(bytes).expect("send");
    read_response_to(&mut s, bytes.starts_with(b"HEAD "))
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

/// Reads responses one after another from one connection, keeping what arrived of the next
/// (for pipelined requests, whose answers may come in one read). Bodies must have a
/// `Content-Length`; `closed` reports a `Connection: close` answer.
pub struct Responses {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Responses {
    pub fn new(stream: TcpStream) -> Responses {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        Responses {
            stream,
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).expect("read response");
        assert!(
            n > 0,
            "connection closed before a response; got {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next response.
    pub fn next(&mut self) -> Response {
        loop {
            if let Some((status, headers, n)) = parse_head(&self.buf) {
                let len: usize = headers
                    .get("content-length")
                    .map(|l| l.trim().parse().expect("content-length"))
                    .unwrap_or(0);
                while self.buf.len() < n + len {
                    self.fill();
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Response::announced(status, headers, body);
            }
            self.fill();
        }
    }
}
