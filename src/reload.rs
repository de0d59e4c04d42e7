//! Hot reload: re-read the configuration file and swap routes, upstreams, consumers and
//! policies in one atomic step. A request keeps the snapshot it started with, so none sees a
//! mix of old and new. Health state (of unchanged pools), limit counters and the cache carry
//! over. Settings that need new sockets or a new process (listeners, the admin listener, the
//! cache size, process settings, the access log file) are reported, not silently ignored: they
//! take effect with an upgrade (`tollgate -u`).

use crate::cache::Cache;
use crate::config::{self, Config, ConfigError};
use crate::gateway::Gateway;
use crate::observe::metrics::Metrics;
use crate::policy::limits::LimitStore;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
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

/// The settings fixed when the process started.
#[derive(Debug)]
struct Fixed {
    listeners: Vec<crate::config::Listener>,
    admin: Option<crate::config::AdminConfig>,
    cache: crate::config::CacheConfig,
    access_log: Option<String>,
    server: pingora_core::server::configuration::ServerConf,
    client_keepalive_timeout: std::time::Duration,
    client_timeouts: crate::config::ClientTimeouts,
}

/// Reloads the configuration on request (SIGHUP, `POST /reload`).
pub struct Reloader {
    path: PathBuf,
    base: PathBuf,
    state: Arc<ArcSwap<Gateway>>,
    limits: Arc<LimitStore>,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    fixed: Fixed,
    /// One reload at a time.
    busy: Mutex<()>,
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
    /// directory relative paths are relative to.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: PathBuf,
        base: PathBuf,
        config: Config,
        state: Arc<ArcSwap<Gateway>>,
        limits: Arc<LimitStore>,
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        Reloader {
            path,
            base,
            state,
            limits,
            cache,
            metrics,
            fixed: Fixed {
                listeners: config.listeners,
                admin: config.admin,
                cache: config.cache,
                access_log: config.access_log,
                server: config.server,
                client_keepalive_timeout: config.client_keepalive_timeout,
                client_timeouts: config.client_timeouts,
            },
            busy: Mutex::new(()),
        }
    }

    /// Re-read the file and swap it in if it is valid.
    pub fn reload(&self) -> Outcome {
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let config = match config::load_file_in(&self.path, &self.base) {
            Ok(c) => c,
            Err(errors) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                for e in &errors {
                    log::error!("reload refused, the old configuration keeps serving: {e}");
                }
                return Outcome::Refused(errors);
            }
        };
        for w in &config.warnings {
            log::warn!("reload: {w}");
        }
        let mut needs_upgrade = Vec::new();
        if config.listeners != self.fixed.listeners {
            needs_upgrade.push("listeners".to_string());
        }
        if config.admin != self.fixed.admin {
            needs_upgrade.push("admin".to_string());
        }
        if config.cache != self.fixed.cache {
            needs_upgrade.push("cache".to_string());
        }
        if config.access_log != self.fixed.access_log {
            needs_upgrade.push("access_log".to_string());
        }
        if config.server != self.fixed.server {
            needs_upgrade.push("process settings".to_string());
        }
        if config.client_keepalive_timeout != self.fixed.client_keepalive_timeout {
            needs_upgrade.push("client_keepalive_timeout".to_string());
        }
        if config.client_timeouts != self.fixed.client_timeouts {
            needs_upgrade.push(
                "client_header_timeout, client_body_timeout, client_body_min_rate, client_send_timeout"
                    .to_string(),
            );
        }
        let previous = self.state.load_full();
        let next = Gateway::new(
            &config,
            self.limits.clone(),
            self.cache.clone(),
            Some(&previous),
        );
        self.metrics.declare(&next);
        self.state.store(Arc::new(next));
        self.metrics
            .config_reloads
            .with_label_values(&["success"])
            .inc();
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
}

/// Reloads on SIGHUP.
pub struct ReloadOnHangup(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reload only through the admin API: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let r = self.0.clone();
                    // The file is read off the async threads.
                    let _ = tokio::task::spawn_blocking(move || r.reload()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
