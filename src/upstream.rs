//! Upstream pools: peers, weights, the balancing policy, active health checks (Pingora's
//! `LoadBalancer` and `HealthCheck`s), passive protection (a peer that refuses a connection is
//! kept out for a cool-down) and per-peer in-flight counts, which also drive `least_conn`.

use crate::config::{Balance, Upstream};
use arc_swap::ArcSwap;
use discovery::DnsDiscovery;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Consistent, Random, RoundRobin,
};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Live counters of one peer, shared by every thread.
#[derive(Debug)]
pub struct PeerStats {
    pub address: SocketAddr,
    pub weight: usize,
    /// Requests currently using this peer.
    pub in_flight: AtomicUsize,
    /// Milliseconds since the pool's epoch until which the peer is kept out (passive health).
    cooldown_until_ms: AtomicU64,
    /// Taken out of the pool by an operator (admin API): no new requests, in-flight ones finish.
    pub drained: AtomicBool,
    /// Outlier detection: failures in a row, recent ejections, and when the last one began.
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    last_ejection_end_ms: AtomicU64,
    /// Active health checks' verdict, copied from the balancer after each round (for the
    /// one-peer pools that select without the balancer).
    healthy: AtomicBool,
}

impl PeerStats {
    pub(crate) fn new(address: SocketAddr, weight: usize) -> PeerStats {
        PeerStats {
            address,
            weight,
            in_flight: AtomicUsize::new(0),
            cooldown_until_ms: AtomicU64::new(0),
            drained: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            last_ejection_end_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        }
    }
}

/// The balancer's view of a peer: its address and weight, with its counters attached.
fn backend(stats: &Arc<PeerStats>) -> Backend {
    let mut b = Backend {
        addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(stats.address),
        weight: stats.weight,
        ext: http::Extensions::new(),
    };
    b.ext.insert(stats.clone());
    b
}

/// Decrements a peer's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<PeerStats>);

impl InFlight {
    /// The peer this guard counts against.
    pub fn peer(&self) -> &Arc<PeerStats> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Hash(LoadBalancer<Consistent>),
    LeastConn(LoadBalancer<LeastConn>),
}

macro_rules! with_lb {
    ($b:expr, $lb:ident => $e:expr) => {
        match $b {
            Balancer::RoundRobin($lb) => $e,
            Balancer::Random($lb) => $e,
            Balancer::Hash($lb) => $e,
            Balancer::LeastConn($lb) => $e,
        }
    };
}

/// One upstream pool, built from its configuration.
pub struct Pool {
    pub config: Upstream,
    balancer: Balancer,
    /// The current peers (they change when peer names resolve differently).
    peers: Arc<ArcSwap<Vec<Arc<PeerStats>>>>,
    /// Looks peer names up again, when the pool has any.
    discovery: Option<Arc<DnsDiscovery>>,
    /// Retries beside requests, over a window.
    budget: budget::Budget,
    /// Ejections by outlier detection so far.
    ejected: AtomicU64,
    /// Set while a lookup round runs; when the next is due (ms since the epoch).
    resolving: AtomicBool,
    next_resolve_ms: AtomicU64,
    epoch: Instant,
    /// Set while a health-check round runs, so rounds never overlap.
    checking: AtomicBool,
    /// Milliseconds since the epoch when the next health-check round is due.
    next_check_ms: AtomicU64,
    /// How many candidates a selection may look at.
    max_iterations: usize,
    /// The peer of a pool that has exactly one, written as an address: there is nothing to
    /// balance, so it is chosen without the balancer (whose selection hashes the peer twice
    /// and copies it per request).
    single: Option<Arc<PeerStats>>,
    /// The CA certificates trusted for this pool's TLS peers, when configured.
    ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    /// Keeps this pool's upstream connections apart from other pools'.
    group_key: u64,
    /// The certificate this pool's TLS peers are shown when they ask for one.
    client_cert: Option<Arc<pingora_core::utils::tls::CertKey>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.config.name)
            .finish()
    }
}

fn build_lb<S>(
    discovery: Box<dyn ServiceDiscovery + Send + Sync>,
    hc: Option<Box<dyn HealthCheck + Send + Sync>>,
) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let mut b = Backends::new(discovery);
    if let Some(hc) = hc {
        b.set_health_check(hc);
    }
    let lb = LoadBalancer::<S>::from_backends(b);
    // The first round answers at once (addresses, and names as the configuration resolved
    // them); the selector is built from it here.
    if let Some(Err(e)) = futures::FutureExt::now_or_never(lb.update()) {
        log::error!("building a load balancer failed: {e}");
    }
    lb
}

impl Pool {
    /// Build a pool; health starts as healthy for every peer until a check says otherwise.
    pub fn new(config: Upstream) -> Pool {
        let peers: Vec<Arc<PeerStats>> = config
            .peers
            .iter()
            .map(|p| Arc::new(PeerStats::new(p.address, p.weight)))
            .collect();
        let peers = Arc::new(ArcSwap::from_pointee(peers));
        let dns = config
            .discovery
            .clone()
            .map(|d| Arc::new(DnsDiscovery::new(&config.name, d, peers.clone())));
        // The names were resolved with the configuration: the next lookup after the shortest
        // wait.
        let first_lookup_ms = config
            .discovery
            .as_ref()
            .map_or(0, |d| d.min_interval.as_millis() as u64);
        let hc = health::health_check(&config);
        let source = || -> Box<dyn ServiceDiscovery + Send + Sync> {
            match &dns {
                Some(d) => Box::new(discovery::Shared(d.clone())),
                None => pingora_load_balancing::discovery::Static::new(
                    peers.load().iter().map(backend).collect(),
                ),
            }
        };
        let balancer = match &config.balance {
            Balance::RoundRobin => Balancer::RoundRobin(build_lb(source(), hc)),
            Balance::Random => Balancer::Random(build_lb(source(), hc)),
            Balance::ConsistentHash(_) => Balancer::Hash(build_lb(source(), hc)),
            Balance::LeastConn => Balancer::LeastConn(build_lb(source(), hc)),
        };
        let total_weight: usize = config.peers.iter().map(|p| p.weight).sum();
        let ca = ca_of(&config);
        let group_key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            config.name.hash(&mut h);
            format!("{:?}", config.tls).hash(&mut h);
            h.finish()
        };
        Pool {
            budget: budget::Budget::new(config.retry_budget.clone()),
            ejected: AtomicU64::new(0),
            client_cert: client_cert_of(&config),
            ca,
            group_key,
            max_iterations: (total_weight * 2).max(16) + 256,
            single: match (&config.discovery, peers.load().as_slice()) {
                (None, [only]) => Some(only.clone()),
                _ => None,
            },
            config,
            balancer,
            peers,
            discovery: dns,
            resolving: AtomicBool::new(false),
            next_resolve_ms: AtomicU64::new(first_lookup_ms),
            epoch: Instant::now(),
            checking: AtomicBool::new(false),
            next_check_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Choose a peer for `key`, skipping unhealthy peers, peers cooling down after a refused
    /// connection, and peers in `exclude` (already tried by this request).
    pub fn select(&self, key: &[u8], exclude: &[SocketAddr]) -> Option<(HttpPeer, InFlight)> {
        let now = std::cell::OnceCell::new();
        let accept = |stats: &PeerStats| {
            // The clock is only read for a peer that has been cooled down at some time.
            let until = stats.cooldown_until_ms.load(Ordering::Relaxed);
            (until == 0 || until <= *now.get_or_init(|| self.now_ms()))
                && !stats.drained.load(Ordering::Relaxed)
                && !exclude.contains(&stats.address)
        };
        let stats = match &self.single {
            Some(only) => {
                (only.healthy.load(Ordering::Relaxed) && accept(only)).then(|| only.clone())?
            }
            None => {
                let backend = with_lb!(&self.balancer, lb => lb.select_with(
                    key,
                    self.max_iterations,
                    |b: &Backend, healthy: bool| {
                        healthy
                            && b.ext
                                .get::<Arc<PeerStats>>()
                                .is_some_and(|s| accept(s))
                    },
                ))?;
                backend.ext.get::<Arc<PeerStats>>()?.clone()
            }
        };
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut peer = match &self.config.tls {
            Some(t) => HttpPeer::new(stats.address, true, t.sni.clone()),
            None => HttpPeer::new(stats.address, false, String::new()),
        };
        apply_peer_options(&self.config, &self.ca, &mut peer.options);
        peer.client_cert_key = self.client_cert.clone();
        // Pooled connections belong to this pool: Pingora's reuse key does not cover the CA a
        // TLS connection was verified against, so two pools must never share connections.
        peer.group_key = self.group_key;
        let o = &mut peer.options;
        o.connection_timeout = Some(self.config.connect_timeout);
        o.total_connection_timeout = Some(self.config.connect_timeout);
        o.read_timeout = Some(self.config.read_timeout);
        o.write_timeout = Some(self.config.write_timeout);
        o.idle_timeout = Some(self.config.idle_timeout);
        Some((peer, InFlight(stats)))
    }

    /// What a consistent-hash pool hashes on; `None` for the other policies.
    pub fn hash_key(&self) -> Option<&crate::config::HashKey> {
        match &self.config.balance {
            Balance::ConsistentHash(k) => Some(k),
            _ => None,
        }
    }

    /// How many times a failed attempt is retried on another peer.
    pub fn retries(&self) -> usize {
        self.config.retries
    }

    /// Count a request's first attempt against the retry budget.
    pub fn note_request(&self) {
        self.budget.request();
    }

    /// Whether the retry budget allows one more retry now (counted when it does).
    pub fn try_retry(&self) -> bool {
        self.budget.try_retry()
    }

    /// Whether a peer other than those in `tried` could take a retry now.
    pub fn has_other_peer(&self, tried: &[SocketAddr]) -> bool {
        self.peers
            .load()
            .iter()
            .any(|p| !tried.contains(&p.address) && self.is_available(&p.address))
    }

    /// Keep `address` out of selection for the passive cool-down (after a refused connection).
    pub fn cool_down(&self, address: &SocketAddr) {
        if self.config.passive_cooldown.is_zero() {
            return;
        }
        if let Some(stats) = self.peers.load().iter().find(|p| p.address == *address) {
            let until = self.now_ms() + self.config.passive_cooldown.as_millis() as u64;
            stats.cooldown_until_ms.store(until, Ordering::Relaxed);
            log::warn!(
                "upstream {}: peer {} refused a connection; kept out for {:?}",
                self.config.name,
                address,
                self.config.passive_cooldown
            );
        }
    }

    /// Outlier detection: note how an attempt on `peer` ended (`failed`: a 5xx answer, a broken
    /// connection, a timeout or a refused connection). A peer that fails the configured number
    /// of times in a row is ejected, unless too much of the pool is out already; returns whether
    /// it was.
    pub fn observe(&self, peer: &PeerStats, failed: bool) -> bool {
        let Some(od) = &self.config.outlier_detection else {
            return false;
        };
        if !failed {
            peer.consecutive_failures.store(0, Ordering::Relaxed);
            return false;
        }
        let n = peer.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < od.consecutive_failures {
            return false;
        }
        let now = self.now_ms();
        let peers = self.peers.load();
        let out = peers
            .iter()
            .filter(|p| p.cooldown_until_ms.load(Ordering::Relaxed) > now)
            .count();
        let allowed = (peers.len() * od.max_ejection_percent as usize / 100).max(1);
        if peer.cooldown_until_ms.load(Ordering::Relaxed) > now
            || od.max_ejection_percent == 0
            || out >= allowed
        {
            return false;
        }
        // The back-off grows with ejections that follow each other; a peer that stayed in for
        // twice the longest ejection since it came back starts again from the base.
        let last_end = peer.last_ejection_end_ms.load(Ordering::Relaxed);
        let max_ms = od.max_ejection.as_millis() as u64;
        let times = if last_end != 0 && now.saturating_sub(last_end) <= max_ms * 2 {
            peer.ejections.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            peer.ejections.store(1, Ordering::Relaxed);
            1
        };
        let ms = (od.base_ejection.as_millis() as u64 * u64::from(times)).min(max_ms);
        peer.cooldown_until_ms.store(now + ms, Ordering::Relaxed);
        peer.last_ejection_end_ms
            .store((now + ms).max(1), Ordering::Relaxed);
        peer.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejected.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "upstream {}: peer {} failed {n} times in a row; ejected for {ms} ms",
            self.config.name,
            peer.address
        );
        true
    }

    /// Continue the counters of `previous`, the pool of the same name this one replaces on a
    /// reload: what Prometheus scrapes as counters never goes back.
    pub fn continue_counters(&self, previous: &Pool) {
        self.ejected
            .fetch_add(previous.ejections(), Ordering::Relaxed);
        if let (Some(d), Some(n)) = (&self.discovery, previous.dns_failures()) {
            d.failures.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Peers ejected by outlier detection so far.
    pub fn ejections(&self) -> u64 {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Take a peer out of the pool (`true`) or put it back; false when the pool has no such
    /// peer. In-flight requests to it finish.
    pub fn set_drained(&self, address: &SocketAddr, drained: bool) -> bool {
        match self.peers.load().iter().find(|p| p.address == *address) {
            Some(p) => {
                p.drained.store(drained, Ordering::Relaxed);
                log::info!(
                    "upstream {}: peer {address} {} by the admin API",
                    self.config.name,
                    if drained {
                        "drained"
                    } else {
                        "back in the pool"
                    }
                );
                true
            }
            None => false,
        }
    }

    /// Seconds the peer stays out after a refused connection (0: not cooling down).
    pub fn cooldown_left(&self, address: &SocketAddr) -> f64 {
        let now = self.now_ms();
        self.peers
            .load()
            .iter()
            .find(|p| p.address == *address)
            .map_or(0.0, |p| {
                p.cooldown_until_ms
                    .load(Ordering::Relaxed)
                    .saturating_sub(now) as f64
                    / 1000.0
            })
    }

    /// The peers with their live counters.
    pub fn peers(&self) -> Arc<Vec<Arc<PeerStats>>> {
        self.peers.load_full()
    }

    /// Look the pool's peer names up again; the selector is rebuilt when the peers changed.
    async fn refresh(&self) {
        if let Err(e) = with_lb!(&self.balancer, lb => lb.update().await) {
            log::warn!(
                "upstream {}: updating its peers failed: {e}",
                self.config.name
            );
        }
    }

    /// Whether `address` can be chosen now: healthy and not cooling down.
    pub fn is_available(&self, address: &SocketAddr) -> bool {
        let now = self.now_ms();
        self.is_healthy(address)
            && self
                .peers
                .load()
                .iter()
                .find(|p| p.address == *address)
                .is_some_and(|p| {
                    p.cooldown_until_ms.load(Ordering::Relaxed) <= now
                        && !p.drained.load(Ordering::Relaxed)
                })
    }

    /// Whether active health checks currently consider `address` healthy.
    pub fn is_healthy(&self, address: &SocketAddr) -> bool {
        with_lb!(&self.balancer, lb => {
            let all = lb.backends().get_backend();
            all.iter()
                .find(|b| b.addr.as_inet() == Some(address))
                .is_some_and(|b| lb.backends().ready(b))
        })
    }

    async fn run_health_check(&self) {
        with_lb!(&self.balancer, lb => lb.backends().run_health_check(true).await);
        if let Some(only) = &self.single {
            only.healthy
                .store(self.is_healthy(&only.address), Ordering::Relaxed);
        }
    }
}

/// Least-connections selection: the peer with the fewest in-flight requests relative to its
/// weight. Small pools are scanned exactly; larger ones use the power of two random choices.
pub struct LeastConn {
    backends: Box<[(Backend, Arc<PeerStats>)]>,
}

const EXACT_SCAN_LIMIT: usize = 8;

impl BackendSelection for LeastConn {
    type Iter = LeastConnIter;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        let backends = backends
            .iter()
            .map(|b| {
                let stats = b.ext.get::<Arc<PeerStats>>().cloned().unwrap_or_else(|| {
                    let address = b.addr.as_inet().copied();
                    Arc::new(PeerStats::new(
                        address.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
                        b.weight,
                    ))
                });
                (b.clone(), stats)
            })
            .collect();
        LeastConn { backends }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> LeastConnIter {
        let n = self.backends.len();
        let load = |i: usize| {
            let (_, s) = &self.backends[i];
            (s.in_flight.load(Ordering::Relaxed) as u128 * 1_000_000) / s.weight.max(1) as u128
        };
        let start = if n == 0 { 0 } else { fastrand::usize(..n) };
        let first = if n == 0 {
            0
        } else if n <= EXACT_SCAN_LIMIT {
            // Start the scan at a random peer so ties spread evenly.
            (0..n)
                .map(|k| (start + k) % n)
                .min_by_key(|&i| load(i))
                .unwrap_or(start)
        } else {
            let a = start;
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            if load(a) <= load(b) {
                a
            } else {
                b
            }
        };
        LeastConnIter {
            sel: self.clone(),
            first,
            start,
            step: 0,
        }
    }
}

/// Yields the least-loaded peer first, then every other peer once.
pub struct LeastConnIter {
    sel: Arc<LeastConn>,
    first: usize,
    start: usize,
    step: usize,
}

impl BackendIter for LeastConnIter {
    fn next(&mut self) -> Option<&Backend> {
        let n = self.sel.backends.len();
        if n == 0 || self.step > n {
            return None;
        }
        let i = if self.step == 0 {
            self.first
        } else {
            (self.start + self.step - 1) % n
        };
        self.step += 1;
        Some(&self.sel.backends[i].0)
    }
}

mod budget;
mod discovery;
mod health;
mod options;

pub(crate) use options::{apply_peer_options, ca_of, client_cert_of};

pub use health::HealthChecker;

#[cfg(test)]
mod tests;
