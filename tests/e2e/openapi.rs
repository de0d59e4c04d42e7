//! Routes from OpenAPI documents, and requests checked against them: a pet-store-like API and
//! a larger one (shared parameters, `$ref`s, `allOf`/`oneOf` bodies, several security schemes)
//! routed from the document alone; each kind of violation refused with the right status and
//! pointer while the upstream's count stays unchanged; valid and example requests reaching the
//! upstream whole.

use crate::common::*;
use std::io::{Read, Write};

const PETSTORE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/openapi/petstore.yaml"
);

fn petstore(up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        "api_key_header: X-API-Key\nconsumers:\n  - {{name: alice, api_keys: [alice-key-1]}}\n  - name: bob\n    basic_auth: {{username: bob, password_hash: \"{}\"}}\nupstreams:\n  api: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: pets, upstream: api, openapi: {{spec: \"{PETSTORE}\"}}}}\n",
        crate::policies::hash_password("s3cret"),
        up.addr
    ))
}

fn post(gw: &Gateway, path: &str, headers: &str, body: &str) -> Response {
    gw.raw(
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// The problem's `errors` as `(in, parameter, pointer)`.
fn errors(r: &Response) -> Vec<(String, String, String)> {
    let j = r.json();
    j["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {j}"))
        .iter()
        .map(|e| {
            (
                e["in"].as_str().unwrap_or("").to_string(),
                e["parameter"].as_str().unwrap_or("").to_string(),
                e["pointer"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_petstore_is_routed_and_checked_from_its_document() {
    let up = Upstream::start("api");
    let gw = petstore(&up);
    let key = ("x-api-key", "alice-key-1");
    // The document's server path is the prefix; `security: []` makes listPets public.
    let r = gw.get("/v1/pets?limit=5&tags=dog&tags=cat", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().url, "/v1/pets?limit=5&tags=dog&tags=cat");
    assert_eq!(gw.get("/pets", &[]).status, 404);
    // Each kind of parameter violation: 400, a problem naming it, the upstream untouched.
    let before = up.count();
    for (path, headers, want) in [
        ("/v1/pets?limit=abc", vec![], ("query", "limit", "#")),
        ("/v1/pets?limit=101", vec![], ("query", "limit", "#")),
        (
            "/v1/pets?tags=dog&tags=fish",
            vec![],
            ("query", "tags", "#/1"),
        ),
        ("/v1/pets/0", vec![key], ("path", "petId", "#")),
        ("/v1/pets/x", vec![key], ("path", "petId", "#")),
    ] {
        let r = gw.get(path, &headers);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let j = r.json();
        assert_eq!(j["type"], "tag:tollgate,2026:request-invalid", "{j}");
        assert_eq!(j["status"], 400);
        let (i, p, ptr) = want;
        assert_eq!(
            errors(&r),
            vec![(i.into(), p.into(), ptr.into())],
            "{path}: {j}"
        );
        assert!(j["errors"][0]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }
    // What the upstream could read differently from the check: a body on an operation that
    // takes none, `;` as a separator, a parameter name in another case.
    for raw in [
        "GET /v1/pets HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        "GET /v1/pets?x=;limit=1000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "GET /v1/pets?LIMIT=1000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ] {
        let r = gw.raw(raw.as_bytes());
        assert_eq!(r.status, 400, "{raw}: {}", r.text());
    }
    assert_eq!(up.count(), before, "a refused request reached the upstream");
    // Authentication comes first, from the operation's security: no key, 401 before any check.
    let r = gw.get("/v1/pets/0", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(gw.get("/v1/pets/7", &[key]).status, 200);
    assert_eq!(up.last().url, "/v1/pets/7");
    // The DELETE takes basic auth only, and a required header.
    let r = gw.raw(b"DELETE /v1/pets/7 HTTP/1.1\r\nHost: t\r\nX-API-Key: alice-key-1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 401, "{}", r.text());
    let before = up.count();
    let r = gw.raw(b"DELETE /v1/pets/7 HTTP/1.1\r\nHost: t\r\nAuthorization: Basic Ym9iOnMzY3JldA==\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        errors(&r),
        vec![("header".into(), "X-Reason".into(), "#".into())]
    );
    assert_eq!(up.count(), before);
    let r = gw.raw(b"DELETE /v1/pets/7 HTTP/1.1\r\nHost: t\r\nAuthorization: Basic Ym9iOnMzY3JldA==\r\nX-Reason: sold\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().method, "DELETE");
    // A method the document does not describe for the path: no route.
    let r = gw
        .raw(b"PUT /v1/pets HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 404);
}

#[test]
fn bodies_are_checked_whole_before_the_upstream_is_asked() {
    let up = Upstream::start("api");
    let gw = petstore(&up);
    let key = "X-API-Key: alice-key-1\r\n";
    let json = "Content-Type: application/json\r\n";
    // The document's own example request goes through, byte for byte.
    let example = r#"{"name":"Rex","kind":"dog"}"#;
    let r = post(&gw, "/v1/pets", &format!("{key}{json}"), example);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().body, example.as_bytes());
    let before = up.count();
    // Schema violations, each at its pointer.
    let r = post(
        &gw,
        "/v1/pets",
        &format!("{key}{json}"),
        r#"{"name":"","kind":"fish","age":0,"tag":5}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let mut pointers: Vec<String> = errors(&r).into_iter().map(|e| e.2).collect();
    pointers.sort();
    assert_eq!(
        pointers,
        vec!["#/age", "#/kind", "#/name", "#/tag"],
        "{}",
        r.text()
    );
    assert!(errors(&r).iter().all(|e| e.0 == "body"));
    // A missing required member, an unknown one (additionalProperties: false), broken JSON,
    // a missing body, a member given twice in different case.
    for (body, want) in [
        (r#"{"kind":"dog"}"#, "#"),
        (r#"{"name":"a","kind":"dog","owner":"x"}"#, "#"),
        (r#"{"name":"a","#, "#"),
        ("", "#"),
        (r#"{"name":"a","kind":"dog","Kind":"fish"}"#, "#"),
    ] {
        let r = post(&gw, "/v1/pets", &format!("{key}{json}"), body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(errors(&r)[0].2, want, "{body}");
    }
    // A media type the operation does not take: 415.
    let r = post(
        &gw,
        "/v1/pets",
        &format!("{key}Content-Type: text/plain\r\n"),
        example,
    );
    assert_eq!(r.status, 415, "{}", r.text());
    assert_eq!(r.json()["type"], "tag:tollgate,2026:unsupported-media-type");
    let r = post(
        &gw,
        "/v1/pets",
        &format!("{key}{json}Content-Encoding: gzip\r\n"),
        example,
    );
    assert_eq!(r.status, 415, "{}", r.text());
    // Over the check's limit (64 KiB): 413, declared or chunked, never streamed unchecked.
    let big = format!(r#"{{"name":"{}","kind":"dog"}}"#, "a".repeat(70_000));
    let r = post(&gw, "/v1/pets", &format!("{key}{json}"), &big);
    assert_eq!(r.status, 413, "{}", r.text());
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(
        format!(
            "POST /v1/pets HTTP/1.1\r\nHost: t\r\n{key}{json}Transfer-Encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    for _ in 0..20 {
        let chunk = "a".repeat(8000);
        if s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .is_err()
        {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(up.count(), before, "a refused body reached the upstream");
    // A valid chunked body, and one sent after `Expect: 100-continue`, arrive whole.
    let r = gw.raw(format!("POST /v1/pets HTTP/1.1\r\nHost: t\r\n{key}{json}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{{\"nam\r\n16\r\ne\":\"Tom\",\"kind\":\"cat\"}}\r\n0\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().body, br#"{"name":"Tom","kind":"cat"}"#);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(format!("POST /v1/pets HTTP/1.1\r\nHost: t\r\n{key}{json}Expect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", example.len()).as_bytes()).unwrap();
    let mut first = [0u8; 25];
    s.read_exact(&mut first).unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    s.write_all(example.as_bytes()).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        String::from_utf8_lossy(&rest).contains("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(up.last().body, example.as_bytes());
    // Invalid parameters are refused before 100-continue: the body is never asked for.
    let r = gw.raw(b"GET /v1/pets?limit=0 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400);
}

const SHOP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/openapi/shop.json"
);

/// The request each operation's examples make: method, path and query, body.
fn example_request(path: &str, method: &str, op: &serde_json::Value) -> (String, String) {
    let target = path.replace("{id}", "7").replace("{format}", "pdf");
    let query = if method == "get" && !path.contains('{') {
        "?limit=10&expand=owner,history"
    } else {
        ""
    };
    let body = op["requestBody"]["content"]["application/json"]["example"].clone();
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    (format!("/api/v2{target}{query}"), body)
}

#[test]
fn a_large_document_imports_into_routes_that_pass_the_check_and_route_its_examples() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tollgate.yaml");
    let body = format!(
        "api_key_header: X-API-Key\nconsumers:\n  - {{name: alice, api_keys: [alice-key-1]}}\n  - name: bob\n    basic_auth: {{username: bob, password_hash: \"{}\"}}\njwt:\n  - {{issuer: https://id.example.com, algorithms: [HS256], secret_env: SHOP_JWT_SECRET}}\nupstreams:\n  shop: {{peers: [\"127.0.0.1:9\"]}}\nroutes: []\n",
        crate::policies::hash_password("s3cret")
    );
    std::fs::write(
        &conf,
        format!("listeners: [{{address: 127.0.0.1:1}}]\n{body}"),
    )
    .unwrap();
    let import = || {
        command()
            .args([
                "openapi",
                "import",
                SHOP,
                "--upstream",
                "shop",
                "--validate",
                "--write",
            ])
            .arg(&conf)
            .output()
            .expect("run import")
    };
    let out = import();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The OAuth 2 operation is reported, by itself; the others are written.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let not_imported: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("not imported"))
        .collect();
    assert_eq!(not_imported.len(), 1, "{stderr}");
    assert!(
        not_imported[0]
            .contains("paths./suppliers/{id}/sync.post: scheme \"partnerOAuth\" is OAuth 2"),
        "{stderr}"
    );
    assert!(stderr.contains("57 routes added, 0 replaced"), "{stderr}");
    let check = command()
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .env("SHOP_JWT_SECRET", "an-hmac-secret-of-at-least-32-bytes!!")
        .output()
        .expect("run -t");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Importing again replaces the same routes.
    let again = import();
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 routes added, 57 replaced"));

    // The gateway on the merged file, in front of a real upstream.
    let up = Upstream::start("shop");
    let mut merged: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&conf).unwrap()).unwrap();
    let m = merged.as_mapping_mut().unwrap();
    m.remove("listeners");
    m.insert(
        "upstreams".into(),
        serde_yaml::from_str(&format!("shop: {{peers: [\"{}\"]}}", up.addr)).unwrap(),
    );
    let gw = Gateway::start_with_env(
        &serde_yaml::to_string(&merged).unwrap(),
        &[("SHOP_JWT_SECRET", "an-hmac-secret-of-at-least-32-bytes!!")],
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(SHOP).unwrap()).unwrap();
    let mut routed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let (target, body) = example_request(path, method, op);
            let basic = op["security"][0].get("basicAuth").is_some();
            let credentials = if basic {
                "Authorization: Basic Ym9iOnMzY3JldA==\r\n"
            } else {
                "X-API-Key: alice-key-1\r\n"
            };
            let r = gw.raw(format!(
                "{} {target} HTTP/1.1\r\nHost: t\r\n{credentials}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                method.to_ascii_uppercase(),
                body.len()
            ).as_bytes());
            if op["operationId"] == "syncSupplier" {
                assert_eq!(r.status, 404, "not imported, so not routed");
                continue;
            }
            assert_eq!(r.status, 200, "{method} {target}: {}", r.text());
            let seen = up.last();
            assert_eq!(
                (seen.method.to_ascii_lowercase(), seen.url.as_str()),
                (method.clone(), target.as_str())
            );
            assert_eq!(seen.body, body.as_bytes());
            routed += 1;
        }
    }
    assert_eq!(routed, 57);
    // Violations in the shared parameters, the oneOf body and the partial-segment template.
    let before = up.count();
    let key = "X-API-Key: alice-key-1\r\nContent-Type: application/json\r\n";
    let bad_payment = r#"{"customerId":7,"items":[{"productId":3,"quantity":2}],"payment":{"method":"card","cardToken":"nope"}}"#;
    let r = post(&gw, "/api/v2/orders", key, bad_payment);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        errors(&r).iter().all(|e| e.2.starts_with("#/payment")),
        "{}",
        r.text()
    );
    let r = post(
        &gw,
        "/api/v2/orders",
        key,
        r#"{"customerId":7,"items":[],"payment":{"method":"invoice","dueDays":30}}"#,
    );
    assert_eq!(
        errors(&r),
        vec![("body".into(), String::new(), "#/items".into())],
        "{}",
        r.text()
    );
    let key = ("x-api-key", "alice-key-1");
    let uuid = ("x-correlation-id", "not-a-uuid");
    for (path, headers, want) in [
        (
            "/api/v2/products?expand=owner,nope&limit=10",
            vec![key],
            ("query", "expand", "#/1"),
        ),
        (
            "/api/v2/products/7",
            vec![key, uuid],
            ("header", "X-Correlation-Id", "#"),
        ),
        (
            "/api/v2/orders/7/invoice.xml",
            vec![key],
            ("path", "format", "#"),
        ),
    ] {
        let r = gw.get(path, &headers);
        let (i, p, ptr) = want;
        assert_eq!(
            errors(&r),
            vec![(i.into(), p.into(), ptr.into())],
            "{path}: {}",
            r.text()
        );
    }
    assert_eq!(up.count(), before);
}

#[test]
fn answers_that_drift_from_the_document_are_counted_and_logged_never_blocked() {
    let up = Upstream::with_handler("api", |seen| {
        let json = |body: &str| Reply::ok(body).header("content-type", "application/json");
        match seen.url.as_str() {
            "/v1/pets/7" => json(r#"{"id":"seven","name":"Rex","kind":"dog"}"#),
            "/v1/pets/8" => json(r#"{"id":8,"name":"Rex","kind":"dog"}"#),
            "/v1/pets/9" => Reply::ok("<html/>").header("content-type", "text/html"),
            _ => Reply {
                status: 418,
                ..json("[]")
            },
        }
    });
    let admin = closed_port().port();
    let gw = Gateway::start(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\napi_key_header: X-API-Key\nconsumers: [{{name: alice, api_keys: [alice-key-1]}}]\nupstreams:\n  api: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: pets, upstream: api, openapi: {{spec: \"{PETSTORE}\", responses: report}}}}\n",
        up.addr
    ));
    let key = ("x-api-key", "alice-key-1");
    // The client gets what the upstream said, whatever the document says.
    let r = gw.get("/v1/pets/7", &[key]);
    assert_eq!((r.status, r.text().contains("seven")), (200, true));
    assert_eq!(gw.get("/v1/pets/8", &[key]).status, 200);
    assert_eq!(gw.get("/v1/pets/9", &[key]).status, 200);
    assert_eq!(gw.get("/v1/pets", &[]).status, 418);
    // A refused request is counted by kind too.
    assert_eq!(gw.get("/v1/pets/0", &[key]).status, 400);
    let series = |route: &str, kind: &str| {
        format!("tollgate_openapi_violations_total{{kind=\"{kind}\",route=\"pets.{route}\"}}")
    };
    let text = crate::observe::admin_get(admin, "/metrics", None).text();
    // 7 (a string id) and 9 (HTML where JSON is described) drift; 8 does not.
    assert_eq!(
        crate::observe::metric(&text, &series("showPetById", "response")),
        2.0,
        "{text}"
    );
    assert_eq!(
        crate::observe::metric(&text, &series("listPets", "response")),
        1.0,
        "{text}"
    );
    assert_eq!(
        crate::observe::metric(&text, &series("showPetById", "request")),
        1.0,
        "{text}"
    );
    // Logged, at most once per route every 10 seconds.
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        gw
        .log()
        .contains("route \"pets.showPetById\": the upstream's 200 answer does not match the OpenAPI document: #/id:")
    }));
    assert_eq!(
        gw.log()
            .matches("route \"pets.showPetById\": the upstream")
            .count(),
        1,
        "{}",
        gw.log()
    );
    assert!(gw.log().contains("route \"pets.listPets\": the upstream's 418 answer does not match the OpenAPI document: status 418 is not described"), "{}", gw.log());
}

#[test]
fn the_document_is_read_again_on_reload_and_a_broken_one_keeps_the_running_routes() {
    let up = Upstream::start("api");
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("api.yaml");
    let doc = |extra: &str| {
        format!("openapi: 3.1.0\ninfo: {{title: t, version: '1'}}\npaths:\n  /a:\n    get:\n      operationId: a\n      parameters: [{{name: n, in: query, schema: {{type: integer, maximum: 5}}}}]\n      responses: {{'200': {{description: ok}}}}\n{extra}")
    };
    std::fs::write(&spec, doc("")).unwrap();
    let body = format!(
        "upstreams:\n  api: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: api, upstream: api, openapi: {{spec: \"{}\"}}}}\n",
        up.addr,
        spec.display()
    );
    let gw = Gateway::start(&body);
    assert_eq!(gw.get("/a?n=9", &[]).status, 400);
    assert_eq!(gw.get("/b", &[]).status, 404);
    // A new operation, and a wider maximum: both in force after SIGHUP.
    std::fs::write(
        &spec,
        doc("  /b:\n    get:\n      operationId: b\n      responses: {'200': {description: ok}}\n")
            .replace("maximum: 5", "maximum: 10"),
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    assert!(wait_until(std::time::Duration::from_secs(5), || gw
        .get("/b", &[])
        .status
        == 200));
    assert_eq!(gw.get("/a?n=9", &[]).status, 200);
    // A document that no longer reads: the reload is refused, the routes stay as they were.
    std::fs::write(&spec, "openapi: 3.1.0\npaths: [").unwrap();
    gw.signal(libc::SIGHUP);
    assert!(wait_until(std::time::Duration::from_secs(5), || gw
        .log()
        .contains("api.yaml")));
    assert_eq!(gw.get("/b", &[]).status, 200);
    assert_eq!(gw.get("/a?n=11", &[]).status, 400);
}

/// `curl` over cleartext HTTP/2 (prior knowledge): the status, and the body it got.
fn h2_post(port: u16, path: &str, body: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--http2-prior-knowledge"])
        .args([
            "-H",
            "content-type: application/json",
            "-H",
            "x-api-key: alice-key-1",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let err = String::from_utf8_lossy(&out.stderr);
    (status.to_string(), format!("{body}{err}"))
}

#[test]
fn bodies_over_http2_are_checked_whole_too() {
    let up = Upstream::start("api");
    let gw = Gateway::start_listener(
        "grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n",
        "    http2: true\n",
        &format!(
            "api_key_header: X-API-Key\nconsumers: [{{name: alice, api_keys: [alice-key-1]}}]\nupstreams:\n  api: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: pets, upstream: api, openapi: {{spec: \"{PETSTORE}\"}}}}\n",
            up.addr
        ),
        &[],
    );
    let example = r#"{"name":"Rex","kind":"dog"}"#;
    let (status, _) = h2_post(gw.port, "/v1/pets", example);
    assert_eq!(status, "2 200");
    assert_eq!(up.last().body, example.as_bytes());
    let before = up.count();
    let (status, body) = h2_post(gw.port, "/v1/pets", r#"{"name":"Rex","kind":"fish"}"#);
    assert_eq!(status, "2 400", "{body}");
    assert!(body.contains("\"pointer\":\"#/kind\""), "{body}");
    let big = format!(r#"{{"name":"{}","kind":"dog"}}"#, "a".repeat(70_000));
    let (status, err) = h2_post(gw.port, "/v1/pets", &big);
    assert_eq!(status, "2 413", "{err}\n{}", gw.log());
    assert_eq!(up.count(), before, "a refused body reached the upstream");
}
