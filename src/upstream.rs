//! Upstream pools: peers, weights, the balancing policy, active health checks (Pingora's
//! `LoadBalancer` and `HealthCheck`s), passive protection (a peer that refuses a connection is
//! kept out for a cool-down) and per-peer in-flight counts, which also drive `least_conn`.

use crate::config::{Balance, HealthCheckKind, Protocol, Upstream};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::health_check::{
    HealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck,
};
use pingora_load_balancing::selection::{
    BackendIter, BackendSelection, Consistent, Random, RoundRobin,
};
use pingora_load_balancing::{discovery, Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    peers: Vec<Arc<PeerStats>>,
    epoch: Instant,
    /// Set while a health-check round runs, so rounds never overlap.
    checking: AtomicBool,
    /// Milliseconds since the epoch when the next health-check round is due.
    next_check_ms: AtomicU64,
    /// How many candidates a selection may look at.
    max_iterations: usize,
    /// The CA certificates trusted for this pool's TLS peers, when configured.
    ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    /// Keeps this pool's upstream connections apart from other pools'.
    group_key: u64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.config.name)
            .finish()
    }
}

fn build_lb<S>(
    backends: BTreeSet<Backend>,
    hc: Option<Box<dyn HealthCheck + Send + Sync>>,
) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let mut b = Backends::new(discovery::Static::new(backends));
    if let Some(hc) = hc {
        b.set_health_check(hc);
    }
    let lb = LoadBalancer::<S>::from_backends(b);
    // Static discovery answers at once; the selector is built from it here.
    if let Some(Err(e)) = futures::FutureExt::now_or_never(lb.update()) {
        log::error!("building a load balancer failed: {e}");
    }
    lb
}

struct LogHealthChange {
    pool: String,
}

#[async_trait]
impl HealthObserve for LogHealthChange {
    async fn observe(&self, target: &Backend, healthy: bool) {
        if healthy {
            log::info!(
                "upstream {}: peer {} is healthy again",
                self.pool,
                target.addr
            );
        } else {
            log::warn!(
                "upstream {}: peer {} failed its health checks and leaves the pool",
                self.pool,
                target.addr
            );
        }
    }
}

fn ca_of(up: &Upstream) -> Option<Arc<pingora_core::protocols::tls::CaType>> {
    let ders = up.tls.as_ref()?.ca.as_ref()?;
    let certs: Vec<pingora_core::utils::tls::WrappedX509> = ders
        .iter()
        .map(|d| {
            pingora_core::utils::tls::WrappedX509::new(
                d.clone(),
                pingora_core::utils::tls::parse_x509,
            )
        })
        .collect();
    Some(Arc::from(certs.into_boxed_slice()))
}

/// Concurrent requests one HTTP/2 connection to a peer carries before another is opened.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// Set what a pool's peers speak on a peer's options: the HTTP version(s) and, over TLS,
/// verification against the pool's CA (the same for requests and health checks).
fn apply_peer_options(
    up: &Upstream,
    ca: &Option<Arc<pingora_core::protocols::tls::CaType>>,
    o: &mut pingora_core::upstreams::peer::PeerOptions,
) {
    apply_protocol(up.protocol, o);
    if let Some(t) = &up.tls {
        o.verify_cert = t.verify;
        o.verify_hostname = t.verify;
        o.ca = ca.clone();
    }
}

/// Set the HTTP version(s) a pool speaks on a peer's options.
fn apply_protocol(protocol: Protocol, o: &mut pingora_core::upstreams::peer::PeerOptions) {
    match protocol {
        Protocol::Http1 => o.set_http_version(1, 1),
        Protocol::H2 => o.set_http_version(2, 2),
        Protocol::Auto => o.set_http_version(2, 1),
    }
    if protocol != Protocol::Http1 {
        o.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
}

fn health_check(up: &Upstream) -> Option<Box<dyn HealthCheck + Send + Sync>> {
    let cfg = up.health_check.as_ref()?;
    let tls = up.tls.as_ref();
    let ca = ca_of(up);
    let observer = Box::new(LogHealthChange {
        pool: up.name.clone(),
    });
    Some(match &cfg.kind {
        HealthCheckKind::Tcp => {
            let mut hc = match tls {
                Some(t) => TcpHealthCheck::new_tls(&t.sni),
                None => TcpHealthCheck::new(),
            };
            apply_peer_options(up, &ca, &mut hc.peer_template.options);
            hc.consecutive_failure = cfg.unhealthy_after;
            hc.consecutive_success = cfg.healthy_after;
            hc.peer_template.options.connection_timeout = Some(cfg.timeout);
            hc.peer_template.options.total_connection_timeout = Some(cfg.timeout);
            hc.health_changed_callback = Some(observer);
            hc
        }
        HealthCheckKind::Http { path, host } => {
            let mut hc = HttpHealthCheck::new(host, tls.is_some());
            if let Some(t) = tls {
                hc.peer_template.sni = t.sni.clone();
            }
            apply_peer_options(up, &ca, &mut hc.peer_template.options);
            hc.consecutive_failure = cfg.unhealthy_after;
            hc.consecutive_success = cfg.healthy_after;
            hc.peer_template.options.connection_timeout = Some(cfg.timeout);
            hc.peer_template.options.total_connection_timeout = Some(cfg.timeout);
            hc.peer_template.options.read_timeout = Some(cfg.timeout);
            hc.peer_template.options.write_timeout = Some(cfg.timeout);
            match pingora_http::RequestHeader::build("GET", path.as_bytes(), None) {
                Ok(mut req) => {
                    if let Err(e) = req.insert_header(http::header::HOST, host.as_str()) {
                        log::error!("upstream {}: health check host: {e}", up.name);
                    }
                    let _ = req.insert_header(http::header::USER_AGENT, "tollgate-health-check");
                    hc.req = req;
                }
                Err(e) => log::error!("upstream {}: health check path: {e}", up.name),
            }
            hc.validator = Some(Box::new(|resp: &pingora_http::ResponseHeader| {
                if resp.status.is_success() {
                    Ok(())
                } else {
                    pingora_error::Error::e_explain(
                        pingora_error::ErrorType::CustomCode(
                            "unhealthy status",
                            resp.status.as_u16(),
                        ),
                        format!("health check answered {}", resp.status),
                    )
                }
            }));
            hc.health_changed_callback = Some(observer);
            Box::new(hc)
        }
    })
}

impl Pool {
    /// Build a pool; health starts as healthy for every peer until a check says otherwise.
    pub fn new(config: Upstream) -> Pool {
        let peers: Vec<Arc<PeerStats>> = config
            .peers
            .iter()
            .map(|p| {
                Arc::new(PeerStats {
                    address: p.address,
                    weight: p.weight,
                    in_flight: AtomicUsize::new(0),
                    cooldown_until_ms: AtomicU64::new(0),
                    drained: AtomicBool::new(false),
                })
            })
            .collect();
        let backends: BTreeSet<Backend> = peers
            .iter()
            .map(|s| {
                let mut b = Backend {
                    addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(s.address),
                    weight: s.weight,
                    ext: http::Extensions::new(),
                };
                b.ext.insert(s.clone());
                b
            })
            .collect();
        let hc = health_check(&config);
        let balancer = match &config.balance {
            Balance::RoundRobin => Balancer::RoundRobin(build_lb(backends, hc)),
            Balance::Random => Balancer::Random(build_lb(backends, hc)),
            Balance::ConsistentHash(_) => Balancer::Hash(build_lb(backends, hc)),
            Balance::LeastConn => Balancer::LeastConn(build_lb(backends, hc)),
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
            ca,
            group_key,
            max_iterations: (total_weight * 2).max(16) + 256,
            config,
            balancer,
            peers,
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
        let now = self.now_ms();
        let accept = |b: &Backend, healthy: bool| {
            if !healthy {
                return false;
            }
            let Some(stats) = b.ext.get::<Arc<PeerStats>>() else {
                return false;
            };
            stats.cooldown_until_ms.load(Ordering::Relaxed) <= now
                && !stats.drained.load(Ordering::Relaxed)
                && !exclude.contains(&stats.address)
        };
        let backend =
            with_lb!(&self.balancer, lb => lb.select_with(key, self.max_iterations, accept))?;
        let stats = backend.ext.get::<Arc<PeerStats>>()?.clone();
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut peer = match &self.config.tls {
            Some(t) => HttpPeer::new(stats.address, true, t.sni.clone()),
            None => HttpPeer::new(stats.address, false, String::new()),
        };
        apply_peer_options(&self.config, &self.ca, &mut peer.options);
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

    /// How many times a failed connection is retried on another peer.
    pub fn retries(&self) -> usize {
        self.config.retries
    }

    /// Keep `address` out of selection for the passive cool-down (after a refused connection).
    pub fn cool_down(&self, address: &SocketAddr) {
        if self.config.passive_cooldown.is_zero() {
            return;
        }
        if let Some(stats) = self.peers.iter().find(|p| p.address == *address) {
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

    /// Take a peer out of the pool (`true`) or put it back; false when the pool has no such
    /// peer. In-flight requests to it finish.
    pub fn set_drained(&self, address: &SocketAddr, drained: bool) -> bool {
        match self.peers.iter().find(|p| p.address == *address) {
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
    pub fn peers(&self) -> &[Arc<PeerStats>] {
        &self.peers
    }

    /// Whether `address` can be chosen now: healthy and not cooling down.
    pub fn is_available(&self, address: &SocketAddr) -> bool {
        let now = self.now_ms();
        self.is_healthy(address)
            && self
                .peers
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
        with_lb!(&self.balancer, lb => lb.backends().run_health_check(true).await)
    }
}

/// Runs the active health checks of the pools it is given, each at its configured interval.
/// A reload hands it the new snapshot's pools ([`HealthChecker::set_pools`]); an unchanged
/// pool is the same `Pool` in both, so its health state and schedule carry over.
#[derive(Clone)]
pub struct HealthChecker {
    pools: Arc<arc_swap::ArcSwap<Vec<Arc<Pool>>>>,
}

impl HealthChecker {
    /// Check `pools`.
    pub fn new(pools: Vec<Arc<Pool>>) -> Self {
        HealthChecker {
            pools: Arc::new(arc_swap::ArcSwap::from_pointee(pools)),
        }
    }

    /// Check these pools from now on.
    pub fn set_pools(&self, pools: Vec<Arc<Pool>>) {
        self.pools.store(Arc::new(pools));
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let pools = self.pools.load_full();
            let mut wait = Duration::from_millis(500);
            for pool in pools.iter() {
                let Some(hc) = &pool.config.health_check else {
                    continue;
                };
                let now = pool.now_ms();
                let due = pool.next_check_ms.load(Ordering::Relaxed);
                if now >= due {
                    if pool.checking.swap(true, Ordering::AcqRel) {
                        continue;
                    }
                    pool.next_check_ms
                        .store(now + hc.interval.as_millis() as u64, Ordering::Relaxed);
                    let p = pool.clone();
                    tokio::spawn(async move {
                        p.run_health_check().await;
                        p.checking.store(false, Ordering::Release);
                    });
                    wait = wait.min(hc.interval);
                } else {
                    wait = wait.min(Duration::from_millis(due - now));
                }
            }
            drop(pools);
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
                _ = shutdown.changed() => return,
            }
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
                    Arc::new(PeerStats {
                        address: b
                            .addr
                            .as_inet()
                            .copied()
                            .unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
                        weight: b.weight,
                        in_flight: AtomicUsize::new(0),
                        cooldown_until_ms: AtomicU64::new(0),
                        drained: AtomicBool::new(false),
                    })
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

#[cfg(test)]
mod tests;
