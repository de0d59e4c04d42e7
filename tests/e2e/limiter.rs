//! The rate limiter in-process, with real time. Accuracy: five times the allowed
//! load for ten seconds, over thousands of keys, admits each key's limit within ±1 %; and a
//! burst straddling a window boundary does not get twice the limit through. Also: counters
//! survive a reload that keeps the limit, and Redis fallbacks are counted.

use http::HeaderMap;
use std::time::{Duration, Instant};
use tollgate::config;
use tollgate::policy::limits::{KeyInput, LimitStore, Outcome, RouteLimits};

fn limits(store: &LimitStore, limit: &str) -> RouteLimits {
    route_limits(store, "", limit)
}

fn admit(rt: &tokio::runtime::Runtime, l: &RouteLimits, store: &LimitStore, user: &str) -> bool {
    let mut headers = HeaderMap::new();
    headers.insert("x-user", user.parse().unwrap());
    let input = KeyInput {
        consumer: None,
        client_ip: None,
        headers: &headers,
    };
    matches!(rt.block_on(l.check(store, &input)), Outcome::Allowed(..))
}

#[test]
fn five_times_the_load_for_ten_seconds_over_thousands_of_keys() {
    const KEYS: usize = 2000;
    const LIMIT: f64 = 10.0; // per second, per key
    const OFFERED: f64 = 5.0 * LIMIT;
    const SECONDS: f64 = 10.0;
    // Keys start at different points of the limiter's windows: key k starts (k % 10) tenths of
    // a second after the others, and is measured over its own ten seconds.
    let offset = |k: usize| (k % 10) as f64 / 10.0;
    let store = std::sync::Arc::new(LimitStore::default());
    let l = std::sync::Arc::new(limits(
        &store,
        "{requests: 10, per: 1s, key: \"header:x-user\"}",
    ));
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let store = store.clone();
            let l = l.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let keys: Vec<usize> = (t..KEYS).step_by(2).collect();
                let names: Vec<String> = keys.iter().map(|k| format!("user-{k}")).collect();
                let mut offered = vec![0u64; names.len()];
                let mut admitted = vec![0u64; names.len()];
                loop {
                    let now = start.elapsed().as_secs_f64();
                    if now >= SECONDS + 1.0 {
                        break;
                    }
                    for (i, name) in names.iter().enumerate() {
                        let elapsed = now - offset(keys[i]);
                        if !(0.0..SECONDS).contains(&elapsed) {
                            continue;
                        }
                        // Each key's offers are spread evenly, staggered between keys.
                        let due = (elapsed * OFFERED + i as f64 / names.len() as f64) as u64;
                        while offered[i] < due {
                            offered[i] += 1;
                            if admit(&rt, &l, &store, name) {
                                admitted[i] += 1;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                (offered, admitted)
            })
        })
        .collect();
    let mut all_admitted = Vec::new();
    let mut total_offered = 0;
    let mut by_offset: std::collections::BTreeMap<usize, Vec<u64>> = Default::default();
    for (t, h) in threads.into_iter().enumerate() {
        let (offered, admitted) = h.join().unwrap();
        total_offered += offered.iter().sum::<u64>();
        for (i, a) in admitted.iter().enumerate() {
            by_offset.entry((t + 2 * i) % 10).or_default().push(*a);
        }
        all_admitted.extend(admitted);
    }
    for (o, v) in &by_offset {
        eprintln!(
            "offset {o}: min {} max {}",
            v.iter().min().unwrap(),
            v.iter().max().unwrap()
        );
    }
    let expected = LIMIT * SECONDS;
    let _ = offset;
    assert!(
        total_offered as f64 >= 0.95 * OFFERED * SECONDS * KEYS as f64,
        "the driver could not offer the load: {total_offered}"
    );
    let worst = all_admitted
        .iter()
        .map(|a| (*a as f64 - expected).abs() / expected)
        .fold(0.0, f64::max);
    let mean = all_admitted.iter().sum::<u64>() as f64 / all_admitted.len() as f64;
    eprintln!(
        "{KEYS} keys at {OFFERED}/s for {SECONDS}s, limit {LIMIT}/s: mean admitted {mean:.2}, worst deviation {:.1} %",
        worst * 100.0
    );
    assert!(
        worst <= 0.01,
        "a key was admitted {:.1} % away from its limit (mean {mean:.1}, expected {expected})",
        worst * 100.0
    );
}

#[test]
fn a_burst_across_a_window_boundary_gets_no_second_limit() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = LimitStore::default();
    let l = limits(&store, "{requests: 10, per: 1s, key: route}");
    let t0 = Instant::now();
    // A key in use from the start of a window: a burst late in that window...
    assert!(admit(&rt, &l, &store, "x"));
    std::thread::sleep(Duration::from_millis(850));
    let first = (0..10).filter(|_| admit(&rt, &l, &store, "x")).count();
    assert_eq!(first, 9);
    while t0.elapsed() < Duration::from_millis(1050) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // ...and one right after the boundary: a fixed window would admit ten more here; the
    // sliding estimate admits at most one.
    let second = (0..10).filter(|_| admit(&rt, &l, &store, "x")).count();
    assert!(second <= 1, "{second} admitted right after the boundary");
    // Each key's windows are its own, from its first request: a key that first calls 800 ms
    // into x's window gets its whole allowance, and right after its own window turns, its burst
    // still counts.
    let other = limits(&store, "{requests: 10, per: 1s, key: \"header:x-user\"}");
    while t0.elapsed() < Duration::from_millis(1800) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let whole = (0..10).filter(|_| admit(&rt, &other, &store, "y")).count();
    assert_eq!(whole, 10, "a key starting late in another key's window");
    while started.elapsed() < Duration::from_millis(1030) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = (0..10).filter(|_| admit(&rt, &other, &store, "y")).count();
    assert!(
        after <= 1,
        "{after} admitted right after y's own window turned"
    );
    // Refused requests are not counted: once the windows have passed, the budget is back.
    while t0.elapsed() < Duration::from_millis(4100) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let later = (0..10).filter(|_| admit(&rt, &l, &store, "x")).count();
    assert!(later >= 9, "only {later} admitted after two idle windows");
}

fn route_limits(store: &LimitStore, extra: &str, limit: &str) -> RouteLimits {
    let text = format!(
        "listeners: [{{address: 127.0.0.1:1}}]\nupstreams: {{u: {{peers: [127.0.0.1:2]}}}}\n{extra}routes:\n  - {{name: r, match: {{}}, upstream: u, rate_limit: [{limit}]}}\n"
    );
    let c = config::parse(&text).expect("valid config");
    store.set_max_keys(c.routing.rate_limit_max_keys);
    store.compile(
        &c.routing.routes[0],
        c.routing.redis.as_ref(),
        tollgate::config::HeaderStyle::Standard,
    )
}

#[test]
fn counters_survive_a_reload_that_keeps_the_limit() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = LimitStore::default();
    let before = route_limits(&store, "", "{requests: 5, per: 1m, key: route}");
    assert_eq!(
        (0..3).filter(|_| admit(&rt, &before, &store, "x")).count(),
        3
    );
    // A new snapshot from an unchanged limit continues the count: two left.
    let after = route_limits(&store, "", "{requests: 5, per: 1m, key: route}");
    assert_eq!(
        (0..5).filter(|_| admit(&rt, &after, &store, "x")).count(),
        2
    );
    // A changed limit is a new limit with its own count.
    let changed = route_limits(&store, "", "{requests: 6, per: 1m, key: route}");
    assert_eq!(
        (0..8).filter(|_| admit(&rt, &changed, &store, "x")).count(),
        6
    );
}

#[test]
fn an_unreachable_redis_is_counted_as_a_fallback() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = LimitStore::default();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let l = route_limits(
        &store,
        &format!("redis: {{url: \"redis://{dead}\", timeout: 50ms}}\n"),
        "{requests: 2, per: 1m, key: route, scope: global}",
    );
    let admitted = (0..4).filter(|_| admit(&rt, &l, &store, "x")).count();
    assert_eq!(admitted, 2, "the local fallback keeps the limit");
    assert_eq!(
        store
            .redis_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
}

#[test]
fn a_million_keys_under_their_limits_are_never_refused() {
    // A million client addresses, each under its limit of 5 a minute: no key is refused because
    // of the others (the count-min sketches once behind local limits refused 6.5 % of 200,000
    // such keys), and every key is held, none forgotten at the default bound.
    let store = LimitStore::default();
    let l = limits(&store, "{requests: 5, per: 1m, key: client_ip}");
    let headers = HeaderMap::new();
    let check = |ip: u32| {
        let input = KeyInput {
            consumer: None,
            client_ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(ip))),
            headers: &headers,
        };
        futures::executor::block_on(l.check(&store, &input))
    };
    const KEYS: u32 = 1_000_000;
    for i in 0..KEYS {
        assert!(
            matches!(check(0x0a00_0000 + i), Outcome::Allowed(..)),
            "key {i} refused"
        );
    }
    assert_eq!(store.keys_held(), KEYS as usize);
    assert_eq!(store.keys_evicted(), 0);
    // Every key still has its own count: four more each for some, then the sixth is refused.
    for i in (0..KEYS).step_by(10_007) {
        for n in 2..=5 {
            assert!(
                matches!(check(0x0a00_0000 + i), Outcome::Allowed(..)),
                "key {i}, request {n}"
            );
        }
        assert!(matches!(check(0x0a00_0000 + i), Outcome::RateLimited(_)));
    }
}

#[test]
fn at_the_key_bound_keys_are_forgotten_never_refused() {
    // A bound far below the keys in use: callers are let through early (counted), never refused
    // under their limit.
    let store = LimitStore::default();
    let l = route_limits(
        &store,
        "rate_limit_max_keys: 1000\n",
        "{requests: 2, per: 1m, key: \"header:x-user\"}",
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for i in 0..20_000 {
        assert!(admit(&rt, &l, &store, &format!("user-{i}")), "user-{i}");
    }
    assert!(store.keys_held() <= 1000, "{}", store.keys_held());
    assert!(store.keys_evicted() >= 19_000, "{}", store.keys_evicted());
    // A key in use keeps counting exactly while it is held.
    assert!(admit(&rt, &l, &store, "steady"));
    assert!(admit(&rt, &l, &store, "steady"));
    assert!(!admit(&rt, &l, &store, "steady"));
}
