//! Global limits on a real Redis Cluster (three masters on loopback, made with
//! `redis-cli --cluster create`), shared by three gateways: exact counts with keys spread over
//! the masters' slots, a master killed mid-test (every gateway keeps answering, counting locally
//! behind its circuit breaker), and shared counting again once the master is back.

use crate::common::*;
use std::time::{Duration, Instant};

const TOKEN: &str = "cluster-token-0123456789";

fn gateway(up: &Upstream, cluster: &RedisCluster, admin: u16) -> Gateway {
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    Gateway::start_with_env(
        &format!(
            "redis: {{cluster: [{}], timeout: 200ms, backoff: 200ms, max_backoff: 400ms}}\nadmin: {{address: 127.0.0.1:{admin}, token_env: CLUSTER_TOKEN}}\nplans: {{small: {{quotas: [{{requests: 30, per: day}}]}}}}\nconsumers:\n  - {{name: q1, api_keys: [q1-key-0001], plan: small}}\n  - {{name: q2, api_keys: [q2-key-0001], plan: small}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: quota, match: {{path_prefix: /quota}}, upstream: a, auth: [api_key]}}\n  - {{name: t, match: {{}}, upstream: a, rate_limit: [{{requests: 20, per: 1m, key: \"header:x-user\", scope: global}}]}}\n",
            nodes.join(", "),
            up.addr
        ),
        &[("CLUSTER_TOKEN", TOKEN)],
    )
}

/// Whether the gateway behind `admin` skips Redis now.
fn circuit_open(admin: u16) -> bool {
    let r = send_raw(
        admin,
        format!("GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    String::from_utf8_lossy(&r.body)
        .lines()
        .any(|l| l == "tollgate_ratelimit_redis_circuit_open 1")
}

/// Requests of `user` sent round-robin over the gateways; how many were admitted.
fn admitted(gws: &[Gateway], user: &str, requests: usize) -> usize {
    (0..requests)
        .filter(|n| gws[n % gws.len()].get("/", &[("x-user", user)]).status == 200)
        .count()
}

#[test]
fn three_gateways_share_limits_on_a_redis_cluster_and_outlive_a_master() {
    let mut cluster = RedisCluster::start(3);
    let up = Upstream::start("a");
    let admins: Vec<u16> = (0..3).map(|_| closed_port().port()).collect();
    let gws: Vec<Gateway> = admins.iter().map(|&a| gateway(&up, &cluster, a)).collect();
    // Twelve callers, their keys on all three masters' slots: each admitted exactly its limit
    // of 20 across the three gateways (counted apart, each gateway would admit 20).
    for u in 0..12 {
        let user = format!("user-{u}");
        assert_eq!(admitted(&gws, &user, 30), 20, "{user}");
    }
    // The same key from the three gateways at once (three clients each): still exactly 20.
    let admitted_at_once: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..9)
            .map(|t| {
                let gw = &gws[t % 3];
                scope.spawn(move || {
                    (0..10)
                        .filter(|_| gw.get("/", &[("x-user", "crowd")]).status == 200)
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted_at_once, 20);
    // Two consumers of a plan with a quota of 30 a day: exactly 30 each over the gateways.
    for key in ["q1-key-0001", "q2-key-0001"] {
        let quota_admitted = (0..40)
            .filter(|n| gws[n % 3].get("/quota", &[("x-api-key", key)]).status == 200)
            .count();
        assert_eq!(quota_admitted, 30, "{key}");
    }
    assert!(admins.iter().all(|&a| !circuit_open(a)));
    // A master dies: no gateway fails a request or waits long; each soon counts locally.
    cluster.kill(0);
    for n in 0..30 {
        let t = Instant::now();
        let status = gws[n % 3].get("/", &[("x-user", "during")]).status;
        assert!(status == 200 || status == 429, "status {status}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
    }
    for (gw, &admin) in gws.iter().zip(&admins) {
        assert!(
            wait_until(Duration::from_secs(10), || {
                let status = gw.get("/", &[("x-user", "probe")]).status;
                assert!(status == 200 || status == 429, "status {status}");
                circuit_open(admin)
            }),
            "a gateway kept asking the broken cluster"
        );
    }
    // The master is back: probes find the cluster, and the gateways share counts again.
    cluster.restart(0);
    for (gw, &admin) in gws.iter().zip(&admins) {
        assert!(
            wait_until(Duration::from_secs(15), || {
                gw.get("/", &[("x-user", "probe-2")]);
                !circuit_open(admin)
            }),
            "a gateway did not go back to the cluster:\n{}",
            gw.log()
        );
    }
    for u in 0..6 {
        let user = format!("after-{u}");
        assert_eq!(admitted(&gws, &user, 30), 20, "{user}");
    }
}
