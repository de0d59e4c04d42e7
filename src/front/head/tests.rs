//! Unit tests of [`super`].
use super::*;

fn check(raw: &[u8]) -> Result<Head, Refusal> {
    let mut end = HeadEnd::default();
    match end.scan(raw)? {
        Some(len) => parse(raw, len),
        None => Err(refuse(0, "incomplete")),
    }
}

fn reason(raw: &[u8]) -> (u16, &'static str) {
    let r = check(raw).expect_err("refused");
    (r.status, r.reason)
}

#[test]
fn good_requests() {
    let h = check(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::None);
    assert_eq!(h.len, 32);
    let h = check(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    assert_eq!(h.framing, Framing::Length(5));
    let h = check(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::Chunked);
    let h = check(b"\r\nGET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(h.len, 20);
    let h = check(b"GET http://a.example/x HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::None);
    assert!(h.dropped.is_empty());
    let raw = b"GET http://a.example/x HTTP/1.1\r\nX: 1\r\nHost: b.example\r\n\r\n";
    let h = check(raw).unwrap();
    assert_eq!(&raw[h.dropped[0].clone()], b"Host: b.example\r\n");
    let h = check(b"GET HTTP://a.example:8080?q HTTP/1.1\r\nHost: a.example:8080\r\n\r\n").unwrap();
    assert!(h.dropped.is_empty());
    let h = check(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert!(h.upgrade && h.dropped.is_empty());
    // An Upgrade that does not make an upgrade is dropped, so nobody acts on it.
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ] {
        let h = check(raw).unwrap();
        assert!(!h.upgrade);
        assert_eq!(&raw[h.dropped[0].clone()], b"Upgrade: websocket\r\n");
    }
    check(b"GET / HTTP/1.1\r\nHost: x\r\nX-Bin: caf\xc3\xa9\t!\r\nX-Empty:\r\n\r\n").unwrap();
}

#[test]
fn incomplete_until_the_blank_line() {
    let mut end = HeadEnd::default();
    let full = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    for n in 0..full.len() {
        assert_eq!(end.scan(&full[..n]), Ok(None), "{n}");
    }
    assert_eq!(end.scan(full), Ok(Some(full.len())));
}

#[test]
fn framing_ambiguities() {
    assert_eq!(
        reason(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n"),
        (400, "content_length")
    );
    assert_eq!(
        reason(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,5\r\n\r\n"),
        (400, "content_length")
    );
    assert_eq!(
        reason(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
        (400, "content_length")
    );
    for bad in ["+5", "-1", "0x5", "5 5", "", "1234567890123456789"] {
        let raw = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(reason(raw.as_bytes()), (400, "content_length"), "{bad}");
    }
    assert_eq!(
        reason(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (400, "content_length_and_transfer_encoding")
    );
    assert_eq!(
        reason(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (400, "transfer_encoding_http10")
    );
    for bad in [
        "gzip",
        "chunked, chunked",
        "chunked, gzip",
        "chunked;x=1",
        "chunked,",
        "",
        " chunked x",
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {bad}\r\n\r\n");
        assert_eq!(reason(raw.as_bytes()).0, 400, "{bad}");
    }
    assert_eq!(
        reason(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (501, "transfer_coding")
    );
}

#[test]
fn line_ends_and_request_lines() {
    assert_eq!(reason(b"GET / HTTP/1.1\nHost: x\n\n"), (400, "bare_lf"));
    assert_eq!(reason(b"GET / HTTP/1.1\r\nHost: x\n\r\n"), (400, "bare_lf"));
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"),
        (400, "bare_cr")
    );
    assert_eq!(
        reason(b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (400, "request_line")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n"),
        (400, "request_line")
    );
    assert_eq!(
        reason(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
        (400, "request_line")
    );
    assert_eq!(
        reason(b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n"),
        (400, "request_target")
    );
    assert_eq!(
        reason(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"),
        (400, "request_target")
    );
    assert_eq!(
        reason(b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n"),
        (400, "request_target")
    );
    for bad in ["/a<b", "/a>b", "/a`b", "/?q=<", "/?q=>", "/?q=\"", "/?q=#"] {
        let raw = format!("GET {bad} HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(reason(raw.as_bytes()), (400, "request_target"), "{bad}");
    }
    for good in ["/a\"b{c}|^[]", "/?q={`|}^[]\\"] {
        let raw = format!("GET {good} HTTP/1.1\r\nHost: x\r\n\r\n");
        check(raw.as_bytes()).expect(good);
    }
    assert_eq!(
        reason(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        (400, "request_target")
    );
    assert_eq!(
        reason(b"GET a.example:80 HTTP/1.1\r\nHost: x\r\n\r\n"),
        (400, "request_target")
    );
    assert_eq!(
        reason(b"CONNECT a.example:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
        (405, "connect")
    );
    assert_eq!(
        reason(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
        (505, "http_version")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1.1\r\nHost: x\r\n\r\n"),
        (400, "request_line")
    );
    assert_eq!(
        reason(b"GET / http/1.1\r\nHost: x\r\n\r\n"),
        (400, "request_line")
    );
    assert_eq!(
        reason(b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (400, "request_line")
    );
    assert_eq!(
        reason(b"delete / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (400, "method")
    );
    assert_eq!(
        reason(b"Get / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (400, "method")
    );
    check(b"PURGE / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(
        reason(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n"),
        (400, "request_line")
    );
    assert_eq!(reason(b"\r\n\r\n\x00\r\nQUIT\n"), (400, "bare_lf"));
}

#[test]
fn hosts() {
    assert_eq!(reason(b"GET / HTTP/1.1\r\n\r\n"), (400, "missing_host"));
    check(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    for bad in [
        "admin.example:80:80",
        "a b",
        "a/b",
        "[x]",
        "",
        "u@h",
        "h\\x",
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        assert_eq!(reason(raw.as_bytes()), (400, "host"), "{bad}");
        if bad != "a/b" {
            let raw = format!("GET http://{bad}/ HTTP/1.1\r\n\r\n");
            assert_eq!(reason(raw.as_bytes()).0, 400, "{bad}");
        }
    }
    // With an absolute-form target only the authority counts.
    check(b"GET http://a.example/ HTTP/1.1\r\nHost: anything\r\n\r\n").unwrap();
}

#[test]
fn header_fields() {
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n"),
        (400, "header_value")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n"),
        (400, "header_value")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x0bb\r\n\r\n"),
        (400, "header_value")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: a\r\n\r\n"),
        (400, "header_name")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: x\r\nX-\x00: a\r\n\r\n"),
        (400, "header_name")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: x\r\nName : a\r\n\r\n"),
        (400, "header_name")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n"),
        (400, "header_name")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n"),
        (400, "header_syntax")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n"),
        (400, "obs_fold")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
        (400, "duplicate_host")
    );
    assert_eq!(
        reason(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
        (400, "duplicate_host")
    );
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_FIELDS {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(reason(&many), (431, "too_many_fields"));
}
