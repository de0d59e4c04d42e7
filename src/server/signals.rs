//! Signals Pingora leaves to the application: SIGHUP reloads the configuration, SIGUSR1 reopens
//! the access log (logrotate's `postrotate`), SIGINT (Ctrl-C in a terminal) exits at once after
//! flushing the access log. (SIGQUIT and SIGTERM are
//! Pingora's: upgrade and graceful shutdown, which drain.)

use crate::observe::access_log::AccessLog;
use crate::reload::Reloader;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

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

/// Exits at once on SIGINT, after flushing the access log: no drain.
pub struct ExitOnInterrupt {
    pub access_log: Option<Arc<AccessLog>>,
    /// Removed on the way out, when it holds this process's pid.
    pub pid_file: Option<std::path::PathBuf>,
}

#[async_trait]
impl BackgroundService for ExitOnInterrupt {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut int = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGINT: {e}");
                return;
            }
        };
        tokio::select! {
            _ = int.recv() => {
                log::info!("SIGINT: exiting now");
                if let Some(log) = &self.access_log {
                    log.flush(Duration::from_millis(200));
                }
                if let Some(p) = &self.pid_file {
                    super::remove_pid_file(p);
                }
                std::process::exit(0);
            }
            _ = shutdown.changed() => {}
        }
    }
}

/// Reopens the access log file on SIGUSR1.
pub struct ReopenOnUsr1(pub Arc<AccessLog>);

#[async_trait]
impl BackgroundService for ReopenOnUsr1 {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut usr1 =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("cannot listen for SIGUSR1, the access log is never reopened: {e}");
                    return;
                }
            };
        loop {
            tokio::select! {
                _ = usr1.recv() => {
                    log::info!("SIGUSR1: reopening the access log");
                    self.0.reopen();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
