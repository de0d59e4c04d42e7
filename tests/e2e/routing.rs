//! Routing, path rewriting, header transforms, request ids and error answers, driven through
//! the real gateway binary against real upstream servers.

use crate::common::*;
use std::time::Duration;

fn two_pools(a: &Upstream, b: &Upstream, routes: &str) -> Gateway {
    Gateway::start(&format!(
        "upstreams:\n  a: {{peers: [\"{}\"]}}\n  b: {{peers: [\"{}\"]}}\nroutes:\n{routes}",
        a.addr, b.addr
    ))
}

#[test]
fn routing_precedence_end_to_end() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = two_pools(
        &a,
        &b,
        "  - {name: api, match: {path_prefix: /api}, upstream: a}\n  - {name: users, match: {path_prefix: /api/users}, upstream: b}\n  - {name: me, match: {path_exact: /api/users/me}, upstream: a}\n  - {name: named, match: {hosts: [shop.example.com], path_prefix: /api/users}, upstream: a}\n  - {name: wild, match: {hosts: ['*.example.org'], path_prefix: /}, upstream: b}\n  - {name: posts, match: {path_prefix: /api/users, methods: [POST]}, upstream: a}\n  - {name: v2, match: {path_prefix: /api/users, headers: {x-api-version: '2'}}, upstream: a}\n",
    );
    let cases: &[(&str, &str, &str, &str)] = &[
        ("GET", "test.local", "/api/users/7", "b"), // longer prefix beats /api
        ("GET", "test.local", "/api/usersX", "a"),  // segment boundary: falls to /api
        ("GET", "test.local", "/api/users/me", "a"), // exact beats prefix
        ("GET", "shop.example.com", "/api/users/7", "a"), // named host beats any host
        ("GET", "x.y.example.org", "/api/users/7", "b"), // wildcard host
        ("POST", "test.local", "/api/users/7", "a"), // method predicate
    ];
    for (method, host, path, want) in cases {
        let r = gw.raw(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{method} {host}{path}");
        assert_eq!(r.header("x-upstream"), Some(*want), "{method} {host}{path}");
    }
    let r = gw.get("/api/users/1", &[("x-api-version", "2")]);
    assert_eq!(r.header("x-upstream"), Some("a"));
    assert_eq!(a.count() + b.count(), cases.len() + 1);
}

#[test]
fn no_route_is_404_problem_details_and_upstream_untouched() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = two_pools(
        &a,
        &b,
        "  - {name: api, match: {path_prefix: /api}, upstream: a}\n",
    );
    let r = gw.get("/other//x?q=1", &[("x-request-id", "req-404")]);
    assert_eq!(r.status, 404);
    // RFC 9457 problem details: type, title, status, detail, instance (the canonical path),
    // and the request id as an extension member.
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let j = r.json();
    assert_eq!(j["type"], "tag:tollgate,2026:no-route");
    assert_eq!(j["title"], "No route");
    assert_eq!(j["status"], 404);
    assert_eq!(j["detail"], "no route matches this request");
    assert_eq!(j["instance"], "/other/x");
    assert_eq!(j["request_id"], "req-404");
    assert_eq!(j.as_object().map(|o| o.len()), Some(6), "{j}");
    assert_eq!(a.count(), 0);
}

#[test]
fn strip_prefix_and_rewrite_keep_query() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = two_pools(
        &a,
        &b,
        "  - {name: s, match: {path_prefix: /api/users}, upstream: a, strip_prefix: /api}\n  - {name: r, match: {path_prefix: /old}, upstream: b, rewrite: /new/v2}\n",
    );
    assert_eq!(gw.get("/api/users/7?x=1&y=2", &[]).status, 200);
    assert_eq!(a.last().url, "/users/7?x=1&y=2");
    assert_eq!(gw.get("/old/thing?q=3", &[]).status, 200);
    assert_eq!(b.last().url, "/new/v2/thing?q=3");
    // Dot segments are resolved before routing, so a prefix cannot be escaped.
    assert_eq!(gw.get("/old/../api/users/9", &[]).status, 200);
    assert_eq!(a.last().url, "/users/9");
}

#[test]
fn header_transforms_forwarded_headers_and_request_id() {
    let a = Upstream::with_handler("a", |_| {
        Reply::ok("x")
            .header("server", "leaky/1.0")
            .header("x-kept", "1")
    });
    let b = Upstream::start("b");
    let gw = two_pools(
        &a,
        &b,
        "  - name: t\n    match: {path_prefix: /}\n    upstream: a\n    request_headers: {set: {x-gateway: tollgate}, add: {x-extra: one}, remove: [x-internal-token]}\n    response_headers: {set: {x-frame-options: DENY}, remove: [server]}\n",
    );
    let r = gw.get(
        "/p",
        &[
            ("x-internal-token", "secret"),
            ("x-forwarded-for", "10.0.0.1"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("server"), None);
    assert_eq!(r.header("x-kept"), Some("1"));
    let seen = a.last();
    assert_eq!(seen.header("x-gateway"), Some("tollgate"));
    assert_eq!(seen.header("x-extra"), Some("one"));
    assert_eq!(seen.header("x-internal-token"), None);
    // From a peer that is not a trusted proxy the client's X-Forwarded-For is replaced.
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("test.local"));
    // A generated request id is sent upstream and returned to the client.
    let id = r
        .header("x-request-id")
        .expect("request id returned")
        .to_string();
    assert_eq!(id.len(), 32);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    // Every request gets its own.
    let again = gw
        .get("/p", &[])
        .header("x-request-id")
        .unwrap()
        .to_string();
    assert_ne!(again, id);
    assert_eq!(seen.header("x-request-id"), Some(id.as_str()));
    // A client's id is kept.
    let r = gw.get("/p", &[("x-request-id", "client-id-42")]);
    assert_eq!(r.header("x-request-id"), Some("client-id-42"));
    assert_eq!(a.last().header("x-request-id"), Some("client-id-42"));
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = two_pools(&a, &b, "  - {name: t, match: {}, upstream: a}\n");
    let r = gw.raw(b"GET /h HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, x-private\r\nKeep-Alive: timeout=5\r\nX-Private: 1\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nTrailer: x\r\nX-Public: 2\r\n\r\n");
    assert_eq!(r.status, 200);
    let seen = a.last();
    for h in [
        "keep-alive",
        "x-private",
        "te",
        "proxy-authorization",
        "trailer",
    ] {
        assert_eq!(seen.header(h), None, "{h} was forwarded");
    }
    assert_eq!(seen.header("x-public"), Some("2"));
}

#[test]
fn upstream_connections_are_reused() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = two_pools(&a, &b, "  - {name: t, match: {}, upstream: a}\n");
    for _ in 0..20 {
        assert_eq!(gw.get("/k", &[]).status, 200);
    }
    let conns: std::collections::HashSet<_> = a.seen().iter().filter_map(|s| s.remote).collect();
    assert!(
        conns.len() < 10,
        "20 requests used {} upstream connections",
        conns.len()
    );
}

#[test]
fn body_over_max_body_size_is_413_and_never_sent() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = two_pools(
        &a,
        &b,
        "  - {name: t, match: {}, upstream: a, max_body_size: 1KiB}\n",
    );
    let big = "x".repeat(2000);
    let r = gw.raw(
        format!(
            "POST /u HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["status"], 413);
    assert!(r.closed);
    // Chunked: counted as it arrives, refused before the upstream is contacted.
    let r = gw.raw(format!("POST /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n", big.len()).as_bytes());
    assert_eq!(r.status, 413);
    assert_eq!(a.count(), 0);
    // Within the limit passes, body intact, also when the read-ahead holds most of it.
    let near = "z".repeat(900);
    let r = gw.raw(format!("POST /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{near}\r\n0\r\n\r\n", near.len()).as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(a.last().body, near.as_bytes());
    let r = gw.raw(b"POST /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(a.last().body, b"hello world");
}

#[test]
fn header_section_too_large_is_431() {
    let a = Upstream::start("a");
    let gw = Gateway::start(&format!(
        "max_request_header_size: 4KiB\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a}}\n",
        a.addr
    ));
    let r = gw.get("/", &[("x-big", &"y".repeat(5000))]);
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["status"], 431);
    assert_eq!(a.count(), 0);
    assert_eq!(gw.get("/", &[("x-small", "y")]).status, 200);
}

#[test]
fn upstream_too_slow_is_504() {
    let a = Upstream::with_handler("a", |_| {
        Reply::ok("late").delay(Duration::from_millis(1500))
    });
    let gw = Gateway::start(&format!(
        "upstreams:\n  a: {{peers: [\"{}\"], read_timeout: 300ms}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a}}\n",
        a.addr
    ));
    let r = gw.get("/slow", &[]);
    assert_eq!(r.status, 504);
    let j = r.json();
    assert_eq!(j["status"], 504);
    assert!(
        !r.text().contains("127.0.0.1"),
        "leaks an address: {}",
        r.text()
    );
}

#[test]
fn refused_connection_is_502() {
    let dead = closed_port();
    let gw = Gateway::start(&format!(
        "upstreams:\n  a: {{peers: [\"{dead}\"], retries: 0}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a}}\n"
    ));
    let r = gw.get("/", &[]);
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["status"], 502);
    assert!(
        !r.text().contains(&dead.port().to_string()),
        "leaks the peer: {}",
        r.text()
    );
}

#[test]
fn upstream_reset_is_502() {
    // A peer that accepts and closes without answering.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut s, &mut buf);
            drop(s);
        }
    });
    let gw = Gateway::start(&format!(
        "upstreams:\n  a: {{peers: [\"{addr}\"], retries: 0}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a}}\n"
    ));
    let r = gw.get("/", &[]);
    assert_eq!(r.status, 502);
}

#[test]
fn templates_regexes_and_query_conditions_end_to_end() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = two_pools(
        &a,
        &b,
        "  - {name: orders, match: {path_template: '/users/{id}/orders/{*rest}'}, upstream: a, rewrite: '/v2/customers/{id}/orders/{rest}'}\n  - {name: mine, match: {path_template: '/users/me/orders/{*rest}'}, upstream: b}\n  - {name: items, match: {path_regex: '/items/(?P<id>[0-9]+)(?P<ext>\\.json)?'}, upstream: a, rewrite: '/catalog/{id}{ext}'}\n  - {name: dots, match: {path_regex: '/d/(?P<a>[^/])(?P<b>[^/])x'}, upstream: a, rewrite: '/safe/{a}{b}/secret'}\n  - {name: v2, match: {path_prefix: /s, query: {version: '2'}}, upstream: b}\n  - {name: s, match: {path_prefix: /s}, upstream: a}\n",
    );
    // Parameters carry into the rewrite; the query string goes along unchanged.
    assert_eq!(gw.get("/users/42/orders/7/lines?x=1", &[]).status, 200);
    assert_eq!(a.last().url, "/v2/customers/42/orders/7/lines?x=1");
    // A literal segment beats a parameter.
    let r = gw.get("/users/me/orders/1", &[]);
    assert_eq!(r.header("x-upstream"), Some("b"));
    assert_eq!(b.last().url, "/users/me/orders/1");
    // Parameters are taken from the canonical path: a dot segment is resolved first.
    assert_eq!(gw.get("/users/x/../42/orders/1", &[]).status, 200);
    assert_eq!(a.last().url, "/v2/customers/42/orders/1");
    assert_eq!(gw.get("/items/17.json", &[]).status, 200);
    assert_eq!(a.last().url, "/catalog/17.json");
    assert_eq!(gw.get("/items/17", &[]).status, 200);
    assert_eq!(a.last().url, "/catalog/17");
    // A regex matches the whole path, never a part of it.
    assert_eq!(gw.get("/items/17/x", &[]).status, 404);
    assert_eq!(gw.get("/x/items/17", &[]).status, 404);
    // An empty parameter never matches.
    assert_eq!(gw.get("/users//orders/1", &[]).status, 404);

    // Parameters that would put together a dot segment for the upstream: refused, not sent.
    let before = a.count();
    let r = gw.get("/d/..x", &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(a.count(), before);
    assert_eq!(gw.get("/d/abx", &[]).status, 200);
    assert_eq!(a.last().url, "/safe/ab/secret");

    // Query conditions compare decoded values; a repeated parameter with other values meets
    // none (servers disagree on which one counts).
    for (q, want) in [
        ("/s?version=2", "b"),
        ("/s?x=1&version=%32", "b"),
        ("/s?version=2&version=2", "b"),
        ("/s?version=2&version=3", "a"),
        ("/s?version=3&version=2", "a"),
        ("/s?version=20", "a"),
        ("/s?Version=2", "a"),
        ("/s", "a"),
    ] {
        assert_eq!(gw.get(q, &[]).header("x-upstream"), Some(want), "{q}");
    }
    // Read with ';' as a separator too (as older servers do), this query has version=2: routed
    // on one reading and served on the other, it is refused instead.
    let (ca, cb) = (a.count(), b.count());
    let r = gw.get("/s?x=1;version=2", &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!((a.count(), b.count()), (ca, cb));
    assert_eq!(
        gw.get("/s?q=a;b&version=2", &[]).header("x-upstream"),
        Some("b")
    );
}
