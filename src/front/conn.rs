//! A client connection as the HTTP/1 request loop sees it: the socket (plain or TLS) with the
//! bytes read from it but not yet handed on. Each request's head is read and checked here
//! ([`super::head`]) before Pingora's parser sees it; Pingora then reads through this stream,
//! which hands it exactly that request: its head, then its body as its framing says, and
//! nothing after. Bytes of a following (pipelined) request stay here for the next round, so
//! pipelined requests are answered in order on the same connection, and a read beyond the end
//! of the body never reaches Pingora (which would otherwise drop the connection after its
//! answer).
//!
//! The stream also bounds how slowly a client may send: the head must arrive within
//! `client_header_timeout`, and a body must keep arriving (`client_body_timeout` between reads,
//! and on average `client_body_min_rate` bytes per second after that allowance).

mod answer;
mod clock;

use super::chunked::Chunked;
use super::head::{self, Framing, Head, HeadEnd, Refusal};
use crate::errors::BodyRefused;
use answer::AnswerHead;
use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use clock::BodyClock;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// The limits a connection applies while reading requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// The longest a request head may take, from its first byte (or from the connection's
    /// start, for its first request).
    pub header_timeout: Duration,
    /// The longest wait for more body bytes.
    pub body_timeout: Duration,
    /// After `body_timeout`'s allowance, the body must arrive at least this fast on average
    /// (bytes per second); 0 turns the rate check off.
    pub body_min_rate: u64,
}

/// Why no request head could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadFailure {
    /// The client closed, the connection failed, or it sent nothing in time: close quietly.
    Closed,
    /// The head is malformed or ambiguous: answer and close.
    Refused(Refusal),
    /// Part of a head arrived, not all of it in time: answer `408` and close.
    TimedOut,
}

#[derive(Debug)]
enum Body {
    /// Everything the request may read has been read.
    Done,
    Length(u64),
    Chunked(Chunked),
    /// After an upgrade request's body, until the answer: nothing yet (what the client sends
    /// is kept, as after any request), since it is for the other protocol only if the answer
    /// is `101`.
    AwaitingSwitch,
    /// After a `101`: everything, to the end of the connection.
    Unbounded,
    /// The body was refused (bad framing, too slow): every further read fails the same way,
    /// so nothing waits on it.
    Failed(BodyRefused),
}

/// A client connection carrying HTTP/1 requests; see the module documentation.
pub struct Conn {
    inner: Stream,
    /// Bytes read from the socket and not yet handed on.
    buf: BytesMut,
    /// Head bytes of the current request still to hand on.
    head_left: usize,
    body: Body,
    /// The client has closed its side.
    eof: bool,
    /// The request is an upgrade request: whatever its answer, the connection is not read as
    /// HTTP again afterwards.
    upgraded: bool,
    /// The final answer to an upgrade request has not been written yet: its status decides
    /// whether the connection switches protocols.
    switch_pending: bool,
    /// How far the answer's heads have been written, while `switch_pending`.
    answer: AnswerHead,
    /// The upstream agreed to the upgrade (`101`).
    switched: bool,
    limits: Arc<ReadLimits>,
    clock: BodyClock,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("inner", &self.inner)
            .field("buffered", &self.buf.len())
            .field("body", &self.body)
            .finish()
    }
}

/// How much a connection keeps of a pipelined next request while the current one is served.
const STASH: usize = 64 * 1024;

/// The size of each read from the socket.
const READ_SIZE: usize = 4096;

impl Conn {
    /// A connection that carries another protocol from the start (HTTP/2 over TLS), whose
    /// first bytes (`read`) were already read from `inner`: they are handed on first, then
    /// everything else as it comes.
    pub fn passthrough(inner: Stream, read: &[u8], limits: Arc<ReadLimits>) -> Box<Conn> {
        let mut conn = Conn::new(inner, limits);
        conn.buf.extend_from_slice(read);
        conn.body = Body::Unbounded;
        conn
    }

    /// Wrap a client connection.
    pub fn new(inner: Stream, limits: Arc<ReadLimits>) -> Box<Conn> {
        Box::new(Conn {
            inner,
            buf: BytesMut::new(),
            head_left: 0,
            body: Body::Done,
            eof: false,
            upgraded: false,
            switch_pending: false,
            answer: AnswerHead::default(),
            switched: false,
            limits,
            clock: BodyClock::default(),
        })
    }

    /// Read and check the next request head, of at most `max_head` bytes. `first_byte_wait`
    /// bounds the wait for its first byte when none is buffered; `deadline` (default:
    /// `header_timeout` after the first byte) bounds the whole head.
    pub async fn next_head(
        &mut self,
        first_byte_wait: Duration,
        deadline: Option<Instant>,
        max_head: usize,
    ) -> Result<Head, HeadFailure> {
        if self.buf.is_empty() {
            if self.eof {
                return Err(HeadFailure::Closed);
            }
            match tokio::time::timeout(first_byte_wait, self.first_bytes()).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(HeadFailure::Closed),
            }
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + self.limits.header_timeout);
        let mut end = HeadEnd::default();
        let len = loop {
            match end.scan(&self.buf) {
                Err(r) => return Err(HeadFailure::Refused(r)),
                Ok(Some(len)) => break len,
                Ok(None) => {}
            }
            if self.buf.len() >= max_head {
                return Err(HeadFailure::Refused(Refusal {
                    status: 431,
                    reason: "header_too_large",
                }));
            }
            if self.eof {
                return Err(HeadFailure::Closed);
            }
            self.buf.reserve(READ_SIZE);
            match tokio::time::timeout_at(deadline, self.inner.read_buf(&mut self.buf)).await {
                Err(_) => return Err(HeadFailure::TimedOut),
                Ok(Ok(0)) => self.eof = true,
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(HeadFailure::Closed),
            }
        };
        if len > max_head {
            return Err(HeadFailure::Refused(Refusal {
                status: 431,
                reason: "header_too_large",
            }));
        }
        let mut head = head::parse(&self.buf, len).map_err(HeadFailure::Refused)?;
        if !head.dropped.is_empty() {
            // Lines the request is read without (see `Head::dropped`), e.g. a `Host` that an
            // absolute-form target's authority overrides: the proxy sends the authority.
            let mut rebuilt = BytesMut::with_capacity(self.buf.len());
            let mut from = 0;
            for line in head.dropped.drain(..) {
                rebuilt.extend_from_slice(&self.buf[from..line.start]);
                head.len -= line.len();
                from = line.end;
            }
            rebuilt.extend_from_slice(&self.buf[from..]);
            self.buf = rebuilt;
        }
        self.head_left = head.len;
        self.clock = BodyClock::default();
        // An upgrade request's own body (if any) is read as its framing says; what follows is
        // the other protocol's, after a `101`.
        self.upgraded = head.upgrade;
        self.switch_pending = head.upgrade;
        self.answer = AnswerHead::default();
        self.switched = false;
        self.body = match head.framing {
            Framing::None => self.after_body(),
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => {
                // Chunk framing already here is checked now, while the upstream has seen
                // nothing; what arrives later is checked as it passes.
                let mut check = Chunked::default();
                if let Err(e) = check.feed(&self.buf[head.len..]) {
                    return Err(HeadFailure::Refused(Refusal {
                        status: 400,
                        reason: e.reason(),
                    }));
                }
                Body::Chunked(Chunked::default())
            }
        };
        Ok(head)
    }

    /// Follow the answer to an upgrade request as it is written (`data`, the bytes just
    /// written): a `101` switches the connection; any other final status ends the watch.
    fn watch_answer(&mut self, data: &[u8]) {
        match self.answer.feed(data) {
            None => {}
            Some(false) => self.switch_pending = false,
            Some(true) => {
                self.switch_pending = false;
                self.switched = true;
                if matches!(self.body, Body::AwaitingSwitch) {
                    self.body = Body::Unbounded;
                }
            }
        }
    }

    /// What the stream hands on once the request's body is complete: nothing more for an HTTP
    /// request, everything for an upgrade (the tunnel's bytes, once the upstream agreed).
    fn after_body(&self) -> Body {
        match (self.upgraded, self.switched) {
            (false, _) => Body::Done,
            (true, false) => Body::AwaitingSwitch,
            (true, true) => Body::Unbounded,
        }
    }

    /// Wait for the client's first bytes, reading them into a buffer on the stack so that an
    /// idle connection holds no buffer of its own; they are then kept in `buf`.
    async fn first_bytes(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            let mut space = [MaybeUninit::<u8>::uninit(); READ_SIZE];
            let mut read = ReadBuf::uninit(&mut space);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        self.eof = true;
                    }
                    self.buf.extend_from_slice(read.filled());
                    Poll::Ready(Ok(read.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// The method and target of the request line at the start of the buffer, as far as they
    /// can be read (for logging a refused request).
    pub fn request_line(&self) -> (Option<http::Method>, String) {
        let line = &self.buf[..self.buf.len().min(8192)];
        let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
        let mut parts = line.split(|b| *b == b' ');
        let method = parts
            .next()
            .filter(|m| !m.is_empty() && m.len() <= 32)
            .and_then(|m| http::Method::from_bytes(m).ok());
        let target = parts
            .next()
            .map(|t| String::from_utf8_lossy(&t[..t.len().min(2048)]).into_owned())
            .unwrap_or_default();
        (method, target)
    }

    /// After Pingora is done with a request: whether another request may be read from this
    /// connection.
    pub fn finish_request(&mut self) -> bool {
        if self.buf.is_empty() {
            // Hold no buffer while idle.
            self.buf = BytesMut::new();
        }
        !self.upgraded
            && self.head_left == 0
            && matches!(self.body, Body::Done)
            && !(self.eof && self.buf.is_empty())
    }

    /// Write a complete answer of the gateway's own and close the connection politely: the
    /// write side is shut, then what the client still sends is read (for at most a second) so
    /// that the close does not turn into a reset that destroys the answer before it is read.
    pub async fn answer_and_close(&mut self, response: &[u8]) {
        if self.inner.write_all(response).await.is_err() || self.inner.flush().await.is_err() {
            return;
        }
        let _ = AsyncWriteExt::shutdown(&mut self.inner).await;
        let linger = async {
            let mut sink = [0u8; 4096];
            let mut total = 0usize;
            while total < 1 << 20 {
                match self.inner.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
    }

    /// Hand on buffered bytes, at most `limit`.
    fn hand_on_buffered(&mut self, out: &mut ReadBuf<'_>, limit: usize) -> usize {
        let n = self.buf.len().min(out.remaining()).min(limit);
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
        n
    }

    /// Read from the socket into `out`, at most `limit` bytes; the body clock runs while the
    /// client makes the read wait.
    fn poll_socket(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        let limit = limit.min(out.remaining());
        let mut part = out.take(limit);
        match Pin::new(&mut self.inner).poll_read(cx, &mut part) {
            Poll::Ready(Ok(())) => {
                let n = part.filled().len();
                // SAFETY: `part` is `out`'s unfilled memory (`ReadBuf::take`), and the read
                // filled, so initialised, its first `n` bytes.
                unsafe { out.assume_init(n) };
                out.advance(n);
                if n == 0 {
                    self.eof = true;
                } else {
                    self.clock.progress(n);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.clock.wait(cx, &self.limits) {
                Poll::Ready(()) => {
                    self.body = Body::Failed(BodyRefused::TooSlow);
                    Poll::Ready(Err(BodyRefused::TooSlow.into_io()))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    /// The request is fully read: what the client sends now belongs to its next request. It
    /// is kept (up to a bound, then the client waits), never handed on; only the client's
    /// close is reported, so that Pingora can stop work for a client that went away.
    fn poll_after_request(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let cap = STASH;
        while !self.eof && self.buf.len() < cap {
            let mut space = [MaybeUninit::<u8>::uninit(); READ_SIZE];
            let mut read = ReadBuf::uninit(&mut space);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => self.eof = true,
                Poll::Ready(Ok(())) => self.buf.extend_from_slice(read.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.eof && self.buf.is_empty() {
            // The client closed without another request: report the end of the stream.
            return Poll::Ready(Ok(()));
        }
        // A next request is waiting (or the client closed after sending one): nothing more for
        // this request.
        Poll::Pending
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.head_left > 0 {
            let n = this.hand_on_buffered(out, this.head_left);
            this.head_left -= n;
            return Poll::Ready(Ok(()));
        }
        match &mut this.body {
            Body::Done | Body::AwaitingSwitch => this.poll_after_request(cx),
            Body::Failed(refused) => Poll::Ready(Err(refused.into_io())),
            Body::Unbounded => {
                if !this.buf.is_empty() {
                    this.hand_on_buffered(out, usize::MAX);
                    return Poll::Ready(Ok(()));
                }
                Pin::new(&mut this.inner).poll_read(cx, out)
            }
            Body::Length(left) => {
                let limit = usize::try_from(*left).unwrap_or(usize::MAX);
                let n = if this.buf.is_empty() {
                    match this.poll_socket(cx, out, limit) {
                        Poll::Ready(Ok(n)) => n,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                } else {
                    this.hand_on_buffered(out, limit)
                };
                if let Body::Length(left) = &mut this.body {
                    *left -= n as u64;
                    if *left == 0 {
                        this.body = this.after_body();
                    }
                }
                Poll::Ready(Ok(()))
            }
            Body::Chunked(_) => {
                let start = out.filled().len();
                let n = if this.buf.is_empty() {
                    match this.poll_socket(cx, out, usize::MAX) {
                        Poll::Ready(Ok(n)) => n,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                } else {
                    this.hand_on_buffered(out, usize::MAX)
                };
                let Body::Chunked(chunked) = &mut this.body else {
                    return Poll::Ready(Ok(()));
                };
                match chunked.feed(&out.filled()[start..start + n]) {
                    Err(e) => {
                        let refused = BodyRefused::Framing(e.reason());
                        this.body = Body::Failed(refused);
                        Poll::Ready(Err(refused.into_io()))
                    }
                    Ok(None) => Poll::Ready(Ok(())),
                    Ok(Some(end)) => {
                        // Bytes after the body go back, in front of anything buffered.
                        if end < n {
                            let extra = &out.filled()[start + end..start + n];
                            let mut back = BytesMut::with_capacity(extra.len() + this.buf.len());
                            back.extend_from_slice(extra);
                            back.extend_from_slice(&this.buf);
                            this.buf = back;
                            out.set_filled(start + end);
                        }
                        this.body = this.after_body();
                        Poll::Ready(Ok(()))
                    }
                }
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let (true, Poll::Ready(Ok(n))) = (this.switch_pending, &written) {
            this.watch_answer(&buf[..*n]);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.switch_pending {
            // One slice at a time while the answer's status is watched.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Conn {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for Conn {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Conn {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Conn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Conn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Conn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

/// Peeking is not offered: the connection's protocol is decided before it is wrapped.
impl Peek for Conn {}
