//! Balancing policies, active health checks, passive protection and retries, with real peers.

use crate::common::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn by_upstream(
    gw: &Gateway,
    n: usize,
    path: impl Fn(usize) -> String,
    headers: &[(&str, &str)],
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for i in 0..n {
        let r = gw.get(&path(i), headers);
        assert_eq!(r.status, 200, "{}", r.text());
        *out.entry(r.header("x-upstream").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    out
}

#[test]
fn weighted_round_robin_follows_weights() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&format!(
        "upstreams:\n  p: {{peers: [\"{}\", {{address: \"{}\", weight: 2}}], balance: round_robin}}\nroutes:\n  - {{name: t, match: {{}}, upstream: p}}\n",
        a.addr, b.addr
    ));
    let counts = by_upstream(&gw, 300, |_| "/".into(), &[]);
    assert_eq!(counts.get("a"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&200), "{counts:?}");
}

#[test]
fn random_spreads_over_all_peers() {
    let ups: Vec<Upstream> = ["a", "b", "c"].iter().map(|n| Upstream::start(n)).collect();
    let gw = Gateway::start(&format!(
        "upstreams:\n  p: {{peers: [\"{}\", \"{}\", \"{}\"], balance: random}}\nroutes:\n  - {{name: t, match: {{}}, upstream: p}}\n",
        ups[0].addr, ups[1].addr, ups[2].addr
    ));
    let counts = by_upstream(&gw, 300, |_| "/".into(), &[]);
    for n in ["a", "b", "c"] {
        let c = counts.get(n).copied().unwrap_or(0);
        // Binomial(300, 1/3): mean 100, sd ~8.2; 50..150 is more than six sd either way.
        assert!((50..150).contains(&c), "{counts:?}");
    }
}

#[test]
fn consistent_hash_keeps_a_key_on_one_peer() {
    let ups: Vec<Upstream> = ["a", "b", "c"].iter().map(|n| Upstream::start(n)).collect();
    let gw = Gateway::start(&format!(
        "upstreams:\n  p: {{peers: [\"{}\", \"{}\", \"{}\"], balance: consistent_hash, hash_key: \"header:x-user\"}}\nroutes:\n  - {{name: t, match: {{}}, upstream: p}}\n",
        ups[0].addr, ups[1].addr, ups[2].addr
    ));
    let mut owners = HashMap::new();
    for user in 0..60 {
        let id = format!("user-{user}");
        let first = by_upstream(&gw, 5, |_| "/".into(), &[("x-user", &id)]);
        assert_eq!(first.len(), 1, "key {id} moved between peers: {first:?}");
        owners.insert(id, first.into_keys().next().unwrap());
    }
    let mut per_peer: HashMap<&str, usize> = HashMap::new();
    for p in owners.values() {
        *per_peer.entry(p.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_peer.len(),
        3,
        "60 keys should land on all three peers: {per_peer:?}"
    );
}

#[test]
fn consistent_hash_on_query_and_path() {
    let ups: Vec<Upstream> = ["a", "b"].iter().map(|n| Upstream::start(n)).collect();
    let gw = Gateway::start(&format!(
        "upstreams:\n  q: {{peers: [\"{}\", \"{}\"], balance: consistent_hash, hash_key: \"query:id\"}}\n  p: {{peers: [\"{}\", \"{}\"], balance: consistent_hash, hash_key: path}}\nroutes:\n  - {{name: q, match: {{path_prefix: /q}}, upstream: q}}\n  - {{name: p, match: {{path_prefix: /p}}, upstream: p}}\n",
        ups[0].addr, ups[1].addr, ups[0].addr, ups[1].addr
    ));
    for k in 0..10 {
        let q = by_upstream(&gw, 4, |i| format!("/q?id={k}&n={i}"), &[]);
        assert_eq!(q.len(), 1, "{q:?}");
        let p = by_upstream(&gw, 4, |_| format!("/p/{k}"), &[]);
        assert_eq!(p.len(), 1, "{p:?}");
    }
}

#[test]
fn least_conn_prefers_the_idle_peer() {
    // "slow" holds every request until released; "fast" answers at once.
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = release.clone();
    let slow = Upstream::with_handler("slow", move |_| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !r.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        Reply::ok("slow")
    });
    let fast = Upstream::start("fast");
    let gw = Arc::new(Gateway::start(&format!(
        "upstreams:\n  p: {{peers: [\"{}\", \"{}\"], balance: least_conn}}\nroutes:\n  - {{name: t, match: {{}}, upstream: p}}\n",
        slow.addr, fast.addr
    )));
    // Send requests one after another until one is held by the slow peer.
    let sender = {
        let gw = gw.clone();
        std::thread::spawn(move || {
            let mut answered = 0;
            loop {
                let r = gw.get("/", &[]);
                if r.header("x-upstream") == Some("slow") {
                    return answered;
                }
                answered += 1;
                assert!(answered < 50, "nothing ever went to the slow peer");
            }
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || slow.count() == 1),
        "no request reached the slow peer"
    );
    // With one request in flight on the slow peer and none on the fast one (a request stops
    // counting when its peer has answered, before the client sees the answer), every new
    // request goes to the fast peer (round robin would send every other one to the slow peer).
    let before = fast.count();
    for _ in 0..20 {
        let r = gw.get("/", &[]);
        assert_eq!(r.header("x-upstream"), Some("fast"));
    }
    assert_eq!(fast.count(), before + 20);
    assert_eq!(slow.count(), 1);
    release.store(true, Ordering::SeqCst);
    sender.join().unwrap();
}

#[test]
fn health_checks_take_a_peer_out_and_bring_it_back() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let interval = Duration::from_millis(200);
    let gw = Gateway::start(&format!(
        "upstreams:\n  p:\n    peers: [\"{}\", \"{}\"]\n    health_check: {{kind: http, path: /health, interval: 200ms, timeout: 100ms, unhealthy_after: 1, healthy_after: 1}}\nroutes:\n  - {{name: t, match: {{}}, upstream: p}}\n",
        a.addr, b.addr
    ));
    assert!(
        wait_until(Duration::from_secs(5), || b.probes.load(Ordering::SeqCst)
            > 0),
        "no probes"
    );
    b.set_healthy(false);
    let failed_at = Instant::now();
    // Within two intervals (plus one probe timeout of slack for scheduling) b is out.
    let out = wait_until(Duration::from_secs(5), || {
        let before = b.count();
        (0..4).all(|_| gw.get("/", &[]).status == 200) && b.count() == before
    });
    assert!(out, "peer b never left the pool");
    let took = failed_at.elapsed();
    assert!(
        took <= interval * 2 + Duration::from_millis(300),
        "took {took:?} to leave the pool"
    );
    // Only a serves now.
    let counts = by_upstream(&gw, 10, |_| "/".into(), &[]);
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    // Healthy again: b comes back.
    b.set_healthy(true);
    let back = wait_until(Duration::from_secs(5), || {
        let before = b.count();
        let _ = by_upstream(&gw, 4, |_| "/".into(), &[]);
        b.count() > before
    });
    assert!(back, "peer b never came back");
}

/// A pool of one peer is chosen without the balancer: its health checks still take it out and
/// bring it back.
#[test]
fn a_lone_peer_follows_its_health_checks() {
    let a = Upstream::start("a");
    let gw = Gateway::start(&format!(
        "upstreams:\n  p:\n    peers: [\"{}\"]\n    health_check: {{kind: http, path: /health, interval: 100ms, timeout: 100ms, unhealthy_after: 1, healthy_after: 1}}\nroutes:\n  - {{name: t, match: {{}}, upstream: p}}\n",
        a.addr
    ));
    assert!(
        wait_until(Duration::from_secs(5), || a.probes.load(Ordering::SeqCst)
            > 0),
        "no probes"
    );
    assert_eq!(gw.get("/", &[]).status, 200);
    a.set_healthy(false);
    assert!(
        wait_until(Duration::from_secs(5), || gw.get("/", &[]).status == 503),
        "the unhealthy peer was still chosen"
    );
    let served = a.count();
    assert_eq!(gw.get("/", &[]).status, 503);
    assert_eq!(a.count(), served, "a request reached the unhealthy peer");
    a.set_healthy(true);
    assert!(
        wait_until(Duration::from_secs(5), || gw.get("/", &[]).status == 200),
        "the peer never came back"
    );
}

#[test]
fn tcp_health_check_and_503_when_no_peer_is_healthy() {
    let dead = closed_port();
    let gw = Gateway::start(&format!(
        "upstreams:\n  p:\n    peers: [\"{dead}\"]\n    health_check: {{kind: tcp, interval: 100ms, timeout: 50ms, unhealthy_after: 1, healthy_after: 1}}\n    passive_cooldown: 0s\nroutes:\n  - {{name: t, match: {{}}, upstream: p}}\n"
    ));
    let got_503 = wait_until(Duration::from_secs(5), || gw.get("/", &[]).status == 503);
    assert!(got_503, "never answered 503 with every peer down");
    let r = gw.get("/", &[]);
    assert_eq!(r.json()["status"], 503);
    assert_eq!(r.json()["detail"], "no healthy upstream peer");
    assert_eq!(r.json()["type"], "tag:tollgate,2026:no-healthy-upstream");
    assert!(!r.text().contains(&dead.port().to_string()));
}

#[test]
fn connect_failures_are_retried_on_a_live_peer() {
    let live = Upstream::start("live");
    let dead = closed_port();
    let gw = Gateway::start(&format!(
        "upstreams:\n  p: {{peers: [\"{dead}\", \"{}\"], retries: 1, passive_cooldown: 0s}}\nroutes:\n  - {{name: t, match: {{}}, upstream: p, max_body_size: 6}}\n",
        live.addr
    ));
    // Round robin alternates, so half the first attempts hit the dead peer; all must succeed.
    for _ in 0..20 {
        let r = gw.raw(
            b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody",
        );
        assert_eq!(r.status, 200);
    }
    assert_eq!(live.count(), 20);
    assert!(
        live.seen().iter().all(|s| s.body == b"body"),
        "retried request lost its body"
    );
}

#[test]
fn passive_cooldown_stops_sending_to_a_refusing_peer() {
    let live = Upstream::start("live");
    let dead = closed_port();
    let gw = Gateway::start(&format!(
        "upstreams:\n  p: {{peers: [\"{dead}\", \"{}\"], retries: 0, passive_cooldown: 30s}}\nroutes:\n  - {{name: t, match: {{}}, upstream: p}}\n",
        live.addr
    ));
    // Without retries, at most one request fails (the one that discovered the dead peer)
    // before the cool-down keeps it out.
    let statuses: Vec<u16> = (0..20).map(|_| gw.get("/", &[]).status).collect();
    let failed = statuses.iter().filter(|s| **s == 502).count();
    assert!(failed <= 2, "{statuses:?}");
    assert!(
        statuses[statuses.len() - 10..].iter().all(|s| *s == 200),
        "{statuses:?}"
    );
}

/// A peer that reads a request, counts it, and closes without answering.
fn black_hole() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut buf = [0u8; 4096];
            if matches!(std::io::Read::read(&mut s, &mut buf), Ok(n) if n > 0) {
                g.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (addr, got)
}

#[test]
fn a_sent_non_idempotent_request_is_not_replayed() {
    let (a, got_a) = black_hole();
    let (b, got_b) = black_hole();
    let gw = Gateway::start(&format!(
        "upstreams:\n  p: {{peers: [\"{a}\", \"{b}\"], retries: 2}}\nroutes:\n  - {{name: t, match: {{}}, upstream: p}}\n"
    ));
    let r = gw
        .raw(b"POST /pay HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\n100");
    assert_eq!(r.status, 502);
    assert!(wait_until(Duration::from_secs(2), || got_a
        .load(Ordering::SeqCst)
        + got_b.load(Ordering::SeqCst)
        >= 1));
    // Give a wrongful replay every chance to show up before counting.
    let settled = !wait_until(Duration::from_millis(500), || {
        got_a.load(Ordering::SeqCst) + got_b.load(Ordering::SeqCst) > 1
    });
    assert!(settled, "the POST reached the upstreams more than once");
}
