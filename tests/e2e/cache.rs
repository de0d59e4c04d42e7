//! Response caching end to end against a real upstream that counts its requests. The upstream's
//! behaviour is chosen per request by query parameters: `cc` (Cache-Control), `etag`, `vary`,
//! `cookie`, `expires`, `size` (body bytes), `delay` (ms), `fail` (answer 500).

use crate::common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == name).then_some(v)
    })
}

fn decode(v: &str) -> String {
    v.replace("%3D", "=")
        .replace("%2C", ",")
        .replace("%20", " ")
}

struct Origin {
    up: Upstream,
    failing: Arc<AtomicBool>,
}

fn origin() -> Origin {
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let n = Arc::new(AtomicUsize::new(0));
    let up = Upstream::with_handler("origin", move |seen| {
        let count = n.fetch_add(1, Ordering::SeqCst) + 1;
        if f.load(Ordering::SeqCst) || param(&seen.url, "fail").is_some() {
            return Reply {
                status: 500,
                ..Reply::ok("broken")
            };
        }
        if let Some(etag) = param(&seen.url, "etag") {
            let tag = format!("\"{etag}\"");
            if seen.header("if-none-match") == Some(tag.as_str()) {
                let mut r = Reply {
                    status: 304,
                    ..Reply::ok("")
                }
                .header("etag", &tag);
                if let Some(cc) = param(&seen.url, "cc") {
                    r = r.header("cache-control", &decode(cc));
                }
                return r;
            }
        }
        let mut body = format!(
            "{} #{count} lang={} consumer={}",
            seen.url.split('?').next().unwrap_or(""),
            seen.header("accept-language").unwrap_or("-"),
            seen.header("x-consumer").unwrap_or("-")
        );
        if let Some(size) = param(&seen.url, "size").and_then(|s| s.parse::<usize>().ok()) {
            while body.len() < size {
                body.push('.');
            }
        }
        let mut r = Reply::ok(&body);
        if let Some(cc) = param(&seen.url, "cc") {
            r = r.header("cache-control", &decode(cc));
        }
        if let Some(etag) = param(&seen.url, "etag") {
            r = r.header("etag", &format!("\"{etag}\""));
        }
        if let Some(v) = param(&seen.url, "vary") {
            r = r.header("vary", &decode(v));
        }
        if param(&seen.url, "cookie").is_some() {
            r = r.header("set-cookie", "session=abc");
        }
        if param(&seen.url, "expires").is_some() {
            r = r.header("expires", "Thu, 01 Jan 2099 00:00:00 GMT");
        }
        if let Some(ms) = param(&seen.url, "delay").and_then(|d| d.parse().ok()) {
            r = r.delay(Duration::from_millis(ms));
        }
        r
    });
    Origin { up, failing }
}

const TOKEN: &str = "admin-token-0123456789";

fn gateway(o: &Origin, route_cache: &str) -> Gateway {
    let admin_port = closed_port().port();
    Gateway::start_with_env(
        &format!(
            "cache_status_headers: both\ncache: {{max_size: 4MiB, max_object_size: 256KiB}}\nadmin: {{address: 127.0.0.1:{admin_port}, token_env: TEST_ADMIN_TOKEN}}\nconsumers:\n  - {{name: alice, api_keys: [alice-key-1]}}\n  - {{name: bob, api_keys: [bob-key-11]}}\nupstreams:\n  o: {{peers: [\"{}\"], read_timeout: 2s}}\nroutes:\n  - {{name: c, match: {{path_prefix: /c}}, upstream: o, cache: {route_cache}}}\n  - {{name: mine, match: {{path_prefix: /mine}}, upstream: o, auth: [api_key], cache: {{ttl: 60s, key: [host, path, query, consumer]}}}}\n  - {{name: shared, match: {{path_prefix: /shared}}, upstream: o, auth: [api_key], cache: {{ttl: 60s}}}}\n  - {{name: plain, match: {{path_prefix: /plain}}, upstream: o}}\n",
            o.up.addr
        ),
        &[("TEST_ADMIN_TOKEN", TOKEN)],
    )
}

fn admin_port(gw: &Gateway) -> u16 {
    let conf = std::fs::read_to_string(gw.dir.path().join("tollgate.yaml")).unwrap();
    let at =
        conf.find("admin: {address: 127.0.0.1:").unwrap() + "admin: {address: 127.0.0.1:".len();
    conf[at..].split(',').next().unwrap().parse().unwrap()
}

/// `X-Cache-Status` (these tests run with `cache_status_headers: both`).
fn status(r: &Response) -> &str {
    r.header("x-cache-status").unwrap_or("<none>")
}

#[test]
fn cache_status_follows_rfc_9211() {
    let o = origin();
    let gw = Gateway::start(&format!(
        "consumers: [{{name: alice, api_keys: [alice-key-1]}}]\nupstreams:\n  o: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: c, match: {{path_prefix: /c}}, upstream: o, cache: {{ttl: 60s}}}}\n  - {{name: shared, match: {{path_prefix: /shared}}, upstream: o, auth: [api_key], cache: {{ttl: 60s}}}}\n",
        o.up.addr
    ));
    let cs = |r: &Response| r.header("cache-status").unwrap_or("<none>").to_string();
    let miss = gw.get("/c/a", &[]);
    assert_eq!(cs(&miss), "tollgate; fwd=miss; fwd-status=200; stored");
    // By default only the standard field.
    assert_eq!(miss.header("x-cache-status"), None);
    let hit = gw.get("/c/a", &[]);
    let ttl: i64 = cs(&hit)
        .strip_prefix("tollgate; hit; ttl=")
        .and_then(|t| t.parse().ok())
        .unwrap_or(-1000);
    assert!((55..=60).contains(&ttl), "{}", cs(&hit));
    // Not stored: the upstream said no-store.
    assert_eq!(
        cs(&gw.get("/c/ns?cc=no-store", &[])),
        "tollgate; fwd=miss; fwd-status=200"
    );
    // Revalidated with the upstream (no-cache and a validator).
    gw.get("/c/nc?cc=no-cache&etag=v1", &[]);
    let r = cs(&gw.get("/c/nc?cc=no-cache&etag=v1", &[]));
    assert!(r.starts_with("tollgate; fwd=stale; fwd-status=304"), "{r}");
    // The cache not used: a method it does not cache, credentials on a shared key.
    let post =
        gw.raw(b"POST /c/a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(cs(&post), "tollgate; fwd=method; fwd-status=200");
    let keyed = gw.get("/shared/x", &[("x-api-key", "alice-key-1")]);
    assert_eq!(cs(&keyed), "tollgate; fwd=request; fwd-status=200");
    // A stale copy served while the upstream fails: a hit with a negative ttl.
    let gw2 = Gateway::start(&format!(
        "upstreams:\n  o: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: c, match: {{}}, upstream: o, cache: {{ttl: 1s, stale_if_error: 60s}}}}\n",
        o.up.addr
    ));
    gw2.get("/s", &[]);
    std::thread::sleep(Duration::from_millis(2100));
    o.failing.store(true, Ordering::SeqCst);
    let stale = gw2.get("/s", &[]);
    o.failing.store(false, Ordering::SeqCst);
    assert_eq!(stale.status, 200);
    let v = cs(&stale);
    let ttl: i64 = v
        .strip_prefix("tollgate; hit; ttl=")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(ttl < 0, "{v}");
}

#[test]
fn hit_after_miss_and_cache_control_rules() {
    let o = origin();
    let gw = gateway(&o, "{ttl: 30s}");
    // max-age: MISS then HIT with the same body, and the upstream asked once.
    let a = gw.get("/c/a?cc=max-age%3D60", &[]);
    let b = gw.get("/c/a?cc=max-age%3D60", &[]);
    assert_eq!((status(&a), status(&b)), ("MISS", "HIT"));
    assert_eq!(a.body, b.body);
    assert_eq!(o.up.count(), 1);
    // No freshness from the upstream: the route's ttl applies.
    gw.get("/c/ttl", &[]);
    assert_eq!(status(&gw.get("/c/ttl", &[])), "HIT");
    // Expires in the future.
    gw.get("/c/exp?expires=1", &[]);
    assert_eq!(status(&gw.get("/c/exp?expires=1", &[])), "HIT");
    // s-maxage wins over max-age for a shared cache.
    gw.get("/c/s?cc=max-age%3D0%2C%20s-maxage%3D60", &[]);
    assert_eq!(
        status(&gw.get("/c/s?cc=max-age%3D0%2C%20s-maxage%3D60", &[])),
        "HIT"
    );
    // Never stored: no-store, private, Set-Cookie.
    for q in [
        "/c/ns?cc=no-store",
        "/c/p?cc=private%2C%20max-age%3D60",
        "/c/k?cookie=1&cc=max-age%3D60",
    ] {
        let before = o.up.count();
        let first = gw.get(q, &[]);
        let second = gw.get(q, &[]);
        assert_eq!(o.up.count(), before + 2, "{q} was served from cache");
        assert_ne!(status(&second), "HIT", "{q}");
        assert_ne!(first.body, second.body, "{q}");
    }
    // Routes without caching carry no X-Cache-Status.
    assert_eq!(gw.get("/plain/x", &[]).header("x-cache-status"), None);
}

#[test]
fn expiry_revalidation_and_no_cache() {
    let o = origin();
    let gw = gateway(&o, "{ttl: 30s}");
    // no-cache with a validator: stored, but revalidated every time with If-None-Match.
    gw.get("/c/nc?cc=no-cache&etag=v1", &[]);
    let r = gw.get("/c/nc?cc=no-cache&etag=v1", &[]);
    assert_eq!(status(&r), "REVALIDATED");
    assert_eq!(r.status, 200);
    assert_eq!(o.up.last().header("if-none-match"), Some("\"v1\""));
    assert!(
        r.text().contains("#1"),
        "the stored body was served: {}",
        r.text()
    );
    // max-age=1 without a validator: EXPIRED after a second, fetched anew.
    gw.get("/c/short?cc=max-age%3D1", &[]);
    std::thread::sleep(Duration::from_millis(1200));
    let r = gw.get("/c/short?cc=max-age%3D1", &[]);
    assert_eq!(status(&r), "EXPIRED");
    assert_eq!(status(&gw.get("/c/short?cc=max-age%3D1", &[])), "HIT");
}

#[test]
fn vary_creates_variants() {
    let o = origin();
    let gw = gateway(&o, "{ttl: 30s}");
    let en = gw.get("/c/v?vary=accept-language", &[("accept-language", "en")]);
    let de = gw.get("/c/v?vary=accept-language", &[("accept-language", "de")]);
    assert_eq!((status(&en), status(&de)), ("MISS", "MISS"));
    let en2 = gw.get("/c/v?vary=accept-language", &[("accept-language", "en")]);
    let de2 = gw.get("/c/v?vary=accept-language", &[("accept-language", "de")]);
    assert_eq!((status(&en2), status(&de2)), ("HIT", "HIT"));
    assert!(en2.text().contains("lang=en") && de2.text().contains("lang=de"));
    assert_eq!(o.up.count(), 2);
}

#[test]
fn credentials_only_cached_per_consumer() {
    let o = origin();
    let gw = gateway(&o, "{ttl: 30s}");
    // A route whose key has no consumer: requests with credentials bypass the cache.
    for _ in 0..2 {
        assert_eq!(
            status(&gw.get("/shared/x", &[("x-api-key", "alice-key-1")])),
            "BYPASS"
        );
    }
    let r = gw.get("/c/auth", &[("authorization", "Bearer something")]);
    assert_eq!(status(&r), "BYPASS");
    assert_eq!(o.up.count(), 3);
    // Keyed by consumer: each consumer has its own copy.
    let a1 = gw.get("/mine/x", &[("x-api-key", "alice-key-1")]);
    let b1 = gw.get("/mine/x", &[("x-api-key", "bob-key-11")]);
    let a2 = gw.get("/mine/x", &[("x-api-key", "alice-key-1")]);
    let b2 = gw.get("/mine/x", &[("x-api-key", "bob-key-11")]);
    assert_eq!(
        (status(&a1), status(&b1), status(&a2), status(&b2)),
        ("MISS", "MISS", "HIT", "HIT")
    );
    assert!(a2.text().contains("consumer=alice") && b2.text().contains("consumer=bob"));
}

#[test]
fn concurrent_misses_collapse_into_one_upstream_request() {
    let o = origin();
    let gw = Arc::new(gateway(&o, "{ttl: 30s}"));
    let start = Arc::new(std::sync::Barrier::new(100));
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let gw = gw.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                gw.get("/c/cold?cc=max-age%3D60&delay=500", &[])
            })
        })
        .collect();
    let responses: Vec<Response> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(responses.iter().all(|r| r.status == 200));
    assert!(responses.iter().all(|r| r.body == responses[0].body));
    assert_eq!(
        o.up.count(),
        1,
        "100 concurrent misses reached the upstream {} times",
        o.up.count()
    );
}

#[test]
fn stale_while_revalidate_and_stale_if_error() {
    let o = origin();
    let gw = gateway(
        &o,
        "{ttl: 30s, stale_while_revalidate: 10s, stale_if_error: 60s}",
    );
    // Stale while revalidating: the stale copy at once, the refresh in the background.
    gw.get("/c/swr?cc=max-age%3D1&delay=300", &[]);
    std::thread::sleep(Duration::from_millis(1200));
    let t = Instant::now();
    let r = gw.get("/c/swr?cc=max-age%3D1&delay=300", &[]);
    assert_eq!(status(&r), "STALE");
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "waited for the refresh: {:?}",
        t.elapsed()
    );
    assert!(r.text().contains("#1"));
    assert!(
        wait_until(Duration::from_secs(3), || o.up.count() == 2),
        "no background refresh"
    );
    assert!(wait_until(Duration::from_secs(3), || {
        let r = gw.get("/c/swr?cc=max-age%3D1&delay=300", &[]);
        status(&r) == "HIT" && r.text().contains("#2")
    }));
    // Stale if error: the upstream fails, the stale copy is served.
    gw.get("/c/sie?cc=max-age%3D1", &[]);
    std::thread::sleep(Duration::from_millis(1200));
    o.failing.store(true, Ordering::SeqCst);
    let r = gw.get("/c/sie?cc=max-age%3D1", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(status(&r), "STALE");
    o.failing.store(false, Ordering::SeqCst);
}

#[test]
fn stale_if_error_when_the_upstream_is_gone() {
    // An upstream that answers once and then stops listening.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = std::io::Read::read(&mut s, &mut buf);
        let _ = std::io::Write::write_all(
            &mut s,
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        );
    });
    let gw = Gateway::start(&format!(
        "upstreams:\n  o: {{peers: [\"{addr}\"], retries: 0}}\nroutes:\n  - {{name: c, match: {{}}, upstream: o, cache: {{stale_if_error: 60s}}}}\n"
    ));
    assert_eq!(gw.get("/gone", &[]).text(), "hello");
    server.join().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the upstream still listens"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let r = gw.get("/gone", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    // A stale copy served: a hit past its freshness (RFC 9211).
    assert!(
        r.header("cache-status")
            .is_some_and(|v| v.starts_with("tollgate; hit; ttl=-")),
        "{:?}",
        r.header("cache-status")
    );
    assert_eq!(r.text(), "hello");
}

#[test]
fn conditional_requests_and_head_from_the_cache() {
    let o = origin();
    let gw = gateway(&o, "{ttl: 30s}");
    let r = gw.get("/c/cond?cc=max-age%3D60&etag=e1", &[]);
    assert_eq!(r.header("etag"), Some("\"e1\""));
    let r = gw.get(
        "/c/cond?cc=max-age%3D60&etag=e1",
        &[("if-none-match", "\"e1\"")],
    );
    assert_eq!(r.status, 304);
    assert_eq!(o.up.count(), 1);
    // HEAD is answered from the cached GET, without a body.
    let r = gw.raw(b"HEAD /c/cond?cc=max-age%3D60&etag=e1 HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(status(&r), "HIT");
    assert_eq!(o.up.count(), 1);
    // A HEAD miss fetches (and stores) the whole GET.
    let r = gw.raw(b"HEAD /c/headfirst?cc=max-age%3D60 HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(o.up.last().method, "GET");
    let g = gw.get("/c/headfirst?cc=max-age%3D60", &[]);
    assert_eq!(status(&g), "HIT");
    assert!(g.text().contains("#2"));
}

fn admin(gw: &Gateway, token: Option<&str>, body: &str) -> Response {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    send_raw(
        admin_port(gw),
        format!("POST /cache/purge HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    )
}

#[test]
fn purge_one_key_or_a_whole_route() {
    let o = origin();
    let gw = gateway(&o, "{ttl: 30s}");
    for p in ["/c/p1?x=1", "/c/p2"] {
        gw.get(p, &[]);
        assert_eq!(status(&gw.get(p, &[])), "HIT");
    }
    // The admin call needs the token.
    assert_eq!(admin(&gw, None, r#"{"route":"c"}"#).status, 401);
    assert_eq!(
        admin(&gw, Some("wrong-token-0123456789"), r#"{"route":"c"}"#).status,
        401
    );
    // One key.
    let r = admin(
        &gw,
        Some(TOKEN),
        r#"{"route":"c","host":"test.local","path":"/c/p1?x=1"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["purged"], 1);
    assert_eq!(status(&gw.get("/c/p1?x=1", &[])), "MISS");
    assert_eq!(status(&gw.get("/c/p2", &[])), "HIT");
    // The whole route.
    assert_eq!(admin(&gw, Some(TOKEN), r#"{"route":"c"}"#).status, 200);
    assert_eq!(status(&gw.get("/c/p1?x=1", &[])), "MISS");
    assert_eq!(status(&gw.get("/c/p2", &[])), "MISS");
    // Mistakes get clear answers.
    assert_eq!(admin(&gw, Some(TOKEN), r#"{"route":"nope"}"#).status, 404);
    assert_eq!(admin(&gw, Some(TOKEN), r#"{"route":"plain"}"#).status, 409);
    assert_eq!(admin(&gw, Some(TOKEN), r#"{"rout":"c"}"#).status, 400);
}

#[test]
fn objects_over_max_object_size_pass_through() {
    let o = origin();
    let gw = gateway(&o, "{ttl: 30s}");
    let big = gw.get("/c/big?cc=max-age%3D60&size=300000", &[]);
    assert_eq!(big.body.len(), 300000);
    let again = gw.get("/c/big?cc=max-age%3D60&size=300000", &[]);
    assert_ne!(status(&again), "HIT");
    assert_eq!(again.body.len(), 300000);
    assert_eq!(o.up.count(), 2);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn the_byte_budget_holds_under_churn_and_hot_objects_stay() {
    let o = origin();
    let gw = gateway(&o, "{ttl: 300s}");
    let pid = gw.pid();
    for i in 0..20 {
        gw.get(&format!("/c/warm{i}?size=1000"), &[]);
    }
    let before = rss_kib(pid);
    let mut hot_hits = 0;
    let mut hot_requests = 0;
    let mut rss = Vec::new();
    // Thirty-seven times the 4 MiB budget in distinct 100 KiB objects, with a hot set of 8 small
    // objects requested between them. Resident memory is sampled after each tenth.
    let n: usize = std::env::var("CHURN_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    for i in 0..n {
        let r = gw.get(&format!("/c/churn{i}?size=102400"), &[]);
        assert_eq!(r.body.len(), 102400);
        if i % 2 == 0 {
            let h = gw.get(&format!("/c/hot{}?size=10240", i % 16 / 2), &[]);
            hot_requests += 1;
            if status(&h) == "HIT" {
                hot_hits += 1;
            }
        }
        if i % (n / 10) == n / 10 - 1 {
            rss.push(rss_kib(pid));
        }
    }
    let ratio = hot_hits as f64 / hot_requests as f64;
    eprintln!(
        "{} MiB through a 4 MiB cache: resident KiB before {before}, then at each tenth: {rss:?}; hot-set hit ratio {:.1} %", n / 10,
        ratio * 100.0
    );
    // The store never counts more than its budget.
    let fill = send_raw(
        admin_port(&gw),
        format!("GET /cache HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .json();
    eprintln!("cache fill after the churn: {fill}");
    assert!(fill["held_bytes"].as_u64().unwrap() <= 4 << 20, "{fill}");
    assert!(
        fill["held_bytes"].as_u64().unwrap() >= 2 << 20,
        "the cache is not being used: {fill}"
    );
    // And the process plateaus: through the second half of the churn resident memory stays
    // (by its median: one transient allocator spike is not growth) at the first half's peak
    // plus allocator noise, and every sample stays far below the volume that went through
    // (150 MiB; the allocator keeps some freed pages for reuse, ~30 MiB at this pace).
    let (first, second) = rss.split_at(rss.len() / 2);
    let peak_first = *first.iter().max().unwrap();
    let peak_second = *second.iter().max().unwrap();
    let mut sorted_second = second.to_vec();
    sorted_second.sort_unstable();
    let median_second = sorted_second[sorted_second.len() / 2];
    // The allowance is the allocator's: mimalloc returns freed pages after a delay, which a
    // loaded machine (the whole suite at once) stretches; once measured 7.8 MiB over. Leaking
    // the churned objects would add 15 MiB per sample.
    assert!(
        median_second <= peak_first + 12 * 1024,
        "resident memory kept growing under churn: before {before}, samples {rss:?}"
    );
    assert!(
        peak_second.max(peak_first) - before < 64 * 1024,
        "resident memory grew with the volume: before {before}, samples {rss:?}"
    );
    // The hot set (8 objects asked ~94 times each) stays cached: only the first asks miss.
    assert!(ratio >= 0.9, "hot objects were evicted: hit ratio {ratio}");
}
