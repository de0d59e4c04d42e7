//! Unit tests of [`super`]: least-connections selection and a pool's choice of peers.

use super::*;
use crate::config::{Balance, Peer, Protocol, Upstream};
use std::time::Duration;

fn pool(balance: Balance, peers: &[(u16, usize)]) -> Pool {
    Pool::new(Upstream {
        name: "p".into(),
        peers: peers
            .iter()
            .map(|(port, weight)| Peer {
                address: SocketAddr::from(([127, 0, 0, 1], *port)),
                weight: *weight,
            })
            .collect(),
        balance,
        health_check: None,
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        retries: 1,
        retry_on: Default::default(),
        retry_budget: Default::default(),
        outlier_detection: None,
        passive_cooldown: Duration::from_secs(10),
        tls: None,
        protocol: Protocol::Http1,
        discovery: None,
    })
}

fn port(choice: &Option<(HttpPeer, InFlight)>) -> u16 {
    choice.as_ref().map_or(0, |(_, g)| g.peer().address.port())
}

#[test]
fn least_conn_picks_the_least_loaded_peer() {
    let p = pool(Balance::LeastConn, &[(1, 1), (2, 1), (3, 1)]);
    // Hold two requests on each of two peers: the third is chosen while they run.
    let mut held = Vec::new();
    for _ in 0..4 {
        let choice = p.select(b"", &[]);
        assert_ne!(port(&choice), 0);
        held.push(choice);
    }
    let loads: Vec<usize> = p
        .peers()
        .iter()
        .map(|s| s.in_flight.load(Ordering::Relaxed))
        .collect();
    assert_eq!(loads.iter().sum::<usize>(), 4);
    assert!(loads.iter().all(|n| *n <= 2), "{loads:?}");
    // The fifth goes to one of the two peers holding one request, never to the one with two.
    let least: Vec<u16> = p
        .peers()
        .iter()
        .filter(|s| s.in_flight.load(Ordering::Relaxed) == 1)
        .map(|s| s.address.port())
        .collect();
    assert_eq!(least.len(), 2, "{loads:?}");
    for _ in 0..20 {
        let fifth = p.select(b"", &[]);
        assert!(least.contains(&port(&fifth)), "{loads:?}");
    }
    // Released slots count no more.
    drop(held);
    assert!(p
        .peers()
        .iter()
        .all(|s| s.in_flight.load(Ordering::Relaxed) == 0));
}

#[test]
fn least_conn_weighs_load_by_weight() {
    // With weight 3 against 1, the heavy peer takes three requests for the light one's one.
    let p = pool(Balance::LeastConn, &[(1, 3), (2, 1)]);
    let held: Vec<_> = (0..8).map(|_| p.select(b"", &[])).collect();
    let on = |port: u16| held.iter().filter(|c| self::port(c) == port).count();
    assert_eq!((on(1), on(2)), (6, 2));
}

#[test]
fn least_conn_spreads_ties_and_scans_large_pools_by_two_choices() {
    let p = pool(Balance::LeastConn, &[(1, 1), (2, 1), (3, 1), (4, 1)]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        seen.insert(port(&p.select(b"", &[])));
    }
    assert_eq!(seen.len(), 4, "ties start at a random peer: {seen:?}");
    let peers: Vec<(u16, usize)> = (1..=20).map(|i| (i, 1)).collect();
    let big = pool(Balance::LeastConn, &peers);
    let held: Vec<_> = (0..40).map(|_| big.select(b"", &[])).collect();
    let max = big
        .peers()
        .iter()
        .map(|s| s.in_flight.load(Ordering::Relaxed))
        .max();
    // Two random choices keep the most loaded peer close to the average (2).
    assert!(max.is_some_and(|m| m <= 5), "{max:?}");
    drop(held);
}

#[test]
fn the_iterator_offers_every_peer_once_after_the_first() {
    let p = pool(Balance::LeastConn, &[(1, 1), (2, 1), (3, 1)]);
    // Excluding two peers still finds the third.
    let tried = [
        SocketAddr::from(([127, 0, 0, 1], 1)),
        SocketAddr::from(([127, 0, 0, 1], 2)),
    ];
    assert_eq!(port(&p.select(b"", &tried)), 3);
    let all: Vec<SocketAddr> = (1..=3)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], i)))
        .collect();
    assert!(p.select(b"", &all).is_none());
}

#[test]
fn a_refused_peer_cools_down() {
    let p = pool(Balance::RoundRobin, &[(1, 1), (2, 1)]);
    let one = SocketAddr::from(([127, 0, 0, 1], 1));
    assert!(p.is_available(&one));
    p.cool_down(&one);
    assert!(!p.is_available(&one));
    assert!(p.is_healthy(&one));
    for _ in 0..10 {
        assert_eq!(port(&p.select(b"", &[])), 2);
    }
}

#[test]
fn consistent_hashing_keeps_a_key_on_its_peer() {
    let p = pool(
        Balance::ConsistentHash(crate::config::HashKey::Path),
        &[(1, 1), (2, 1), (3, 1)],
    );
    for key in [&b"/a"[..], b"/b", b"/c/d"] {
        let first = port(&p.select(key, &[]));
        for _ in 0..5 {
            assert_eq!(port(&p.select(key, &[])), first);
        }
    }
}
