//! CORS per route: preflights answered by the gateway (never forwarded), the `Access-Control-*`
//! headers on allowed origins' answers (errors too), `Vary: Origin`, the upstream's own CORS
//! headers replaced; and real cross-origin `fetch` calls from a page in headless Chromium,
//! allowed and refused.

use crate::common::*;

/// An upstream that also sets CORS headers of its own (which the gateway replaces).
fn api() -> Upstream {
    Upstream::with_handler("api", |_| {
        Reply::ok("api")
            .header("access-control-allow-origin", "*")
            .header("x-internal", "1")
    })
}

fn gateway(api: &Upstream, page_origin: &str) -> Gateway {
    Gateway::start(&format!(
        "consumers: [{{name: alice, api_keys: [alice-key-1]}}]\nupstreams:\n  api: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: api, match: {{path_prefix: /api, methods: [GET, PUT]}}, upstream: api, cors: {{allow_origins: [\"{page_origin}\", \"https://*.example.org\"], allow_methods: [GET, PUT], allow_headers: [x-custom, content-type], expose_headers: [x-request-id], max_age: 10m}}}}\n  - {{name: other, match: {{path_prefix: /other}}, upstream: api, cors: {{allow_origins: [\"https://elsewhere.example\"]}}}}\n  - {{name: creds, match: {{path_prefix: /creds}}, upstream: api, auth: [api_key], cors: {{allow_origins: [\"{page_origin}\"], allow_credentials: true, allow_headers: [\"*\"]}}}}\n  - {{name: plain, match: {{path_prefix: /plain}}, upstream: api}}\n  - {{name: v2, match: {{path_prefix: /hapi, headers: {{x-api-version: \"2\"}}}}, upstream: api, cors: {{allow_origins: [\"{page_origin}\"], allow_headers: [x-api-version]}}}}\n  - {{name: v1, match: {{path_prefix: /hapi}}, upstream: api}}\n  - {{name: internal, match: {{path_prefix: /kapi, headers: {{x-internal: \"1\"}}}}, upstream: api, priority: 10}}\n  - {{name: public, match: {{path_prefix: /kapi}}, upstream: api, cors: {{allow_origins: [\"{page_origin}\"]}}}}\n  - {{name: exact, match: {{path_exact: /kapi/health}}, upstream: api, priority: 10}}\n  - {{name: star, match: {{path_prefix: /star}}, upstream: api, cors: {{allow_origins: [\"*\"]}}}}\n  - {{name: cached, match: {{path_prefix: /cached}}, upstream: api, cache: {{ttl: 60s}}, cors: {{allow_origins: [\"https://a.example\", \"https://b.example\"]}}}}\n",
        api.addr
    ))
}

fn preflight(gw: &Gateway, path: &str, origin: &str, method: &str, headers: &str) -> Response {
    let extra = if headers.is_empty() {
        String::new()
    } else {
        format!("Access-Control-Request-Headers: {headers}\r\n")
    };
    gw.raw(format!("OPTIONS {path} HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\n{extra}Connection: close\r\n\r\n").as_bytes())
}

#[test]
fn preflights_are_answered_by_the_gateway_and_answers_carry_the_headers() {
    let api = api();
    let gw = gateway(&api, "http://localhost:3000");
    // Allowed: 204 with the rules, never forwarded (the route's methods do not list OPTIONS).
    let r = preflight(
        &gw,
        "/api/x",
        "http://localhost:3000",
        "PUT",
        "X-Custom, Content-Type",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("x-custom, content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));
    // A wildcard subdomain, at any depth; not the bare domain.
    assert_eq!(
        preflight(&gw, "/api/x", "https://a.b.example.org", "GET", "").status,
        204
    );
    for (path, origin, method, headers) in [
        ("/api/x", "https://example.org", "GET", ""),
        ("/api/x", "https://example.org.evil.com", "GET", ""),
        ("/api/x", "http://localhost:3001", "GET", ""),
        ("/api/x", "http://localhost:3000", "PUT", "x-other"),
        ("/creds", "http://localhost:3000", "PROPFIND", ""),
    ] {
        let r = preflight(&gw, path, origin, method, headers);
        assert_eq!(r.status, 403, "{path} {origin} {method} {headers}");
        assert_eq!(r.json()["type"], "tag:tollgate,2026:cors-refused");
        assert_eq!(r.header("access-control-allow-origin"), None);
    }
    // A method the route does not take: no route for the request the browser wants to send.
    let r = preflight(&gw, "/api/x", "http://localhost:3000", "DELETE", "");
    assert_eq!(r.status, 404);
    // Credentials: the origin echoed with allow-credentials; any requested header reflected;
    // no API key needed for the preflight itself.
    let r = preflight(
        &gw,
        "/creds",
        "http://localhost:3000",
        "GET",
        "authorization, x-api-key",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization, x-api-key")
    );
    assert_eq!(api.count(), 0, "a preflight reached the upstream");

    // Other requests: the upstream's CORS headers are replaced; an allowed origin gets its own.
    let r = gw.get("/api/x", &[("origin", "http://localhost:3000")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));
    let r = gw.get("/api/x", &[("origin", "https://evil.example")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = gw.get("/api/x", &[]);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));
    // Two origins at once are no origin.
    let r = gw.raw(b"GET /api/x HTTP/1.1\r\nHost: t\r\nOrigin: http://localhost:3000\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n");
    assert_eq!(r.header("access-control-allow-origin"), None);
    // The gateway's own refusals carry them too (a script may read why).
    let r = gw.get("/creds", &[("origin", "http://localhost:3000")]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    // A route without CORS rules: an OPTIONS preflight is forwarded like any request, and the
    // upstream's headers stay.
    let before = api.count();
    let r = preflight(&gw, "/plain", "http://localhost:3000", "GET", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(api.count(), before + 1);
    assert_eq!(api.last().method, "OPTIONS");
    // A route that matches on a header the browser will send: the preflight (which carries
    // none) is answered by that route.
    let before = api.count();
    let r = preflight(
        &gw,
        "/hapi/users",
        "http://localhost:3000",
        "GET",
        "x-api-version",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("x-api-version")
    );
    assert_eq!(api.count(), before);
    // A route above it without CORS rules, but with a condition the browser's request need not
    // meet: passed over, the CORS route answers. One without conditions takes the request for
    // sure: the preflight is its own plain OPTIONS request.
    let r = preflight(&gw, "/kapi/users", "http://localhost:3000", "GET", "");
    assert_eq!(r.status, 204);
    assert_eq!(api.count(), before);
    let r = preflight(&gw, "/kapi/health", "http://localhost:3000", "GET", "");
    assert_eq!(r.status, 200);
    assert_eq!(api.count(), before + 1);
    assert_eq!(api.last().method, "OPTIONS");
    // "*": the same answer for every origin and for requests without one.
    let r = gw.get("/star/x", &[]);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    // From the cache, each origin still gets its own answer.
    let before = api.count();
    let a = gw.get("/cached/x", &[("origin", "https://a.example")]);
    let b = gw.get("/cached/x", &[("origin", "https://b.example")]);
    let none = gw.get("/cached/x", &[]);
    assert_eq!(
        api.count(),
        before + 1,
        "the second and third answers come from the cache"
    );
    assert!(
        b.header("cache-status").is_some_and(|c| c.contains("hit")),
        "{:?}",
        b.header("cache-status")
    );
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(
        b.header("access-control-allow-origin"),
        Some("https://b.example")
    );
    assert_eq!(none.header("access-control-allow-origin"), None);
}

#[test]
fn a_browser_fetches_across_origins_as_the_rules_say() {
    let api = api();
    let page = Upstream::with_handler("page", |_| {
        Reply::ok(PAGE).header("content-type", "text/html; charset=utf-8")
    });
    let page_origin = format!("http://localhost:{}", page.addr.port());
    let gw = gateway(&api, &page_origin);
    let url = format!("{page_origin}/?gw={}", gw.port);
    let out = crate::observe::chromium(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let results = dom
        .split("<pre id=\"out\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("no results in:\n{dom}"));
    for expected in [
        "get:200:api:id",
        "put:200:api:id",
        "patch:blocked",
        "other:blocked",
        "creds:401:noid",
        "creds-key:200:api:noid",
    ] {
        assert!(
            results.split('|').any(|r| r == expected),
            "{expected} not in {results}"
        );
    }
    // The browser's preflights (PUT with a custom header) were answered by the gateway.
    assert!(api.seen().iter().all(|s| s.method != "OPTIONS"));
    assert!(api.seen().iter().any(|s| s.method == "PUT"));
}

/// A page whose script calls the gateway (port in `?gw=`) from another origin and lists what
/// each call gave: `name:status:body:id` (whether `X-Request-Id` could be read) or
/// `name:blocked`.
const PAGE: &str = r#"<!doctype html><html><body><pre id="out">running</pre><script>
const gw = "http://127.0.0.1:" + new URLSearchParams(location.search).get("gw");
const calls = [
  ["get", "/api/x", {}],
  ["put", "/api/x", {method: "PUT", headers: {"X-Custom": "1", "Content-Type": "application/json"}, body: "{}"}],
  ["patch", "/api/x", {method: "PATCH", body: "{}"}],
  ["other", "/other/x", {}],
  ["creds", "/creds/x", {credentials: "include"}],
  ["creds-key", "/creds/x", {credentials: "include", headers: {"X-API-Key": "alice-key-1"}}],
];
(async () => {
  const out = [];
  for (const [name, path, opts] of calls) {
    try {
      const r = await fetch(gw + path, opts);
      const body = r.status === 200 ? await r.text() : "";
      out.push(name + ":" + r.status + ":" + (body ? body + ":" : "") + (r.headers.get("x-request-id") ? "id" : "noid"));
    } catch (e) {
      out.push(name + ":blocked");
    }
  }
  document.getElementById("out").textContent = out.join("|");
})();
</script></body></html>"#;
