//! Peers from DNS, against a real DNS server (dnsmasq on loopback): every address of a name is
//! a peer; addresses added and removed in DNS while GETs run are followed without a failed
//! request (a removed peer's request in flight finishes); SRV records give targets, ports and
//! weights; when DNS stops answering, the pool keeps its last addresses.

use crate::common::*;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "dns-token-0123456789";

/// Listeners on the same port of each loopback address in `ips`.
fn same_port(ips: &[&str]) -> (u16, Vec<TcpListener>) {
    for _ in 0..50 {
        let Ok(first) = TcpListener::bind((ips[0], 0)) else {
            continue;
        };
        let port = first.local_addr().unwrap().port();
        let mut all = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind((*ip, port)) {
                Ok(l) => all.push(l),
                Err(_) => break,
            }
        }
        if all.len() == ips.len() {
            return (port, all);
        }
    }
    panic!("no port free on all of {ips:?}");
}

fn admin_json(admin: u16, path: &str) -> serde_json::Value {
    send_raw(
        admin,
        format!("GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .json()
}

/// The addresses of pool `u`'s peers, as the admin API lists them.
fn peers(admin: u16) -> Vec<String> {
    let v = admin_json(admin, "/upstreams");
    let mut out: Vec<String> = v[0]["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["address"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn peers_follow_dns_under_load_without_a_failed_request() {
    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let (port, listeners) = same_port(&ips);
    let ups: Vec<Upstream> = listeners
        .into_iter()
        .zip(["a", "b", "c"])
        .map(|(l, name)| {
            Upstream::on(l, name, move |s| {
                let reply = Reply::ok(name);
                if s.url == "/slow" {
                    reply.delay(Duration::from_millis(1500))
                } else {
                    reply
                }
            })
        })
        .collect();
    let mut dns = Dnsmasq::start(&[("users.test", &["127.0.0.2"])], &[]);
    let admin = closed_port().port();
    let gw = Arc::new(Gateway::start_with_env(
        &format!(
            "dns: {{servers: [\"{}\"]}}\nadmin: {{address: 127.0.0.1:{admin}, token_env: DNS_TOKEN}}\nupstreams:\n  u:\n    peers: [\"users.test:{port}\"]\n    resolve: {{min_interval: 200ms, max_interval: 1s}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n",
            dns.server()
        ),
        &[("DNS_TOKEN", TOKEN)],
    ));
    assert_eq!(peers(admin), [format!("127.0.0.2:{port}")]);
    // GETs all along, on two threads (about 200 requests a second each).
    let load = SteadyLoad::start(&gw, 2, Duration::from_millis(5));
    // Added: b takes requests.
    dns.set_hosts(&[("users.test", &["127.0.0.2", "127.0.0.3"])]);
    assert!(
        wait_until(Duration::from_secs(10), || ups[1].count() > 0),
        "the added address got no request: {:?}",
        peers(admin)
    );
    assert_eq!(
        peers(admin),
        [format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}")]
    );
    // a is removed (c added) while a slow request is in flight to it: that request finishes,
    // and a gets no new requests.
    let slow = {
        let gw = gw.clone();
        let a_before = ups[0].count();
        let handle = std::thread::spawn(move || {
            // Until the slow request lands on a.
            loop {
                let r = gw.get("/slow", &[]);
                if r.text() == "a" {
                    return r.status;
                }
            }
        });
        assert!(wait_until(Duration::from_secs(10), || ups[0].seen_path("/slow")));
        let _ = a_before;
        handle
    };
    dns.set_hosts(&[("users.test", &["127.0.0.3", "127.0.0.4"])]);
    assert!(
        wait_until(Duration::from_secs(10), || ups[2].count() > 0),
        "the added address got no request"
    );
    assert_eq!(
        slow.join().unwrap(),
        200,
        "the removed peer's request in flight"
    );
    let a_count = ups[0].count();
    let b_count = ups[1].count();
    assert!(wait_until(Duration::from_secs(10), || ups[1].count() > b_count + 20));
    assert_eq!(ups[0].count(), a_count, "a removed peer got new requests");
    assert_eq!(
        peers(admin),
        [format!("127.0.0.3:{port}"), format!("127.0.0.4:{port}")]
    );
    // DNS stops answering: the pool keeps its last addresses, and the failure is counted and
    // logged once.
    dns.stop();
    assert!(
        wait_until(Duration::from_secs(30), || {
            admin_json(admin, "/upstreams")[0]["dns_failures"].as_u64() >= Some(2)
        }),
        "{}\n{}",
        admin_json(admin, "/upstreams"),
        gw.log()
    );
    let c_count = ups[2].count();
    assert!(wait_until(Duration::from_secs(10), || ups[2].count() > c_count + 20));
    let (total, failed) = load.stop();
    assert_eq!(
        peers(admin),
        [format!("127.0.0.3:{port}"), format!("127.0.0.4:{port}")]
    );
    assert!(total > 100, "{total}");
    assert_eq!(failed, 0, "of {total} GETs");
    let log = gw.log();
    assert_eq!(
        log.matches("keeping its last addresses").count(),
        1,
        "one line while the failure stays the same:\n{log}"
    );
}

#[test]
fn srv_records_give_targets_ports_and_weights() {
    let heavy = Upstream::start("heavy");
    let light = Upstream::start("light");
    let dns = Dnsmasq::start(
        &[
            ("heavy.test", &["127.0.0.1"]),
            ("light.test", &["127.0.0.1"]),
        ],
        &[
            &format!("_http._tcp.svc.test,heavy.test,{},0,3", heavy.addr.port()),
            &format!("_http._tcp.svc.test,light.test,{},0,1", light.addr.port()),
        ],
    );
    let gw = Gateway::start(&format!(
        "dns: {{servers: [\"{}\"]}}\nupstreams:\n  u: {{peers: [{{srv: _http._tcp.svc.test}}]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n",
        dns.server()
    ));
    for _ in 0..400 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    // Weighted round robin, 3 : 1.
    assert_eq!((heavy.count(), light.count()), (300, 100));
}

#[test]
fn a_dual_stack_name_gives_its_ipv4_and_ipv6_addresses() {
    let (port, listeners) = same_port(&["127.0.0.1", "::1"]);
    let ups: Vec<Upstream> = listeners
        .into_iter()
        .zip(["v4", "v6"])
        .map(|(l, name)| Upstream::on(l, name, move |_| Reply::ok(name)))
        .collect();
    let dns = Dnsmasq::start(&[("dual.test", &["127.0.0.1", "::1"])], &[]);
    let admin = closed_port().port();
    let gw = Gateway::start_with_env(
        &format!(
            "dns: {{servers: [\"{}\"]}}\nadmin: {{address: 127.0.0.1:{admin}, token_env: DNS_TOKEN}}\nupstreams:\n  u: {{peers: [\"dual.test:{port}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n",
            dns.server()
        ),
        &[("DNS_TOKEN", TOKEN)],
    );
    assert_eq!(
        peers(admin),
        [format!("127.0.0.1:{port}"), format!("[::1]:{port}")]
    );
    for _ in 0..10 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    assert_eq!((ups[0].count(), ups[1].count()), (5, 5));
}

#[test]
fn a_peer_that_stays_in_dns_keeps_its_health_state() {
    let ips = ["127.0.0.5", "127.0.0.6", "127.0.0.7"];
    let (port, listeners) = same_port(&ips);
    let ups: Vec<Upstream> = listeners
        .into_iter()
        .zip(["e", "f", "g"])
        .map(|(l, name)| Upstream::on(l, name, move |_| Reply::ok(name)))
        .collect();
    let dns = Dnsmasq::start(&[("health.test", &["127.0.0.5", "127.0.0.6"])], &[]);
    let admin = closed_port().port();
    // A peer needs 100 passing probes in a row (10 s) to come back.
    let gw = Gateway::start_with_env(
        &format!(
            "dns: {{servers: [\"{}\"]}}\nadmin: {{address: 127.0.0.1:{admin}, token_env: DNS_TOKEN}}\nupstreams:\n  u:\n    peers: [\"health.test:{port}\"]\n    resolve: {{min_interval: 200ms, max_interval: 1s}}\n    health_check: {{kind: http, path: /health, interval: 100ms, timeout: 50ms, unhealthy_after: 1, healthy_after: 100}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u}}\n",
            dns.server()
        ),
        &[("DNS_TOKEN", TOKEN)],
    );
    let healthy = |address: &str| {
        admin_json(admin, "/upstreams")[0]["peers"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["address"] == address).cloned())
            .map(|p| p["healthy"] == true)
    };
    let e = format!("127.0.0.5:{port}");
    // e fails a probe and leaves; its checks pass again at once, but it is not back for 10 s.
    ups[0].set_healthy(false);
    assert!(wait_until(Duration::from_secs(5), || healthy(&e) == Some(false)));
    ups[0].set_healthy(true);
    // g is added: the pool is rebuilt from the new answer, and e is still out (a new peer would
    // start healthy), g is in.
    dns.set_hosts(&[("health.test", &["127.0.0.5", "127.0.0.6", "127.0.0.7"])]);
    let g = format!("127.0.0.7:{port}");
    assert!(wait_until(Duration::from_secs(10), || healthy(&g).is_some()));
    assert_eq!(healthy(&e), Some(false));
    assert_eq!(healthy(&g), Some(true));
    let before = ups[0].count();
    for _ in 0..20 {
        assert_eq!(gw.get("/", &[]).status, 200);
    }
    assert_eq!(ups[0].count(), before, "the peer that was out got requests");
    assert!(ups[2].count() > 0);
}

#[test]
fn a_reload_while_dns_is_down_keeps_the_running_addresses() {
    let up = Upstream::start("a");
    let mut dns = Dnsmasq::start(&[("kept.test", &["127.0.0.1"])], &[]);
    let admin = closed_port().port();
    let server = dns.server();
    let body = |extra: &str| {
        format!(
            "dns: {{servers: [\"{server}\"]}}\nadmin: {{address: 127.0.0.1:{admin}, token_env: DNS_TOKEN}}\nupstreams:\n  u: {{peers: [\"kept.test:{}\"]}}\nroutes:\n  - {{name: r, match: {{}}, upstream: u{extra}}}\n",
            up.addr.port()
        )
    };
    let gw = Gateway::start_with_env(&body(""), &[("DNS_TOKEN", TOKEN)]);
    assert_eq!(gw.get("/", &[]).status, 200);
    dns.stop();
    // The file changes (the route adds a response header) while the name cannot be looked up:
    // the reload takes, with the addresses the pool has.
    gw.rewrite(&body(", response_headers: {set: {x-reloaded: \"1\"}}"));
    gw.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .get("/", &[])
            .header("x-reloaded")
            == Some("1")),
        "{}",
        gw.log()
    );
    assert_eq!(peers(admin), [up.addr.to_string()]);
    assert!(
        gw.log()
            .contains("keeping the 1 address(es) the running gateway has for it"),
        "{}",
        gw.log()
    );
}
