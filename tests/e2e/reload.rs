//! Hot reload: SIGHUP and `POST /reload` swap the configuration atomically; a broken file is
//! refused and the old configuration keeps serving; health, limit counters and the cache carry
//! over; changes that need an upgrade are reported.

use crate::common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn admin_call(port: u16, method: &str, path: &str) -> Response {
    send_raw(
        port,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

fn body(admin: u16, up: &Upstream, route_extra: &str) -> String {
    format!(
        "admin: {{address: 127.0.0.1:{admin}}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{path_prefix: /r}}, upstream: a{route_extra}}}\n",
        up.addr
    )
}

#[test]
fn sighup_and_admin_reload_swap_routes() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let admin = closed_port().port();
    let gw = Gateway::start(&body(admin, &a, ""));
    assert_eq!(gw.get("/r", &[]).header("x-upstream"), Some("a"));
    assert_eq!(gw.get("/new", &[]).status, 404);
    // SIGHUP: route /r now goes to b, and a new route appears.
    gw.rewrite(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\n  b: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{path_prefix: /r}}, upstream: b}}\n  - {{name: n, match: {{path_prefix: /new}}, upstream: a}}\n",
        a.addr, b.addr
    ));
    gw.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || gw
        .get("/r", &[])
        .header("x-upstream")
        == Some("b")));
    assert_eq!(gw.get("/new", &[]).header("x-upstream"), Some("a"));
    // The admin API: back to the first file.
    gw.rewrite(&body(admin, &a, ""));
    let r = admin_call(admin, "POST", "/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "applied");
    assert_eq!(gw.get("/r", &[]).header("x-upstream"), Some("a"));
    assert_eq!(gw.get("/new", &[]).status, 404);
    let m = admin_call(admin, "GET", "/metrics").text();
    assert!(
        m.contains("tollgate_config_reloads_total{result=\"success\"} 2"),
        "{m}"
    );
    let st = admin_call(admin, "GET", "/status").json();
    assert_eq!(st["routes"].as_array().unwrap().len(), 1);
}

#[test]
fn a_broken_file_is_refused_and_the_old_configuration_serves() {
    let a = Upstream::start("a");
    let admin = closed_port().port();
    let gw = Gateway::start(&body(admin, &a, ""));
    gw.rewrite(&format!(
        "{}\nroutes:\n  - {{name: r, match: {{}}, upstream: nowhere}}\n",
        "admin: {address: 127.0.0.1:1}"
    ));
    let r = admin_call(admin, "POST", "/reload");
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["type"], "tag:tollgate,2026:config-refused");
    let errors = r.json()["errors"].to_string();
    assert!(errors.contains("unknown upstream"), "{errors}");
    gw.rewrite("routes: [[[");
    gw.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || {
        admin_call(admin, "GET", "/metrics")
            .text()
            .contains("tollgate_config_reloads_total{result=\"failure\"} 2")
    }));
    assert_eq!(gw.get("/r", &[]).status, 200);
    assert!(gw
        .log()
        .contains("reload refused, the old configuration keeps serving"));
}

#[test]
fn changes_that_need_an_upgrade_are_reported() {
    let a = Upstream::start("a");
    let admin = closed_port().port();
    let gw = Gateway::start(&body(admin, &a, ""));
    let other = closed_port().port();
    let head = gw.head().replace(
        &format!("127.0.0.1:{}", gw.port),
        &format!("127.0.0.1:{other}"),
    );
    gw.rewrite_raw(&format!("{head}{}", body(admin, &a, "")));
    let r = admin_call(admin, "POST", "/reload");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["needs_upgrade"], serde_json::json!(["listeners"]));
    // Still serving on the old listener.
    assert_eq!(gw.get("/r", &[]).status, 200);
    assert!(gw.log().contains("take effect only with an upgrade"));

    // Back to the first listener, with another client keep-alive time.
    gw.rewrite_raw(&format!(
        "{}client_keepalive_timeout: 5s\n{}",
        gw.head(),
        body(admin, &a, "")
    ));
    let r = admin_call(admin, "POST", "/reload");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["needs_upgrade"],
        serde_json::json!(["client_keepalive_timeout"])
    );
}

#[test]
fn limits_cache_and_health_survive_a_reload() {
    let a = Upstream::start("a");
    let admin = closed_port().port();
    let dead = closed_port();
    let conf = |extra_route: &str| {
        format!(
            "admin: {{address: 127.0.0.1:{admin}}}\nupstreams:\n  a:\n    peers: [\"{}\", \"{dead}\"]\n    health_check: {{kind: tcp, interval: 100ms, timeout: 50ms, unhealthy_after: 1, healthy_after: 1}}\n    passive_cooldown: 0s\n    retries: 0\nroutes:\n  - {{name: limited, match: {{path_prefix: /l}}, upstream: a, rate_limit: [{{requests: 3, per: 1m, key: route}}]}}\n  - {{name: cached, match: {{path_prefix: /c}}, upstream: a, cache: {{ttl: 60s}}}}\n{extra_route}",
            a.addr
        )
    };
    let gw = Gateway::start(&conf(""));
    // The dead peer is found out by the health check.
    assert!(wait_until(Duration::from_secs(5), || admin_call(
        admin, "GET", "/status"
    )
    .text()
    .contains("\"healthy\":false")));
    for _ in 0..3 {
        assert_eq!(gw.get("/l", &[]).status, 200);
    }
    gw.get("/c/x", &[]);
    assert!(gw
        .get("/c/x", &[])
        .header("cache-status")
        .is_some_and(|v| v.starts_with("tollgate; hit")));
    // Reload with an unrelated change.
    gw.rewrite(&conf(
        "  - {name: extra, match: {path_prefix: /e}, upstream: a}\n",
    ));
    assert_eq!(admin_call(admin, "POST", "/reload").status, 200);
    assert_eq!(gw.get("/e", &[]).status, 200);
    // The limit's count carried over, the cache too, and the dead peer is still out: no
    // request fails because of it.
    assert_eq!(gw.get("/l", &[]).status, 429);
    assert!(gw
        .get("/c/x", &[])
        .header("cache-status")
        .is_some_and(|v| v.starts_with("tollgate; hit")));
    let st = admin_call(admin, "GET", "/status").json();
    let dead_peer = st["upstreams"][0]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == dead.to_string())
        .unwrap()
        .clone();
    assert_eq!(dead_peer["healthy"], false);
    for i in 0..20 {
        assert_eq!(gw.get(&format!("/e/{i}"), &[]).status, 200);
    }
}

#[test]
fn reloads_under_load_lose_no_request() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let admin = closed_port().port();
    let gw = Arc::new(Gateway::start(&body(admin, &a, "")));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (gw, stop, failures, total) =
                (gw.clone(), stop.clone(), failures.clone(), total.clone());
            std::thread::spawn(move || {
                // Keep-alive connections, as a real client would use.
                let mut conn = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                while !stop.load(Ordering::SeqCst) {
                    use std::io::Write;
                    if conn
                        .write_all(b"GET /r HTTP/1.1\r\nHost: t\r\n\r\n")
                        .is_err()
                    {
                        failures.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    let r = read_keepalive_response(&mut conn);
                    total.fetch_add(1, Ordering::SeqCst);
                    if r.status != 200 {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for i in 0..6 {
        let target = if i % 2 == 0 { &b } else { &a };
        gw.rewrite(&body(admin, target, ""));
        assert_eq!(admin_call(admin, "POST", "/reload").status, 200);
        std::thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        total.load(Ordering::SeqCst) > 100,
        "too little load: {} requests, {} failures",
        total.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst)
    );
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert!(a.count() > 0 && b.count() > 0);
}
