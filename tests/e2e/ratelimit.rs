//! Rate and concurrency limits end to end: local limits, the RateLimit headers, global limits
//! shared by two gateways through a real Redis, and the fallback when Redis stops or stalls.

use crate::common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn local_limit_answers_429_with_headers_and_spares_the_upstream() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&format!(
        "upstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a, rate_limit: [{{requests: 5, per: 1m, key: client_ip}}]}}\n",
        up.addr
    ));
    // draft-ietf-httpapi-ratelimit-headers: the policy, and what is left of it. The first
    // request of a fresh key has the rest of its whole allowance left.
    for i in 0..5u64 {
        let r = gw.get("/", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"client_ip/60s\";q=5;w=60")
        );
        let rl = r.header("ratelimit").unwrap_or_default().to_string();
        let prefix = format!("\"client_ip/60s\";r={};t=", 4 - i);
        assert!(rl.starts_with(&prefix), "{rl}");
        let t: u64 = rl[prefix.len()..].parse().unwrap();
        assert!((1..=60).contains(&t), "{t}");
        assert_eq!(
            r.header("ratelimit-limit"),
            None,
            "the older headers are an option"
        );
    }
    for _ in 0..3 {
        let r = gw.get("/", &[]);
        assert_eq!(r.status, 429);
        assert_eq!(r.json()["status"], 429);
        assert_eq!(r.json()["type"], "tag:tollgate,2026:rate-limited");
        let rl = r.header("ratelimit").unwrap_or_default().to_string();
        assert!(rl.starts_with("\"client_ip/60s\";r=0;t="), "{rl}");
        // When one more request fits: the five sent now fade out of the sliding estimate in
        // the next window, so this can be past the current window's end.
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=120).contains(&retry), "{retry}");
        assert!(rl.ends_with(&format!(";t={retry}")), "{rl}");
    }
    assert_eq!(up.count(), 5);
}

#[test]
fn the_older_headers_are_a_compatibility_option() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&format!(
        "rate_limit_headers: both\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a, rate_limit: [{{requests: 3, per: 10s, key: route}}]}}\n",
        up.addr
    ));
    let r = gw.get("/", &[]);
    assert_eq!(r.header("ratelimit-policy"), Some("\"route/10s\";q=3;w=10"));
    assert!(r
        .header("ratelimit")
        .unwrap_or_default()
        .starts_with("\"route/10s\";r=2;t="));
    assert_eq!(r.header("ratelimit-limit"), Some("3"));
    assert_eq!(r.header("ratelimit-remaining"), Some("2"));
    let reset: u64 = r.header("ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=10).contains(&reset), "{reset}");
    gw.rewrite(&format!(
        "rate_limit_headers: legacy\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a, rate_limit: [{{requests: 3, per: 10s, key: route}}]}}\n",
        up.addr
    ));
    gw.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || gw
        .get("/", &[])
        .header("ratelimit-policy")
        .is_none()));
    let r = gw.get("/", &[]);
    assert!(r.header("ratelimit").is_none());
    assert!(r.header("ratelimit-limit").is_some());
}

#[test]
fn consumer_limits_are_per_consumer() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&format!(
        "consumers:\n  - {{name: alice, api_keys: [alice-key-1]}}\n  - {{name: bob, api_keys: [bob-key-11]}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a, auth: [api_key], rate_limit: [{{requests: 3, per: 1m, key: consumer}}]}}\n",
        up.addr
    ));
    let statuses = |key: &str| -> Vec<u16> {
        (0..4)
            .map(|_| gw.get("/", &[("x-api-key", key)]).status)
            .collect()
    };
    assert_eq!(statuses("alice-key-1"), vec![200, 200, 200, 429]);
    assert_eq!(statuses("bob-key-11"), vec![200, 200, 200, 429]);
    assert_eq!(up.count(), 6);
}

#[test]
fn concurrency_limit_refuses_the_excess_at_once() {
    let up = Upstream::with_handler("a", |_| Reply::ok("slow").delay(Duration::from_millis(800)));
    let gw = Arc::new(Gateway::start(&format!(
        "upstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a, concurrency_limit: {{max: 2, key: route}}}}\n",
        up.addr
    )));
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let gw = gw.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (gw.get("/", &[]).status, t.elapsed())
            })
        })
        .collect();
    let results: Vec<(u16, Duration)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(ok, 2, "{results:?}");
    assert_eq!(refused.len(), 3, "{results:?}");
    assert!(
        refused.iter().all(|(_, d)| *d < Duration::from_millis(700)),
        "refusals waited: {results:?}"
    );
    assert_eq!(up.count(), 2);
    // The slots are released when the requests end.
    assert_eq!(gw.get("/", &[]).status, 200);
}

fn global_gateway(up: &Upstream, redis_url: &str, limit: &str) -> Gateway {
    Gateway::start(&format!(
        "redis: {{url: \"{redis_url}\", timeout: 50ms}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a, rate_limit: [{limit}]}}\n",
        up.addr
    ))
}

#[test]
fn two_gateways_share_one_global_limit() {
    let redis = Redis::start();
    let up = Upstream::start("a");
    let limit = "{requests: 20, per: 1m, key: route, scope: global}";
    let g1 = global_gateway(&up, &redis.url(), limit);
    let g2 = global_gateway(&up, &redis.url(), limit);
    let mut admitted = 0;
    for _ in 0..20 {
        for g in [&g1, &g2] {
            if g.get("/", &[]).status == 200 {
                admitted += 1;
            }
        }
    }
    assert_eq!(
        admitted, 20,
        "two gateways admitted {admitted} against a shared limit of 20"
    );
    assert_eq!(up.count(), 20);
}

#[test]
fn global_limit_accuracy_at_five_times_the_load() {
    let redis = Redis::start();
    let up = Upstream::start("a");
    let limit = "{requests: 10, per: 1s, key: route, scope: global}";
    let gws = [
        Arc::new(global_gateway(&up, &redis.url(), limit)),
        Arc::new(global_gateway(&up, &redis.url(), limit)),
    ];
    // 25 requests per second to each gateway: 50/s in all, five times the limit, for 10 s.
    let start = Instant::now();
    let handles: Vec<_> = gws
        .iter()
        .cloned()
        .map(|g| {
            std::thread::spawn(move || {
                let mut sent = 0u64;
                let mut ok = 0u64;
                while start.elapsed() < Duration::from_secs(10) {
                    let due = (start.elapsed().as_secs_f64() * 25.0) as u64;
                    while sent < due {
                        sent += 1;
                        if g.get("/", &[]).status == 200 {
                            ok += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                (sent, ok)
            })
        })
        .collect();
    let (mut sent, mut ok) = (0, 0);
    for h in handles {
        let (s, o) = h.join().unwrap();
        sent += s;
        ok += o;
    }
    eprintln!("two gateways, 10/s global, {sent} offered in 10 s: {ok} admitted");
    assert!(sent >= 475, "the load was not offered: {sent}");
    // Ten 1-second windows of 10 from the key's first request: 100 ± 5.
    assert!(
        (95..=105).contains(&ok),
        "admitted {ok} of {sent} against 10/s for 10s"
    );
    assert_eq!(up.count() as u64, ok);
}

#[test]
fn redis_stopped_mid_test_falls_back_to_the_local_limit() {
    let mut redis = Redis::start();
    let up = Upstream::start("a");
    let gw = global_gateway(
        &up,
        &redis.url(),
        "{requests: 5, per: 1m, key: route, scope: global}",
    );
    for _ in 0..3 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    redis.stop();
    // Now counted locally, from zero: five more, then refusals; no request waits long.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let t = Instant::now();
        statuses.push(gw.get("/", &[]).status);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a decision took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429, 429]);
    assert!(
        wait_until(Duration::from_secs(2), || gw.log().contains(
            "global rate limits count locally until a probe finds it back"
        )),
        "no log line about the fallback:\n{}",
        gw.log()
    );
}

#[test]
fn a_stalled_redis_costs_at_most_the_timeout() {
    // A server that accepts connections and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            h.lock().unwrap().push(s);
        }
    });
    let up = Upstream::start("a");
    let gw = global_gateway(
        &up,
        &format!("redis://{addr}"),
        "{requests: 3, per: 1m, key: route, scope: global}",
    );
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        statuses.push(gw.get("/", &[]).status);
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "a decision took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
}

#[test]
fn the_key_bound_is_configured_and_its_evictions_counted() {
    const TOKEN: &str = "limit-token-0123456789";
    let up = Upstream::start("a");
    let admin = closed_port().port();
    let gw = Gateway::start_with_env(
        &format!(
            "rate_limit_max_keys: 1000\nadmin: {{address: 127.0.0.1:{admin}, token_env: LIMIT_TOKEN}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a, rate_limit: [{{requests: 1, per: 1m, key: \"header:x-user\"}}]}}\n",
            up.addr
        ),
        &[("LIMIT_TOKEN", TOKEN)],
    );
    // 1,500 callers once each, under their limit: none refused, though only 1,000 are held.
    for i in 0..1500 {
        let user = format!("user-{i}");
        assert_eq!(gw.get("/", &[("x-user", &user)]).status, 200, "{user}");
    }
    let metrics = send_raw(
        admin,
        format!("GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(text.contains("\ntollgate_ratelimit_keys 1000\n"), "{text}");
    assert!(
        text.contains("\ntollgate_ratelimit_key_evictions_total 500\n"),
        "{text}"
    );
    // A caller that is held still counts exactly.
    assert_eq!(gw.get("/", &[("x-user", "steady")]).status, 200);
    assert_eq!(gw.get("/", &[("x-user", "steady")]).status, 429);
}

#[test]
fn a_failing_redis_is_skipped_until_a_probe_finds_it_back() {
    const TOKEN: &str = "breaker-token-0123456789";
    let redis = Redis::start();
    let up = Upstream::start("a");
    let admin = closed_port().port();
    let gw = Gateway::start_with_env(
        &format!(
            "redis: {{url: \"{}\", timeout: 50ms, backoff: 300ms, max_backoff: 600ms}}\nadmin: {{address: 127.0.0.1:{admin}, token_env: BREAKER_TOKEN}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a, rate_limit: [{{requests: 1000, per: 1m, key: route, scope: global}}]}}\n",
            redis.url(),
            up.addr
        ),
        &[("BREAKER_TOKEN", TOKEN)],
    );
    let metric = |name: &str| -> f64 {
        let r = send_raw(
            admin,
            format!("GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        String::from_utf8_lossy(&r.body)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    for _ in 0..3 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    assert_eq!(metric("tollgate_ratelimit_redis_circuit_open"), 0.0);
    // Frozen: it accepts and never answers, the worst case. The first decision waits the
    // timeout; the breaker opens and the next ones do not ask Redis at all (without it, these
    // 40 would wait 50 ms each, 2 s in all).
    redis.pause();
    let t = Instant::now();
    for _ in 0..40 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    let spent = t.elapsed();
    assert!(
        spent < Duration::from_millis(1000),
        "40 requests took {spent:?}"
    );
    assert_eq!(metric("tollgate_ratelimit_redis_circuit_open"), 1.0);
    assert_eq!(metric("tollgate_ratelimit_redis_fallbacks_total"), 40.0);
    let status = send_raw(
        admin,
        format!("GET /status HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .json();
    assert_eq!(
        status["rate_limits"]["redis"],
        serde_json::json!({"circuit_open": true, "fallbacks": 40}),
        "{status}"
    );
    let opened = "global rate limits count locally until a probe finds it back";
    assert!(wait_until(Duration::from_secs(2), || gw
        .log()
        .contains(opened)));
    // Back: within the back-off a probe finds it, and decisions are shared again.
    redis.resume();
    assert!(
        wait_until(Duration::from_secs(5), || {
            gw.get("/", &[]);
            metric("tollgate_ratelimit_redis_circuit_open") == 0.0
        }),
        "the breaker did not close"
    );
    let fallbacks = metric("tollgate_ratelimit_redis_fallbacks_total");
    for _ in 0..5 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    assert_eq!(
        metric("tollgate_ratelimit_redis_fallbacks_total"),
        fallbacks
    );
    let log = gw.log();
    assert_eq!(
        log.matches(opened).count(),
        1,
        "one line when it opened:\n{log}"
    );
    assert!(log.contains("redis answers again"), "{log}");
}
