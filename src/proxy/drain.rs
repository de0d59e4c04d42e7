//! Draining without dropping requests. Pingora closes kept-alive client connections the moment a
//! shutdown or upgrade begins, which races with a client that is sending its next request on
//! one: that request is lost. This wrapper keeps the proxy from being told; instead the gateway
//! marks itself draining, answers each further request on an old connection with
//! `Connection: close` (so the client reconnects, to the new process after an upgrade), and
//! exits as soon as nothing is in flight: after `grace_period_seconds` (time for clients on
//! kept-alive connections to come back and be told to close), and no later than
//! `graceful_shutdown_timeout_seconds` after that.

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts requests in flight; each request holds a guard while it runs.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

/// Decrements the in-flight count when dropped.
#[derive(Debug)]
pub struct RequestGuard(Arc<InFlight>);

impl InFlight {
    /// Count one more request until the guard drops.
    pub fn enter(self: &Arc<Self>) -> RequestGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// Requests now in flight.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How a draining process ends.
#[derive(Debug, Clone)]
pub struct DrainPlan {
    /// Keep serving kept-alive connections at least this long.
    pub grace: Duration,
    /// Then wait at most this long for requests in flight.
    pub timeout: Duration,
    pub in_flight: Arc<InFlight>,
    /// Flushed before the process exits.
    pub access_log: Option<Arc<crate::observe::access_log::AccessLog>>,
}

impl DrainPlan {
    fn start(self) {
        let spawned = std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || {
                std::thread::sleep(self.grace);
                let deadline = Instant::now() + self.timeout;
                while self.in_flight.count() > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let left = self.in_flight.count();
                if left > 0 {
                    log::warn!(
                        "drained with {left} request(s) still in flight after the graceful timeout"
                    );
                } else {
                    log::info!("drained: no request in flight, exiting");
                }
                if let Some(log) = &self.access_log {
                    log.flush(Duration::from_secs(1));
                }
                std::process::exit(0);
            });
        if let Err(e) = spawned {
            log::error!("cannot start the drain thread, Pingora's own shutdown applies: {e}");
        }
    }
}

/// An HTTP application that drains by closing connections after their next answer.
pub struct Draining<A> {
    inner: Arc<A>,
    draining: Arc<AtomicBool>,
    plan: SharedPlan,
}

/// The drain plan of the process, shared by its proxy services: the first to stop runs it.
pub type SharedPlan = Arc<std::sync::Mutex<Option<DrainPlan>>>;

impl<A> Draining<A> {
    /// Wrap `inner`; `draining` is set when the shutdown starts, and `plan` then runs.
    pub fn new(inner: A, draining: Arc<AtomicBool>, plan: SharedPlan) -> Self {
        Draining {
            inner: Arc::new(inner),
            draining,
            plan,
        }
    }
}

#[async_trait]
impl<A> HttpServerApp for Draining<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    // Written out rather than `async fn`: it hands back the proxy's own future. An async
    // wrapper would box a second future and move the session (several KiB) into it on every
    // request; callgrind counted about 14,000 instructions per request of copying for it.
    fn process_new_http<'life0, 'life1, 'async_trait>(
        self: &'life0 Arc<Self>,
        session: ServerSession,
        shutdown: &'life1 ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.process_new_http(session, shutdown)
    }

    fn h2_options(&self) -> Option<pingora_core::protocols::http::v2::server::H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            log::info!("draining: each kept-alive connection is closed after its next answer");
            if let Some(plan) = self.plan.lock().ok().and_then(|mut p| p.take()) {
                plan.start();
            }
        }
    }
}

/// Exits at once on SIGINT (Ctrl-C in a terminal), after flushing the access log: no drain.
pub struct ExitOnInterrupt {
    pub access_log: Option<Arc<crate::observe::access_log::AccessLog>>,
}

#[async_trait]
impl pingora_core::services::background::BackgroundService for ExitOnInterrupt {
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
                std::process::exit(0);
            }
            _ = shutdown.changed() => {}
        }
    }
}
