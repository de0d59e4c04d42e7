//! Active health checks (Pingora's TCP and HTTP checks, with the pool's TLS and protocol
//! settings), the log line when a peer's health changes, and the background service that runs
//! each pool's checks at its interval and looks its peer names up again when they expire.

use super::{apply_peer_options, ca_of, Pool};
use crate::config::{HealthCheckKind, Upstream};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_load_balancing::health_check::{
    HealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck,
};
use pingora_load_balancing::Backend;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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

pub(super) fn health_check(up: &Upstream) -> Option<Box<dyn HealthCheck + Send + Sync>> {
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
            hc.peer_template.client_cert_key = super::client_cert_of(up);
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
                if let Some(hc) = &pool.config.health_check {
                    wait = wait.min(check_when_due(pool, hc.interval));
                }
                if pool.discovery.is_some() {
                    wait = wait.min(resolve_when_due(pool));
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

/// Start the pool's health-check round when it is due; how long until the next one.
fn check_when_due(pool: &Arc<Pool>, interval: Duration) -> Duration {
    let now = pool.now_ms();
    let due = pool.next_check_ms.load(Ordering::Relaxed);
    if now < due {
        return Duration::from_millis(due - now);
    }
    if !pool.checking.swap(true, Ordering::AcqRel) {
        pool.next_check_ms
            .store(now + interval.as_millis() as u64, Ordering::Relaxed);
        let p = pool.clone();
        tokio::spawn(async move {
            p.run_health_check().await;
            p.checking.store(false, Ordering::Release);
        });
    }
    interval
}

/// Start the lookup of the pool's peer names when it is due; how long until the next one.
fn resolve_when_due(pool: &Arc<Pool>) -> Duration {
    let now = pool.now_ms();
    let due = pool.next_resolve_ms.load(Ordering::Relaxed);
    if now < due {
        return Duration::from_millis(due - now);
    }
    if !pool.resolving.swap(true, Ordering::AcqRel) {
        let p = pool.clone();
        tokio::spawn(async move {
            p.refresh().await;
            let next = p
                .discovery
                .as_ref()
                .map_or(Duration::from_secs(60), |d| d.next_in());
            p.next_resolve_ms
                .store(p.now_ms() + next.as_millis() as u64, Ordering::Relaxed);
            p.resolving.store(false, Ordering::Release);
        });
    }
    // While the round runs, look again soon.
    Duration::from_millis(50)
}
