//! Route policies end to end: API keys, groups, consumers and IP rules. A refused request never
//! reaches the upstream: each refusal is checked against the upstream's own request count.

use crate::common::*;

fn gateway(up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        "consumers:\n  - {{name: alice, groups: [staff], api_keys: [alice-key-1]}}\n  - {{name: carol, groups: [partners, beta], api_keys: [carol-key-1]}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: staff, match: {{path_prefix: /staff}}, upstream: a, auth: [api_key], allow_groups: [staff]}}\n  - {{name: keyed, match: {{path_prefix: /keyed}}, upstream: a, auth: [api_key]}}\n  - {{name: local, match: {{path_prefix: /local}}, upstream: a, ip_allow: [127.0.0.0/8, \"::1/128\"]}}\n  - {{name: blocked, match: {{path_prefix: /blocked}}, upstream: a, ip_deny: [127.0.0.1]}}\n  - {{name: public, match: {{path_prefix: /public}}, upstream: a}}\n",
        up.addr
    ))
}

#[test]
fn api_key_authenticates_and_identifies_the_consumer() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    let r = gw.get(
        "/keyed/x",
        &[("x-api-key", "carol-key-1"), ("x-consumer", "admin")],
    );
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("x-consumer"), Some("carol"));
    assert_eq!(seen.header("x-consumer-groups"), Some("partners,beta"));
    let r = gw.get("/keyed/x", &[("authorization", "Bearer alice-key-1")]);
    assert_eq!(r.status, 200);
    assert_eq!(up.last().header("x-consumer"), Some("alice"));
}

#[test]
fn missing_or_wrong_keys_are_401_and_never_forwarded() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    for headers in [
        vec![],
        vec![("x-api-key", "not-a-key-at-all")],
        vec![("authorization", "Bearer nope-nope")],
    ] {
        let r = gw.get("/keyed/x", &headers);
        assert_eq!(r.status, 401, "{headers:?}");
        assert!(r.header("www-authenticate").is_some(), "no challenge");
        assert_eq!(r.json()["status"], 401);
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn group_rule_refuses_others_with_403() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    let r = gw.get("/staff/x", &[("x-api-key", "carol-key-1")]);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["detail"], "forbidden");
    assert_eq!(r.json()["type"], "tag:tollgate,2026:forbidden");
    assert_eq!(up.count(), 0);
    assert_eq!(
        gw.get("/staff/x", &[("x-api-key", "alice-key-1")]).status,
        200
    );
    assert_eq!(up.count(), 1);
}

#[test]
fn ip_rules() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    assert_eq!(gw.get("/local", &[]).status, 200);
    let r = gw.get("/blocked", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(up.count(), 1);
}

#[test]
fn client_identity_headers_are_stripped_on_public_routes() {
    let up = Upstream::start("a");
    let gw = gateway(&up);
    assert_eq!(
        gw.get(
            "/public",
            &[("x-consumer", "alice"), ("x-consumer-groups", "staff")]
        )
        .status,
        200
    );
    let seen = up.last();
    assert_eq!(seen.header("x-consumer"), None);
    assert_eq!(seen.header("x-consumer-groups"), None);
}

pub(crate) fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(bin())
        .args(["hash-password", "--cost", "4"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[test]
fn basic_auth_with_bcrypt_hashes() {
    let up = Upstream::start("a");
    let hash = hash_password("correct horse");
    assert!(hash.starts_with("$2b$04$"), "{hash}");
    let gw = Gateway::start(&format!(
        "consumers:\n  - name: bob\n    groups: [partners]\n    basic_auth: {{username: bob, password_hash: \"{hash}\"}}\n  - {{name: alice, api_keys: [alice-key-1]}}\nupstreams:\n  a: {{peers: [\"{}\"]}}\nroutes:\n  - {{name: both, match: {{path_prefix: /both}}, upstream: a, auth: [api_key, basic]}}\n  - {{name: basic, match: {{path_prefix: /basic}}, upstream: a, auth: [basic]}}\n",
        up.addr
    ));
    // Right password, twice (the second from the verification cache).
    for _ in 0..2 {
        let r = gw.get(
            "/basic",
            &[("authorization", &basic("bob", "correct horse"))],
        );
        assert_eq!(r.status, 200);
        assert_eq!(up.last().header("x-consumer"), Some("bob"));
        assert_eq!(up.last().header("x-consumer-groups"), Some("partners"));
    }
    // Wrong password, unknown user, garbage: 401 with a Basic challenge.
    for auth in [
        basic("bob", "wrong"),
        basic("mallory", "correct horse"),
        "Basic !!!".to_string(),
    ] {
        let r = gw.get("/basic", &[("authorization", &auth)]);
        assert_eq!(r.status, 401, "{auth}");
        assert!(
            r.header("www-authenticate")
                .unwrap_or("")
                .starts_with("Basic realm="),
            "{:?}",
            r.headers
        );
    }
    assert_eq!(up.count(), 2);
    // A route accepting both takes either, and challenges with both.
    assert_eq!(gw.get("/both", &[("x-api-key", "alice-key-1")]).status, 200);
    assert_eq!(
        gw.get(
            "/both",
            &[("authorization", &basic("bob", "correct horse"))]
        )
        .status,
        200
    );
    let r = gw.raw(b"GET /both HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 401);
    let raw = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.write_all(b"GET /both HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.to_ascii_lowercase()
    };
    assert_eq!(raw.matches("www-authenticate:").count(), 2, "{raw}");
}
