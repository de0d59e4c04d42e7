//! The front door holds: a route's policies cannot be walked around with another spelling of
//! its path or host, requests two HTTP parsers could read differently are refused before any
//! upstream sees them, pipelined requests are answered in order, the real client is known
//! behind trusted proxies and PROXY-protocol balancers (real HAProxy), and slow clients cannot
//! starve others. Every case is raw bytes on a socket; each asserts what the client got and
//! what the upstream saw (nothing, or exactly the canonical request). Upstreams that decode and
//! merge paths the way nginx and WSGI servers do are real nginx and a recording server that
//! reads targets as WSGI's `PATH_INFO` does.

use crate::common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const KEY: &str = "ops-key-123456";

/// How an upstream that decodes and merges reads a request path: percent-decoded once (as a
/// WSGI server fills `PATH_INFO`), backslashes as slashes, repeated slashes merged and dot
/// segments resolved (as nginx and many frameworks then do).
fn lenient_reading(url: &str) -> String {
    let path = url.split('?').next().unwrap_or("");
    let mut bytes = Vec::new();
    let raw = path.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16) {
                bytes.push(b);
                i += 3;
                continue;
            }
        }
        bytes.push(raw[i]);
        i += 1;
    }
    let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for seg in text.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// A recording upstream that answers `ADMIN` when it reads the path as the protected area,
/// `ADMIN-HOST` when the request is for the protected host, and `OPEN` otherwise.
fn lenient_upstream() -> Upstream {
    Upstream::with_handler("lenient", |seen| {
        let host = seen
            .header("host")
            .unwrap_or("")
            .to_ascii_lowercase()
            .trim_end_matches('.')
            .split(':')
            .next()
            .unwrap_or("")
            .trim_end_matches('.')
            .to_string();
        if host == "admin.example" {
            return Reply::ok("ADMIN-HOST");
        }
        let path = lenient_reading(&seen.url);
        if path == "/api/admin" || path.starts_with("/api/admin/") {
            Reply::ok("ADMIN")
        } else {
            Reply::ok("OPEN")
        }
    })
}

/// nginx with a protected area `/api/admin/` and a protected host `admin.example`.
fn nginx_upstream() -> Server {
    Server::nginx(
        "  default_type text/plain;\n  server {\n    listen 127.0.0.1:{port} default_server;\n    location /api/admin/ { return 200 \"ADMIN $uri\\n\"; }\n    location = /api/admin { return 200 \"ADMIN $uri\\n\"; }\n    location / { return 200 \"OPEN $uri\\n\"; }\n  }\n  server {\n    listen 127.0.0.1:{port};\n    server_name admin.example;\n    location / { return 200 \"ADMIN-HOST $uri\\n\"; }\n  }\n",
    )
}

/// A protected prefix and a protected host next to an open catch-all, all to `peer`.
fn protected_pair(peer: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "{extra}consumers:\n  - {{name: ops, api_keys: [{KEY}]}}\nupstreams:\n  svc: {{peers: [\"{peer}\"]}}\nroutes:\n  - {{name: admin, match: {{path_prefix: /api/admin}}, upstream: svc, auth: [api_key]}}\n  - {{name: admin-host, match: {{hosts: [admin.example]}}, upstream: svc, auth: [api_key]}}\n  - {{name: open, match: {{}}, upstream: svc}}\n"
    ))
}

fn get(target: &str, host: Option<&str>, key: bool) -> Vec<u8> {
    let mut req = format!("GET {target} HTTP/1.1\r\n");
    if let Some(h) = host {
        req.push_str(&format!("Host: {h}\r\n"));
    }
    if key {
        req.push_str(&format!("X-Api-Key: {KEY}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req.into_bytes()
}

/// Spellings of `/api/admin/x` (and others) with the status an unauthenticated client gets:
/// 401 where the gateway reads the protected path, 400 where it refuses the spelling, 200 where
/// the path is not the protected one for the upstream either.
const PATH_BYPASSES: &[(&str, u16)] = &[
    ("/api/admin/x", 401),
    ("//api/admin/x", 401),
    ("/api//admin/x", 401),
    ("///api///admin//x", 401),
    ("/%61pi/admin/x", 401),
    ("/api/adm%69n/x", 401),
    ("/api/ADM%49N/../admin/x", 401),
    ("/x/../api/admin/x", 401),
    ("/x/%2e%2e/api/admin/x", 401),
    ("/x/%2E%2E/api/admin/x", 401),
    ("/x/.%2e/api/admin/x", 401),
    ("/./api/./admin/x", 401),
    ("/../api/admin/x", 401),
    ("/api/admin", 401),
    ("/api%2fadmin/x", 400),
    ("/api/admin%2Fx", 400),
    ("/x/..%2fapi/admin/x", 400),
    ("/%2Fapi/admin/x", 400),
    ("/api%5cadmin/x", 400),
    ("/api\\admin/x", 400),
    ("/api/admin/x%00", 400),
    ("/api/admin%0a/x", 400),
    ("/api/admin/%zz", 400),
    ("/api/admin;/x", 400),
    ("/api;x/admin", 400),
    ("/api;/admin/x", 400),
    ("/api/admin;jsessionid=1", 400),
    ("/api/%2561dmin/x", 200),
];

/// Unauthenticated, every spelling is refused or lands on the open route, and the upstream
/// never serves the protected area; the refused ones never reach it.
fn no_path_bypass(gw: &Gateway, served: impl Fn() -> usize) {
    for (target, status) in PATH_BYPASSES {
        let before = served();
        let r = gw.raw(&get(target, Some("public.example"), false));
        assert_eq!(r.status, *status, "{target}: {}", r.text());
        assert!(
            !r.text().contains("ADMIN"),
            "{target} reached the protected area: {}",
            r.text()
        );
        if *status != 200 {
            assert_eq!(served(), before, "{target}: the upstream saw it");
            assert!(r.json()["request_id"].is_string(), "{target}");
        }
        // The absolute form carries the same path.
        let absolute = format!("http://public.example{target}");
        if !target.contains('\\') {
            let r = gw.raw(&get(&absolute, None, false));
            assert_eq!(r.status, *status, "{absolute}: {}", r.text());
            assert!(!r.text().contains("ADMIN"), "{absolute}: {}", r.text());
        }
    }
}

/// A self-signed certificate for `gw.test` and its key, written in `dir`.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let c = rcgen::generate_simple_self_signed(vec!["gw.test".to_string()]).unwrap();
    let cert = dir.join("gw.pem");
    let key = dir.join("gw-key.pem");
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

mod paths {
    use super::*;

    #[test]
    fn no_bypass_against_nginx() {
        let nginx = nginx_upstream();
        let gw = protected_pair(&format!("127.0.0.1:{}", nginx.port), "");
        let served = || nginx.file("access.log").lines().count();
        no_path_bypass(&gw, served);
        // With the key, each spelling of the protected path is served as the protected path.
        for (target, status) in PATH_BYPASSES {
            if *status == 401 {
                let r = gw.raw(&get(target, Some("public.example"), true));
                assert_eq!(r.status, 200, "{target}");
                assert!(
                    r.text().starts_with("ADMIN /api/admin"),
                    "{target}: {}",
                    r.text()
                );
            }
        }
    }

    #[test]
    fn no_bypass_against_a_decoding_upstream() {
        let up = lenient_upstream();
        let gw = protected_pair(&up.addr.to_string(), "");
        no_path_bypass(&gw, || up.count());
        // The upstream receives exactly the canonical path the route was matched on.
        for (target, status) in PATH_BYPASSES {
            if *status == 401 && target.ends_with("/x") {
                let r = gw.raw(&get(target, Some("public.example"), true));
                assert_eq!(r.status, 200, "{target}");
                assert_eq!(up.last().url, "/api/admin/x", "{target}");
            }
        }
    }

    #[test]
    fn upstream_receives_the_matched_path() {
        let up = Upstream::start("a");
        let gw = Gateway::start(&format!(
            "upstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: svc, match: {{path_prefix: /svc}}, upstream: a, strip_prefix: /svc}}\n  - {{name: rest, match: {{}}, upstream: a}}\n",
            up.addr
        ));
        for (target, seen) in [
            ("//svc//a/./b", "/a/b"),
            ("/svc/%7euser/x?q=%2F&r=a//b", "/~user/x?q=%2F&r=a//b"),
            ("/%73vc/a%3bb", "/a%3Bb"),
            ("/a/b|c{d}", "/a/b%7Cc%7Bd%7D"),
            ("/caf%c3%a9/./", "/caf%C3%A9/"),
            ("/x/..", "/"),
        ] {
            let r = gw.raw(&get(target, Some("t.example"), false));
            assert_eq!(r.status, 200, "{target}");
            assert_eq!(up.last().url, seen, "{target}");
        }
    }

    #[test]
    fn escaped_slash_actions_and_merging() {
        let up = lenient_upstream();
        let decode = protected_pair(
            &up.addr.to_string(),
            "path_normalization: {escaped_slashes: decode}\n",
        );
        for target in ["/api%2fadmin/x", "/x/..%2fapi/admin/x", "/api%5Cadmin/x"] {
            let r = decode.raw(&get(target, Some("p"), false));
            assert_eq!(r.status, 401, "{target}");
            let r = decode.raw(&get(target, Some("p"), true));
            assert_eq!(r.status, 200, "{target}");
            assert_eq!(up.last().url, "/api/admin/x", "{target}");
        }
        // `keep`: matched as one segment and forwarded encoded.
        let keep = protected_pair(
            &up.addr.to_string(),
            "path_normalization: {escaped_slashes: keep, merge_slashes: false}\n",
        );
        let r = keep.raw(&get("/files/a%2fb", Some("p"), false));
        assert_eq!(r.status, 200);
        assert_eq!(up.last().url, "/files/a%2Fb");
        // Without merging, repeated slashes are forwarded as they came.
        let r = keep.raw(&get("/files//c", Some("p"), false));
        assert_eq!(r.status, 200);
        assert_eq!(up.last().url, "/files//c");
    }

    #[test]
    fn raw_and_canonical_forms_in_the_access_log() {
        let up = Upstream::start("a");
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("access.log");
        let gw = Gateway::start(&format!(
            "access_log: {{path: {}, format: json}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{path_prefix: /api}}, upstream: a}}\n",
            log.display(),
            up.addr
        ));
        let r = gw.raw(b"GET /%61pi//x?q=1 HTTP/1.1\r\nHost: API.Example.:8080\r\nX-Request-Id: raw-1\r\nConnection: close\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(up.last().url, "/api/x?q=1");
        assert_eq!(up.last().header("host"), Some("api.example:8080"));
        assert!(wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&log)
                .map(|t| t.contains("raw-1"))
                .unwrap_or(false)
        }));
        let text = std::fs::read_to_string(&log).unwrap();
        let line: serde_json::Value = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["request_id"] == "raw-1")
            .unwrap();
        assert_eq!(line["path"], "/api/x");
        assert_eq!(line["raw_path"], "/%61pi//x");
        assert_eq!(line["host"], "api.example");
        assert_eq!(line["raw_host"], "API.Example.:8080");
        assert_eq!(line["route"], "r");
    }

    #[test]
    fn http2_paths_are_canonical_too() {
        let nginx = nginx_upstream();
        let up_addr = format!("127.0.0.1:{}", nginx.port);
        let gw = Gateway::start_listener(
            "grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\nclient_keepalive_timeout: 1s\n",
            "    http2: true\n",
            &format!(
                "consumers:\n  - {{name: ops, api_keys: [{KEY}]}}\nupstreams:\n  svc: {{peers: [\"{up_addr}\"]}}\nroutes:\n  - {{name: admin, match: {{path_prefix: /api/admin}}, upstream: svc, auth: [api_key]}}\n  - {{name: open, match: {{}}, upstream: svc}}\n"
            ),
            &[],
        );
        for (method, path, status) in [
            ("GET", "//api/admin/x", "401"),
            ("GET", "/%61pi/admin/x", "401"),
            ("GET", "/x/%2e%2e/api/admin/x", "401"),
            ("GET", "/api%2fadmin/x", "400"),
            ("GET", "/api;/admin/x", "400"),
            ("delete", "/open", "400"),
            ("GET", "/open", "200"),
            // The gateway's own answer to HEAD has no body (a body would break the stream).
            ("HEAD", "/api/admin/x", "401"),
        ] {
            let out = std::process::Command::new("curl")
                .args(["-s", "--max-time", "10", "--http2-prior-knowledge"])
                .args(["--path-as-is", "-X", method])
                .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
                .args(if method == "HEAD" {
                    &["-I"][..]
                } else {
                    &[][..]
                })
                .arg(format!("http://127.0.0.1:{}{path}", gw.port))
                .output()
                .expect("curl");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{method} {path}: curl failed");
            assert_eq!(text, format!("{status} 2"), "{method} {path}");
        }
        // An HTTP/2 connection with nothing in progress is closed after the keep-alive time,
        // also one whose request header block never ends.
        for extra in [
            &b""[..],
            b"\x00\x00\x03\x01\x01\x00\x00\x00\x01\x82\x86\x41",
        ] {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
            let mut hello =
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
            hello.extend_from_slice(extra);
            s.write_all(&hello).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let start = Instant::now();
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(8),
                "{:?}",
                start.elapsed()
            );
        }
    }
}

mod hosts {
    use super::*;

    /// Spellings of the protected host with the status an unauthenticated client gets.
    fn host_cases() -> Vec<(Vec<u8>, u16)> {
        let plain = |h: &str| get("/x", Some(h), false);
        vec![
            (plain("admin.example"), 401),
            (plain("ADMIN.Example."), 401),
            (plain("admin.example:80"), 401),
            (plain("admin.example:"), 401),
            (plain("admin.example "), 401),
            (get("http://admin.example/x", None, false), 401),
            (
                get("http://admin.example/x", Some("public.example"), false),
                401,
            ),
            (
                get(
                    "HTTP://ADMIN.EXAMPLE.:8080/x",
                    Some("public.example"),
                    false,
                ),
                401,
            ),
            (
                get("http://admin.example//x", Some("admin.example"), false),
                401,
            ),
            (plain("admin.example:80:80"), 400),
            (plain("admin .example"), 400),
            (plain("admin.example/x"), 400),
            (plain("[admin.example]"), 400),
            (plain("admin.example%2e"), 400),
            (plain("user@admin.example"), 400),
            (plain(""), 400),
            (get("/x", None, false), 400),
            (get("http://admin.example:80:80/x", None, false), 400),
            (plain("public.example"), 200),
        ]
    }

    fn no_host_bypass(gw: &Gateway, served: impl Fn() -> usize) {
        for (raw, status) in host_cases() {
            let case = String::from_utf8_lossy(&raw).into_owned();
            let before = served();
            let r = gw.raw(&raw);
            assert_eq!(r.status, status, "{case}: {}", r.text());
            assert!(!r.text().contains("ADMIN"), "{case}: {}", r.text());
            if status != 200 {
                assert_eq!(served(), before, "{case}: the upstream saw it");
            }
        }
    }

    #[test]
    fn no_bypass_against_nginx() {
        let nginx = nginx_upstream();
        let gw = protected_pair(&format!("127.0.0.1:{}", nginx.port), "");
        no_host_bypass(&gw, || nginx.file("access.log").lines().count());
        let r = gw.raw(&get("http://admin.example/x", Some("public.example"), true));
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "ADMIN-HOST /x\n");
    }

    #[test]
    fn upstream_gets_the_canonical_host() {
        let up = lenient_upstream();
        let gw = protected_pair(&up.addr.to_string(), "");
        no_host_bypass(&gw, || up.count());
        for (raw, host, url) in [
            (
                get("http://admin.example/x?y=1", Some("public.example"), true),
                "admin.example",
                "/x?y=1",
            ),
            (
                get("http://Admin.Example.:8080//x", None, true),
                "admin.example:8080",
                "/x",
            ),
            (
                get("/x", Some("ADMIN.example."), true),
                "admin.example",
                "/x",
            ),
            (
                get("/x", Some("admin.example.:0080"), true),
                "admin.example:80",
                "/x",
            ),
        ] {
            let r = gw.raw(&raw);
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&raw));
            let seen = up.last();
            assert_eq!(seen.header("host"), Some(host));
            assert_eq!(seen.header("x-forwarded-host"), Some(host));
            assert_eq!(seen.url, url);
            assert_eq!(
                seen.headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
                    .count(),
                1
            );
        }
        // HTTP/1.0 may leave out Host: only host-independent routes match, and the upstream
        // (spoken to in HTTP/1.1) gets the peer's address as Host.
        let r = gw.raw(b"GET /x HTTP/1.0\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "OPEN");
        let addr = up.addr.to_string();
        assert_eq!(up.last().header("host"), Some(addr.as_str()));
        // The request named no host, so none is forwarded as the client's.
        assert_eq!(up.last().header("x-forwarded-host"), None);
    }
}

mod framing {
    use super::*;

    fn gateway(up: &Upstream) -> Gateway {
        Gateway::start(&format!(
            "upstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a}}\n",
            up.addr
        ))
    }

    /// `raw` is answered with `status` and the problem details body, the connection is closed,
    /// and the upstream saw nothing.
    fn refused_with(gw: &Gateway, up: &Upstream, raw: &[u8], status: u16, case: &str) {
        let before = up.count();
        let r = gw.raw(raw);
        assert_eq!(r.status, status, "{case}: got {} {}", r.status, r.text());
        assert!(r.closed, "{case}: connection left open");
        assert_eq!(r.json()["status"], status, "{case}");
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{case}"
        );
        let kind = tollgate::errors::Problem::for_status(status);
        assert_eq!(r.json()["type"], kind.type_uri(), "{case}");
        assert_eq!(r.json()["title"], kind.title, "{case}");
        assert_eq!(
            r.json()["request_id"].as_str(),
            r.header("x-request-id"),
            "{case}"
        );
        assert!(r.header("x-request-id").is_some(), "{case}");
        assert_eq!(up.count(), before, "{case}: the upstream received it");
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        let up = Upstream::start("a");
        let gw = gateway(&up);
        for (case, raw) in [
            ("CL list", &b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello"[..]),
            ("CL list no space", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5,5\r\n\r\nhello"),
            ("CL repeated", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            ("CL sign", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello"),
            ("chunk extension", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n"),
            ("chunk size bare LF", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
            ("last chunk bare LF", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\n\r\n"),
            ("chunk data not ended by CRLF", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n"),
            ("trailer field", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sig: 1\r\n\r\n"),
            ("double space", b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n"),
            ("space before version", b"GET /  HTTP/1.1\r\nHost: t\r\n\r\n"),
            ("raw space in target", b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n"),
            ("tab in target", b"GET /a\tb HTTP/1.1\r\nHost: t\r\n\r\n"),
            ("HTTP/1.0 with TE", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ("NUL in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n"),
            ("CR in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n"),
            ("LF in value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\nb\r\n\r\n"),
            ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n"),
            ("name with space", b"GET / HTTP/1.1\r\nHost: t\r\nX A: 1\r\n\r\n"),
            ("space before colon", b"GET / HTTP/1.1\r\nHost: t\r\nX-A : 1\r\n\r\n"),
            ("name with (", b"GET / HTTP/1.1\r\nHost: t\r\nX(A): 1\r\n\r\n"),
            ("name with NUL", b"GET / HTTP/1.1\r\nHost: t\r\nX\x00A: 1\r\n\r\n"),
            ("bare LF line ends", b"GET / HTTP/1.1\nHost: t\n\n"),
            ("CL and TE", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ("TE not chunked", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n"),
            ("TE chunked twice", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
            ("TE with space-separated", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked x\r\n\r\n0\r\n\r\n"),
            ("two Host", b"GET / HTTP/1.1\r\nHost: t\r\nHost: t\r\n\r\n"),
            ("PROXY header on a plain listener", b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"),
            ("PROXY v2 on a plain listener", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc0\x00\x02\x02\x03\xe8\x00\x50GET / HTTP/1.1\r\nHost: t\r\n\r\n"),
            ("asterisk form", b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n"),
            ("angle bracket in target", b"GET /a<b> HTTP/1.1\r\nHost: t\r\n\r\n"),
        ] {
            refused_with(&gw, &up, raw, 400, case);
        }
        refused_with(
            &gw,
            &up,
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
            "unknown coding",
        );
        refused_with(
            &gw,
            &up,
            b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
            505,
            "version",
        );
        refused_with(
            &gw,
            &up,
            b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n",
            405,
            "CONNECT",
        );
        let mut many = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
        for i in 0..300 {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        refused_with(&gw, &up, &many, 431, "too many fields");
        let mut big = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 70 * 1024));
        big.extend_from_slice(b"\r\n\r\n");
        refused_with(&gw, &up, &big, 431, "header too large");
        // Well-formed requests on the same gateway still pass, bodies intact.
        let r = gw.raw(b"POST /ok HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(up.last().body, b"hello world");
        let r = gw.raw(b"\r\nPOST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nX-Tab: a\tb\r\nConnection: close\r\n\r\nabc");
        assert_eq!(r.status, 200);
        assert_eq!(up.last().body, b"abc");
    }

    #[test]
    fn refusals_are_counted_and_logged() {
        let up = Upstream::start("a");
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("access.log");
        let admin = closed_port().port();
        let gw = Gateway::start(&format!(
            "admin: {{address: 127.0.0.1:{admin}}}\naccess_log: {{path: {}, format: json}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a}}\n",
            log.display(),
            up.addr
        ));
        let r = gw.raw(b"POST /smuggle HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello");
        assert_eq!(r.status, 400);
        let id = r.header("x-request-id").unwrap().to_string();
        assert!(wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&log)
                .map(|t| t.contains(&id))
                .unwrap_or(false)
        }));
        let text = std::fs::read_to_string(&log).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(text.lines().find(|l| l.contains(&id)).unwrap()).unwrap();
        assert_eq!(line["status"], 400);
        assert_eq!(line["method"], "POST");
        assert_eq!(line["path"], "/smuggle");
        assert_eq!(line["error"], "content_length");
        assert_eq!(line["client_ip"], "127.0.0.1");
        let metrics = send_raw(
            admin,
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .text();
        assert!(
            metrics.contains("tollgate_front_door_refusals_total{reason=\"content_length\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics
                .contains("tollgate_requests_total{code=\"400\",method=\"POST\",route=\"none\"} 1"),
            "{metrics}"
        );
    }

    #[test]
    fn framing_error_after_the_upstream_started_aborts_it() {
        let up = Upstream::start("a");
        let gw = gateway(&up);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .unwrap();
        // The first chunk goes on its way; the bad one arrives later.
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(b"3;ext\r\nabc\r\n0\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, 400);
        assert!(r.closed);
        // The upstream never received a complete request.
        assert!(!wait_until(Duration::from_millis(300), || up.count() > 0));
    }
}

mod methods_and_expectations {
    use super::*;

    /// A protected `GET`/`DELETE` API next to an open catch-all, the upstream answering with
    /// the method it ran.
    fn gateway(up: &Upstream) -> Gateway {
        Gateway::start(&format!(
            "consumers:\n  - {{name: ops, api_keys: [{KEY}]}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: read, match: {{path_prefix: /items, methods: [GET]}}, upstream: a, auth: [api_key]}}\n  - {{name: del, match: {{path_prefix: /items, methods: [DELETE, POST]}}, upstream: a, auth: [api_key]}}\n  - {{name: open, match: {{}}, upstream: a}}\n",
            up.addr
        ))
    }

    #[test]
    fn methods_cannot_be_respelled_past_a_route() {
        let up = Upstream::with_handler("a", |seen| Reply::ok(&seen.method));
        let gw = gateway(&up);
        for (raw, status) in [
            (
                &b"delete /items/7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
                400,
            ),
            (
                b"Delete /items/7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                400,
            ),
            (
                b"DELETE /items/7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                401,
            ),
            // HEAD runs the GET handler behind the gateway: it takes the GET route.
            (
                b"HEAD /items/7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                401,
            ),
            (
                b"GET /items/7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                401,
            ),
        ] {
            let r = gw.raw(raw);
            assert_eq!(r.status, status, "{}", String::from_utf8_lossy(raw));
        }
        assert_eq!(up.count(), 0);
        let r = gw.raw(format!("HEAD /items/7 HTTP/1.1\r\nHost: t\r\nX-Api-Key: {KEY}\r\nConnection: close\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200);
        assert_eq!(up.last().method, "HEAD");
    }

    #[test]
    fn expect_continue_is_answered_by_the_gateway() {
        let up = Upstream::with_handler("a", |seen| {
            Reply::ok(&format!("{} {}", seen.url, seen.body.len()))
        });
        let gw = gateway(&up);
        // Refused by policy: a final answer, no 100, and the body is never invited.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(b"POST /items/7 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, 401);
        // Admitted: 100 Continue from the gateway, then the body, then the answer; the upstream
        // gets the request without Expect, and the connection stays open for the next one.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(format!("POST /items/7 HTTP/1.1\r\nHost: t\r\nX-Api-Key: {KEY}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").as_bytes()).unwrap();
        let mut answers = Responses::new(s);
        let cont = answers.next();
        assert_eq!(cont.status, 100);
        assert_eq!(up.count(), 0, "the upstream was asked before the body came");
        answers.stream.write_all(b"hello").unwrap();
        let r = answers.next();
        assert_eq!((r.status, r.text()), (200, "/items/7 5".to_string()));
        assert!(!r.closed);
        assert_eq!(up.last().header("expect"), None);
        answers
            .stream
            .write_all(b"GET /other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert_eq!(answers.next().text(), "/other 0");
        // Chunked, with the body's framing checked after the 100.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(b"POST /open HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let mut answers = Responses::new(s);
        assert_eq!(answers.next().status, 100);
        answers
            .stream
            .write_all(b"3;x\r\nabc\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(answers.next().status, 400);
        assert_eq!(up.count(), 2);
    }

    #[test]
    fn upgrades_are_read_one_way() {
        let up = Upstream::with_handler("a", |seen| {
            Reply::ok(&format!(
                "{} upgrade={}",
                seen.url,
                seen.header("upgrade").unwrap_or("-")
            ))
        });
        let gw = gateway(&up);
        // `Upgrade` without `upgrade` in `Connection` (or on HTTP/1.0) makes no upgrade: it is
        // dropped, and the connection carries on as HTTP.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut answers = Responses::new(s);
        let a = answers.next();
        assert_eq!(a.text(), "/a upgrade=-");
        assert!(!a.closed);
        assert_eq!(answers.next().text(), "/b upgrade=-");
        // A real upgrade request the upstream (nginx) declines is answered with Connection:
        // close (what follows it could be meant for the other protocol).
        let nginx = nginx_upstream();
        let declines = protected_pair(&format!("127.0.0.1:{}", nginx.port), "");
        let r = declines.raw(
            b"GET /c HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert_eq!(r.text(), "OPEN /c\n");
        assert_eq!(r.header("connection"), Some("close"));
        assert!(r.closed);
        // An upgrade request's own body is still checked as its framing says.
        let before = up.count();
        let r = gw.raw(b"POST /d HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n3;ext\r\nabc\r\n0\r\n\r\n");
        assert_eq!(r.status, 400);
        assert_eq!(up.count(), before);
    }
}

/// An upstream answering `101` to a request that asked for no upgrade gets no tunnel: `502`.
#[test]
fn an_unasked_switch_is_a_bad_upstream() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nNOT AN ANSWER");
        }
    });
    let gw = Gateway::start(&format!(
        "upstreams:\n  a: {{peers: [\"{addr}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a}}\n"
    ));
    let r = gw.get("/", &[]);
    assert_eq!(r.status, 502);
    assert!(!r.text().contains("NOT AN ANSWER"));
}

mod pipelining {
    use super::*;

    fn gateway(up: &Upstream) -> Gateway {
        Gateway::start(&format!(
            "upstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a}}\n",
            up.addr
        ))
    }

    /// Send `bytes` in one write and read `n` answers on the same connection.
    fn pipelined(gw: &Gateway, bytes: &[u8], n: usize) -> Vec<Response> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(bytes).unwrap();
        let mut answers = Responses::new(s);
        (0..n).map(|_| answers.next()).collect()
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let up = Upstream::with_handler("a", |seen| {
            let delay = if seen.url == "/slow" { 300 } else { 0 };
            Reply::ok(&seen.url).delay(Duration::from_millis(delay))
        });
        let gw = gateway(&up);
        let rs = pipelined(
            &gw,
            b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\n\r\nPOST /three HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloPOST /four HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /five HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            5,
        );
        let bodies: Vec<String> = rs.iter().map(|r| r.text()).collect();
        assert_eq!(bodies, ["/slow", "/two", "/three", "/four", "/five"]);
        assert!(rs[..4].iter().all(|r| r.status == 200 && !r.closed));
        assert!(rs[4].closed);
        let seen: Vec<(String, Vec<u8>)> = up.seen().into_iter().map(|s| (s.url, s.body)).collect();
        assert_eq!(
            seen,
            [
                ("/slow".to_string(), vec![]),
                ("/two".to_string(), vec![]),
                ("/three".to_string(), b"hello".to_vec()),
                ("/four".to_string(), b"abc".to_vec()),
                ("/five".to_string(), vec![]),
            ]
        );
    }

    #[test]
    fn a_request_sent_while_another_is_served_waits_its_turn() {
        let up = Upstream::with_handler("a", |seen| {
            let delay = if seen.url == "/slow" { 400 } else { 0 };
            Reply::ok(&seen.url).delay(Duration::from_millis(delay))
        });
        let gw = gateway(&up);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert!(wait_until(Duration::from_secs(5), || up.count() == 1));
        s.write_all(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut answers = Responses::new(s);
        let first = answers.next();
        let second = answers.next();
        assert_eq!(
            (first.text(), second.text()),
            ("/slow".into(), "/next".into())
        );
        assert!(!first.closed && !second.closed);
        // The connection stays usable.
        answers
            .stream
            .write_all(b"GET /third HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let third = answers.next();
        assert_eq!(third.text(), "/third");
        assert!(third.closed);
    }

    #[test]
    fn a_bad_pipelined_request_is_refused_after_the_good_one() {
        let up = Upstream::with_handler("a", |seen| Reply::ok(&seen.url));
        let gw = gateway(&up);
        let rs = pipelined(
            &gw,
            b"GET /one HTTP/1.1\r\nHost: t\r\n\r\nPOST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 1\r\n\r\nx",
            2,
        );
        assert_eq!(rs[0].text(), "/one");
        assert_eq!(rs[1].status, 400);
        assert!(rs[1].closed);
        assert_eq!(up.count(), 1);
    }
}

mod client_address {
    use super::*;

    fn gateway(up: &Upstream, listener: &str, extra_routes: &str) -> Gateway {
        Gateway::start_listener(
            "grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n",
            listener,
            &format!(
                "upstreams:\n  a: {{peers: [\"{}\"], balance: consistent_hash, hash_key: client_ip}}\nroutes:\n  - {{name: deny, match: {{path_prefix: /deny}}, upstream: a, ip_deny: [203.0.113.9]}}\n{extra_routes}  - {{name: ok, match: {{}}, upstream: a}}\n",
                up.addr
            ),
            &[],
        )
    }

    fn req(path: &str, headers: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").into_bytes()
    }

    #[test]
    fn trusted_proxies_name_the_client_others_do_not() {
        let up = Upstream::start("a");
        let gw = gateway(
            &up,
            "    trusted_proxies: [127.0.0.2/32, 10.0.0.0/8]\n",
            "  - {name: limited, match: {path_prefix: /limited}, upstream: a, rate_limit: [{requests: 2, per: 1m, key: client_ip}]}\n",
        );
        let xff = "X-Forwarded-For: 198.51.100.1, 203.0.113.9, 10.1.2.3\r\n";
        // From the trusted proxy: the first untrusted address from the right is the client.
        let r = send_raw_from("127.0.0.2", gw.port, &req("/deny", xff));
        assert_eq!(r.status, 403);
        let r = send_raw_from("127.0.0.2", gw.port, &req("/ok", xff));
        assert_eq!(r.status, 200);
        assert_eq!(
            up.last().header("x-forwarded-for"),
            Some("198.51.100.1, 203.0.113.9, 10.1.2.3, 127.0.0.2")
        );
        // Several field lines are one list; the client's address survives, and a forwarded host
        // the client may have written does not reach the upstream.
        let r = send_raw_from(
            "127.0.0.2",
            gw.port,
            &req(
                "/ok",
                "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 192.0.2.77\r\nX-Forwarded-Host: admin.example\r\nX-Forwarded-Proto: https\r\n",
            ),
        );
        assert_eq!(r.status, 200);
        let seen = up.last();
        assert_eq!(
            seen.header("x-forwarded-for"),
            Some("6.6.6.6, 192.0.2.77, 127.0.0.2")
        );
        assert_eq!(seen.header("x-forwarded-host"), Some("t"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
        // From anyone else the header is not believed, and it is replaced.
        let before = up.count();
        let r = send_raw_from("127.0.0.3", gw.port, &req("/deny", "X-Forwarded-For: 203.0.113.9\r\nForwarded: for=203.0.113.9;host=admin.example;proto=https\r\nX-Forwarded-Host: admin.example\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n"));
        assert_eq!(r.status, 200);
        assert_eq!(up.count(), before + 1);
        let seen = up.last();
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.3"));
        assert_eq!(seen.header("x-forwarded-host"), Some("t"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(seen.header("forwarded"), None);
        assert_eq!(seen.header("x-forwarded-port"), None);
        // Limits are per real client: two clients behind the same proxy each get their own.
        for client in ["192.0.2.10", "192.0.2.11"] {
            let h = format!("X-Forwarded-For: {client}\r\n");
            for _ in 0..2 {
                assert_eq!(
                    send_raw_from("127.0.0.2", gw.port, &req("/limited", &h)).status,
                    200
                );
            }
            assert_eq!(
                send_raw_from("127.0.0.2", gw.port, &req("/limited", &h)).status,
                429
            );
        }
        // An untrusted client cannot pick a fresh bucket with a forged header.
        for i in 0..3 {
            let h = format!("X-Forwarded-For: 192.0.2.{}\r\n", 50 + i);
            let r = send_raw_from("127.0.0.4", gw.port, &req("/limited", &h));
            assert_eq!(r.status, if i < 2 { 200 } else { 429 });
        }
    }

    #[test]
    fn spellings_with_underscores_are_dropped() {
        let up = Upstream::start("a");
        let gw = Gateway::start(&format!(
            "consumers:\n  - {{name: ops, api_keys: [{KEY}]}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: keyed, match: {{path_prefix: /keyed}}, upstream: a, auth: [api_key]}}\n  - {{name: ok, match: {{}}, upstream: a}}\n",
            up.addr
        ));
        let forged = "X_Consumer: root\r\nX_Consumer_Groups: admins\r\nX_Forwarded_For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Original-URL: /keyed/secret\r\nX-HTTP-Method-Override: DELETE\r\nX_Custom: kept\r\n";
        for path in ["/keyed/a", "/ok"] {
            let key = format!("X-Api-Key: {KEY}\r\n");
            let r = gw.raw(&req(path, &format!("{key}{forged}")));
            assert_eq!(r.status, 200);
            let seen = up.last();
            for gone in [
                "x_consumer",
                "x_consumer_groups",
                "x_forwarded_for",
                "x-real-ip",
                "x-original-url",
                "x-http-method-override",
            ] {
                assert_eq!(seen.header(gone), None, "{gone} on {path}");
            }
            assert_eq!(seen.header("x_custom"), Some("kept"));
        }
        assert_eq!(up.last().header("x-consumer"), None);
        let keyed = &up.seen()[0];
        assert_eq!(keyed.header("x-consumer"), Some("ops"));
    }

    #[test]
    fn consistent_hashing_uses_the_real_client() {
        let a = Upstream::start("a");
        let b = Upstream::start("b");
        let gw = Gateway::start_listener(
            "grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n",
            "    trusted_proxies: [127.0.0.2]\n",
            &format!(
                "upstreams:\n  p: {{peers: [\"{}\", \"{}\"], balance: consistent_hash, hash_key: client_ip}}\nroutes:\n  - {{name: r, match: {{}}, upstream: p}}\n",
                a.addr, b.addr
            ),
            &[],
        );
        let served_by = |client: &str| {
            let h = format!("X-Forwarded-For: {client}\r\n");
            let r = send_raw_from("127.0.0.2", gw.port, &req("/", &h));
            assert_eq!(r.status, 200);
            r.header("x-upstream").unwrap().to_string()
        };
        // Every request through the one proxy would land on one peer if the proxy's address
        // were hashed; the clients behind it spread, each always to the same peer.
        let peers: Vec<String> = (0..24)
            .map(|i| served_by(&format!("198.51.100.{i}")))
            .collect();
        assert!(
            peers.iter().any(|p| p == "a") && peers.iter().any(|p| p == "b"),
            "{peers:?}"
        );
        for (i, peer) in peers.iter().enumerate().take(6) {
            assert_eq!(&served_by(&format!("198.51.100.{i}")), peer);
        }
    }

    #[test]
    fn forwarded_header_and_logs() {
        let up = Upstream::start("a");
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("access.log");
        let gw = Gateway::start_listener(
            "grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n",
            "    trusted_proxies: [127.0.0.2]\n    forwarded_header: forwarded\n",
            &format!(
                "access_log: {{path: {}, format: json}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: deny, match: {{path_prefix: /deny}}, upstream: a, ip_deny: [2001:db8::7]}}\n  - {{name: ok, match: {{}}, upstream: a}}\n",
                log.display(),
                up.addr
            ),
            &[],
        );
        let fwd = "Forwarded: for=\"[2001:db8::7]:4711\";proto=https\r\nX-Forwarded-For: 192.0.2.99\r\nX-Request-Id: fwd-1\r\n";
        assert_eq!(
            send_raw_from("127.0.0.2", gw.port, &req("/deny", fwd)).status,
            403
        );
        assert_eq!(
            send_raw_from("127.0.0.2", gw.port, &req("/ok", fwd)).status,
            200
        );
        let seen = up.last();
        assert_eq!(
            seen.header("forwarded"),
            Some("for=\"[2001:db8::7]:4711\", for=127.0.0.2")
        );
        // X-Forwarded-For is not the header this listener believes, but the chain is kept.
        assert_eq!(
            seen.header("x-forwarded-for"),
            Some("192.0.2.99, 127.0.0.2")
        );
        assert!(wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&log)
                .map(|t| t.lines().count() >= 2)
                .unwrap_or(false)
        }));
        let text = std::fs::read_to_string(&log).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["client_ip"], "2001:db8::7", "{line}");
        }
    }
}

mod proxy_protocol {
    use super::*;

    fn gateway(up: &Upstream, listener: &str) -> Gateway {
        Gateway::start_listener(
            "grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n",
            listener,
            &format!(
                "upstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: deny, match: {{path_prefix: /deny}}, upstream: a, ip_deny: [127.0.0.5]}}\n  - {{name: ok, match: {{}}, upstream: a}}\n",
                up.addr
            ),
            &[],
        )
    }

    fn req(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n").into_bytes()
    }

    #[test]
    fn haproxy_v1_and_v2_name_the_client() {
        let up = Upstream::start("a");
        let gw = gateway(&up, "    proxy_protocol: true\n");
        for version in ["send-proxy", "send-proxy-v2"] {
            let haproxy = Server::haproxy(gw.port, version);
            let r = send_raw_from("127.0.0.5", haproxy.port, &req("/deny"));
            assert_eq!(r.status, 403, "{version}");
            let r = send_raw_from("127.0.0.6", haproxy.port, &req("/ok"));
            assert_eq!(r.status, 200, "{version}");
            assert_eq!(
                up.last().header("x-forwarded-for"),
                Some("127.0.0.6"),
                "{version}"
            );
            // Keep-alive through the balancer: the address holds for every request.
            let mut s = connect_from("127.0.0.7", haproxy.port);
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            for _ in 0..3 {
                s.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                assert_eq!(read_keepalive_response(&mut s).status, 200);
                assert_eq!(up.last().header("x-forwarded-for"), Some("127.0.0.7"));
            }
        }
    }

    #[test]
    fn a_listener_that_expects_it_refuses_connections_without_it() {
        let up = Upstream::start("a");
        let gw = gateway(&up, "    proxy_protocol: true\n");
        for bytes in [
            &b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n"[..],
            b"PROXY TCP9 nonsense\r\nGET /ok HTTP/1.1\r\nHost: t\r\n\r\n",
            b"PROXY TCP4 300.1.1.1 127.0.0.1 1 2\r\nGET /ok HTTP/1.1\r\nHost: t\r\n\r\n",
        ] {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(bytes).unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap_or(0);
            assert_eq!(n, 0, "answered: {}", String::from_utf8_lossy(&buf[..n]));
        }
        assert_eq!(up.count(), 0);
        // A correct header by hand works, and LOCAL (a balancer's health check) keeps the peer.
        let r = gw.raw(b"PROXY TCP4 192.0.2.33 127.0.0.1 5555 80\r\nGET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(up.last().header("x-forwarded-for"), Some("192.0.2.33"));
        let r = gw.raw(b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(up.last().header("x-forwarded-for"), Some("127.0.0.1"));
        // Version 2 with a large TLV (balancers add endpoint ids and TLS details).
        let tlv = vec![b'x'; 1500];
        let mut v2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11".to_vec();
        v2.extend_from_slice(&((12 + 3 + tlv.len()) as u16).to_be_bytes());
        v2.extend_from_slice(&[192, 0, 2, 44, 127, 0, 0, 1, 0x15, 0xb3, 0, 80]);
        v2.push(0x04);
        v2.extend_from_slice(&(tlv.len() as u16).to_be_bytes());
        v2.extend_from_slice(&tlv);
        v2.extend_from_slice(b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(gw.raw(&v2).status, 200);
        assert_eq!(up.last().header("x-forwarded-for"), Some("192.0.2.44"));
    }

    #[test]
    fn a_version_1_header_may_arrive_in_pieces() {
        let up = Upstream::start("a");
        let gw = gateway(&up, "    proxy_protocol: true\n");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 ")
            .unwrap();
        // The rest of the line comes in a later segment.
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(b"80\r\nGET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(read_response(&mut s).status, 200);
        assert_eq!(up.last().header("x-forwarded-for"), Some("192.0.2.9"));
    }

    #[test]
    fn only_trusted_balancers_may_send_it() {
        let up = Upstream::start("a");
        let gw = gateway(
            &up,
            "    proxy_protocol: true\n    trusted_proxies: [127.0.0.2]\n",
        );
        let header = b"PROXY TCP4 192.0.2.33 127.0.0.1 5555 80\r\nGET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let r = send_raw_from("127.0.0.2", gw.port, header);
        assert_eq!(r.status, 200);
        assert_eq!(up.last().header("x-forwarded-for"), Some("192.0.2.33"));
        let mut s = connect_from("127.0.0.3", gw.port);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(header).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
        assert_eq!(up.count(), 1);
    }

    #[test]
    fn tls_listener_behind_haproxy() {
        let up = Upstream::start("a");
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let gw = gateway(
            &up,
            &format!(
                "    tls: {{cert: {}, key: {}}}\n    proxy_protocol: true\n",
                cert.display(),
                key.display()
            ),
        );
        let haproxy = Server::haproxy(gw.port, "send-proxy-v2");
        for (from, path, status) in [("127.0.0.5", "/deny", "403"), ("127.0.0.6", "/ok", "200")] {
            let out = std::process::Command::new("curl")
                .args(["-s", "--max-time", "10", "--cacert"])
                .arg(&cert)
                .args(["--interface", from, "--resolve"])
                .arg(format!("gw.test:{}:127.0.0.1", haproxy.port))
                .args(["-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("https://gw.test:{}{path}", haproxy.port))
                .output()
                .expect("curl");
            assert_eq!(String::from_utf8_lossy(&out.stdout), status, "{from}");
        }
        let seen = up.last();
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.6"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    }
}

mod slow_clients {
    use super::*;

    fn gateway(up: &Upstream, process: &str, listener: &str) -> Gateway {
        Gateway::start_listener(
            &format!("grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n{process}"),
            listener,
            &format!(
                "upstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a}}\n",
                up.addr
            ),
            &[],
        )
    }

    /// The answer was a `408`, given between `min` and `max` after the client started.
    fn timed_out(out: &[u8], took: Duration, min: Duration, max: Duration) {
        assert!(
            out.starts_with(b"HTTP/1.1 408 "),
            "{}",
            String::from_utf8_lossy(out)
        );
        assert!(took >= min && took < max, "{took:?}");
    }

    /// Send `bytes` on a new connection and nothing more: answered `408` after about a second.
    fn times_out_after_a_second(gw: &Gateway, bytes: &[u8]) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        let start = Instant::now();
        s.write_all(bytes).unwrap();
        let (out, took) = answer(&mut s, start);
        timed_out(
            &out,
            took,
            Duration::from_millis(900),
            Duration::from_secs(5),
        );
    }

    /// Read until the server answers or closes; the answer and how long it took.
    fn answer(s: &mut std::net::TcpStream, since: Instant) -> (Vec<u8>, Duration) {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        (out, since.elapsed())
    }

    #[test]
    fn slow_headers_time_out() {
        let up = Upstream::start("a");
        let gw = gateway(&up, "client_header_timeout: 1s\n", "");
        // Part of a head, then nothing.
        times_out_after_a_second(&gw, b"GET / HTTP/1.1\r\nHost: t\r\n");
        // A head trickled a byte at a time: the bound is on the whole head, not between bytes.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        let start = Instant::now();
        let trickle =
            b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for b in trickle {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            if start.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        let (out, took) = answer(&mut s, start);
        timed_out(&out, took, Duration::ZERO, Duration::from_secs(4));
        // A connection that sends nothing is closed after the header timeout too.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        let (out, took) = answer(&mut s, Instant::now());
        assert!(out.is_empty());
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(up.count(), 0);
    }

    #[test]
    fn slow_bodies_time_out() {
        let up = Upstream::start("a");
        let gw = gateway(
            &up,
            "client_body_timeout: 1s\nclient_body_min_rate: 200\n",
            "",
        );
        // A body that stops.
        times_out_after_a_second(
            &gw,
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc",
        );
        // A body that keeps coming, 10 bytes every 150 ms (about 67 bytes/s, under 200).
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
            .unwrap();
        let start = Instant::now();
        let writer = {
            let mut w = s.try_clone().unwrap();
            std::thread::spawn(move || {
                while start.elapsed() < Duration::from_secs(15) {
                    if w.write_all(&[b'x'; 10]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(150));
                }
            })
        };
        let (out, took) = answer(&mut s, start);
        timed_out(&out, took, Duration::ZERO, Duration::from_secs(8));
        drop(s);
        let _ = writer.join();
        // No complete request reached the upstream.
        // No complete body reached the upstream (it may have seen the start of one before the
        // gateway aborted it).
        for seen in up.seen() {
            let complete = if seen.body.starts_with(b"abc") {
                100
            } else {
                100_000
            };
            assert!(seen.body.len() < complete, "a slow body got through");
        }
    }

    #[test]
    fn connections_per_address_are_capped() {
        let up = Upstream::start("a");
        let gw = gateway(&up, "", "    max_connections_per_ip: 3\n");
        // Three connections, each known to be admitted once it has been answered.
        let held: Vec<_> = (0..3)
            .map(|_| {
                let mut s = connect_from("127.0.0.8", gw.port);
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                assert_eq!(read_keepalive_response(&mut s).status, 200);
                s
            })
            .collect();
        // A fourth is closed without an answer.
        let mut s = connect_from("127.0.0.8", gw.port);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let mut buf = [0u8; 16];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
        assert_eq!(up.count(), 3);
        // Other addresses are served.
        let r = send_raw_from(
            "127.0.0.9",
            gw.port,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200);
        // A slot comes back when a connection closes.
        drop(held);
        assert!(wait_until(Duration::from_secs(5), || {
            let mut s = connect_from("127.0.0.8", gw.port);
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            let mut buf = [0u8; 16];
            matches!(s.read(&mut buf), Ok(n) if n > 0)
        }));
    }

    #[test]
    fn a_client_that_stops_reading_is_let_go() {
        let big = Upstream::with_handler("big", |_| Reply {
            status: 200,
            headers: Vec::new(),
            body: vec![b'z'; 64 << 20],
            delay: Duration::ZERO,
        });
        let gw = gateway(&big, "client_send_timeout: 1s\n", "");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        // The client reads nothing while the answer fills the socket buffers, then drains: the
        // gateway has given up on it and the stream ends early.
        std::thread::sleep(Duration::from_secs(3));
        let start = Instant::now();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        assert!(got < 64 << 20, "the whole answer was sent");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    /// An HTTP/2 client over TLS that sends part of its connection preface and stops is let go
    /// after the header timeout (Pingora's HTTP/2 handshake would wait for it forever).
    #[test]
    fn a_partial_http2_preface_over_tls_times_out() {
        let up = Upstream::start("a");
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let gw = gateway(
            &up,
            "client_header_timeout: 1s\n",
            &format!(
                "    tls: {{cert: {}, key: {}}}\n",
                cert.display(),
                key.display()
            ),
        );
        let script = "import socket, ssl, sys, time\nctx = ssl.create_default_context()\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\nctx.set_alpn_protocols(['h2'])\nt = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1]))), server_hostname='gw.test')\nassert t.selected_alpn_protocol() == 'h2'\nt.sendall(b'PRI * HTTP')\nt.settimeout(20)\nstart = time.time()\ntry:\n    while t.recv(100):\n        pass\nexcept Exception:\n    pass\nprint(time.time() - start)\n";
        let out = std::process::Command::new("python3")
            .args(["-c", script, &gw.port.to_string()])
            .output()
            .expect("python3");
        let took: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        assert!(took < 5.0, "held {took} s");
    }

    /// slowhttptest's slowloris (and slow-body) attack from one address with 500 connections
    /// does not stop another client from being served.
    #[test]
    fn slowloris_does_not_starve_other_clients() {
        // The attack's slow bodies are streamed to its own upstream, whose worker threads they
        // hold; the other client's requests go to another, so that only the gateway is shared.
        let attacked = Upstream::start("attacked");
        let up = Upstream::start("a");
        let gw = Gateway::start_listener(
            "grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\nclient_header_timeout: 2s\nclient_body_timeout: 2s\n",
            "    max_connections_per_ip: 200\n",
            &format!(
                "upstreams:\n  a: {{peers: [\"{}\"]}}\n  attacked: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: probe, match: {{path_prefix: /probe}}, upstream: a}}\n  - {{name: t, match: {{}}, upstream: attacked}}\n",
                up.addr, attacked.addr
            ),
            &[],
        );
        for mode in ["-H", "-B"] {
            let mut attack = std::process::Command::new("slowhttptest")
                .args([
                    mode, "-c", "500", "-r", "250", "-i", "1", "-s", "8192", "-t", "POST", "-l",
                    "8",
                ])
                .args(["-u", &format!("http://127.0.0.1:{}/", gw.port)])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("slowhttptest must be installed (scripts/setup.sh)");
            // Once the attack holds its connections (all the cap lets one address have), serve
            // a client from another address.
            let open_fds = || {
                std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
                    .map(|d| d.count())
                    .unwrap_or(0)
            };
            let idle = open_fds();
            assert!(
                wait_until(Duration::from_secs(10), || open_fds() >= idle + 150),
                "{mode}: the attack did not get its connections open"
            );
            let mut worst = Duration::ZERO;
            for _ in 0..20 {
                let start = Instant::now();
                let r = send_raw_from(
                    "127.0.0.10",
                    gw.port,
                    b"GET /probe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                );
                assert_eq!(r.status, 200, "{mode}");
                worst = worst.max(start.elapsed());
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = attack.kill();
            let _ = attack.wait();
            assert!(
                worst < Duration::from_secs(2),
                "{mode}: slowest answer {worst:?}"
            );
            println!("{mode}: slowest of 20 answers during the attack: {worst:?}");
        }
    }
}
