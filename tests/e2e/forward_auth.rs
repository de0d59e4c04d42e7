//! Forward authentication against a real authorization service: admitted requests carry its
//! headers upstream (never the client's own), refusals come back as it wrote them, a service
//! too slow or down refuses (or admits with `failure: allow`), and cached verdicts spare it.

use crate::common::*;
use std::time::{Duration, Instant};

fn auth_service() -> Upstream {
    Upstream::with_handler("auth", |s| match s.header("authorization") {
        // Paths with "public" in them pass without credentials.
        None if s
            .header("x-forwarded-uri")
            .is_some_and(|u| u.contains("public")) =>
        {
            Reply::ok("").header("x-user-id", "anonymous")
        }
        Some("Bearer good") => Reply::ok("")
            .header("x-user-id", "u1")
            .header("x-user-groups", "staff")
            .header("x-not-passed", "1"),
        Some("Bearer slow") => Reply::ok("").delay(Duration::from_millis(1500)),
        _ => Reply {
            status: 401,
            ..Reply::ok("{\"error\":\"nope\"}")
                .header("content-type", "application/json")
                .header("www-authenticate", "Bearer realm=\"api\"")
                .header("x-internal", "secret")
        },
    })
}

fn get(gw: &Gateway, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    gw.get(path, &headers)
}

#[test]
fn an_authorization_service_decides_and_its_headers_go_upstream() {
    let auth = auth_service();
    let api = Upstream::start("api");
    let admin = closed_port().port();
    let fa = |extra: &str| {
        format!("{{pool: auth, path: /check, response_headers: [x-user-id, x-user-groups], timeout: 300ms{extra}}}")
    };
    let gw = Gateway::start(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\nupstreams:\n  api: {{peers: [\"{}\"]}}\n  auth: {{peers: [\"{}\"]}}\n  dead: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{path_prefix: /r}}, upstream: api, forward_auth: {}}}\n  - {{name: c, match: {{path_prefix: /c}}, upstream: api, forward_auth: {}}}\n  - {{name: open, match: {{path_prefix: /open}}, upstream: api, forward_auth: {{pool: dead, failure: allow, response_headers: [x-user-id]}}}}\n  - {{name: shut, match: {{path_prefix: /shut}}, upstream: api, forward_auth: {{pool: dead}}}}\n",
        api.addr,
        auth.addr,
        closed_port(),
        fa(""),
        fa(", cache: 10s"),
    ));
    // Admitted: the service saw the request described, the upstream got its headers, and a
    // client's own copy of them is dropped.
    let r = get(&gw, "/r/x?q=1", Some("good"), &[("x-user-id", "evil")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let asked = auth.last();
    assert_eq!(asked.url, "/check");
    assert_eq!(asked.method, "GET");
    assert_eq!(asked.header("x-forwarded-uri"), Some("/r/x?q=1"));
    assert_eq!(asked.header("x-forwarded-method"), Some("GET"));
    assert_eq!(asked.header("x-forwarded-proto"), Some("http"));
    assert_eq!(asked.header("authorization"), Some("Bearer good"));
    let seen = api.last();
    let ids: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(k, _)| k == "x-user-id")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ids, ["u1"]);
    assert_eq!(seen.header("x-user-groups"), Some("staff"));
    assert_eq!(seen.header("x-not-passed"), None);
    // Refused: the service's answer as it wrote it (its status, body and challenge, not its
    // other headers); the upstream never sees the request.
    let before = api.count();
    for token in [Some("bad"), None] {
        let r = get(&gw, "/r/x", token, &[]);
        assert_eq!(r.status, 401);
        assert_eq!(r.text(), "{\"error\":\"nope\"}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"api\""));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-internal"), None);
        assert!(r.header("x-request-id").is_some());
    }
    // Too slow: refused at the timeout.
    let t = Instant::now();
    assert_eq!(get(&gw, "/r/x", Some("slow"), &[]).status, 403);
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(api.count(), before);
    // Cached verdicts: the same request again is not asked about.
    let asked_before = auth.count();
    assert_eq!(get(&gw, "/c/1", Some("good"), &[]).status, 200);
    assert_eq!(get(&gw, "/c/1", Some("good"), &[]).status, 200);
    assert_eq!(auth.count(), asked_before + 1);
    assert_eq!(api.last().header("x-user-id"), Some("u1"));
    // Other credentials are asked about (and refused).
    assert_eq!(get(&gw, "/c/3", Some("bad"), &[]).status, 401);
    // A cached "yes" is for that request only: another path or method is asked about.
    assert_eq!(get(&gw, "/c/public", None, &[]).status, 200);
    assert_eq!(get(&gw, "/c/admin", None, &[]).status, 401);
    let r = gw.raw(
        b"DELETE /c/public HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(auth.last().header("x-forwarded-method"), Some("DELETE"));
    // Spellings with '_' of an identity header are dropped too.
    let r = get(&gw, "/r/x", Some("good"), &[("x_user_id", "admin")]);
    assert_eq!(r.status, 200);
    assert!(api.last().headers.iter().all(|(k, _)| k != "x_user_id"));
    // A service that cannot be reached: admitted with `failure: allow` (and no identity
    // headers, not even the client's), refused otherwise.
    let r = get(&gw, "/open", None, &[("x-user-id", "evil")]);
    assert_eq!(r.status, 200);
    assert_eq!(api.last().header("x-user-id"), None);
    assert_eq!(get(&gw, "/shut", None, &[]).status, 403);
    let m = send_raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .text();
    for line in [
        "tollgate_forward_auth_total{result=\"allowed\",route=\"r\"} 2",
        "tollgate_forward_auth_total{result=\"refused\",route=\"r\"} 2",
        "tollgate_forward_auth_total{result=\"failed_denied\",route=\"r\"} 1",
        "tollgate_forward_auth_total{result=\"cached\",route=\"c\"} 1",
        "tollgate_forward_auth_total{result=\"failed_allowed\",route=\"open\"} 1",
    ] {
        assert!(m.contains(line), "{line} not in {m}");
    }
}

/// An authorization service that sends `103 Early Hints` before its `200`.
fn early_hints_service() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nx-user-id: early\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    addr
}

#[test]
fn interim_answers_of_the_service_are_read_past() {
    let api = Upstream::start("api");
    let gw = Gateway::start(&format!(
        "upstreams:\n  api: {{peers: [\"{}\"]}}\n  auth: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: api, forward_auth: {{pool: auth, response_headers: [x-user-id]}}}}\n",
        api.addr,
        early_hints_service()
    ));
    let r = gw.get("/", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.last().header("x-user-id"), Some("early"));
}
