//! Unit tests of [`super`].
use super::*;

/// 200,000 fresh keys in one window, twice: no key is refused because of the others (the
/// count-min sketches once behind local limits over-counted when many keys were active).
#[test]
fn many_fresh_keys_keep_their_allowance() {
    let config = crate::config::parse(
        "listeners: [{address: 127.0.0.1:1}]\nupstreams: {u: {peers: [127.0.0.1:2]}}\nroutes:\n  - {name: r, match: {}, upstream: u, rate_limit: [{requests: 1000000, per: 1s, key: client_ip}]}\n",
    )
    .expect("test configuration");
    let store = LimitStore::default();
    let limits = store.compile(&config.routing.routes[0], None, HeaderStyle::Standard);
    let headers = HeaderMap::new();
    for round in 0..2 {
        for i in 0..200_000u32 {
            let input = KeyInput {
                consumer: None,
                client_ip: Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))),
                headers: &headers,
            };
            let outcome = futures::executor::block_on(limits.check(&store, &input));
            assert!(
                matches!(outcome, Outcome::Allowed(..)),
                "key {i} refused in round {round}"
            );
        }
    }
}

fn route_limits(limits: &str, headers: HeaderStyle) -> (LimitStore, RouteLimits) {
    let config = crate::config::parse(&format!(
        "listeners: [{{address: 127.0.0.1:1}}]\nupstreams: {{u: {{peers: [127.0.0.1:2]}}}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u, rate_limit: [{limits}]}}\n"
    ))
    .expect("test configuration");
    let store = LimitStore::default();
    let compiled = store.compile(&config.routing.routes[0], None, headers);
    (store, compiled)
}

fn check(store: &LimitStore, limits: &RouteLimits, ip: u32) -> Outcome {
    let headers = HeaderMap::new();
    let input = KeyInput {
        consumer: None,
        client_ip: Some(IpAddr::V4(std::net::Ipv4Addr::from(ip))),
        headers: &headers,
    };
    futures::executor::block_on(limits.check(store, &input))
}

fn state(o: Outcome) -> RateState {
    match o {
        Outcome::Allowed(Some(s), _) | Outcome::RateLimited(s) => s,
        _ => panic!("no rate state"),
    }
}

#[test]
fn a_fresh_key_at_a_windows_start_has_its_allowance_and_retry_after_is_honest() {
    let (store, limits) = route_limits(
        "{requests: 5, per: 1s, key: client_ip}",
        HeaderStyle::Standard,
    );
    // At the start of the limiter's window: the first request leaves four.
    let remaining: Vec<u64> = (0..5)
        .map(|_| state(check(&store, &limits, 1)).remaining)
        .collect();
    assert_eq!(remaining, vec![4, 3, 2, 1, 0]);
    let refused = check(&store, &limits, 1);
    assert!(matches!(refused, Outcome::RateLimited(_)));
    // Five at the start of this window fade out of the sliding estimate over the next one:
    // one more fits 0.2 windows into it, about 1.2 s from now (rounded up to whole seconds).
    assert_eq!(state(refused).reset, 2);
}

#[test]
fn waiting_for_one_more_request() {
    // A full window: into the next until enough of this one has faded.
    let w = wait_for_one(10.0, 0.0, 10.0, 0.9);
    assert!((w - (0.1 + 0.1)).abs() < 1e-9, "{w}");
    // Room in this window, the previous window's requests fading out.
    let w = wait_for_one(10.0, 10.0, 4.0, 0.2);
    assert!((w - (0.5 - 0.2)).abs() < 1e-9, "{w}");
}

#[test]
fn headers_follow_the_draft_or_the_older_trio() {
    let (store, limits) = route_limits(
        "{requests: 100, per: 1m, key: client_ip}, {requests: 5, per: 1500ms, key: route}",
        HeaderStyle::Standard,
    );
    let s = state(check(&store, &limits, 2));
    assert_eq!(s.policy, 1, "the tightest limit");
    let h: Vec<(&str, String)> = limits
        .headers(&s)
        .into_iter()
        .flatten()
        .map(|(n, v)| (n, v.to_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(
        h[0],
        (
            "RateLimit-Policy",
            "\"client_ip/60s\";q=100;w=60, \"route/1500ms\";q=5".to_string()
        )
    );
    assert_eq!(h[1].0, "RateLimit");
    assert!(h[1].1.starts_with("\"route/1500ms\";r=4;t="), "{h:?}");
    assert_eq!(h.len(), 2);
    let (store, both) = route_limits("{requests: 3, per: 10s, key: client_ip}", HeaderStyle::Both);
    let s = state(check(&store, &both, 3));
    let names: Vec<&str> = both
        .headers(&s)
        .into_iter()
        .flatten()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        vec![
            "RateLimit-Policy",
            "RateLimit",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset"
        ]
    );
    let (store, legacy) = route_limits(
        "{requests: 3, per: 10s, key: client_ip}",
        HeaderStyle::Legacy,
    );
    let s = state(check(&store, &legacy, 4));
    let h: Vec<(&str, String)> = legacy
        .headers(&s)
        .into_iter()
        .flatten()
        .map(|(n, v)| (n, v.to_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(h[0], ("RateLimit-Limit", "3".to_string()));
    assert_eq!(h[1], ("RateLimit-Remaining", "2".to_string()));
    assert_eq!(h.len(), 3);
}

#[test]
fn policy_names_are_unique() {
    let (_, limits) = route_limits(
        "{requests: 5, per: 1s, key: client_ip}, {requests: 50, per: 1s, key: client_ip}",
        HeaderStyle::Standard,
    );
    let names: Vec<&str> = limits.rates.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["client_ip/1s#1", "client_ip/1s#2"]);
}
