//! Mirroring: a share of a route's requests is also sent to a shadow pool, after the client has
//! its answer, fire-and-forget. The copy is the request as the upstream received it (with
//! `-shadow` appended to its `Host`, as Envoy does, so the shadow can tell), and its body when
//! it fits `max_body_size` (larger ones are not mirrored), and only when the whole body was
//! read (a client that went away, or a body refused as too large, is not mirrored). The
//! shadow's answer is read and dropped; its failures (5xx answers included) are only counted.
//! At most [`MAX_IN_FLIGHT`] copies holding at most [`MAX_BYTES`] of bodies are on their way at
//! once: past that, copies are skipped, so a slow shadow cannot make the gateway hoard memory.

use super::ctx::Ctx;
use crate::gateway::CompiledRoute;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_http::RequestHeader;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Copies on their way to shadows at once, at most.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Bytes of request bodies held by copies on their way, at most.
pub const MAX_BYTES: usize = 64 << 20;

/// Connections to shadow pools, and what the copies on their way hold.
pub(super) struct Mirrors {
    connector: Arc<Connector>,
    in_flight: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl Mirrors {
    pub(super) fn new() -> Mirrors {
        Mirrors {
            connector: Arc::new(Connector::new(None)),
            in_flight: Arc::default(),
            bytes: Arc::default(),
        }
    }

    /// Take room for a copy holding `bytes` of body; `None` when the bounds are reached.
    fn admit(&self, bytes: usize) -> Option<Room> {
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let b = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        let room = Room {
            in_flight: self.in_flight.clone(),
            bytes: self.bytes.clone(),
            held: bytes,
        };
        (n < MAX_IN_FLIGHT && b + bytes <= MAX_BYTES).then_some(room)
    }
}

/// A copy's share of the bounds, given back when it is done.
struct Room {
    in_flight: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    held: usize,
}

impl Drop for Room {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// A request being copied.
#[derive(Default)]
pub(super) struct Copy {
    /// The request as the attempt that first sent it had it.
    head: Option<Box<RequestHeader>>,
    /// That attempt (the number of peers tried then): its body chunks are kept.
    attempt: usize,
    /// Whether the request has a body, and whether all of it was kept.
    has_body: bool,
    body_complete: bool,
    body: Vec<u8>,
    /// The body outgrew `max_body_size`: not mirrored.
    too_big: bool,
}

/// Whether this request is mirrored (the route's `percent`).
pub(super) fn sample(route: &CompiledRoute) -> Option<Copy> {
    let m = route.mirror.as_ref()?;
    (fastrand::f64() * 100.0 < m.percent).then(Copy::default)
}

/// Keep the request as the upstream receives it (the first attempt that sends it), and whether
/// the client sends a body with it.
pub(super) fn keep_head(ctx: &mut Ctx, req: &RequestHeader, has_body: bool) {
    let Some(copy) = ctx.mirror.as_mut() else {
        return;
    };
    if copy.head.is_some() {
        return;
    }
    copy.attempt = ctx.upstream.tried.len();
    copy.has_body = has_body;
    let mut head = Box::new(req.clone());
    if let Some(host) = req.headers.get(http::header::HOST) {
        let shadow = format!("{}-shadow", String::from_utf8_lossy(host.as_bytes()));
        let _ = head.insert_header(http::header::HOST, shadow);
    }
    copy.head = Some(head);
}

/// Keep a body chunk of the attempt whose head was kept, up to the route's `max_body_size`.
pub(super) fn keep_body(route: &CompiledRoute, ctx: &mut Ctx, chunk: &[u8], end: bool) {
    let attempt = ctx.upstream.tried.len();
    let (Some(copy), Some(m)) = (ctx.mirror.as_mut(), route.mirror.as_ref()) else {
        return;
    };
    if copy.head.is_none() || attempt != copy.attempt || copy.too_big {
        return;
    }
    if (copy.body.len() + chunk.len()) as u64 > m.max_body_size {
        copy.too_big = true;
        copy.body = Vec::new();
        return;
    }
    copy.body.extend_from_slice(chunk);
    copy.body_complete |= end;
}

/// Send the copy, once the client's request is done, on a task of its own.
pub(super) fn send(mirrors: &Mirrors, route: &CompiledRoute, ctx: &mut Ctx) {
    let Some(copy) = ctx.mirror.take() else {
        return;
    };
    let Some(pool) = route.mirror_pool.clone() else {
        return;
    };
    let count = |result| route.metrics.mirror_counter(result);
    let complete = !copy.has_body || copy.body_complete;
    let room = match (copy.head, copy.too_big, complete) {
        (Some(head), false, true) => mirrors.admit(copy.body.len()).map(|room| (head, room)),
        _ => None,
    };
    let Some((head, room)) = room else {
        count("skipped").inc();
        return;
    };
    let (sent, failed) = (count("sent"), count("failed"));
    let connector = mirrors.connector.clone();
    tokio::spawn(async move {
        let _room = room;
        let result = async {
            let (peer, _guard) = pool.select(b"", &[]).ok_or("no healthy peer")?;
            let (mut session, _) = connector
                .get_http_session(&peer)
                .await
                .map_err(|_| "connect")?;
            session.set_read_timeout(Some(pool.config.read_timeout));
            session.set_write_timeout(Some(pool.config.write_timeout));
            let mut head = head;
            head.remove_header(&http::header::TRANSFER_ENCODING);
            let _ = head.insert_header(http::header::CONTENT_LENGTH, copy.body.len());
            session
                .write_request_header(head)
                .await
                .map_err(|_| "write")?;
            if !copy.body.is_empty() {
                session
                    .write_request_body(Bytes::from(copy.body), true)
                    .await
                    .map_err(|_| "write")?;
            }
            session.finish_request_body().await.map_err(|_| "write")?;
            session.read_response_header().await.map_err(|_| "read")?;
            let status = session.response_header().map_or(0, |h| h.status.as_u16());
            while session
                .read_response_body()
                .await
                .map_err(|_| "read")?
                .is_some()
            {}
            connector
                .release_http_session(session, &peer, Some(pool.config.idle_timeout))
                .await;
            if status >= 500 {
                return Err("5xx answer");
            }
            Ok::<(), &str>(())
        }
        .await;
        match result {
            Ok(()) => sent.inc(),
            Err(why) => {
                log::debug!("mirror to {}: {why}", pool.config.name);
                failed.inc();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_on_their_way_are_bounded_in_number_and_bytes() {
        let m = Mirrors::new();
        let rooms: Vec<Room> = (0..MAX_IN_FLIGHT).filter_map(|_| m.admit(10)).collect();
        assert_eq!(rooms.len(), MAX_IN_FLIGHT);
        assert!(m.admit(0).is_none());
        drop(rooms);
        assert_eq!(m.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(m.bytes.load(Ordering::Relaxed), 0);
        let half = m.admit(MAX_BYTES / 2).expect("room");
        assert!(m.admit(MAX_BYTES / 2 + 1).is_none());
        let other = m.admit(MAX_BYTES / 2).expect("room");
        drop((half, other));
        assert_eq!(m.bytes.load(Ordering::Relaxed), 0);
    }
}
