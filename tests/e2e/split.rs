//! Traffic split between pools: by weight, sticky per client (the documented hash: SHA-256's
//! first 8 bytes modulo the total weight), and canary rules on a header or a cookie, with real
//! upstreams; each request's pool shows in its answer's `x-upstream`.

use crate::common::*;
use sha2::{Digest, Sha256};

fn gateway(v1: &Upstream, v2: &Upstream, route: &str) -> Gateway {
    Gateway::start(&format!(
        "upstreams:\n  v1: {{peers: [\"{}\"]}}\n  v2: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, {route}}}\n",
        v1.addr, v2.addr
    ))
}

fn pool_of(r: &Response) -> String {
    r.header("x-upstream").unwrap_or("none").to_string()
}

#[test]
fn requests_are_split_by_weight() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let gw = gateway(
        &v1,
        &v2,
        "upstreams: [{pool: v1, weight: 80}, {pool: v2, weight: 20}]",
    );
    for _ in 0..500 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    // 400 and 100 expected; the draw's standard deviation is about 9.
    let (a, b) = (v1.count(), v2.count());
    assert_eq!(a + b, 500);
    assert!((340..=460).contains(&a), "{a} : {b}");
}

#[test]
fn a_sticky_client_stays_on_its_pool() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let gw = gateway(
        &v1,
        &v2,
        "upstreams: [{pool: v1, weight: 3}, {pool: v2, weight: 1}], sticky: \"header:x-user\"",
    );
    let mut on_v2 = 0;
    for u in 0..40 {
        let user = format!("user-{u}");
        // The documented hash: the first 8 bytes of SHA-256, big-endian, modulo the total
        // weight (4); below 3 is v1.
        let d = Sha256::digest(user.as_bytes());
        let point = u64::from_be_bytes(d[..8].try_into().unwrap()) % 4;
        let expected = if point < 3 { "v1" } else { "v2" };
        for _ in 0..3 {
            let r = gw.get("/", &[("x-user", &user)]);
            assert_eq!(pool_of(&r), expected, "{user}");
        }
        on_v2 += usize::from(expected == "v2");
    }
    assert!(on_v2 > 0 && on_v2 < 40, "{on_v2}");
}

#[test]
fn canary_rules_come_first() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    // v2 takes no weighted traffic: only the canary's.
    let gw = gateway(
        &v1,
        &v2,
        "upstream: v1, canary: [{header: x-canary, value: \"1\", pool: v2}, {cookie: track, value: beta, pool: v2}]",
    );
    for _ in 0..10 {
        assert_eq!(pool_of(&gw.get("/", &[])), "v1");
        assert_eq!(pool_of(&gw.get("/", &[("x-canary", "1")])), "v2");
        assert_eq!(pool_of(&gw.get("/", &[("x-canary", "2")])), "v1");
        assert_eq!(
            pool_of(&gw.get("/", &[("cookie", "a=b; track=beta")])),
            "v2"
        );
    }
    assert_eq!((v1.count(), v2.count()), (20, 20));
}

const TOKEN: &str = "mirror-token-0123456789";

fn mirror_gateway(
    main: &Upstream,
    shadow: std::net::SocketAddr,
    mirror: &str,
    admin: u16,
) -> Gateway {
    Gateway::start_with_env(
        &format!(
            "admin: {{address: 127.0.0.1:{admin}, token_env: MIRROR_TOKEN}}\nupstreams:\n  main: {{peers: [\"{}\"]}}\n  shadow: {{peers: [\"{shadow}\"], read_timeout: 5s}}\nroutes:\n  - {{name: r, match: {{}}, upstream: main, mirror: {mirror}}}\n",
            main.addr
        ),
        &[("MIRROR_TOKEN", TOKEN)],
    )
}

fn mirrored(admin: u16, result: &str) -> u64 {
    let r = send_raw(
        admin,
        format!("GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let series = format!("tollgate_mirror_requests_total{{result=\"{result}\",route=\"r\"}} ");
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn requests_are_copied_to_a_shadow_without_waiting_for_it() {
    let main = Upstream::start("main");
    // A slow shadow: the client's answers must not wait for it.
    let shadow = Upstream::with_handler("shadow", |_| {
        Reply::ok("shadow").delay(std::time::Duration::from_millis(800))
    });
    let admin = closed_port().port();
    let gw = mirror_gateway(
        &main,
        shadow.addr,
        "{pool: shadow, percent: 100, max_body_size: 1KiB}",
        admin,
    );
    let started = std::time::Instant::now();
    for i in 0..5 {
        let body = format!("body-{i}");
        let r = gw.raw(
            format!("POST /orders?x={i} HTTP/1.1\r\nHost: api.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
        );
        assert_eq!((r.status, r.text()), (200, "main".to_string()));
    }
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1500),
        "5 requests took {took:?} beside an 800 ms shadow"
    );
    assert!(wait_until(std::time::Duration::from_secs(10), || shadow
        .count()
        == 5));
    let copies = shadow.seen();
    let mut bodies: Vec<String> = copies
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["body-0", "body-1", "body-2", "body-3", "body-4"]);
    assert!(copies
        .iter()
        .all(|s| s.header("host") == Some("api.test-shadow")));
    assert!(copies.iter().any(|s| s.url == "/orders?x=3"));
    assert!(wait_until(std::time::Duration::from_secs(5), || mirrored(
        admin, "sent"
    ) == 5));
    // A body over max_body_size is not mirrored.
    let big = vec![b'x'; 4096];
    let mut req = b"POST /big HTTP/1.1\r\nHost: api.test\r\nContent-Length: 4096\r\nConnection: close\r\n\r\n".to_vec();
    req.extend_from_slice(&big);
    assert_eq!(gw.raw(&req).status, 200);
    assert!(wait_until(std::time::Duration::from_secs(5), || mirrored(
        admin, "skipped"
    ) == 1));
    assert_eq!(shadow.count(), 5);
}

#[test]
fn a_dead_shadow_costs_the_client_nothing_and_a_share_is_mirrored() {
    let main = Upstream::start("main");
    let admin = closed_port().port();
    let gw = mirror_gateway(&main, closed_port(), "{pool: shadow, percent: 100}", admin);
    for _ in 0..5 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    assert!(wait_until(std::time::Duration::from_secs(5), || mirrored(
        admin, "failed"
    ) == 5));
    // Half of the requests.
    let shadow = Upstream::start("shadow");
    let admin = closed_port().port();
    let gw = mirror_gateway(&main, shadow.addr, "{pool: shadow, percent: 50}", admin);
    for _ in 0..200 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        mirrored(admin, "sent") == shadow.count() as u64
    }));
    let n = shadow.count();
    assert!((60..=140).contains(&n), "{n} of 200 mirrored at 50 %");
}

#[test]
fn only_whole_requests_are_mirrored_and_a_failing_shadow_is_counted() {
    use std::io::Write;
    let main = Upstream::start("main");
    let shadow = Upstream::with_handler("shadow", |_| Reply {
        status: 500,
        ..Reply::ok("shadow")
    });
    let admin = closed_port().port();
    // The main pool's first peer refuses connections: requests are retried on the second.
    let gw = Gateway::start_with_env(
        &format!(
            "admin: {{address: 127.0.0.1:{admin}, token_env: MIRROR_TOKEN}}\nupstreams:\n  main: {{peers: [\"{}\", \"{}\"], passive_cooldown: 0s}}\n  shadow: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: main, max_body_size: 64, mirror: {{pool: shadow}}}}\n",
            closed_port(),
            main.addr,
            shadow.addr
        ),
        &[("MIRROR_TOKEN", TOKEN)],
    );
    // Bodies of requests retried after a refused connection are copied whole.
    for i in 0..4 {
        let body = format!("retried-{i}");
        let r = gw.raw(
            format!("POST /r HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
    assert!(wait_until(std::time::Duration::from_secs(5), || shadow
        .count()
        == 4));
    let mut bodies: Vec<String> = shadow
        .seen()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["retried-0", "retried-1", "retried-2", "retried-3"]);
    // The shadow's 500s are its failures.
    assert!(wait_until(std::time::Duration::from_secs(5), || mirrored(
        admin, "failed"
    ) == 4));
    assert_eq!(mirrored(admin, "sent"), 0);
    // A body refused as too large (413) and a client that leaves halfway: nothing is copied.
    let big = format!(
        "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{}",
        "x".repeat(100)
    );
    assert_eq!(gw.raw(big.as_bytes()).status, 413);
    let skipped = mirrored(admin, "skipped");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"POST /half HTTP/1.1\r\nHost: t\r\nContent-Length: 60\r\n\r\nonly part")
        .unwrap();
    // The client leaves with its body unfinished.
    drop(s);
    assert!(
        wait_until(std::time::Duration::from_secs(5), || mirrored(
            admin, "skipped"
        ) == skipped + 1),
        "{}",
        gw.log()
    );
    assert_eq!(shadow.count(), 4);
}

#[test]
fn stickiness_by_cookie_consumer_and_address_follows_the_documented_hash() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let expected = |key: &str| {
        let d = Sha256::digest(key.as_bytes());
        if u64::from_be_bytes(d[..8].try_into().unwrap()) % 4 < 3 {
            "v1"
        } else {
            "v2"
        }
    };
    let users: Vec<String> = (0..20).map(|u| format!("user-{u}")).collect();
    // By cookie.
    let gw = gateway(
        &v1,
        &v2,
        "upstreams: [{pool: v1, weight: 3}, {pool: v2, weight: 1}], sticky: \"cookie:session\"",
    );
    for user in &users {
        let cookie = format!("theme=dark; session={user}");
        for _ in 0..2 {
            assert_eq!(
                pool_of(&gw.get("/", &[("cookie", &cookie)])),
                expected(user)
            );
        }
    }
    drop(gw);
    // By consumer: the consumer's name, whichever of its keys it presents.
    let consumers: Vec<String> = users
        .iter()
        .map(|u| format!("  - {{name: {u}, api_keys: [{u}-key-1, {u}-key-2]}}"))
        .collect();
    let gw = Gateway::start(&format!(
        "consumers:\n{}\nupstreams:\n  v1: {{peers: [\"{}\"]}}\n  v2: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, auth: [api_key], upstreams: [{{pool: v1, weight: 3}}, {{pool: v2, weight: 1}}], sticky: consumer}}\n",
        consumers.join("\n"),
        v1.addr,
        v2.addr
    ));
    for user in &users {
        for key in ["key-1", "key-2"] {
            let r = gw.get("/", &[("x-api-key", &format!("{user}-{key}"))]);
            assert_eq!(r.status, 200);
            assert_eq!(pool_of(&r), expected(user), "{user}");
        }
    }
    drop(gw);
    // By client address: the address as text.
    let gw = gateway(
        &v1,
        &v2,
        "upstreams: [{pool: v1, weight: 3}, {pool: v2, weight: 1}], sticky: client_ip",
    );
    for _ in 0..3 {
        assert_eq!(pool_of(&gw.get("/", &[])), expected("127.0.0.1"));
    }
}

#[test]
fn each_pool_of_a_split_shows_in_metrics_the_access_log_and_the_status_page() {
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let admin = closed_port().port();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let gw = Gateway::start(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\naccess_log: {{path: \"{}\"}}\nupstreams:\n  v1: {{peers: [\"{}\"]}}\n  v2: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstreams: [{{pool: v1, weight: 3}}, {{pool: v2, weight: 1}}]}}\n",
        log.display(),
        v1.addr,
        v2.addr
    ));
    // Each pool keeps its own series, and the access log names the pool that served.
    for _ in 0..40 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    let m = send_raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .text();
    for (pool, up) in [("v1", &v1), ("v2", &v2)] {
        let series = format!("tollgate_upstream_duration_seconds_count{{upstream=\"{pool}\"}} ");
        let n: usize = m
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or(0);
        assert_eq!(n, up.count(), "{pool}: {m}");
    }
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        lines.len() == 40
            && lines.iter().filter(|l| l["upstream"] == "v2").count() == v2.count()
            && lines.iter().filter(|l| l["upstream"] == "v1").count() == v1.count()
    }));
    let out = crate::observe::chromium(&["--dump-dom", &format!("http://127.0.0.1:{admin}/")]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<td class=\"pools\">v1 75 % / v2 25 %</td>"),
        "{dom}"
    );
}
