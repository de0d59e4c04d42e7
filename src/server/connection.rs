//! The proxy service's connection handler. Each connection passes the front door
//! ([`crate::front`]: PROXY header, per-address cap); an HTTP/1 connection's requests are then
//! read and checked one by one here before the proxy sees each (HTTP/2 and custom protocols go
//! to Pingora's own handling).
//!
//! Draining without dropping requests: Pingora closes kept-alive client connections the moment
//! a shutdown or upgrade begins, which races with a client sending its next request on one:
//! that request would be lost. This handler keeps the proxy from being told; instead the
//! process starts draining ([`Lifecycle::begin_drain`]): each further answer on an old
//! connection carries `Connection: close` (the client reconnects, to the new process after an
//! upgrade), and the process exits as soon as nothing is in flight: after
//! `grace_period_seconds`, and no later than `graceful_shutdown_timeout_seconds` after that.

use super::Lifecycle;
use crate::front::conn::{Conn, HeadFailure};
use crate::front::FrontDoor;
use async_trait::async_trait;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The proxy service's connection handler: runs HTTP/1 connections' request loops, and drains
/// by closing connections after their next answer.
pub struct Connections<A> {
    inner: Arc<A>,
    /// Reads and checks each request before the proxy sees it.
    door: Arc<FrontDoor>,
    lifecycle: Arc<Lifecycle>,
    /// How long a kept-alive client connection may wait for its next request.
    keepalive: Duration,
}

impl<A> Connections<A> {
    /// Serve connections through `inner` (the proxy); `door` reads and checks their requests,
    /// `keepalive` (whole seconds, at least one) bounds the wait for a next request, and the
    /// drain begins in `lifecycle` when the service stops.
    pub fn new(
        inner: A,
        door: Arc<FrontDoor>,
        lifecycle: Arc<Lifecycle>,
        keepalive: Duration,
    ) -> Self {
        Connections {
            inner: Arc::new(inner),
            door,
            lifecycle,
            keepalive,
        }
    }
}

#[async_trait]
impl<A> ServerApp for Connections<A>
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
        self.serve_http1(stream, shutdown, accepted).await;
        None
    }

    async fn cleanup(&self) {
        self.lifecycle.begin_drain();
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Connections<A> {
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

    /// Serve the HTTP/1 requests of a connection accepted at `accepted`, one after another:
    /// each head is read and checked at the front door, then handed to the proxy.
    async fn serve_http1(&self, stream: Stream, shutdown: &ShutdownWatch, accepted: Instant) {
        let door = &self.door;
        let mut conn = Conn::new(stream, door.read_limits());
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let (wait, deadline) = if first {
                // A new connection's first request is bounded by the header timeout as a whole.
                let deadline = accepted + door.header_timeout();
                let left = deadline.saturating_duration_since(Instant::now());
                (self.keepalive.min(left), Some(deadline))
            } else {
                (self.keepalive, None)
            };
            let started = std::time::Instant::now();
            // This future lives as long as the connection, idle or not, and is as large as its
            // largest state: the refusals (which write an answer and read out what the client
            // still sends, through a 4 KiB buffer) are boxed, so an idle connection does not
            // carry their 4.5 KB (measured with `-Zprint-type-sizes`: 4,896 bytes -> 568).
            let refused = match conn.next_head(wait, deadline, door.max_head()).await {
                Ok(_) => None,
                Err(HeadFailure::Closed) => return,
                Err(HeadFailure::Refused(r)) => Some((r.status, r.reason)),
                Err(HeadFailure::TimedOut) => Some((408, "header_timeout")),
            };
            if let Some((status, reason)) = refused {
                return Box::pin(door.refuse(&mut conn, status, reason, started)).await;
            }
            first = false;
            // The session (680 bytes) is built in a block of its own, so that it is not kept
            // in this future's state while the request is served.
            let request = {
                let mut session = ServerSession::new_http1(conn);
                match settings.take() {
                    Some(s) => s.apply_to_session(&mut session),
                    None => {
                        // The connection's first request. Pingora reads 0 as "no limit": the
                        // configuration allows whole seconds from 1.
                        let keepalive = self.keepalive.as_secs().max(1);
                        session.set_keepalive((!*shutdown.borrow()).then_some(keepalive));
                        session.set_keepalive_reuses_remaining(
                            self.inner
                                .server_options()
                                .and_then(|o| o.keepalive_request_limit),
                        );
                    }
                }
                self.inner.process_new_http(session, shutdown)
            };
            let Some(reused) = request.await else {
                return;
            };
            let (stream, next) = ReusedHttpStream::consume(reused);
            let Ok(back) = stream.into_any().downcast::<Conn>() else {
                return;
            };
            conn = back;
            if !conn.finish_request() {
                return;
            }
            settings = next;
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
