//! Usage plans: a quota of 100 requests a day holds exactly across two gateways sharing one
//! Redis and across a gateway's restart; refusals carry the quota's `RateLimit` headers and a
//! reset at the period's end; usage is visible per consumer and per plan on the admin API and
//! in the metrics; consumers without a plan are not counted.

use crate::common::*;

fn gateway(up: &Upstream, redis: &str, admin: u16) -> Gateway {
    Gateway::start(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\nredis: {{url: \"{redis}\"}}\ntime_zone: Europe/Berlin\nplans:\n  basic: {{quotas: [{{requests: 100, per: day}}, {{requests: 1000, per: month}}]}}\nconsumers:\n  - {{name: alice, api_keys: [alice-key-1], plan: basic}}\n  - {{name: bob, api_keys: [bob-key-1], plan: basic}}\n  - {{name: carol, api_keys: [carol-key-1]}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: api, match: {{path_prefix: /}}, upstream: a, auth: [api_key]}}\n",
        up.addr
    ))
}

#[test]
fn a_daily_quota_holds_across_two_gateways_and_a_restart() {
    let redis = Redis::start();
    let up = Upstream::start("a");
    let (a1, a2) = (closed_port().port(), closed_port().port());
    let g1 = gateway(&up, &redis.url(), a1);
    let mut g2 = gateway(&up, &redis.url(), a2);
    let alice = [("x-api-key", "alice-key-1")];
    let mut admitted = 0;
    let mut refused = None;
    for _ in 0..60 {
        for g in [&g1, &g2] {
            let r = g.get("/x", &alice);
            match r.status {
                200 => admitted += 1,
                429 => refused = Some(r),
                s => panic!("status {s}"),
            }
        }
    }
    assert_eq!(
        admitted, 100,
        "two gateways admitted {admitted} against a quota of 100"
    );
    // The refusal: the quota's problem, policy and state, until the day turns in Berlin.
    let r = refused.expect("a refusal");
    assert_eq!(r.json()["type"], "tag:tollgate,2026:quota-exceeded");
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"quota-day\";q=100;w=86400, \"quota-month\";q=1000;w=2592000")
    );
    let reset: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=25 * 3600).contains(&reset), "{reset}");
    assert_eq!(
        r.header("ratelimit"),
        Some(format!("\"quota-day\";r=0;t={reset}").as_str())
    );
    // Another consumer of the plan has a quota of its own; one without a plan is not counted.
    assert_eq!(g1.get("/x", &[("x-api-key", "bob-key-1")]).status, 200);
    for _ in 0..5 {
        assert_eq!(g2.get("/x", &[("x-api-key", "carol-key-1")]).status, 200);
    }
    // A restart forgets nothing: the count is in Redis.
    g2.signal(libc::SIGINT);
    assert!(g2.wait_exit(std::time::Duration::from_secs(10)).is_some());
    let g2 = gateway(&up, &redis.url(), closed_port().port());
    assert_eq!(g2.get("/x", &alice).status, 429);
    assert_eq!(up.count(), 100 + 1 + 5);
    // Usage on the admin API, from either gateway.
    let usage = crate::observe::admin_get(a1, "/consumers/alice/usage", None).json();
    assert_eq!(usage["plan"], "basic", "{usage}");
    assert_eq!(usage["quotas"][0]["period"], "day");
    assert_eq!(usage["quotas"][0]["used"], 100, "{usage}");
    assert_eq!(usage["quotas"][0]["remaining"], 0);
    assert_eq!(usage["quotas"][0]["counted"], "redis");
    assert_eq!(usage["quotas"][1]["used"], 100);
    assert_eq!(usage["quotas"][1]["limit"], 1000);
    let carol = crate::observe::admin_get(a1, "/consumers/carol/usage", None).json();
    assert_eq!(carol["plan"], serde_json::Value::Null);
    assert_eq!(
        crate::observe::admin_get(a1, "/consumers/nobody/usage", None).status,
        404
    );
    let top = crate::observe::admin_get(a1, "/plans/basic/usage?top=1", None).json();
    assert_eq!(
        top["top"],
        serde_json::json!([{"consumer": "alice", "used": 100, "remaining": 0}]),
        "{top}"
    );
    let top = crate::observe::admin_get(a1, "/plans/basic/usage?period=month", None).json();
    assert_eq!(top["top"].as_array().map(Vec::len), Some(2), "{top}");
    assert_eq!(
        crate::observe::admin_get(a1, "/plans/basic/usage?top=0", None).status,
        400
    );
    // The plan's counters, by result.
    let text = crate::observe::admin_get(a1, "/metrics", None).text();
    let admitted = crate::observe::metric(
        &text,
        "tollgate_plan_requests_total{plan=\"basic\",result=\"admitted\"}",
    );
    let refused = crate::observe::metric(
        &text,
        "tollgate_plan_requests_total{plan=\"basic\",result=\"refused\"}",
    );
    assert!(admitted >= 50.0 && refused >= 1.0, "{admitted} {refused}");
    // The status page shows the plan and its heaviest consumers, in a real browser.
    let status = crate::observe::admin_get(a1, "/status", None).json();
    assert_eq!(status["plans"][0]["name"], "basic");
    assert_eq!(status["plans"][0]["consumers"], 2);
    let out = crate::observe::chromium(&["--dump-dom", &format!("http://127.0.0.1:{a1}/")]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("data-plan=\"basic\""), "{dom}");
    assert!(dom.contains("100/day, 1000/month"), "{dom}");
    assert!(dom.contains("alice 100/100"), "{dom}");
}

#[test]
fn plans_are_checked_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("t.yaml");
    std::fs::write(&conf, "listeners: [{address: 127.0.0.1:1}]\ntime_zone: Mars/Olympus\nplans:\n  gold: {quotas: [{requests: 0, per: day}, {requests: 5, per: fortnight}]}\n  empty: {quotas: []}\nconsumers:\n  - {name: a, api_keys: [aaaaaaaaaaaa], plan: silver}\n  - {name: b, api_keys: [bbbbbbbbbbbb], plan: gold}\nupstreams: {u: {peers: [127.0.0.1:2]}}\nroutes: [{name: r, match: {}, upstream: u}]\n").unwrap();
    let out = command()
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run -t");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for expected in [
        "time_zone: \"Mars/Olympus\" is not a time zone",
        "plans.gold.quotas[1].per: unknown variant `fortnight`",
        "plans.empty.quotas: must list at least one quota",
        "consumers[0].plan: unknown plan \"silver\"",
        "consumers[1].plan: plans need redis",
    ] {
        assert!(stderr.contains(expected), "{expected} not in:\n{stderr}");
    }
}

#[test]
fn a_frozen_redis_costs_no_request_and_usage_says_where_it_was_counted() {
    let redis = Redis::start();
    let up = Upstream::start("a");
    let admin = closed_port().port();
    let gw = Gateway::start(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\nredis: {{url: \"{}\", timeout: 100ms, backoff: 200ms, max_backoff: 400ms}}\nplans: {{tiny: {{quotas: [{{requests: 3, per: week}}]}}}}\nconsumers: [{{name: dora, api_keys: [dora-key-01], plan: tiny}}]\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: api, match: {{}}, upstream: a, auth: [api_key]}}\n",
        redis.url(),
        up.addr
    ));
    let key = [("x-api-key", "dora-key-01")];
    assert_eq!(gw.get("/", &key).status, 200);
    redis.pause();
    // Counted in the gateway meanwhile, from Redis's last count (1): the quota still holds at
    // 3 a week in all, and no request fails.
    let statuses: Vec<u16> = (0..4).map(|_| gw.get("/", &key).status).collect();
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    let usage = crate::observe::admin_get(admin, "/consumers/dora/usage", None).json();
    assert_eq!(usage["quotas"][0]["counted"], "local", "{usage}");
    assert_eq!(usage["quotas"][0]["used"], 3, "{usage}");
    assert_eq!(
        crate::observe::admin_get(admin, "/plans/tiny/usage", None).status,
        503
    );
    let text = crate::observe::admin_get(admin, "/metrics", None).text();
    assert!(crate::observe::metric(&text, "tollgate_ratelimit_redis_fallbacks_total") >= 1.0);
    // Redis back: what was admitted meanwhile is added there with the next decision.
    redis.resume();
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        assert_eq!(gw.get("/", &key).status, 429);
        let u = crate::observe::admin_get(admin, "/consumers/dora/usage", None).json();
        u["quotas"][0]["counted"] == "redis" && u["quotas"][0]["used"] == 3
    }));
}
