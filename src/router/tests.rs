use super::*;
use crate::config;

fn router(yaml_routes: &str) -> (Router, Vec<Route>) {
    let text = format!(
        "listeners: [{{address: 127.0.0.1:1}}]\nupstreams: {{u: {{peers: [127.0.0.1:2]}}}}\nroutes:\n{yaml_routes}"
    );
    let c = config::parse(&text).expect("valid config");
    (Router::new(&c.routing.routes), c.routing.routes)
}

fn find(
    r: &(Router, Vec<Route>),
    host: &str,
    method: &str,
    path: &str,
    hdrs: &[(&str, &str)],
) -> Option<String> {
    let mut headers = HeaderMap::new();
    for (k, v) in hdrs {
        headers.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    r.0.lookup(&RequestView {
        host,
        path,
        method: &method,
        headers: &headers,
        query,
    })
    .map(|i| r.1[i].name.clone())
}

#[test]
fn precedence() {
    let r = router(
        "  - {name: root, match: {path_prefix: /}, upstream: u}\n  - {name: api, match: {path_prefix: /api}, upstream: u}\n  - {name: users, match: {path_prefix: /api/users}, upstream: u}\n  - {name: me, match: {path_exact: /api/users/me}, upstream: u}\n  - {name: host, match: {hosts: [a.example.com], path_prefix: /api}, upstream: u}\n  - {name: wild, match: {hosts: ['*.example.org'], path_prefix: /}, upstream: u}\n  - {name: post, match: {path_prefix: /api/users, methods: [POST]}, upstream: u}\n  - {name: v2, match: {path_prefix: /api/users, headers: {x-api-version: '2'}}, upstream: u}\n",
    );
    assert_eq!(
        find(&r, "x", "GET", "/api/users/7", &[]).as_deref(),
        Some("users")
    );
    assert_eq!(
        find(&r, "x", "GET", "/api/users", &[]).as_deref(),
        Some("users")
    );
    assert_eq!(
        find(&r, "x", "GET", "/api/usersX", &[]).as_deref(),
        Some("api")
    );
    assert_eq!(
        find(&r, "x", "GET", "/api/users/me", &[]).as_deref(),
        Some("me")
    );
    assert_eq!(find(&r, "x", "GET", "/other", &[]).as_deref(), Some("root"));
    assert_eq!(
        find(&r, "a.example.com", "GET", "/api/users/7", &[]).as_deref(),
        Some("host")
    );
    assert_eq!(
        find(&r, "a.example.com", "GET", "/nope", &[]).as_deref(),
        Some("root")
    );
    assert_eq!(
        find(&r, "x.y.example.org", "GET", "/api/users", &[]).as_deref(),
        Some("wild")
    );
    assert_eq!(
        find(&r, "example.org", "GET", "/api/users", &[]).as_deref(),
        Some("users")
    );
    assert_eq!(
        find(&r, "x", "POST", "/api/users/1", &[]).as_deref(),
        Some("post")
    );
    assert_eq!(
        find(&r, "x", "GET", "/api/users/1", &[("x-api-version", "2")]).as_deref(),
        Some("v2")
    );
}

#[test]
fn explicit_priority_overrides() {
    let r = router(
        "  - {name: long, match: {path_prefix: /a/b}, upstream: u}\n  - {name: short, match: {path_prefix: /a}, upstream: u, priority: 10}\n  - {name: hosted, match: {hosts: [h.com], path_prefix: /a/b}, upstream: u}\n",
    );
    assert_eq!(
        find(&r, "x", "GET", "/a/b/c", &[]).as_deref(),
        Some("short")
    );
    assert_eq!(
        find(&r, "h.com", "GET", "/a/b/c", &[]).as_deref(),
        Some("short")
    );
}

#[test]
fn head_follows_get() {
    let r = router(
        "  - {name: read, match: {path_prefix: /s, methods: [GET]}, upstream: u}\n  - {name: write, match: {path_prefix: /s, methods: [POST]}, upstream: u}\n  - {name: rest, match: {}, upstream: u}\n",
    );
    assert_eq!(find(&r, "x", "HEAD", "/s/1", &[]).as_deref(), Some("read"));
    assert_eq!(find(&r, "x", "POST", "/s/1", &[]).as_deref(), Some("write"));
    assert_eq!(find(&r, "x", "PUT", "/s/1", &[]).as_deref(), Some("rest"));
}

#[test]
fn no_route() {
    let r = router("  - {name: api, match: {path_prefix: /api, methods: [GET]}, upstream: u}\n");
    assert_eq!(find(&r, "x", "GET", "/", &[]), None);
    assert_eq!(find(&r, "x", "DELETE", "/api", &[]), None);
}

#[test]
fn ten_thousand_routes() {
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&format!(
            "  - {{name: r{i}, match: {{path_prefix: /svc{i}/api}}, upstream: u}}\n"
        ));
    }
    text.push_str("  - {name: host, match: {hosts: [h9999.example.com], path_prefix: /svc9999}, upstream: u}\n");
    let r = router(&text);
    assert_eq!(
        find(&r, "x", "GET", "/svc0/api/users/1", &[]).as_deref(),
        Some("r0")
    );
    assert_eq!(
        find(&r, "x", "GET", "/svc9999/api", &[]).as_deref(),
        Some("r9999")
    );
    assert_eq!(
        find(&r, "h9999.example.com", "GET", "/svc9999/api", &[]).as_deref(),
        Some("host")
    );
    assert_eq!(find(&r, "x", "GET", "/svc10000/api", &[]), None);
}

#[test]
fn rewrites() {
    assert_eq!(
        rewrite_path(
            &PathMatch::Any,
            &PathRewrite::Strip("/api".into()),
            "/api/users/7"
        )
        .as_deref(),
        Some("/users/7")
    );
    assert_eq!(
        rewrite_path(&PathMatch::Any, &PathRewrite::Strip("/api".into()), "/api").as_deref(),
        Some("/")
    );
    let rep = PathRewrite::Replace {
        from: "/old".into(),
        to: "/new/v2".into(),
    };
    assert_eq!(
        rewrite_path(&PathMatch::Any, &rep, "/old/x").as_deref(),
        Some("/new/v2/x")
    );
    assert_eq!(
        rewrite_path(&PathMatch::Any, &rep, "/old").as_deref(),
        Some("/new/v2")
    );
}

#[test]
fn templates_regexes_and_their_precedence() {
    let r = router(
        "  - {name: prefix, match: {path_prefix: /users}, upstream: u}\n  - {name: regex, match: {path_regex: '/users/[0-9]+/orders'}, upstream: u}\n  - {name: orders, match: {path_template: '/users/{id}/orders'}, upstream: u}\n  - {name: mine, match: {path_template: '/users/me/orders'}, upstream: u}\n  - {name: exact, match: {path_exact: /users/7/orders}, upstream: u}\n  - {name: rest, match: {path_template: '/users/{id}/{*more}'}, upstream: u}\n  - {name: digits, match: {path_regex: '/users/[0-9]+'}, upstream: u}\n",
    );
    let at = |p: &str| find(&r, "x", "GET", p, &[]);
    assert_eq!(at("/users/7/orders").as_deref(), Some("exact"));
    assert_eq!(at("/users/8/orders").as_deref(), Some("orders"));
    assert_eq!(at("/users/me/orders").as_deref(), Some("mine"));
    assert_eq!(at("/users/8/orders/1").as_deref(), Some("rest"));
    assert_eq!(at("/users/8").as_deref(), Some("digits"));
    assert_eq!(at("/users/abc").as_deref(), Some("prefix"));
    // A parameter is one whole, non-empty segment.
    assert_eq!(at("/users//orders").as_deref(), Some("prefix"));
    assert_eq!(at("/users/8/orders/").as_deref(), Some("rest"));
    assert_eq!(at("/users/8/orders/x/y").as_deref(), Some("rest"));
    assert_eq!(at("/usersX/8/orders").as_deref(), None);
}

#[test]
fn a_literal_segment_wins_over_a_parameter_and_backtracks() {
    let r = router(
        "  - {name: a, match: {path_template: '/a/{x}/c'}, upstream: u}\n  - {name: b, match: {path_template: '/a/b/d'}, upstream: u}\n  - {name: e, match: {path_template: '/{x}/b/c'}, upstream: u}\n",
    );
    assert_eq!(find(&r, "x", "GET", "/a/b/c", &[]).as_deref(), Some("a"));
    assert_eq!(find(&r, "x", "GET", "/a/b/d", &[]).as_deref(), Some("b"));
    assert_eq!(find(&r, "x", "GET", "/z/b/c", &[]).as_deref(), Some("e"));
    assert_eq!(find(&r, "x", "GET", "/a/q/d", &[]), None);
}

#[test]
fn query_conditions() {
    let r = router(
        "  - {name: v2, match: {path_prefix: /s, query: {version: '2', 'a b': 'c&d'}}, upstream: u}\n  - {name: plain, match: {path_prefix: /s}, upstream: u}\n",
    );
    let at = |p: &str| find(&r, "x", "GET", p, &[]);
    assert_eq!(at("/s?version=2&a+b=c%26d").as_deref(), Some("v2"));
    assert_eq!(at("/s?a%20b=c%26d&x=1&version=%32").as_deref(), Some("v2"));
    assert_eq!(at("/s?version=2").as_deref(), Some("plain"));
    assert_eq!(at("/s?version=2&a+b=c&d").as_deref(), Some("plain"));
    // A repeated parameter is read differently by different servers: it meets no condition.
    assert_eq!(
        at("/s?version=2&version=3&a+b=c%26d").as_deref(),
        Some("plain")
    );
    assert_eq!(
        at("/s?version=2&version=2&a+b=c%26d").as_deref(),
        Some("v2")
    );
    assert_eq!(at("/s").as_deref(), Some("plain"));
    assert_eq!(at("/s?VERSION=2&a+b=c%26d").as_deref(), Some("plain"));
    // Invalid escapes stay as they are; bytes that are not UTF-8 never equal a written value.
    assert_eq!(at("/s?version=%zz&a+b=c%26d").as_deref(), Some("plain"));
    assert_eq!(at("/s?version=2%FF&a+b=c%26d").as_deref(), Some("plain"));
    assert_eq!(at("/s?version&a+b=c%26d").as_deref(), Some("plain"));
    // ';' separates nothing when routes are matched; a query that older servers would read
    // differently for a parameter routes match on is ambiguous (refused with 400).
    assert_eq!(at("/s?version=2;x=1&a+b=c%26d").as_deref(), Some("plain"));
    assert!(r.0.ambiguous_query(Some("version=2;x=1&a+b=c%26d")));
    assert!(r.0.ambiguous_query(Some("x=1;version=2")));
    assert!(r.0.ambiguous_query(Some("version=2&version=3;x")));
    assert!(!r.0.ambiguous_query(Some("version=2&q=a;b")));
    assert!(!r.0.ambiguous_query(Some("version=2&a+b=c%26d")));
    assert!(!r.0.ambiguous_query(None));
    let plain = router("  - {name: p, match: {path_prefix: /s}, upstream: u}\n");
    assert!(!plain.0.ambiguous_query(Some("version=2;x=1")));
}

#[test]
fn template_and_regex_rewrites() {
    let (r, routes) = router(
        "  - {name: t, match: {path_template: '/users/{id}/orders/{*rest}'}, upstream: u, rewrite: '/v2/customers/{id}/o/{rest}'}\n  - {name: re, match: {path_regex: '/items/(?P<id>[0-9]+)(?P<ext>\\.json)?'}, upstream: u, rewrite: '/catalog/{id}{ext}'}\n",
    );
    let _ = r;
    assert_eq!(
        rewrite_path(&routes[0].path, &routes[0].rewrite, "/users/7/orders/1/x").as_deref(),
        Some("/v2/customers/7/o/1/x")
    );
    assert_eq!(
        rewrite_path(&routes[1].path, &routes[1].rewrite, "/items/42.json").as_deref(),
        Some("/catalog/42.json")
    );
    assert_eq!(
        rewrite_path(&routes[1].path, &routes[1].rewrite, "/items/42").as_deref(),
        Some("/catalog/42")
    );
}

#[test]
fn ten_thousand_templates() {
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&format!(
            "  - {{name: r{i}, match: {{path_template: '/svc{i}/users/{{id}}'}}, upstream: u}}\n"
        ));
    }
    let r = router(&text);
    assert_eq!(
        find(&r, "x", "GET", "/svc9999/users/1", &[]).as_deref(),
        Some("r9999")
    );
    assert_eq!(find(&r, "x", "GET", "/svc9999/users", &[]), None);
}

#[test]
fn prefixes_of_every_length_are_found_whatever_lengths_the_table_holds() {
    // Lengths around the bitmap's word edges, and past its end (a long prefix).
    let lengths = [2usize, 63, 64, 65, 127, 128, 255, 256, 300];
    let prefix = |n: usize| format!("/{}", "p".repeat(n - 1));
    let mut routes = String::new();
    for (i, n) in lengths.iter().enumerate() {
        routes.push_str(&format!(
            "  - {{name: r{i}, match: {{path_prefix: {}}}, upstream: u}}\n",
            prefix(*n)
        ));
    }
    let r = router(&routes);
    for (i, n) in lengths.iter().enumerate() {
        let name = format!("r{i}");
        assert_eq!(find(&r, "x", "GET", &prefix(*n), &[]), Some(name.clone()));
        assert_eq!(
            find(&r, "x", "GET", &format!("{}/below/it", prefix(*n)), &[]),
            Some(name),
            "{n}"
        );
    }
    // Nothing under `/` here, so nothing else matches.
    assert_eq!(find(&r, "x", "GET", "/q", &[]), None);
    // With a catch-all only, every path reaches it.
    let r = router("  - {name: all, match: {}, upstream: u}\n");
    assert_eq!(find(&r, "x", "GET", "/a/b/c", &[]).as_deref(), Some("all"));
    assert_eq!(find(&r, "x", "GET", "/", &[]).as_deref(), Some("all"));
}
