//! Hot reload: re-read the configuration file and swap routes, upstreams, consumers and
//! policies in one atomic step. A request keeps the snapshot it started with, so none sees a
//! mix of old and new. Health state (of unchanged pools), limit counters and the cache carry
//! over, and listener certificates are loaded again. Settings that need new sockets or a new
//! process (listeners, the admin listener, the cache size, process settings, the access log
//! file) are reported, not silently ignored: they take effect with an upgrade (`tollgate -u`).

use crate::cache::Cache;
use crate::config::{self, Config, ConfigError, Process};
use crate::gateway::Gateway;
use crate::observe::metrics::Metrics;
use crate::policy::limits::LimitStore;
use crate::upstream::HealthChecker;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What a reload did.
#[derive(Debug)]
pub enum Outcome {
    /// The new configuration serves; these changes still need an upgrade.
    Applied { needs_upgrade: Vec<String> },
    /// The file is invalid: the old configuration keeps serving.
    Refused(Vec<ConfigError>),
}

/// Reloads the configuration on request (SIGHUP, `POST /reload`).
pub struct Reloader {
    path: PathBuf,
    base: PathBuf,
    state: Arc<ArcSwap<Gateway>>,
    limits: Arc<LimitStore>,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    health: HealthChecker,
    /// The settings the process started with, which a reload cannot change.
    fixed: Process,
    /// One reload at a time.
    busy: Mutex<()>,
    /// Each TLS listener's certificates, reloaded with the configuration.
    certificates: Vec<(std::net::SocketAddr, Arc<crate::tls::Certificates>)>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish()
    }
}

impl Reloader {
    /// `config` is the configuration the process started with, `path` its file and `base` the
    /// directory relative paths are relative to; a reload swaps a new snapshot into `state`
    /// (counters in `limits`, the `cache`, and route series in `metrics` carry over) and hands
    /// its pools to `health`.
    pub fn new(
        path: PathBuf,
        base: PathBuf,
        config: Config,
        state: Arc<ArcSwap<Gateway>>,
        metrics: Arc<Metrics>,
        health: HealthChecker,
        certificates: Vec<(std::net::SocketAddr, Arc<crate::tls::Certificates>)>,
    ) -> Reloader {
        let current = state.load_full();
        Reloader {
            path,
            base,
            limits: current.limits.clone(),
            cache: current.cache.clone(),
            state,
            metrics,
            health,
            fixed: config.process,
            busy: Mutex::new(()),
            certificates,
        }
    }

    /// Re-read the file and swap it in if it is valid.
    pub fn reload(&self) -> Outcome {
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        // Names that cannot be looked up now keep the addresses the running pools have.
        let known = self
            .state
            .load()
            .pools
            .iter()
            .flat_map(|p| p.known_names())
            .collect();
        let config = match config::reload_file_in(&self.path, &self.base, known) {
            Ok(c) => c,
            Err(errors) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                self.metrics.config_loaded(false);
                for e in &errors {
                    log::error!("reload refused, the old configuration keeps serving: {e}");
                }
                return Outcome::Refused(errors);
            }
        };
        for w in &config.warnings {
            log::warn!("reload: {w}");
        }
        let needs_upgrade: Vec<String> = self
            .fixed
            .differences(&config.process)
            .into_iter()
            .map(str::to_string)
            .collect();
        let previous = self.state.load_full();
        let next = Gateway::new(
            &config,
            self.limits.clone(),
            self.cache.clone(),
            &self.metrics,
            Some(&previous),
        );
        self.health.set_pools(next.pools.clone());
        self.state.store(Arc::new(next));
        self.reload_certificates(&config.process);
        self.metrics
            .config_reloads
            .with_label_values(&["success"])
            .inc();
        self.metrics.config_loaded(true);
        if needs_upgrade.is_empty() {
            log::info!("configuration reloaded from {}", self.path.display());
        } else {
            log::warn!(
                "configuration reloaded from {}; changes to {} take effect only with an upgrade (tollgate -u)",
                self.path.display(),
                needs_upgrade.join(", ")
            );
        }
        Outcome::Applied { needs_upgrade }
    }

    /// Load each TLS listener's certificates again (renewed files, or other files named);
    /// one that fails keeps its certificates in use and says why.
    fn reload_certificates(&self, process: &Process) {
        for (address, certificates) in &self.certificates {
            let Some(listener) = process
                .listeners
                .iter()
                .find(|l| l.address == *address && !l.tls.is_empty())
            else {
                continue;
            };
            match certificates.reload(listener) {
                Ok(()) => log::info!("listener {address}: certificates reloaded"),
                Err(e) => log::error!(
                    "listener {address}: the certificates cannot be loaded, the ones in use stay: {e}"
                ),
            }
        }
    }
}
