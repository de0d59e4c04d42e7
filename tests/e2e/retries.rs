//! Retries beyond connection failures, with real peers: a peer answering 503, one that accepts
//! and never answers, one that closes the connection after reading the request; what is and is
//! not retried (methods, the last attempt's answer passed on), the retry budget, and the access
//! log and metrics of retried requests.

use crate::common::*;
use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

const TOKEN: &str = "retry-token-0123456789";

fn status_503(name: &'static str) -> Upstream {
    Upstream::with_handler(name, move |_| Reply {
        status: 503,
        ..Reply::ok(name)
    })
}

/// A peer that accepts connections and never answers (`close`: or closes each connection once
/// it has read the request).
fn bad_peer(close: bool) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in l.incoming().flatten() {
            if close {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                drop(s);
            } else {
                held.push(s);
            }
        }
    });
    addr
}

fn gateway(pool: &str, route_extra: &str, admin: u16) -> (Gateway, tempfile::TempDir) {
    let logs = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with_env(
        &format!(
            "admin: {{address: 127.0.0.1:{admin}, token_env: RETRY_TOKEN}}\naccess_log: {{path: \"{}\"}}\nupstreams:\n  u: {pool}\nroutes:\n  - {{name: r, match: {{}}, upstream: u{route_extra}}}\n",
            logs.path().join("access.log").display()
        ),
        &[("RETRY_TOKEN", TOKEN)],
    );
    (gw, logs)
}

/// A pool of `peers` with `settings` (YAML mapping entries).
fn pool_of(peers: &[std::net::SocketAddr], settings: &str) -> String {
    let list: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    format!("{{peers: [{}], {settings}}}", list.join(", "))
}

fn metrics(admin: u16) -> String {
    let r = send_raw(
        admin,
        format!("GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    String::from_utf8_lossy(&r.body).into_owned()
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn post(gw: &Gateway) -> Response {
    gw.raw(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
}

#[test]
fn a_503_is_retried_on_another_peer_for_idempotent_requests() {
    let bad = status_503("bad");
    let good = Upstream::start("good");
    let admin = closed_port().port();
    let (gw, logs) = gateway(
        &format!(
            "{{peers: [\"{}\", \"{}\"], retries: 1, retry_on: [connect_failure, 503], retry_budget: {{ratio: 1}}}}",
            bad.addr, good.addr
        ),
        "",
        admin,
    );
    for _ in 0..20 {
        let r = gw.get("/", &[]);
        assert_eq!(
            (r.status, r.text()),
            (200, "good".to_string()),
            "{}",
            gw.log()
        );
    }
    assert_eq!(good.count(), 20);
    let retried = bad.count();
    assert!(retried >= 5, "round robin sent {retried} to the bad peer");
    let m = metrics(admin);
    assert_eq!(
        metric(
            &m,
            "tollgate_upstream_retries_total{reason=\"status\",upstream=\"u\"}"
        ),
        retried as u64,
        "{m}"
    );
    // The access log names both attempts.
    let log = logs.path().join("access.log");
    let mut lines = Vec::new();
    assert!(wait_until(Duration::from_secs(5), || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect();
        lines.len() >= 20
    }));
    let twice: Vec<&serde_json::Value> = lines.iter().filter(|l| l["attempts"] == 2).collect();
    assert_eq!(twice.len(), retried);
    assert_eq!(
        twice[0]["tried"],
        serde_json::json!([bad.addr.to_string(), good.addr.to_string()])
    );
    assert_eq!(twice[0]["peer"], good.addr.to_string());
    assert_eq!(twice[0]["status"], 200);
    // A POST is not sent again: the client gets the peer's own 503 when it lands there.
    let mut statuses: Vec<u16> = (0..6).map(|_| post(&gw).status).collect();
    statuses.sort_unstable();
    statuses.dedup();
    assert_eq!(statuses, [200, 503]);
}

#[test]
fn a_route_may_allow_retrying_non_idempotent_requests() {
    let bad = status_503("bad");
    let good = Upstream::start("good");
    let admin = closed_port().port();
    let (gw, _logs) = gateway(
        &format!(
            "{{peers: [\"{}\", \"{}\"], retries: 1, retry_on: [503], retry_budget: {{ratio: 1}}}}",
            bad.addr, good.addr
        ),
        ", retry_non_idempotent: true",
        admin,
    );
    for _ in 0..6 {
        let r = post(&gw);
        assert_eq!((r.status, r.text()), (200, "good".to_string()));
    }
    // The body went to both.
    assert!(bad.count() >= 2);
    assert_eq!(good.last().body, b"hi");
    // A body larger than the replay buffer (64 KiB) cannot be sent again: not retried.
    let body = vec![b'x'; 100 * 1024];
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let mut req = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        statuses.push(gw.raw(&req).status);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    // The same for an idempotent PUT, with a length-delimited and with a chunked body.
    for chunked in [false, true] {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let mut req = if chunked {
                format!("PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n", body.len())
            } else {
                format!("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
            }
            .into_bytes();
            req.extend_from_slice(&body);
            if chunked {
                req.extend_from_slice(b"\r\n0\r\n\r\n");
            }
            statuses.push(gw.raw(&req).status);
        }
        assert!(statuses.contains(&503), "chunked {chunked}: {statuses:?}");
        assert!(statuses.contains(&200), "chunked {chunked}: {statuses:?}");
    }
}

#[test]
fn a_silent_peer_is_retried_after_the_read_timeout() {
    let silent = bad_peer(false);
    let good = Upstream::start("good");
    let admin = closed_port().port();
    let pool = |retry_on: &str| {
        format!(
            "{{peers: [\"{silent}\", \"{}\"], read_timeout: 300ms, retries: 1, retry_on: [{retry_on}], retry_budget: {{ratio: 1}}, passive_cooldown: 0s}}",
            good.addr
        )
    };
    let (gw, _logs) = gateway(&pool("timeout"), "", admin);
    for _ in 0..6 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    let m = metrics(admin);
    assert!(
        metric(
            &m,
            "tollgate_upstream_retries_total{reason=\"timeout\",upstream=\"u\"}"
        ) >= 2,
        "{m}"
    );
    // Without `timeout` in retry_on, the request that landed on the silent peer gets 504.
    drop(gw);
    let (gw, _logs) = gateway(&pool("connect_failure"), "", closed_port().port());
    let statuses: Vec<u16> = (0..4).map(|_| gw.get("/", &[]).status).collect();
    assert!(statuses.contains(&504), "{statuses:?}");
}

#[test]
fn a_connection_closed_by_the_peer_is_retried_when_asked() {
    let closing = bad_peer(true);
    let good = Upstream::start("good");
    let admin = closed_port().port();
    let (gw, _logs) = gateway(
        &format!(
            "{{peers: [\"{closing}\", \"{}\"], retries: 1, retry_on: [reset], retry_budget: {{ratio: 1}}, passive_cooldown: 0s}}",
            good.addr
        ),
        "",
        admin,
    );
    for _ in 0..8 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    let m = metrics(admin);
    assert!(
        metric(
            &m,
            "tollgate_upstream_retries_total{reason=\"reset\",upstream=\"u\"}"
        ) >= 3,
        "{m}"
    );
}

#[test]
fn the_budget_keeps_retries_from_multiplying_an_outage() {
    // Every peer answers 503: each request could be tried on all of them; the budget holds
    // retries to 10 % of the requests, and the clients get the peers' own 503.
    let (a, b, c) = (status_503("a"), status_503("b"), status_503("c"));
    let admin = closed_port().port();
    let (gw, _logs) = gateway(
        &pool_of(
            &[a.addr, b.addr, c.addr],
            "retries: 2, retry_on: [503], retry_budget: {ratio: 0.1, window: 60s, min_retries: 0}",
        ),
        "",
        admin,
    );
    for _ in 0..100 {
        let r = gw.get("/", &[]);
        assert_eq!(r.status, 503);
        assert!(["a", "b", "c"].contains(&r.text().as_str()), "{}", r.text());
    }
    let m = metrics(admin);
    let retries = metric(
        &m,
        "tollgate_upstream_retries_total{reason=\"status\",upstream=\"u\"}",
    );
    assert!(retries <= 10, "{retries} retries for 100 requests");
    assert_eq!((a.count() + b.count() + c.count()) as u64, 100 + retries);
    assert!(
        metric(
            &m,
            "tollgate_upstream_retry_budget_exhausted_total{upstream=\"u\"}"
        ) >= 80,
        "{m}"
    );
}

fn status_500(name: &'static str) -> Upstream {
    Upstream::with_handler(name, move |_| Reply {
        status: 500,
        ..Reply::ok(name)
    })
}

fn peer_state(admin: u16, address: std::net::SocketAddr) -> serde_json::Value {
    let v = send_raw(
        admin,
        format!("GET /upstreams HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .json();
    v[0]["peers"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|p| p["address"] == address.to_string())
                .cloned()
        })
        .unwrap_or_default()
}

#[test]
fn a_peer_failing_in_a_row_is_ejected_with_a_growing_back_off() {
    let bad = status_500("bad");
    let (b, c) = (Upstream::start("b"), Upstream::start("c"));
    let admin = closed_port().port();
    let (gw, _logs) = gateway(
        &pool_of(
            &[bad.addr, b.addr, c.addr],
            "retries: 0, outlier_detection: {consecutive_failures: 3, base_ejection: 1s, max_ejection: 10s, max_ejection_percent: 50}",
        ),
        "",
        admin,
    );
    // Round robin: every third request lands on the bad peer until its third 500 ejects it.
    let statuses: Vec<u16> = (0..30).map(|_| gw.get("/", &[]).status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 500).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(bad.count(), 3);
    let state = peer_state(admin, bad.addr);
    assert_eq!(state["healthy"], false, "{state}");
    assert!(
        state["cooling_down_seconds"].as_f64() > Some(0.0),
        "{state}"
    );
    let m = metrics(admin);
    assert_eq!(
        metric(&m, "tollgate_upstream_ejections_total{upstream=\"u\"}"),
        1,
        "{m}"
    );
    // Back on time; three more failures eject it again, for twice as long.
    assert!(wait_until(Duration::from_secs(5), || peer_state(
        admin, bad.addr
    )["healthy"]
        == true));
    assert!(wait_until(Duration::from_secs(5), || {
        gw.get("/", &[]);
        peer_state(admin, bad.addr)["healthy"] == false
    }));
    let again = peer_state(admin, bad.addr)["cooling_down_seconds"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(again > 1.0, "the second ejection lasts {again} s");
    assert!(gw.log().contains("failed 3 times in a row; ejected"));
}

#[test]
fn no_more_than_the_allowed_share_of_the_pool_is_ejected() {
    let (x, y) = (status_500("x"), status_500("y"));
    let good = Upstream::start("good");
    let admin = closed_port().port();
    let (gw, _logs) = gateway(
        &pool_of(
            &[x.addr, y.addr, good.addr],
            "retries: 0, outlier_detection: {consecutive_failures: 2, base_ejection: 30s, max_ejection_percent: 50}",
        ),
        "",
        admin,
    );
    for _ in 0..30 {
        gw.get("/", &[]);
    }
    // Half of three peers rounds down to one: the second failing peer stays in.
    let m = metrics(admin);
    assert_eq!(
        metric(&m, "tollgate_upstream_ejections_total{upstream=\"u\"}"),
        1,
        "{m}"
    );
    assert!(x.count().max(y.count()) > 5, "{} {}", x.count(), y.count());
    // A reload that changes the pool builds it anew: its counters go on from where they were
    // (a Prometheus counter never goes back).
    gw.rewrite(&format!(
        "admin: {{address: 127.0.0.1:{admin}, token_env: RETRY_TOKEN}}\nupstreams:\n  u: {}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n  - {{name: after, match: {{path_prefix: /after}}, upstream: u}}\n",
        pool_of(
            &[x.addr, y.addr, good.addr],
            "retries: 0, outlier_detection: {consecutive_failures: 2, base_ejection: 31s, max_ejection_percent: 50}",
        )
    ));
    gw.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || {
        send_raw(
            admin,
            format!("GET /routes HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .text()
        .contains("\"after\"")
    }));
    assert_eq!(
        metric(
            &metrics(admin),
            "tollgate_upstream_ejections_total{upstream=\"u\"}"
        ),
        1
    );
    for _ in 0..30 {
        gw.get("/after", &[]);
    }
    assert_eq!(
        metric(
            &metrics(admin),
            "tollgate_upstream_ejections_total{upstream=\"u\"}"
        ),
        2
    );
}

/// A real upstream process (`tollgate-bench upstream`) on `port`, answering after 20 ms.
fn upstream_process(port: u16) -> std::process::Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-bench"))
        .args([
            "upstream",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--size",
            "64",
        ])
        // Slow enough that requests are in flight when it is killed.
        .args(["--delay-ms", "20"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tollgate-bench");
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    child
}

#[test]
fn a_peer_killed_and_restarted_under_load_costs_no_failed_get() {
    use std::sync::Arc;
    let (p1, p2) = (closed_port().port(), closed_port().port());
    let mut first = upstream_process(p1);
    let mut second = upstream_process(p2);
    let admin = closed_port().port();
    let (gw, _logs) = gateway(
        &format!(
            "{{peers: [\"127.0.0.1:{p1}\", \"127.0.0.1:{p2}\"], retries: 1, retry_on: [connect_failure, reset, timeout], read_timeout: 2s, passive_cooldown: 1s, health_check: {{kind: tcp, interval: 200ms, timeout: 100ms, unhealthy_after: 1, healthy_after: 1}}}}"
        ),
        "",
        admin,
    );
    let gw = Arc::new(gw);
    let load = SteadyLoad::start(&gw, 2, Duration::from_millis(2));
    assert!(load.wait_for(100));
    // SIGKILL: requests in flight to it and pooled connections break at once.
    let _ = first.kill();
    let _ = first.wait();
    assert!(load.wait_for(150));
    // Back on the same port: health checks bring it back into the pool.
    first = upstream_process(p1);
    assert!(wait_until(Duration::from_secs(10), || {
        peer_state(admin, format!("127.0.0.1:{p1}").parse().unwrap())["healthy"] == true
    }));
    assert!(load.wait_for(150));
    // And the other one, while the first takes traffic again.
    let _ = second.kill();
    let _ = second.wait();
    assert!(load.wait_for(150));
    let (total, failed) = load.stop();
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(failed, 0, "of {total} GETs");
}

/// A peer that answers the head and part of the body of every request, then (`stall`: stops
/// sending, or) closes the connection.
fn half_answer_peer(stall: bool) -> std::net::SocketAddr {
    use std::io::Write;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Upstream: half\r\n\r\nfirst part of the body",
            );
            let _ = s.flush();
            if stall {
                held.push(s);
            } else {
                drop(s);
            }
        }
    });
    addr
}

/// One GET on a new connection, everything the gateway sends until it closes (or 10 s pass).
fn get_all(port: u16) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn nothing_is_retried_once_the_client_has_the_response_head() {
    for stall in [false, true] {
        let half = half_answer_peer(stall);
        let good = Upstream::start("good");
        let admin = closed_port().port();
        let (gw, _logs) = gateway(
            &format!(
                "{{peers: [\"{half}\", \"{}\"], retries: 2, retry_on: [reset, timeout, 502, 503, 504], retry_budget: {{ratio: 1}}, read_timeout: 300ms, passive_cooldown: 0s}}",
                good.addr
            ),
            "",
            admin,
        );
        let answers: Vec<String> = (0..4).map(|_| get_all(gw.port)).collect();
        let from_half: Vec<&String> = answers
            .iter()
            .filter(|a| a.to_ascii_lowercase().contains("x-upstream: half"))
            .collect();
        assert!(!from_half.is_empty(), "stall {stall}: {answers:#?}");
        for a in &from_half {
            // The broken answer ends where the peer stopped: no second head or body after it.
            assert_eq!(a.matches("HTTP/1.1").count(), 1, "stall {stall}: {a}");
            assert!(a.ends_with("first part of the body"), "stall {stall}: {a}");
        }
        // Only the requests the good peer answered reached it.
        assert_eq!(
            good.count(),
            answers.len() - from_half.len(),
            "stall {stall}: {answers:#?}"
        );
        let m = metrics(admin);
        assert!(!m.contains("tollgate_upstream_retries_total{"), "{m}");
    }
}

#[test]
fn a_client_that_goes_away_is_not_retried_for() {
    use std::io::Write;
    let slow = Upstream::with_handler("slow", |_| {
        Reply::ok("slow").delay(Duration::from_millis(1500))
    });
    let other = Upstream::start("other");
    let admin = closed_port().port();
    let (gw, logs) = gateway(
        &format!(
            "{{peers: [\"{}\", \"{}\"], balance: round_robin, retries: 2, retry_on: [reset, timeout], retry_budget: {{ratio: 1}}, passive_cooldown: 0s}}",
            slow.addr, other.addr
        ),
        "",
        admin,
    );
    // Round robin: find the turn of the slow peer, then leave while it works.
    while gw.get("/", &[]).header("x-upstream") != Some("other") {}
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"GET /leaving HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || slow.seen_path("/leaving")));
    drop(s);
    // Once the request is over (its access log line is written), it went nowhere else.
    let log = logs.path().join("access.log");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/leaving"))
    }));
    assert!(
        !other.seen_path("/leaving"),
        "the client's request was retried after it left"
    );
    let m = metrics(admin);
    assert!(!m.contains("tollgate_upstream_retries_total{"), "{m}");
}
