//! Draining without dropping requests. Pingora closes kept-alive client connections the moment a
//! shutdown or upgrade begins, which races with a client that is sending its next request on
//! one: that request is lost. This wrapper keeps the proxy from being told; instead the gateway
//! marks itself draining, answers each further request on an old connection with
//! `Connection: close` (so the client reconnects, to the new process after an upgrade), and
//! exits as soon as nothing is in flight: after `grace_period_seconds` (time for clients on
//! kept-alive connections to come back and be told to close), and no later than
//! `graceful_shutdown_timeout_seconds` after that.
//!
//! The same wrapper is the service's connection handler: each connection passes the front door
//! ([`crate::front`]: PROXY header, per-address cap), and HTTP/1 connections' requests are read
//! and checked there before the proxy sees them (HTTP/2 and custom protocols go to Pingora's
//! own handling).

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
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

/// The proxy service's connection handler: runs HTTP/1 connections' request loops, and drains
/// by closing connections after their next answer.
pub struct Draining<A> {
    inner: Arc<A>,
    /// Reads and checks each request before the proxy sees it.
    door: Arc<crate::front::FrontDoor>,
    draining: Arc<AtomicBool>,
    plan: SharedPlan,
    /// How long a kept-alive client connection may wait for its next request.
    keepalive: Duration,
}

/// The drain plan of the process, shared by its proxy services: the first to stop runs it.
pub type SharedPlan = Arc<std::sync::Mutex<Option<DrainPlan>>>;

impl<A> Draining<A> {
    /// Wrap `inner`; `draining` is set when the shutdown starts, and `plan` then runs.
    /// `keepalive` (whole seconds, at least one) bounds the wait for a new connection's first
    /// bytes; `door` reads and checks its requests.
    pub fn new(
        inner: A,
        door: Arc<crate::front::FrontDoor>,
        draining: Arc<AtomicBool>,
        plan: SharedPlan,
        keepalive: Duration,
    ) -> Self {
        Draining {
            inner: Arc::new(inner),
            door,
            draining,
            plan,
            keepalive,
        }
    }
}

#[async_trait]
impl<A> ServerApp for Draining<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = tokio::time::Instant::now();
        // The PROXY header and the per-address cap; the slot counts the connection while it
        // lives.
        let (mut stream, _slot) = self.door.admit(stream).await?;
        if !self.is_http1(&mut stream).await? {
            // HTTP/2 (ALPN or cleartext prior knowledge) and custom protocols: Pingora's own
            // handling, which multiplexes streams on the connection. Its handshake waits for
            // the client's preface without a bound: it is handed over once bytes are there.
            let stream = self.door.http2_preface(stream, accepted).await?;
            return self.inner.process_new(stream, shutdown).await;
        }
        self.door
            .serve_http1(&self.inner, stream, shutdown, accepted)
            .await;
        None
    }

    async fn cleanup(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            log::info!("draining: each kept-alive connection is closed after its next answer");
            if let Some(plan) = self.plan.lock().ok().and_then(|mut p| p.take()) {
                plan.start();
            }
        }
    }
}

impl<A: HttpServerApp> Draining<A> {
    /// Whether the connection speaks HTTP/1 (decided as Pingora decides it: TLS by ALPN, a
    /// cleartext listener with h2c by the HTTP/2 preface). `None`: the client went away, or
    /// sent less than a preface's length within the keep-alive time.
    async fn is_http1(&self, stream: &mut Stream) -> Option<bool> {
        let options = self.inner.server_options();
        if options.is_some_and(|o| o.force_custom) {
            return Some(false);
        }
        if stream.get_ssl_digest().is_some() {
            return Some(matches!(
                stream.selected_alpn_proto(),
                None | Some(ALPN::H1)
            ));
        }
        if options.is_some_and(|o| o.h2c) {
            let mut preface = [0u8; H2_PREFACE.len()];
            // The bytes are put back: whoever reads the connection next sees them again. A
            // client that sends fewer within the keep-alive time is let go (Pingora would wait
            // for them forever).
            let peek = stream.try_peek(&mut preface);
            let peeked = tokio::time::timeout(self.keepalive, peek)
                .await
                .ok()?
                .ok()?;
            // A stream that cannot peek stays with Pingora, which then assumes HTTP/2.
            return Some(peeked && preface != *H2_PREFACE);
        }
        Some(true)
    }
}

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
