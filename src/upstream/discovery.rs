//! A pool's peers from DNS, through Pingora's `ServiceDiscovery`: the addresses written in the
//! file, and every address of each peer name (A/AAAA, or SRV targets), looked up again when
//! their records expire (within the pool's `resolve` bounds).
//!
//! Peers that stay keep their counters (in flight, cool-down, drain) and Pingora keeps their
//! health; new ones start as every peer does (healthy until checks say otherwise); removed
//! ones get no new requests while their requests in flight finish. A failed lookup keeps the
//! name's last good addresses (never an empty pool because DNS failed), is counted, and is
//! logged once per change of what went wrong.

use super::PeerStats;
use crate::config::{Discovery, Peer};
use crate::dns::{Resolved, Resolver};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one name gave last, and what went wrong last (for logging changes only).
#[derive(Default)]
struct NameState {
    good: Vec<(SocketAddr, usize)>,
    failing: Option<String>,
}

/// The peers of one pool, from its addresses and names.
pub(super) struct DnsDiscovery {
    pool: String,
    config: Discovery,
    resolver: Mutex<Option<Resolver>>,
    names: Mutex<Vec<NameState>>,
    /// The pool's current peers, shared with the pool.
    pub(super) current: Arc<ArcSwap<Vec<Arc<PeerStats>>>>,
    /// The first round answers with the addresses resolved with the configuration.
    first: AtomicBool,
    /// Milliseconds until the next lookup is due (the records' TTL within the bounds).
    next_in_ms: AtomicU64,
    /// Lookups that failed.
    pub(super) failures: AtomicU64,
}

impl DnsDiscovery {
    /// The discovery of pool `pool`, starting from what its names resolved to with the
    /// configuration.
    pub(super) fn new(
        pool: &str,
        config: Discovery,
        current: Arc<ArcSwap<Vec<Arc<PeerStats>>>>,
    ) -> DnsDiscovery {
        let names = config
            .names
            .iter()
            .map(|n| NameState {
                good: n.resolved.iter().map(|p| (p.address, p.weight)).collect(),
                failing: None,
            })
            .collect();
        let min = config.min_interval.as_millis() as u64;
        DnsDiscovery {
            pool: pool.to_string(),
            config,
            resolver: Mutex::new(None),
            names: Mutex::new(names),
            current,
            first: AtomicBool::new(true),
            next_in_ms: AtomicU64::new(min),
            failures: AtomicU64::new(0),
        }
    }

    /// Each name (as printed) with its last good addresses and their weights.
    pub(super) fn known(&self) -> Vec<(String, Resolved)> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        self.config
            .names
            .iter()
            .zip(names.iter())
            .map(|(n, state)| {
                let peers = state.good.iter().map(|(a, w)| (*a, Some(*w))).collect();
                (n.name.to_string(), peers)
            })
            .collect()
    }

    /// How long until the next lookup.
    pub(super) fn next_in(&self) -> Duration {
        Duration::from_millis(self.next_in_ms.load(Ordering::Relaxed))
    }

    fn resolver(&self) -> Result<Resolver, String> {
        let mut r = self.resolver.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = &*r {
            return Ok(r.clone());
        }
        let made = Resolver::new(&self.config.servers)?;
        *r = Some(made.clone());
        Ok(made)
    }

    /// Look every name up; returns the peers (address, weight) and how long the answers last.
    async fn lookup(&self) -> (Vec<(SocketAddr, usize)>, Duration) {
        let mut valid = self.config.max_interval;
        let mut answers = Vec::with_capacity(self.config.names.len());
        match self.resolver() {
            Ok(resolver) => {
                for n in &self.config.names {
                    answers.push(resolver.resolve(&n.name).await);
                }
            }
            Err(e) => answers.extend(self.config.names.iter().map(|_| Err(e.clone()))),
        }
        let mut states = self.names.lock().unwrap_or_else(|e| e.into_inner());
        let mut peers = fixed(&self.config.fixed);
        for ((named, state), answer) in self.config.names.iter().zip(states.iter_mut()).zip(answers)
        {
            match answer {
                Ok(a) => {
                    valid = valid.min(a.valid_for);
                    let good: Vec<(SocketAddr, usize)> = a
                        .peers
                        .into_iter()
                        .map(|(addr, own)| (addr, own.unwrap_or(named.weight)))
                        .collect();
                    if state.failing.take().is_some() || state.good != good {
                        log::info!(
                            "upstream {}: {} resolves to {}",
                            self.pool,
                            named.name,
                            list(&good)
                        );
                    }
                    state.good = good;
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    valid = self.config.min_interval;
                    if state.failing.as_deref() != Some(e.as_str()) {
                        log::warn!(
                            "upstream {}: {e}; keeping its last addresses ({})",
                            self.pool,
                            list(&state.good)
                        );
                        state.failing = Some(e);
                    }
                }
            }
            for &(addr, weight) in &state.good {
                if !peers.iter().any(|(a, _)| *a == addr) {
                    peers.push((addr, weight));
                }
            }
        }
        (peers, valid)
    }
}

fn fixed(peers: &[Peer]) -> Vec<(SocketAddr, usize)> {
    peers.iter().map(|p| (p.address, p.weight)).collect()
}

fn list(peers: &[(SocketAddr, usize)]) -> String {
    if peers.is_empty() {
        return "none".into();
    }
    peers
        .iter()
        .map(|(a, _)| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let peers: Vec<(SocketAddr, usize)> = if self.first.swap(false, Ordering::AcqRel) {
            // The names as they resolved with the configuration (no lookup: this round runs
            // while the pool is built).
            let states = self.names.lock().unwrap_or_else(|e| e.into_inner());
            let mut peers = fixed(&self.config.fixed);
            for &(addr, weight) in states.iter().flat_map(|s| &s.good) {
                if !peers.iter().any(|(a, _)| *a == addr) {
                    peers.push((addr, weight));
                }
            }
            peers
        } else {
            let (peers, valid) = self.lookup().await;
            let next = valid.clamp(self.config.min_interval, self.config.max_interval);
            self.next_in_ms
                .store(next.as_millis() as u64, Ordering::Relaxed);
            peers
        };
        let old = self.current.load_full();
        let stats: Vec<Arc<PeerStats>> = peers
            .iter()
            .map(|&(address, weight)| {
                old.iter()
                    .find(|s| s.address == address && s.weight == weight)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(PeerStats::new(address, weight)))
            })
            .collect();
        let backends = stats.iter().map(super::backend).collect();
        self.current.store(Arc::new(stats));
        Ok((backends, HashMap::new()))
    }
}

/// Delegates to a shared [`DnsDiscovery`] (Pingora owns its discovery as a `Box`).
pub(super) struct Shared(pub Arc<DnsDiscovery>);

#[async_trait]
impl ServiceDiscovery for Shared {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        self.0.discover().await
    }
}

impl super::Pool {
    /// Each of the pool's peer names (as printed) with its last good addresses and weights.
    pub fn known_names(&self) -> Vec<(String, Resolved)> {
        self.discovery.as_ref().map_or_else(Vec::new, |d| d.known())
    }

    /// Lookups of this pool's peer names that failed.
    pub fn dns_failures(&self) -> Option<u64> {
        self.discovery
            .as_ref()
            .map(|d| d.failures.load(Ordering::Relaxed))
    }
}
