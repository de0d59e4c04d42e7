//! The process lifecycle: what lives as long as the process. [`Lifecycle`] is the one home of
//! the draining flag, the count of requests in flight, readiness and the drain plan; the
//! connection handler ([`connection`]) runs each HTTP/1 connection's request loop and drains;
//! [`signals`] reloads on SIGHUP and exits on SIGINT; [`readiness`] tells when the listeners
//! accept; [`upgrade`] hands the sockets to a new process.
//!
//! ```text
//! start ─▶ listeners bound ─▶ ready ─▶ … SIGHUP: reload (routing half) …
//!       ─▶ SIGQUIT (upgrade) / SIGTERM ─▶ draining: each kept-alive connection closes after its
//!          next answer ─▶ grace period ─▶ wait for requests in flight (bounded) ─▶ exit
//! ```

pub mod connection;
pub mod readiness;
pub mod signals;
pub mod systemd;
pub mod upgrade;

use crate::config::Listener;
use crate::observe::access_log::AccessLog;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a draining process ends.
#[derive(Debug, Clone)]
pub struct DrainPlan {
    /// Keep serving kept-alive connections at least this long.
    pub grace: Duration,
    /// Then wait at most this long for requests in flight.
    pub timeout: Duration,
    /// Flushed before the process exits.
    pub access_log: Option<Arc<AccessLog>>,
    /// Removed before the process exits, when it holds this process's pid.
    pub pid_file: Option<std::path::PathBuf>,
}

/// Write this process's pid to `path` (a foreground process; Pingora writes it when it
/// daemonizes), so that `tollgate -s` finds it.
pub fn write_pid_file(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
}

/// Remove `path` when it holds this process's pid (a new process may own it after an upgrade).
pub fn remove_pid_file(path: &std::path::Path) {
    let ours = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// The state that lives as long as the process, shared by the proxy, the connection handler,
/// the admin API and the signal handlers.
#[derive(Debug)]
pub struct Lifecycle {
    /// Set when a shutdown or upgrade starts: answers then close their connection.
    draining: AtomicBool,
    /// Set once every traffic listener accepts connections.
    ready: AtomicBool,
    /// Requests in flight.
    in_flight: AtomicUsize,
    started: Instant,
    /// Run (once) when the drain begins.
    plan: Mutex<Option<DrainPlan>>,
}

/// Counts a request as in flight until dropped.
#[derive(Debug)]
pub struct RequestGuard(Arc<Lifecycle>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Lifecycle {
    /// A process that has just started; `plan` runs when it drains.
    pub fn new(plan: Option<DrainPlan>) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            draining: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            started: Instant::now(),
            plan: Mutex::new(plan),
        })
    }

    /// Count one more request in flight until the guard drops.
    pub fn enter(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// Requests now in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether a shutdown or upgrade has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Start draining (once, whoever sees the shutdown first): from now on answers close their
    /// connection, and the drain plan runs.
    pub fn begin_drain(self: &Arc<Self>) {
        if self.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        systemd::stopping_if_terminated();
        let plan = self.plan.lock().ok().and_then(|mut p| p.take());
        match &plan {
            Some(p) => log::info!(
                "draining: each kept-alive connection is closed after its next answer; grace period {}s, then at most {}s for requests in flight",
                p.grace.as_secs(),
                p.timeout.as_secs()
            ),
            None => log::info!(
                "draining: each kept-alive connection is closed after its next answer"
            ),
        }
        if let Some(plan) = plan {
            self.clone().run_drain(plan);
        }
    }

    /// Whether every traffic listener accepts connections.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Mark the listeners as accepting.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Seconds since the process started.
    pub fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// After the grace period, wait (bounded) for requests in flight, flush the access log and
    /// exit: on a thread of its own, as the runtimes are shutting down.
    fn run_drain(self: Arc<Self>, plan: DrainPlan) {
        let spawned = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || {
                std::thread::sleep(plan.grace);
                let deadline = Instant::now() + plan.timeout;
                while self.in_flight() > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let left = self.in_flight();
                if left > 0 {
                    log::warn!(
                        "drained with {left} request(s) still in flight after the graceful timeout"
                    );
                } else {
                    log::info!("drained: no request in flight, exiting");
                }
                if let Some(log) = &plan.access_log {
                    log.flush(Duration::from_secs(1));
                }
                if let Some(p) = &plan.pid_file {
                    remove_pid_file(p);
                }
                std::process::exit(0);
            });
        if let Err(e) = spawned {
            log::error!("cannot start the drain thread, Pingora's own shutdown applies: {e}");
        }
    }
}

/// Check, before anything starts, that every traffic listener's address can be bound (as
/// Pingora binds it: `SO_REUSEADDR`, no `SO_REUSEPORT`): a taken port or an address this host
/// does not have is one clear error and a non-zero exit, not a worker thread that retries and
/// panics while the process looks alive. (An upgrade receives its sockets instead.)
pub fn check_listeners(addresses: &[std::net::SocketAddr]) -> Result<(), String> {
    for address in addresses {
        let bound = socket2::Socket::new(
            socket2::Domain::for_address(*address),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .and_then(|s| {
            s.set_reuse_address(true)?;
            s.bind(&(*address).into())?;
            s.listen(1)
        });
        if let Err(e) = bound {
            return Err(format!("cannot listen on {address}: {e}"));
        }
    }
    Ok(())
}

/// Which proxy service a listener joins. Pingora sets cleartext HTTP/2 (h2c) per service, so
/// when plain listeners disagree on it the h2c ones get a second service (with its own worker
/// threads); TLS listeners ignore h2c (ALPN decides) and join the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceFor {
    /// The first service.
    Main,
    /// The second, cleartext-HTTP/2 service.
    H2c,
}

/// Whether the first service takes h2c, and whether a second (h2c) one is needed.
pub fn service_plan(listeners: &[Listener]) -> (bool, bool) {
    let plain = |h2c: bool| listeners.iter().any(|l| l.tls.is_empty() && l.http2 == h2c);
    let split = plain(true) && plain(false);
    (plain(true) && !split, split)
}

/// The service a listener joins under [`service_plan`].
pub fn service_for(listener: &Listener, split: bool) -> ServiceFor {
    if split && listener.tls.is_empty() && listener.http2 {
        ServiceFor::H2c
    } else {
        ServiceFor::Main
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(port: u16, tls: bool, http2: bool) -> Listener {
        Listener {
            address: ([127, 0, 0, 1], port).into(),
            tls: if tls {
                vec![crate::config::Certificate {
                    cert: String::new(),
                    key: String::new(),
                    names: vec![],
                }]
            } else {
                vec![]
            },
            http2,
            redirect_https: None,
            trusted_proxies: vec![],
            forwarded_header: Default::default(),
            proxy_protocol: false,
            max_connections_per_ip: None,
            client_auth: None,
        }
    }

    #[test]
    fn h2c_listeners_get_their_own_service_only_when_plain_ones_disagree() {
        let plain = listener(1, false, false);
        let h2c = listener(2, false, true);
        let tls = listener(3, true, true);
        assert_eq!(service_plan(&[plain.clone(), tls.clone()]), (false, false));
        assert_eq!(service_plan(&[h2c.clone(), tls.clone()]), (true, false));
        assert_eq!(
            service_plan(&[plain.clone(), h2c.clone(), tls.clone()]),
            (false, true)
        );
        assert_eq!(service_for(&h2c, true), ServiceFor::H2c);
        assert_eq!(service_for(&plain, true), ServiceFor::Main);
        assert_eq!(service_for(&tls, true), ServiceFor::Main);
        assert_eq!(service_for(&h2c, false), ServiceFor::Main);
    }

    #[test]
    fn a_taken_address_is_reported() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("address");
        let e = check_listeners(&[addr]).expect_err("taken");
        assert!(e.starts_with(&format!("cannot listen on {addr}: ")), "{e}");
        drop(taken);
        assert!(check_listeners(&[addr]).is_ok());
    }

    #[test]
    fn in_flight_requests_are_counted_until_their_guard_drops() {
        let l = Lifecycle::new(None);
        let a = l.enter();
        let b = l.enter();
        assert_eq!(l.in_flight(), 2);
        drop(a);
        assert_eq!(l.in_flight(), 1);
        drop(b);
        assert_eq!(l.in_flight(), 0);
        assert!(!l.is_draining());
        l.begin_drain();
        l.begin_drain();
        assert!(l.is_draining());
    }
}
