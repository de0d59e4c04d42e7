//! Mirroring: a share of a route's requests is also sent to a shadow pool, after the client has
//! its answer, fire-and-forget. The copy is the request as the upstream received it (with
//! `-shadow` appended to its `Host`, as Envoy does, so the shadow can tell), and its body when
//! it fits `max_body_size` (larger ones are not mirrored). The shadow's answer is read and
//! dropped; its failures are only counted.

use super::ctx::Ctx;
use crate::gateway::CompiledRoute;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_http::RequestHeader;
use std::sync::Arc;

/// A request being copied.
#[derive(Default)]
pub(super) struct Copy {
    /// The request as the first attempt sent it.
    head: Option<Box<RequestHeader>>,
    body: Vec<u8>,
    /// The body outgrew `max_body_size`: not mirrored.
    too_big: bool,
}

/// Whether this request is mirrored (the route's `percent`).
pub(super) fn sample(route: &CompiledRoute) -> Option<Copy> {
    let m = route.mirror.as_ref()?;
    (fastrand::f64() * 100.0 < m.percent).then(Copy::default)
}

/// Keep the request as the upstream receives it (first attempt only).
pub(super) fn keep_head(ctx: &mut Ctx, req: &RequestHeader) {
    let Some(copy) = ctx.mirror.as_mut() else {
        return;
    };
    if copy.head.is_some() {
        return;
    }
    let mut head = Box::new(req.clone());
    if let Some(host) = req.headers.get(http::header::HOST) {
        let shadow = format!("{}-shadow", String::from_utf8_lossy(host.as_bytes()));
        let _ = head.insert_header(http::header::HOST, shadow);
    }
    copy.head = Some(head);
}

/// Keep a body chunk of the first attempt, up to the route's `max_body_size`.
pub(super) fn keep_body(route: &CompiledRoute, ctx: &mut Ctx, chunk: &[u8]) {
    let first = ctx.upstream.tried.len() <= 1;
    let (Some(copy), Some(m)) = (ctx.mirror.as_mut(), route.mirror.as_ref()) else {
        return;
    };
    if !first || copy.too_big {
        return;
    }
    if (copy.body.len() + chunk.len()) as u64 > m.max_body_size {
        copy.too_big = true;
        copy.body = Vec::new();
        return;
    }
    copy.body.extend_from_slice(chunk);
}

/// Send the copy, once the client's request is done, on a task of its own.
pub(super) fn send(connector: &Arc<Connector>, route: &CompiledRoute, ctx: &mut Ctx) {
    let Some(copy) = ctx.mirror.take() else {
        return;
    };
    let Some(pool) = route.mirror_pool.clone() else {
        return;
    };
    let count = |result| route.metrics.mirror_counter(result);
    let (Some(head), false) = (copy.head, copy.too_big) else {
        count("skipped").inc();
        return;
    };
    let (sent, failed) = (count("sent"), count("failed"));
    let connector = connector.clone();
    tokio::spawn(async move {
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
            while session
                .read_response_body()
                .await
                .map_err(|_| "read")?
                .is_some()
            {}
            connector
                .release_http_session(session, &peer, Some(pool.config.idle_timeout))
                .await;
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
