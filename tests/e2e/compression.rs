//! Response compression: the coding negotiated from `Accept-Encoding` q-values, the body decoded
//! back to what the upstream sent (gzip, brotli, zstd), and every answer that must stay as it is
//! (small, other types, already encoded, ranges, `no-transform`, HEAD, HTTP/1.0); from the
//! cache, one stored copy compressed per client.

use crate::common::*;
use std::io::Read;

/// A JSON body of about 5 KB.
fn json() -> String {
    let items: Vec<String> = (0..100)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item number {i}\",\"tags\":[\"a\",\"b\"]}}"))
        .collect();
    format!("[{}]", items.join(","))
}

fn upstream() -> Upstream {
    Upstream::with_handler("api", |s| {
        let body = json();
        let reply = Reply::ok(&body).header("content-type", "application/json");
        match s.url.as_str() {
            "/small" => Reply::ok("{}").header("content-type", "application/json"),
            "/png" => Reply::ok(&body).header("content-type", "image/png"),
            "/encoded" => Reply::ok(&body)
                .header("content-type", "application/json")
                .header("content-encoding", "identity-but-encoded"),
            "/no-transform" => reply.header("cache-control", "no-transform"),
            "/etag" if s.header("if-none-match").is_some() => Reply {
                status: 304,
                ..Reply::ok("").header("etag", "\"v1\"")
            },
            "/etag" => reply.header("etag", "\"v1\""),
            "/range" => Reply {
                status: 206,
                ..reply.header("content-range", "bytes 0-9/6000")
            },
            _ => reply,
        }
    })
}

fn decode(coding: Option<&str>, body: &[u8]) -> String {
    let mut out = Vec::new();
    match coding {
        None => out.extend_from_slice(body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .expect("gzip");
        }
        Some("br") => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .expect("brotli");
        }
        Some("zstd") => out = zstd::decode_all(body).expect("zstd"),
        Some(other) => panic!("unexpected coding {other}"),
    }
    String::from_utf8(out).expect("text")
}

#[test]
fn answers_are_compressed_as_the_client_accepts() {
    let up = upstream();
    let admin = closed_port().port();
    let gw = Gateway::start(&format!(
        "admin: {{address: 127.0.0.1:{admin}}}\nupstreams:\n  u: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: c, match: {{path_prefix: /}}, upstream: u, compression: {{min_size: 100B}}}}\n  - {{name: cached, match: {{path_prefix: /cached}}, upstream: u, cache: {{ttl: 60s}}, compression: {{algorithms: [gzip]}}}}\n  - {{name: off, match: {{path_prefix: /off}}, upstream: u}}\n",
        up.addr
    ));
    let expected = json();
    for (accept, coding) in [
        ("gzip", Some("gzip")),
        ("br", Some("br")),
        ("zstd", Some("zstd")),
        ("gzip, br", Some("br")),
        ("br;q=0.5, gzip;q=0.8", Some("gzip")),
        ("*", Some("zstd")),
        ("*, zstd;q=0", Some("br")),
        ("gzip;q=0", None),
        ("identity", None),
        ("deflate", None),
    ] {
        let r = gw.get("/data", &[("accept-encoding", accept)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), coding, "{accept}");
        assert!(
            r.header("vary")
                .is_some_and(|v| v.contains("Accept-Encoding")),
            "{accept}"
        );
        assert_eq!(decode(coding, &r.body), expected, "{accept}");
        if coding.is_some() {
            assert!(
                r.body.len() < expected.len() / 3,
                "{accept}: {} bytes",
                r.body.len()
            );
        }
    }
    let r = gw.get("/data", &[]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body.len(), expected.len());
    // Answers that stay as they are.
    for path in ["/small", "/png", "/no-transform", "/off/data"] {
        let r = gw.get(path, &[("accept-encoding", "gzip")]);
        assert_eq!(r.header("content-encoding"), None, "{path}");
    }
    let r = gw.get("/encoded", &[("accept-encoding", "gzip")]);
    assert_eq!(r.header("content-encoding"), Some("identity-but-encoded"));
    let r = gw.get(
        "/range",
        &[("accept-encoding", "gzip"), ("range", "bytes=0-9")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-encoding"), None);
    // A strong ETag becomes weak on the compressed representation.
    let r = gw.get("/etag", &[("accept-encoding", "gzip")]);
    assert_eq!(r.header("etag"), Some("W/\"v1\""));
    // Revalidating it: the 304 says what the compressed answer said.
    let r = gw.get(
        "/etag",
        &[("accept-encoding", "gzip"), ("if-none-match", "W/\"v1\"")],
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("W/\"v1\""));
    assert!(r
        .header("vary")
        .is_some_and(|v| v.contains("Accept-Encoding")));
    // HEAD: the head its GET would get, no body. HTTP/1.0: not compressed.
    let r = gw.raw(
        b"HEAD /data HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("content-length"), None);
    assert!(r.body.is_empty());
    // ... and the connection goes on with the next request as usual.
    {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        c.write_all(b"HEAD /data HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
            .unwrap();
        // The head alone (a HEAD answer has no body, whatever its framing headers say).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"));
        c.write_all(
            b"GET /data HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let next = read_response(&mut c);
        assert_eq!(next.status, 200);
        assert_eq!(decode(Some("gzip"), &next.body), expected);
    }
    let r = gw.raw(b"GET /data HTTP/1.0\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body.len(), expected.len());
    // From the cache: one stored copy, compressed for the client that accepts it.
    let before = up.count();
    let plain = gw.get("/cached/x", &[]);
    let zipped = gw.get("/cached/x", &[("accept-encoding", "gzip")]);
    assert_eq!(up.count(), before + 1);
    assert!(zipped
        .header("cache-status")
        .is_some_and(|c| c.contains("hit")));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(decode(Some("gzip"), &zipped.body), expected);
    assert_eq!(String::from_utf8_lossy(&plain.body), expected);
    // Counted.
    let m = send_raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .text();
    assert!(
        m.contains("tollgate_compressed_responses_total{coding=\"gzip\",route=\"c\"} 4\n"),
        "{m}"
    );
    assert!(
        m.contains("tollgate_compression_bytes_total{direction=\"in\",route=\"c\"}"),
        "{m}"
    );
}
