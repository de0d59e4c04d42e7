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
