//! Requests that two HTTP parsers could read differently are refused at the front door with
//! 400, the connection is closed, and the upstream receives nothing. Each case is raw bytes.

use crate::common::*;

fn gateway(up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        "upstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: t, match: {{}}, upstream: a}}\n",
        up.addr
    ))
}

fn refused(gw: &Gateway, up: &Upstream, raw: &[u8], case: &str) {
    let before = up.count();
    let r = gw.raw(raw);
    assert_eq!(r.status, 400, "{case}: got {} {}", r.status, r.text());
    assert!(r.closed, "{case}: connection left open");
    assert_eq!(up.count(), before, "{case}: the upstream received it");
}

#[test]
fn content_length_and_transfer_encoding() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    refused(
        &gw,
        &up,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "CL+TE",
    );
    refused(
        &gw,
        &up,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "TE+CL",
    );
    // Our own answer is the JSON error body.
    let r = gw.raw(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(r.json()["status"], 400);
}

#[test]
fn two_different_content_lengths() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    refused(
        &gw,
        &up,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "two CL",
    );
    refused(
        &gw,
        &up,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!",
        "CL list",
    );
}

#[test]
fn obsolete_line_folding() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    refused(
        &gw,
        &up,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n",
        "obs-fold",
    );
}

#[test]
fn invalid_chunk_sizes() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    refused(
        &gw,
        &up,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "non-hex chunk size",
    );
    refused(
        &gw,
        &up,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        "negative chunk size",
    );
    refused(
        &gw,
        &up,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "overflowing chunk size",
    );
}

#[test]
fn nul_and_bare_cr_in_headers() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    refused(
        &gw,
        &up,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Nul: a\x00b\r\n\r\n",
        "NUL in value",
    );
    refused(
        &gw,
        &up,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Cr: a\rb\r\n\r\n",
        "bare CR in value",
    );
    refused(
        &gw,
        &up,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-\x00Name: a\r\n\r\n",
        "NUL in name",
    );
}

#[test]
fn other_malformed_requests() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    refused(
        &gw,
        &up,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "two Host headers",
    );
    refused(
        &gw,
        &up,
        b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        "non-chunked final TE",
    );
    refused(
        &gw,
        &up,
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
        "space in header name",
    );
    // A well-formed request on the same gateway still passes.
    assert_eq!(gw.get("/", &[]).status, 200);
    assert_eq!(up.count(), 1);
}
