//! Kept-alive client connections: later requests on a connection are served, and a connection
//! that stays idle is closed after `client_keepalive_timeout`: on a plain listener, on a listener
//! that also accepts cleartext HTTP/2, and over TLS (HTTP/1.1 through ALPN).

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

fn body(up: &Upstream) -> String {
    format!(
        "upstreams:\n  u: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n",
        up.addr
    )
}

const PROCESS: &str =
    "grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\nclient_keepalive_timeout: 1s\n";

/// Waits for the gateway to close `c`; returns how long that took.
fn time_to_close(c: &mut TcpStream) -> Duration {
    let from = Instant::now();
    let mut byte = [0u8; 1];
    match c.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("unexpected bytes on an idle connection"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the idle connection was not closed: {e}"),
    }
    from.elapsed()
}

/// Three requests on one connection, each after a pause shorter than the keep-alive time; then
/// the connection idles and must be closed after the keep-alive time, not before.
fn serves_kept_alive_then_closes_idle(gw: &Gateway, up: &Upstream) {
    let mut c = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    for i in 0..3 {
        if i > 0 {
            // Idle for a while, but less than the keep-alive time.
            std::thread::sleep(Duration::from_millis(400));
        }
        c.write_all(format!("GET /n{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_keepalive_response(&mut c);
        assert_eq!(r.status, 200, "request {i}");
        assert!(!r.closed, "request {i}");
    }
    let paths: Vec<String> = up.seen().iter().map(|s| s.url.clone()).collect();
    assert_eq!(paths, ["/n0", "/n1", "/n2"]);
    let waited = time_to_close(&mut c);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "closed after {waited:?}, keep-alive time is 1s"
    );

    // A connection that never sends a request is closed after the same time.
    let mut quiet = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    quiet
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let waited = time_to_close(&mut quiet);
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[test]
fn kept_alive_connections_are_served_and_idle_ones_closed() {
    let up = Upstream::start("a");
    let gw = Gateway::start_full(PROCESS, &body(&up), &[]);
    serves_kept_alive_then_closes_idle(&gw, &up);
}

#[test]
fn same_on_a_listener_that_also_takes_cleartext_http2() {
    let up = Upstream::start("a");
    let gw = Gateway::start_listener(PROCESS, "    http2: true\n", &body(&up), &[]);
    serves_kept_alive_then_closes_idle(&gw, &up);
}

/// A TLS client in Python's standard library: three requests on one connection with pauses,
/// then the time until the gateway closes the idle connection.
const TLS_CLIENT: &str = r#"
import socket, ssl, sys, time
port = int(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="a.test")
s.settimeout(15)
print("alpn", s.selected_alpn_protocol())
for i in range(3):
    if i:
        time.sleep(0.4)
    s.sendall(f"GET /t{i} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
    while len(rest) < length:
        rest += s.recv(65536)
    print("status", head.split(b" ")[1].decode())
start = time.monotonic()
try:
    left = s.recv(1)
except (ConnectionResetError, ssl.SSLError):
    left = b""
print("closed", repr(left), round(time.monotonic() - start, 3))
"#;

#[test]
fn same_over_tls_with_http1_alpn() {
    let up = Upstream::start("a");
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
    let cert = dir.path().join("a.pem");
    let key = dir.path().join("a-key.pem");
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    let gw = Gateway::start_listener(
        PROCESS,
        &format!(
            "    tls: {{cert: {}, key: {}}}\n",
            cert.display(),
            key.display()
        ),
        &body(&up),
        &[],
    );
    let out = Command::new("python3")
        .args(["-c", TLS_CLIENT, &gw.port.to_string()])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..4],
        ["alpn http/1.1", "status 200", "status 200", "status 200"],
        "{stdout}"
    );
    let paths: Vec<String> = up.seen().iter().map(|s| s.url.clone()).collect();
    assert_eq!(paths, ["/t0", "/t1", "/t2"]);
    let closed: Vec<&str> = lines[4].split(' ').collect();
    assert_eq!(closed[..2], ["closed", "b''"], "{stdout}");
    let secs: f64 = closed[2].parse().unwrap();
    assert!(
        (0.9..10.0).contains(&secs),
        "closed after {secs}s: {stdout}"
    );
}
