//! Unit tests of [`super`]: peers and their names, balancing, health checks, TLS.
use super::super::super::loader::Fixed;
use super::super::super::{Balance, HashKey, Protocol};
use super::super::testing::*;
use std::net::SocketAddr;
use std::time::Duration;

fn with_pool(pool: &str) -> String {
    format!("{LISTENER}upstreams:\n  a: {pool}\n{ROUTE}")
}

#[test]
fn peer_names_are_resolved_through_the_loader() {
    let machine = Fixed::default().name(
        "users.internal:8080",
        &[
            "10.0.0.7:8080".parse().unwrap(),
            "10.0.0.8:8080".parse().unwrap(),
        ],
    );
    let c = load_with(
        &with_pool("{peers: [users.internal:8080, {address: 10.0.0.9:80, weight: 3}]}"),
        &machine,
    );
    // Every address of the name is a peer, with the entry's weight; the name is looked up
    // again later.
    let pool = &c.routing.upstreams[0];
    let peers: Vec<(String, usize)> = pool
        .peers
        .iter()
        .map(|p| (p.address.to_string(), p.weight))
        .collect();
    assert_eq!(
        peers,
        [
            ("10.0.0.9:80".to_string(), 3),
            ("10.0.0.7:8080".to_string(), 1),
            ("10.0.0.8:8080".to_string(), 1)
        ]
    );
    let d = pool.discovery.as_ref().expect("a name to look up again");
    assert_eq!(
        d.names[0].name,
        crate::dns::Name::Host {
            host: "users.internal".into(),
            port: 8080
        }
    );
    assert_eq!(d.fixed.len(), 1);
    assert_eq!(
        (d.min_interval, d.max_interval),
        (Duration::from_secs(1), Duration::from_secs(60))
    );
    let e = errors_with(
        &with_pool("{peers: [nowhere.internal:80, users.internal, 127.0.0.1:2, 127.0.0.1:2, {address: 127.0.0.1:3, weight: 0}]}"),
        &machine,
    );
    assert_reported(
        &e,
        &[
            "upstreams.a.peers[0]: cannot resolve \"nowhere.internal:80\"",
            "upstreams.a.peers[1]: \"users.internal\" needs a port",
            "upstreams.a.peers[3]: peer 127.0.0.1:2 is listed twice",
            "upstreams.a.peers[4].weight: must be at least 1",
        ],
    );
}

#[test]
fn srv_names_resolve_intervals_and_name_servers() {
    let machine = Fixed::default().name(
        "_http._tcp.users.internal",
        &["10.0.0.7:8080".parse().unwrap()],
    );
    let c = load_with(
        &format!(
            "dns: {{servers: [127.0.0.1:5353, '::1']}}\n{}",
            with_pool("{peers: [{srv: _http._tcp.Users.internal.}], resolve: {min_interval: 2s, max_interval: 30s}}")
        ),
        &machine,
    );
    let d = c.routing.upstreams[0].discovery.clone().expect("discovery");
    assert_eq!(
        d.names[0].name,
        crate::dns::Name::Srv("_http._tcp.users.internal".into())
    );
    assert_eq!(
        d.servers,
        vec![
            "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(
        (d.min_interval, d.max_interval),
        (Duration::from_secs(2), Duration::from_secs(30))
    );
    let e = errors_with(
        &format!(
            "dns: {{servers: [nameserver]}}\n{}",
            with_pool("{peers: [{srv: users.internal}, {address: 127.0.0.1:1, srv: _a._tcp.b.c}, {weight: 2}, _http._tcp.users.internal:80], resolve: {min_interval: 10ms}}")
        ),
        &machine,
    );
    assert_reported(
        &e,
        &[
            "dns.servers[0]: \"nameserver\" is not an IP address",
            "upstreams.a.peers[0].srv: \"users.internal\" is not an SRV name",
            "upstreams.a.peers[1]: give `address` or `srv`, not both",
            "upstreams.a.peers[2]: missing `address` (or `srv`)",
            "upstreams.a.resolve.min_interval: must be between 100ms and 1h",
        ],
    );
    let c = load_with(
        &with_pool("{peers: [127.0.0.1:1], resolve: {min_interval: 1s}}"),
        &machine,
    );
    assert!(c.routing.upstreams[0].discovery.is_none());
    assert!(
        c.warnings
            .iter()
            .any(|w| w.to_string().contains("resolve: has no effect")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn balancing_and_hash_keys() {
    let machine = Fixed::default();
    let c = load_with(
        &with_pool("{peers: [127.0.0.1:2], balance: consistent_hash, hash_key: 'cookie:sid'}"),
        &machine,
    );
    assert_eq!(
        c.routing.upstreams[0].balance,
        Balance::ConsistentHash(HashKey::Cookie("sid".into()))
    );
    let c = load_with(
        &with_pool("{peers: [127.0.0.1:2], balance: consistent_hash}"),
        &machine,
    );
    assert_eq!(
        c.routing.upstreams[0].balance,
        Balance::ConsistentHash(HashKey::ClientIp)
    );
    let c = load_with(
        &with_pool("{peers: [127.0.0.1:2], hash_key: path}"),
        &machine,
    );
    assert!(c.warnings[0]
        .to_string()
        .starts_with("upstreams.a.hash_key: has no effect unless"));
    assert_reported(
        &errors(&with_pool(
            "{peers: [127.0.0.1:2], balance: consistent_hash, hash_key: 'ip'}",
        )),
        &["upstreams.a.hash_key: \"ip\" is not a hash key"],
    );
}

#[test]
fn health_checks_timeouts_and_retries() {
    let e = errors(&with_pool(
        "{peers: [127.0.0.1:2], retries: 11, connect_timeout: 0s, health_check: {kind: tcp, path: /x, interval: 5ms, timeout: 0s, unhealthy_after: 0, healthy_after: 101}}",
    ));
    assert_reported(
        &e,
        &[
            "upstreams.a.retries: must be at most 10",
            "upstreams.a.connect_timeout: must be greater than zero",
            "upstreams.a.health_check.path: applies only to `kind: http`",
            "upstreams.a.health_check.interval: must be at least 10ms",
            "upstreams.a.health_check.timeout: must be greater than zero",
            "upstreams.a.health_check.unhealthy_after: must be at least 1",
            "upstreams.a.health_check.healthy_after: must be at most 100",
        ],
    );
    assert_reported(
        &errors(&with_pool(
            "{peers: [127.0.0.1:2], health_check: {kind: http, path: 'no-slash', interval: 1s, timeout: 2s}}",
        )),
        &[
            "upstreams.a.health_check.path: \"no-slash\" must start with '/'",
            "upstreams.a.health_check.timeout: must not be longer than the interval",
        ],
    );
}

#[test]
fn a_default_the_file_does_not_write_is_named() {
    assert_reported(
        &errors(&with_pool(
            "{peers: [127.0.0.1:2], health_check: {kind: tcp, interval: 500ms}}",
        )),
        &["upstreams.a.health_check.interval: is shorter than timeout, which defaults to 1s"],
    );
}

#[test]
fn tls_towards_peers_and_the_http_version() {
    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).expect("certificate");
    let machine = Fixed::default()
        .file("ca.pem", ca.cert.pem())
        .file("empty.pem", "");
    let c = load_with(
        &with_pool("{peers: [127.0.0.1:2], protocol: h2, tls: {sni: API.test, ca_file: ca.pem}}"),
        &machine,
    );
    let up = &c.routing.upstreams[0];
    assert_eq!(up.protocol, Protocol::H2);
    let tls = up.tls.as_ref().expect("tls");
    assert_eq!(tls.sni, "api.test");
    assert_eq!(tls.ca.as_ref().map(|c| c.len()), Some(1));
    let e = errors_with(
        &format!("{LISTENER}upstreams:\n  a: {{peers: [127.0.0.1:2], tls: {{sni: a.test, ca_file: empty.pem}}}}\n  b: {{peers: [127.0.0.1:2], tls: {{sni: b.test, ca_file: gone.pem}}}}\n  c: {{peers: [127.0.0.1:2], protocol: h2}}\n  d: {{peers: [127.0.0.1:2], protocol: h2c, tls: {{sni: 'bad name'}}}}\n{ROUTE}"),
        &machine,
    );
    assert_reported(
        &e,
        &[
            "upstreams.a.tls.ca_file: /conf/empty.pem holds no PEM certificate",
            "upstreams.b.tls.ca_file: cannot read /conf/gone.pem",
            "upstreams.c.protocol: h2 is HTTP/2 over TLS",
            "upstreams.d.protocol: h2c is cleartext HTTP/2",
            "upstreams.d.tls.sni: \"bad name\" is not a host name",
        ],
    );
    let c = load_with(
        &with_pool("{peers: [127.0.0.1:2], tls: {sni: a.test, verify: false}}"),
        &machine,
    );
    assert!(c.warnings[0]
        .to_string()
        .starts_with("upstreams.a.tls.verify: peer certificates are not verified"));
}

#[test]
fn retry_on_and_the_budget() {
    let c = load_with(
        &with_pool("{peers: [127.0.0.1:1], retry_on: [reset, timeout, 503, 502, 503], retry_budget: {ratio: 0.5, window: 30s, min_retries: 1}}"),
        &Fixed::default(),
    );
    let u = &c.routing.upstreams[0];
    assert!(!u.retry_on.connect_failure && u.retry_on.reset && u.retry_on.timeout);
    assert_eq!(u.retry_on.statuses, [502, 503]);
    assert_eq!(
        (
            u.retry_budget.ratio,
            u.retry_budget.window,
            u.retry_budget.min_retries
        ),
        (0.5, Duration::from_secs(30), 1)
    );
    let d = load_with(&with_pool("{peers: [127.0.0.1:1]}"), &Fixed::default());
    assert!(d.routing.upstreams[0].retry_on.connect_failure);
    assert!(!d.routing.upstreams[0].retry_on.after_sent());
    assert_reported(
        &errors(&with_pool("{peers: [127.0.0.1:1], retry_on: [resett, 404, gateway_error], retry_budget: {ratio: 2, window: 0s}}")),
        &[
            "upstreams.a.retry_on[0]: unknown \"resett\": connect_failure, reset, timeout or a 5xx status (did you mean \"reset\"?)",
            "upstreams.a.retry_on[1]: 404 is not a 5xx status",
            "upstreams.a.retry_on[2]: unknown \"gateway_error\"",
            "upstreams.a.retry_budget.ratio: must be between 0 and 1",
            "upstreams.a.retry_budget.window: must be between 1s and 10m",
        ],
    );
}

#[test]
fn outlier_detection() {
    let c = load_with(
        &with_pool("{peers: [127.0.0.1:1], outlier_detection: {consecutive_failures: 3}}"),
        &Fixed::default(),
    );
    let od = c.routing.upstreams[0]
        .outlier_detection
        .clone()
        .expect("configured");
    assert_eq!(
        (
            od.consecutive_failures,
            od.base_ejection,
            od.max_ejection,
            od.max_ejection_percent
        ),
        (3, Duration::from_secs(30), Duration::from_secs(300), 50)
    );
    let off = load_with(&with_pool("{peers: [127.0.0.1:1]}"), &Fixed::default());
    assert!(off.routing.upstreams[0].outlier_detection.is_none());
    assert_reported(
        &errors(&with_pool("{peers: [127.0.0.1:1], outlier_detection: {consecutive_failures: 0, base_ejection: 10s, max_ejection: 5s, max_ejection_percent: 101}}")),
        &[
            "upstreams.a.outlier_detection.consecutive_failures: must be between 1 and 1000",
            "upstreams.a.outlier_detection.max_ejection: must be at least `base_ejection`",
            "upstreams.a.outlier_detection.max_ejection_percent: must be between 0 and 100",
        ],
    );
}
