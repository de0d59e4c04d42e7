//! systemd integration (`Type=notify`): `READY=1` with `MAINPID=` once every listener accepts
//! (after an upgrade the new process says it is the main one now), `STOPPING=1` when a shutdown
//! (SIGTERM) starts draining, and the binary upgrade started from inside the service on SIGUSR2:
//! the running process starts the new binary with `-u`, waits until it waits for the listening
//! sockets, and hands them over (SIGQUIT to itself), as nginx does on USR2. Outside systemd
//! (no `NOTIFY_SOCKET`) the notifications are nothing.

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use sd_notify::NotifyState;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tell the service manager the process serves, and that it is the service's main process.
pub fn ready(status: &str) {
    let state = [
        NotifyState::MainPid(std::process::id()),
        NotifyState::Ready,
        NotifyState::Status(status),
    ];
    if let Err(e) = sd_notify::notify(false, &state) {
        log::warn!("systemd: cannot send READY=1: {e}");
    }
}

/// Sends `STOPPING=1` when SIGTERM starts a shutdown (an upgrade's SIGQUIT is not one: the new
/// process takes over as the main process).
pub struct NotifyStopping {
    /// Set by the SIGTERM handler, which is in place from [`NotifyStopping::install`] on: a
    /// shutdown is a stop when it was set before the shutdown began, however late this service
    /// runs or however busy the machine is.
    terminated: Arc<AtomicBool>,
}

impl NotifyStopping {
    /// Start watching for SIGTERM (before the server runs, so none is missed).
    pub fn install() -> std::io::Result<NotifyStopping> {
        let terminated = Arc::new(AtomicBool::new(false));
        let flag = terminated.clone();
        // SAFETY: the action only stores to an atomic, which is async-signal-safe; it is added
        // beside the other handlers of SIGTERM (Pingora's), which still run.
        unsafe {
            signal_hook_registry::register(libc::SIGTERM, move || {
                flag.store(true, Ordering::SeqCst)
            })?;
        }
        Ok(NotifyStopping { terminated })
    }
}

#[async_trait]
impl BackgroundService for NotifyStopping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if !*shutdown.borrow() && shutdown.changed().await.is_err() {
            return;
        }
        if self.terminated.load(Ordering::SeqCst) {
            let state = [NotifyState::Stopping, NotifyState::Status("draining")];
            if let Err(e) = sd_notify::notify(false, &state) {
                log::warn!("systemd: cannot send STOPPING=1: {e}");
            }
        }
    }
}

/// On SIGUSR2, replaces this process with a new one running the binary now installed at this
/// program's path, without dropping a request.
#[derive(Clone)]
pub struct UpgradeOnUsr2 {
    /// The configuration file, as the process was started with it.
    pub conf: PathBuf,
    /// Where the new process waits for the listening sockets (`upgrade_sock`).
    pub upgrade_sock: PathBuf,
    /// Whether this process runs as a daemon (the new one does too).
    pub daemon: bool,
}

impl UpgradeOnUsr2 {
    /// Start the new process and, once it waits for the sockets, hand them over.
    fn upgrade(&self) {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => return log::error!("upgrade: cannot find this program: {e}; serving on"),
        };
        let _ = std::fs::remove_file(&self.upgrade_sock);
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("-u").arg("-c").arg(&self.conf);
        if self.daemon {
            cmd.arg("-d");
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return log::error!("upgrade: cannot start the new process: {e}; serving on"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.upgrade_sock.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return log::error!(
                    "upgrade: the new process exited ({status}) before taking over; serving on"
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return log::error!(
                    "upgrade: the new process is not waiting for the sockets on {} after 10 s; serving on",
                    self.upgrade_sock.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        log::info!(
            "upgrade: process {} takes over the listening sockets",
            child.id()
        );
        // Pingora hands the sockets over on SIGQUIT, then this process drains.
        unsafe {
            libc::kill(std::process::id() as i32, libc::SIGQUIT);
        }
    }
}

#[async_trait]
impl BackgroundService for UpgradeOnUsr2 {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut usr2 =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()) {
                Ok(s) => s,
                Err(e) => {
                    log::error!(
                        "cannot listen for SIGUSR2, upgrades only with `tollgate upgrade`: {e}"
                    );
                    return;
                }
            };
        loop {
            tokio::select! {
                _ = usr2.recv() => {
                    log::info!("SIGUSR2: upgrading to the binary at this program's path");
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.upgrade()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
