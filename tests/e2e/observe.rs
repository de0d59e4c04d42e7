//! Metrics, the access log, the admin API and the status page (in a real headless Chromium).

use crate::common::*;
use std::io::Write;
use std::time::Duration;

const TOKEN: &str = "observe-token-0123456789";

struct Setup {
    gw: Gateway,
    admin: u16,
    up: Upstream,
    logs: tempfile::TempDir,
}

fn setup(extra_peer: Option<std::net::SocketAddr>, token: bool) -> Setup {
    let up = Upstream::start("a");
    let admin = closed_port().port();
    let peers = match extra_peer {
        Some(p) => format!("[\"{}\", \"{p}\"]", up.addr),
        None => format!("[\"{}\"]", up.addr),
    };
    let token_line = if token {
        ", token_env: OBSERVE_TOKEN"
    } else {
        ""
    };
    let logs = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with_env(
        &format!(
            "admin: {{address: 127.0.0.1:{admin}{token_line}}}\naccess_log: {{path: ACCESS_LOG, format: json}}\nconsumers:\n  - {{name: alice, api_keys: [alice-key-1]}}\nupstreams:\n  a:\n    peers: {peers}\n    health_check: {{kind: http, path: /health, interval: 100ms, timeout: 50ms, unhealthy_after: 1, healthy_after: 1}}\n    passive_cooldown: 0s\n    outlier_detection: {{consecutive_failures: 1000}}\nroutes:\n  - {{name: open, match: {{path_prefix: /open}}, upstream: a}}\n  - {{name: keyed, match: {{path_prefix: /keyed}}, upstream: a, auth: [api_key]}}\n  - {{name: limited, match: {{path_prefix: /limited}}, upstream: a, rate_limit: [{{requests: 1, per: 1m, key: route}}]}}\n  - {{name: cached, match: {{path_prefix: /cached}}, upstream: a, cache: {{ttl: 60s}}}}\n"
        )
        .replace("ACCESS_LOG", &logs.path().join("access.log").display().to_string()),
        &[("OBSERVE_TOKEN", TOKEN)],
    );
    Setup {
        gw,
        admin,
        up,
        logs,
    }
}

pub(crate) fn admin_get(port: u16, path: &str, token: Option<&str>) -> Response {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    send_raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
}

pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_exactly_what_happened() {
    let s = setup(None, false);
    let gw = &s.gw;
    for _ in 0..3 {
        assert_eq!(gw.get("/open/x", &[]).status, 200);
    }
    assert_eq!(gw.get("/nowhere", &[]).status, 404);
    assert_eq!(gw.get("/keyed", &[]).status, 401);
    assert_eq!(
        gw.get("/keyed", &[("x-api-key", "wrong-key-123")]).status,
        401
    );
    assert_eq!(
        gw.get("/keyed", &[("x-api-key", "alice-key-1")]).status,
        200
    );
    assert_eq!(gw.get("/limited", &[]).status, 200);
    assert_eq!(gw.get("/limited", &[]).status, 429);
    gw.get("/cached/1", &[]);
    gw.get("/cached/1", &[]);
    let r = admin_get(s.admin, "/metrics", None);
    assert_eq!(r.status, 200);
    let m = r.text();
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{code="200",method="GET",route="open"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{code="404",method="GET",route="none"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{code="401",method="GET",route="keyed"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_requests_total{code="429",method="GET",route="limited"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_request_duration_seconds_count{route="open"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_request_duration_seconds_bucket{route="open",le="+Inf"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_request_duration_seconds_bucket{route="open",le="10"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_upstream_duration_seconds_count{upstream="a"}"#
        ),
        6.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_auth_failures_total{reason="unauthenticated",route="keyed"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_ratelimit_rejected_total{kind="rate",route="limited"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_cache_requests_total{route="cached",status="MISS"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_cache_requests_total{route="cached",status="HIT"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            &format!(
                "tollgate_upstream_peer_healthy{{peer=\"{}\",upstream=\"a\"}}",
                s.up.addr
            )
        ),
        1.0
    );
    assert_eq!(
        metric(&m, r#"tollgate_config_reloads_total{result="failure"}"#),
        0.0
    );
    assert_eq!(metric(&m, "tollgate_ratelimit_redis_fallbacks_total"), 0.0);
    assert_eq!(
        metric(
            &m,
            r#"tollgate_ratelimit_rejected_total{kind="concurrency",route="limited"}"#
        ),
        0.0
    );
    assert_eq!(
        metric(
            &m,
            &format!(
                "tollgate_build_info{{pingora_version=\"0.9\",version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert_eq!(metric(&m, "tollgate_config_last_reload_successful"), 1.0);
    let loaded = metric(&m, "tollgate_config_last_reload_success_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 120.0..=now + 1.0).contains(&loaded),
        "{loaded} {now}"
    );
    assert!(metric(&m, "process_resident_memory_bytes") > 0.0);
    // Labels come from the configuration, never from request paths.
    assert!(!m.contains("/open/x") && !m.contains("nowhere"));
}

#[test]
fn the_connections_gauge_follows_open_connections() {
    let s = setup(None, false);
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.gw.port)).unwrap();
    c.write_all(b"GET /open HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 200);
    let m = admin_get(s.admin, "/metrics", None).text();
    assert_eq!(metric(&m, "tollgate_open_client_connections"), 1.0);
    drop(c);
    assert!(wait_until(Duration::from_secs(5), || {
        metric(
            &admin_get(s.admin, "/metrics", None).text(),
            "tollgate_open_client_connections",
        ) == 0.0
    }));
}

#[test]
fn status_reflects_a_peer_going_down() {
    let dead = closed_port();
    let s = setup(Some(dead), false);
    let down = wait_until(Duration::from_secs(5), || {
        let st = admin_get(s.admin, "/status", None).json();
        let peers = st["upstreams"][0]["peers"].as_array().unwrap().clone();
        peers
            .iter()
            .any(|p| p["address"] == dead.to_string() && p["healthy"] == false)
            && peers
                .iter()
                .any(|p| p["address"] == s.up.addr.to_string() && p["healthy"] == true)
    });
    assert!(down, "{}", admin_get(s.admin, "/status", None).text());
    let st = admin_get(s.admin, "/status", None).json();
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["config_checksum"].as_str().unwrap().len(), 64);
    assert!(st["uptime_seconds"].as_f64().unwrap() >= 0.0);
    let names: Vec<&str> = st["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["open", "keyed", "limited", "cached"]);
    assert!(st["cache"]["max_size"].as_u64().unwrap() > 0);
    let m = admin_get(s.admin, "/metrics", None).text();
    assert_eq!(
        metric(
            &m,
            &format!("tollgate_upstream_peer_healthy{{peer=\"{dead}\",upstream=\"a\"}}")
        ),
        0.0
    );
}

#[test]
fn access_log_lines_are_json_with_every_field() {
    let s = setup(None, false);
    assert_eq!(
        s.gw.get(
            "/keyed/a?q=1",
            &[("x-api-key", "alice-key-1"), ("x-request-id", "log-1")]
        )
        .status,
        200
    );
    assert_eq!(
        s.gw.get("/nowhere", &[("x-request-id", "log-2")]).status,
        404
    );
    let path = s.logs.path().join("access.log");
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&path)
            .map(|t| t.lines().count() >= 2)
            .unwrap_or(false)
    }));
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ok = lines.iter().find(|l| l["request_id"] == "log-1").unwrap();
    for field in [
        "time",
        "request_id",
        "client_ip",
        "method",
        "host",
        "path",
        "status",
        "bytes_sent",
        "duration_ms",
        "route",
        "upstream",
        "peer",
        "upstream_status",
        "consumer",
        "cache_status",
        "error",
    ] {
        assert!(ok.get(field).is_some(), "missing {field} in {ok}");
    }
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/keyed/a");
    assert_eq!(ok["route"], "keyed");
    assert_eq!(ok["upstream"], "a");
    assert_eq!(ok["peer"], s.up.addr.to_string());
    assert_eq!(ok["upstream_status"], 200);
    assert_eq!(ok["consumer"], "alice");
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert!(ok["bytes_sent"].as_u64().unwrap() > 0);
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    // What nginx and the log pipelines expect besides.
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["query"], "q=1");
    assert_eq!(ok["bytes_received"], 0);
    let body = ok["body_bytes_sent"].as_u64().unwrap();
    let total = ok["bytes_sent"].as_u64().unwrap();
    assert!(body > 0 && total > body + 40, "{body} {total}");
    assert!(ok["upstream_connect_ms"].as_f64().is_some());
    let upstream = ok["upstream_response_ms"].as_f64().unwrap();
    let whole = ok["duration_ms"].as_f64().unwrap();
    assert!(upstream <= whole, "{upstream} > {whole}");
    // Durations to the microsecond, never a long binary fraction.
    let printed = ok["duration_ms"].to_string();
    assert!(
        printed.split('.').nth(1).is_none_or(|f| f.len() <= 3),
        "{printed}"
    );
    assert!(ok["tls_version"].is_null());
    // The time is when the request started, not when the line was written.
    let started = humantime::parse_rfc3339(ok["time"].as_str().unwrap()).unwrap();
    assert!(started <= std::time::SystemTime::now());
    let missing = lines.iter().find(|l| l["request_id"] == "log-2").unwrap();
    assert_eq!(missing["status"], 404);
    assert!(missing["route"].is_null());
    assert!(missing["query"].is_null());
}

#[test]
fn access_log_in_ecs_and_without_query_strings() {
    let up = Upstream::start("a");
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let gw = Gateway::start(&format!(
        "access_log: {{path: {}, format: ecs, query: false}}\nupstreams: {{a: {{peers: [\"{}\"]}}}}\nroutes: [{{name: r, match: {{}}, upstream: a}}]\n",
        path.display(),
        up.addr
    ));
    assert_eq!(
        gw.get(
            "/x?token=secret",
            &[("user-agent", "probe/1.0"), ("x-request-id", "ecs-1")]
        )
        .status,
        200
    );
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("ecs-1"))
    }));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("secret"), "{text}");
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["http.request.id"], "ecs-1");
    assert_eq!(line["http.request.method"], "GET");
    assert_eq!(line["http.response.status_code"], 200);
    assert_eq!(line["url.path"], "/x");
    assert!(line["url.query"].is_null());
    assert_eq!(line["user_agent.original"], "probe/1.0");
    assert_eq!(line["tollgate.route"], "r");
    assert!(line["event.duration"].as_u64().unwrap() > 0);
    assert!(line["@timestamp"].as_str().unwrap().ends_with('Z'));
}

/// A full disk under the access log: requests are served as ever, and every line the disk
/// refused is counted.
#[test]
fn a_full_disk_under_the_access_log_costs_no_request_and_each_lost_line_is_counted() {
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let up = Upstream::start("a");
    let admin = closed_port().port();
    // Through a link in a directory of the test's own (the log's directory must be writable).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let gw = Gateway::start(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\naccess_log: {{path: {}}}\nupstreams: {{a: {{peers: [\"{}\"]}}}}\nroutes: [{{name: r, match: {{}}, upstream: a}}]\n",
        path.display(),
        up.addr
    ));
    for i in 0..20 {
        assert_eq!(gw.get(&format!("/full/{i}"), &[]).status, 200);
    }
    assert!(wait_until(Duration::from_secs(10), || {
        let text = admin_get(admin, "/metrics", None).text();
        metric(&text, "tollgate_access_log_dropped_total") == 20.0
    }));
    assert!(wait_until(Duration::from_secs(10), || gw
        .log()
        .contains("access log: write failed")));
    // Said once, not once per line or per write.
    assert_eq!(gw.log().matches("access log: write failed").count(), 1);
    assert_eq!(gw.get("/full/after", &[]).status, 200);
}

#[test]
fn admin_health_readiness_and_token() {
    let s = setup(None, true);
    // Probes need no token.
    assert_eq!(admin_get(s.admin, "/healthz", None).status, 200);
    assert!(wait_until(Duration::from_secs(5), || admin_get(
        s.admin, "/readyz", None
    )
    .status
        == 200));
    assert_eq!(admin_get(s.admin, "/readyz", Some(TOKEN)).status, 200);
    for path in ["/metrics", "/status", "/status/history", "/cache"] {
        let r = admin_get(s.admin, path, None);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.json()["type"], "tag:tollgate,2026:unauthenticated");
        assert_eq!(r.json()["detail"], "admin token required");
        assert_eq!(
            admin_get(s.admin, path, Some("wrong-token-0123456789")).status,
            401,
            "{path}"
        );
        assert_eq!(admin_get(s.admin, path, Some(TOKEN)).status, 200, "{path}");
    }
    let r = admin_get(s.admin, "/nope", Some(TOKEN));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "tag:tollgate,2026:admin-not-found");
    assert_eq!(r.json()["detail"], "no such admin endpoint");
}

/// Debian's Chromium, headless, as the machine's probe runs it.
pub(crate) fn chromium(args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("chromium must be installed (scripts/setup.sh installs it)")
}

#[test]
fn status_page_renders_in_a_real_browser() {
    let dead = closed_port();
    let s = setup(Some(dead), false);
    // Let the health check mark the dead peer, and make some traffic.
    assert!(wait_until(Duration::from_secs(5), || {
        admin_get(s.admin, "/status", None)
            .text()
            .contains("\"healthy\":false")
    }));
    // Traffic over a few seconds, until the history holds it: requests, cache hits, refusals.
    assert!(wait_until(Duration::from_secs(15), || {
        for _ in 0..5 {
            s.gw.get("/open", &[]);
            s.gw.get("/cached", &[]);
            s.gw.get("/limited", &[]);
        }
        let h: serde_json::Value =
            serde_json::from_str(&admin_get(s.admin, "/status/history", None).text()).unwrap();
        let any = |route: &str, series: &str| {
            h["routes"][route][series]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x.as_f64().is_some_and(|x| x > 0.0)))
        };
        h["t"].as_array().is_some_and(|t| t.len() >= 3)
            && any("open", "rps")
            && any("open", "p99_ms")
            && any("cached", "cache_hit_ratio")
            && any("limited", "limited_per_s")
    }));
    let url = format!("http://127.0.0.1:{}/", s.admin);
    let out = chromium(&["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for route in ["open", "keyed", "limited", "cached"] {
        assert!(
            dom.contains(&format!("data-route=\"{route}\"")),
            "route {route} not rendered:\n{dom}"
        );
    }
    assert!(
        dom.contains(&format!("class=\"badge peer down\" data-peer=\"{dead}\"")),
        "the down peer is not shown as down:\n{dom}"
    );
    assert!(
        dom.contains(&format!(
            "class=\"badge peer up\" data-peer=\"{}\"",
            s.up.addr
        )),
        "the live peer is not shown as up:\n{dom}"
    );
    assert!(dom.contains("ready"), "{dom}");
    // The charts draw from the traffic: requests/s, latency, cache hits and refusals above zero,
    // error rate drawn (zero), the dead peer's strip out of the pool and the live one in it.
    let number = |key: &str, attr: &str| -> f64 {
        let at = dom
            .find(&format!("data-key=\"{key}\""))
            .unwrap_or_else(|| panic!("{key} not drawn:\n{dom}"));
        let rest = &dom[at..];
        let from = rest.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
        rest[from..from + rest[from..].find('"').unwrap()]
            .parse()
            .unwrap()
    };
    assert!(number("chart-rps:open", "data-peak") > 0.0);
    assert!(number("chart-latency:open", "data-peak") > 0.0);
    assert!(number("chart-latency:open p50", "data-points") > 0.0);
    assert!(number("chart-errors:open", "data-points") > 0.0);
    assert!(number("chart-cache:cached", "data-peak") > 0.0);
    assert!(number("chart-limited:limited", "data-peak") > 0.0);
    assert!(number(&format!("chart-peers:a/{dead}"), "data-down") > 0.0);
    assert!(number(&format!("chart-peers:a/{}", s.up.addr), "data-up") > 0.0);
    assert!(dom.contains("<polyline"), "{dom}");
    // Per-pool events: outlier ejections (the pool has outlier detection, no DNS names).
    assert!(
        dom.contains("<td class=\"events\">0 ejections</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("<div id=\"limits-text\">1 of 1000000 keys held, 0 evicted</div>"),
        "{dom}"
    );
    // A screenshot for the README, when asked for.
    if let Ok(path) = std::env::var("TOLLGATE_SCREENSHOT") {
        let out = chromium(&[
            "--window-size=1100,760",
            &format!("--screenshot={path}"),
            &url,
        ]);
        assert!(out.status.success());
    }
}

#[test]
fn readyz_turns_503_as_soon_as_draining_starts() {
    let up = Upstream::start("a");
    let admin = closed_port().port();
    let mut gw = Gateway::start_full(
        "grace_period_seconds: 2\ngraceful_shutdown_timeout_seconds: 1\n",
        &format!(
            "admin: {{address: 127.0.0.1:{admin}}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: a}}\n",
            up.addr
        ),
        &[],
    );
    assert!(wait_until(Duration::from_secs(5), || admin_get(
        admin, "/readyz", None
    )
    .status
        == 200));
    gw.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(1), || {
            let r = admin_get(admin, "/readyz", None);
            r.status == 503 && r.json()["status"] == "draining"
        }),
        "/readyz did not turn 503 while draining"
    );
    // /healthz still answers while the process drains, and the process then exits cleanly.
    assert_eq!(admin_get(admin, "/healthz", None).status, 200);
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("the gateway did not exit");
    assert!(status.success(), "{status}");
}

#[test]
fn metrics_pass_promtool_and_declare_their_format() {
    let s = setup(None, false);
    // Traffic of every kind first, so that every family has series.
    for path in [
        "/open/x",
        "/nowhere",
        "/keyed",
        "/limited",
        "/limited",
        "/cached/a",
        "/cached/a",
    ] {
        s.gw.get(path, &[]);
    }
    let r = admin_get(s.admin, "/metrics", None);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (scripts/setup.sh installs the prometheus package)");
    lint.stdin
        .take()
        .expect("stdin")
        .write_all(&r.body)
        .expect("write the metrics");
    let out = lint.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn admin_post(port: u16, path: &str) -> Response {
    send_raw(
        port,
        format!(
            "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

#[test]
fn admin_resources_and_draining_a_peer() {
    let second = Upstream::start("b");
    let s = setup(Some(second.addr), false);
    let routes = admin_get(s.admin, "/routes", None).json();
    assert_eq!(routes.as_array().map(Vec::len), Some(4));
    assert_eq!(routes[0]["name"], "open");
    let ups = admin_get(s.admin, "/upstreams", None).json();
    let peers = ups[0]["peers"].as_array().unwrap().clone();
    assert_eq!(peers.len(), 2);
    assert!(peers
        .iter()
        .all(|p| p["healthy"] == true && p["drained"] == false));
    // The running configuration, its secrets redacted.
    let config = admin_get(s.admin, "/config", None);
    assert_eq!(config.status, 200);
    assert!(!config.text().contains("alice-key-1"), "{}", config.text());
    assert_eq!(
        config.json()["config"]["consumers"][0]["api_keys"][0],
        "<redacted>"
    );
    assert_eq!(config.json()["checksum"].as_str().map(str::len), Some(64));
    // Drain the second peer: every request goes to the first; undrain: both serve again.
    let drained = admin_post(
        s.admin,
        &format!("/upstreams/a/peers/{}/drain", second.addr),
    );
    assert_eq!(drained.status, 200, "{}", drained.text());
    assert_eq!(drained.json()["drained"], true);
    let before = second.count();
    for _ in 0..20 {
        assert_eq!(s.gw.get("/open/x", &[]).status, 200);
    }
    assert_eq!(second.count(), before);
    let ups = admin_get(s.admin, "/upstreams", None).json();
    let peer = ups[0]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == second.addr.to_string())
        .cloned()
        .unwrap();
    assert_eq!(
        (peer["drained"].clone(), peer["healthy"].clone()),
        (true.into(), false.into())
    );
    assert_eq!(
        admin_post(
            s.admin,
            &format!("/upstreams/a/peers/{}/undrain", second.addr)
        )
        .status,
        200
    );
    assert!(wait_until(Duration::from_secs(5), || {
        s.gw.get("/open/y", &[]);
        second.count() > before
    }));
    // Unknown pools and peers are problems, not silence.
    let r = admin_post(s.admin, "/upstreams/nope/peers/127.0.0.1:1/drain");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "tag:tollgate,2026:admin-not-found");
    assert_eq!(
        admin_post(s.admin, "/upstreams/a/peers/127.0.0.1:1/drain").status,
        404
    );
    assert_eq!(
        admin_post(s.admin, "/upstreams/a/peers/bogus/drain").status,
        400
    );
}
