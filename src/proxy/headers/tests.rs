//! Unit tests of [`super`].
use super::*;

#[test]
fn writes_addresses_as_display_does() {
    let mut addrs: Vec<std::net::IpAddr> = [
        "0.0.0.0",
        "1.2.3.4",
        "10.100.255.9",
        "255.255.255.255",
        "99.100.101.9",
        "::1",
        "2001:db8::8a2e:370:7334",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "::ffff:192.0.2.128",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    addrs.extend((0..=255u8).map(|o| std::net::IpAddr::from([o, 255 - o, o / 3, 7])));
    for ip in addrs {
        let mut buf = [0u8; 48];
        let n = crate::wire::write_ip(ip, &mut buf);
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), ip.to_string());
    }
}

fn forwarded(hop: &Hop, incoming: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    for (k, v) in incoming {
        req.append_header(k.to_string(), *v).unwrap();
    }
    set_forwarding(&mut req, hop);
    req
}

#[test]
fn forged_forwarding_headers_are_replaced() {
    let host = HeaderValue::from_static("api.example.com");
    let hop = Hop {
        client: Some("192.0.2.9".parse().unwrap()),
        peer: Some("192.0.2.9".parse().unwrap()),
        trusted: false,
        host: Some(&host),
        tls: false,
    };
    let req = forwarded(
        &hop,
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6;host=admin.example;proto=https"),
            ("x-forwarded-host", "admin.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-real-ip", "6.6.6.6"),
            ("true-client-ip", "6.6.6.6"),
            ("cf-connecting-ip", "6.6.6.6"),
            ("x-kept", "1"),
        ],
    );
    assert_eq!(req.headers.get("x-forwarded-for").unwrap(), "192.0.2.9");
    assert_eq!(req.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(
        req.headers.get("x-forwarded-host").unwrap(),
        "api.example.com"
    );
    assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), "http");
    for gone in [
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "true-client-ip",
        "cf-connecting-ip",
    ] {
        assert!(req.headers.get(gone).is_none(), "{gone}");
    }
    assert!(req.headers.get("x-kept").is_some());
}

#[test]
fn trusted_proxies_chain_is_extended() {
    let host = HeaderValue::from_static("api.example.com");
    let hop = Hop {
        client: Some("203.0.113.7".parse().unwrap()),
        peer: Some("10.0.0.2".parse().unwrap()),
        trusted: true,
        host: Some(&host),
        tls: false,
    };
    let req = forwarded(
        &hop,
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "admin.example"),
            ("forwarded", "for=6.6.6.6;host=admin.example;proto=https"),
            ("forwarded", "For=\"[2001:db8::1]:80\""),
            ("x-real-ip", "203.0.113.7"),
        ],
    );
    assert_eq!(
        req.headers.get("x-forwarded-for").unwrap(),
        "6.6.6.6, 203.0.113.7, 10.0.0.2"
    );
    assert_eq!(req.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), "https");
    // The request is routed on its own host: that is the forwarded host.
    assert_eq!(
        req.headers.get("x-forwarded-host").unwrap(),
        "api.example.com"
    );
    assert_eq!(
        req.headers.get("forwarded").unwrap(),
        "for=6.6.6.6, for=\"[2001:db8::1]:80\", for=10.0.0.2"
    );
    assert_eq!(req.headers.get("x-real-ip").unwrap(), "203.0.113.7");
    // A made-up protocol is not passed on.
    let req = forwarded(&hop, &[("x-forwarded-proto", "gopher")]);
    assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), "http");
}

#[test]
fn forwarded_nodes_are_checked() {
    assert_eq!(
        String::from_utf8(forwarded_nodes(
            b"for=192.0.2.1, for=\"[2001:db8::1]:80\";proto=https, For=unknown, for=_hidden, for=\"192.0.2.2:_p\""
        ))
        .unwrap(),
        "for=192.0.2.1, for=\"[2001:db8::1]:80\", for=unknown, for=_hidden, for=\"192.0.2.2:_p\""
    );
    for forged in [
        &b"for=\"host=admin.example\""[..],
        b"for=1.2.3.4xproto=https",
        b"for=\"x",
        b"for=\"[::1]\"x",
        b"for=1.2.3.4:99999999",
        b"for=admin.example",
        b"for=\"[not-v6]\"",
    ] {
        assert!(
            forwarded_nodes(forged).is_empty(),
            "{}",
            String::from_utf8_lossy(forged)
        );
    }
}

#[test]
fn underscore_and_rerouting_headers_are_dropped() {
    for trusted in [false, true] {
        let hop = Hop {
            client: Some("192.0.2.9".parse().unwrap()),
            peer: Some("192.0.2.9".parse().unwrap()),
            trusted,
            host: None,
            tls: false,
        };
        let req = forwarded(
            &hop,
            &[
                ("x_forwarded_for", "6.6.6.6"),
                ("X_Forwarded_Host", "admin.example"),
                ("x_consumer", "root"),
                ("x_consumer_groups", "admins"),
                ("x_real_ip", "6.6.6.6"),
                ("x-original-url", "/api/admin"),
                ("x-rewrite-url", "/api/admin"),
                ("x-http-method-override", "DELETE"),
                ("x-method-override", "DELETE"),
                ("x-host", "admin.example"),
                ("x_custom", "kept"),
                ("cache-control", "no-cache"),
            ],
        );
        for gone in [
            "x_forwarded_for",
            "x_forwarded_host",
            "x_consumer",
            "x_consumer_groups",
            "x_real_ip",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "x-method-override",
            "x-host",
        ] {
            assert!(
                req.headers.get(gone).is_none(),
                "{gone} (trusted: {trusted})"
            );
        }
        assert_eq!(req.headers.get("x_custom").unwrap(), "kept");
        assert!(req.headers.get("cache-control").is_some());
    }
}

#[test]
fn strips_hop_by_hop_and_connection_listed() {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.insert_header("connection", "keep-alive, x-secret, content-length")
        .unwrap();
    req.insert_header("keep-alive", "timeout=5").unwrap();
    req.insert_header("x-secret", "1").unwrap();
    req.insert_header("te", "gzip").unwrap();
    req.insert_header("x-kept", "1").unwrap();
    strip_request_hop_by_hop(&mut req);
    for gone in ["connection", "keep-alive", "x-secret", "te"] {
        assert!(req.headers.get(gone).is_none(), "{gone}");
    }
    assert!(req.headers.get("x-kept").is_some());
}

#[test]
fn te_trailers_alone_is_passed_on() {
    let mut req = RequestHeader::build("POST", b"/", None).unwrap();
    req.insert_header("connection", "te").unwrap();
    req.insert_header("te", "gzip, Trailers;q=1").unwrap();
    strip_request_hop_by_hop(&mut req);
    assert_eq!(req.headers.get("te").unwrap(), "trailers");
    assert!(req.headers.get("connection").is_none());
}

#[test]
fn websocket_upgrade_kept() {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.insert_header("connection", "Upgrade").unwrap();
    req.insert_header("upgrade", "websocket").unwrap();
    strip_request_hop_by_hop(&mut req);
    assert_eq!(req.headers.get("upgrade").unwrap(), "websocket");
    assert_eq!(req.headers.get("connection").unwrap(), "upgrade");
}

#[test]
fn request_ids() {
    let v = HeaderValue::from_static("abc-123");
    assert_eq!(request_id(Some(&v)), v);
    let bad = HeaderValue::from_static("has space");
    let generated = request_id(Some(&bad));
    assert_eq!(generated.len(), 32);
    assert_ne!(request_id(None), request_id(None));
}

#[test]
fn cookie_and_query() {
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, HeaderValue::from_static("a=1; session=xyz"));
    assert_eq!(cookie(&h, "session"), Some(&b"xyz"[..]));
    assert_eq!(cookie(&h, "nope"), None);
    assert_eq!(query_param("a=1&user=42", "user"), Some(&b"42"[..]));
}
