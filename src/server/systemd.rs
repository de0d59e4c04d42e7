//! systemd integration (`Type=notify`): `READY=1` with `MAINPID=` once every listener accepts
//! (after an upgrade the new process says it is the main one now), `STOPPING=1` when a shutdown
//! (SIGTERM) starts draining (sent as the drain begins, so no quick exit can come first), and the binary upgrade started from inside the service on SIGUSR2:
//! the running process starts the new binary with `-u`, waits until it waits for the listening
//! sockets, and hands them over (SIGQUIT to itself), as nginx does on USR2. Outside systemd
//! (no `NOTIFY_SOCKET`) the notifications are nothing.

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use sd_notify::NotifyState;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Set by the SIGTERM handler ([`watch_sigterm`]): a drain that begins after it is a stop.
static TERMINATED: AtomicBool = AtomicBool::new(false);

/// Start noting SIGTERM (before the server runs, so none is missed), beside Pingora's own
/// handler, which still runs.
pub fn watch_sigterm() -> std::io::Result<()> {
    // SAFETY: the action only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal_hook_registry::register(libc::SIGTERM, || TERMINATED.store(true, Ordering::SeqCst))?;
    }
    Ok(())
}

/// Send `STOPPING=1` when the drain now beginning is a stop (SIGTERM), not an upgrade's SIGQUIT,
/// after which the new process is the main one. Called as the drain begins, before anything
/// can make the process exit.
pub fn stopping_if_terminated() {
    if TERMINATED.load(Ordering::SeqCst) {
        let state = [NotifyState::Stopping, NotifyState::Status("draining")];
        if let Err(e) = sd_notify::notify(false, &state) {
            log::warn!("systemd: cannot send STOPPING=1: {e}");
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
